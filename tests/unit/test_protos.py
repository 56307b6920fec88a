"""The committed stubs must match the .proto sources (run `make protos` after editing)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos" / "scifed" / "v1"


def test_generated_stubs_are_fresh(tmp_path):
    # protoc runs in a process of its own: grpc_tools' compiler, loaded before tenseal in
    # one process, makes tenseal's import abort (both carry protobuf's C++ runtime)
    subprocess.run([sys.executable, "-m", "protos.generate", str(tmp_path)], cwd=ROOT,
                   check=True)
    stale = []
    for proto in sorted(p.relative_to(ROOT) for p in PROTO_DIR.glob("*.proto")):
        stem = Path(proto).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            rel = Path(f"{stem}{suffix}")
            fresh = (tmp_path / rel).read_bytes()
            committed = ROOT / rel
            if not committed.exists() or committed.read_bytes() != fresh:
                stale.append(str(rel))
    assert not stale, f"stale generated stubs, run `make protos`: {stale}"
