"""The committed stubs must match the .proto sources (run `make protos` after editing)."""

from pathlib import Path

from protos.generate import ROOT, generate, proto_files


def test_generated_stubs_are_fresh(tmp_path):
    generate(tmp_path)
    stale = []
    for proto in proto_files():
        stem = Path(proto).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            rel = Path(f"{stem}{suffix}")
            fresh = (tmp_path / rel).read_bytes()
            committed = ROOT / rel
            if not committed.exists() or committed.read_bytes() != fresh:
                stale.append(str(rel))
    assert not stale, f"stale generated stubs, run `make protos`: {stale}"
