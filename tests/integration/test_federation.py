"""Foundation end to end: real coordinator and node processes on 127.0.0.1, real mTLS,
datasets registered through the officer's CLI, found through the researcher's client."""

from __future__ import annotations

import json
import sqlite3

import grpc
import pytest
import rdflib
import yaml

from harness.federation import LocalFederation, wait_for
from protos.scifed.v1 import coordinator_pb2 as cpb
from protos.scifed.v1 import coordinator_pb2_grpc as cpbg
from protos.scifed.v1 import federation_pb2 as fpb
from protos.scifed.v1 import federation_pb2_grpc as fpbg
from scifed.tls import TlsFiles, secure_channel

NODES = {"alpha": "Alpha Marine Lab", "beta": "Beta Polar Institute"}


def write_meta(fed: LocalFederation, node: str, name: str, base: dict, **changes) -> str:
    meta = {**base, **changes}
    path = fed.node_dir(node) / f"{name}.meta.yaml"
    path.write_text(yaml.safe_dump(meta, allow_unicode=True, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("fed"), NODES)
    fed.setup()
    fed.start_all()
    try:
        a, b = fed.node_dir("alpha") / "data", fed.node_dir("beta") / "data"
        penguins[penguins.island == "Biscoe"].to_csv(a / "biscoe.csv", index=False)
        penguins[penguins.island == "Dream"].to_csv(a / "dream.csv", index=False)
        penguins[penguins.island == "Torgersen"].to_parquet(b / "torgersen.parquet")
        penguins.to_csv(b / "core.csv", index=False)
        title = penguins_meta["title"]
        fed.node_cli("alpha", "dataset", "add", "biscoe.csv", "--meta", write_meta(
            fed, "alpha", "biscoe", penguins_meta,
            title={**title, "en": "Penguins of Biscoe Island"}))
        fed.node_cli("alpha", "dataset", "add", "dream.csv", "--meta", write_meta(
            fed, "alpha", "dream", penguins_meta, sharing_category="CLOSED",
            security_grade="G2", title={**title, "en": "Closed penguin survey of Dream"},
            keywords=["seabirds", "closed survey", "Dream Island"]))
        fed.node_cli("beta", "dataset", "add", "torgersen.parquet", "--meta", write_meta(
            fed, "beta", "torgersen", penguins_meta,
            title={**title, "en": "Penguins of Torgersen Island"},
            subjects=["Zoology"], keywords=["Adelie", "nesting", "Torgersen"]))
        fed.node_cli("beta", "dataset", "add", "core.csv", "--meta", write_meta(
            fed, "beta", "core", penguins_meta, security_grade="G6", sharing_category="CLOSED",
            title={**title, "en": "Core penguin census"}, grade_assessment=GRADE_ASSESSMENT,
            approvals=[{"type": "important_data_filing", "ref": "F-1", "date": "2025-01-01"}]))
        with fed.researcher() as r:
            wait_for(lambda: len(r.search("")) == 3, 30, "three published records")
        yield fed
    finally:
        fed.stop_all()


GRADE_ASSESSMENT = {
    "factors": {"domain": "ecology", "scale": "population census"},
    "impact_object": "national security", "impact_degree": "especially serious",
    "rationale": "test of a core dataset", "assessed_by": "officer",
    "assessed_on": "2025-01-01", "next_review": "2026-01-01"}


def ids(df) -> set[str]:
    return set(df["id"])


def test_search_finds_published_records_and_never_g6(fed):
    with fed.researcher() as r:
        all_ = r.search("")
        assert len(all_) == 3
        assert set(all_["node"]) == {"alpha", "beta"}
        assert r.search("census").empty  # the G6 dataset never reached the coordinator
        assert ids(r.search("Biscoe")) == {"urn:sdn:alpha:ds:biscoe"}
        with pytest.raises(grpc.RpcError) as exc:
            r.record("urn:sdn:beta:ds:core")
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    db = fed.coord_dir / "state" / "coordinator.db"
    with sqlite3.connect(db) as con:
        dump = "\n".join(con.iterdump())
    assert "Core penguin census" not in dump


def test_each_filter(fed):
    with fed.researcher() as r:
        assert ids(r.search("", subjects=["Zoology"])) == {"urn:sdn:beta:ds:torgersen"}
        assert ids(r.search("", platforms=["Alpha Marine Lab"])) == {
            "urn:sdn:alpha:ds:biscoe", "urn:sdn:alpha:ds:dream"}
        assert ids(r.search("", grades=["G2"])) == {"urn:sdn:alpha:ds:dream"}
        assert ids(r.search("", categories=["CLOSED"])) == {"urn:sdn:alpha:ds:dream"}
        assert ids(r.search("", keywords=["nesting"])) == {"urn:sdn:beta:ds:torgersen"}
        # Columns are known only for fully published records, not for the CLOSED stub.
        assert ids(r.search("", columns=["body_mass_g"])) == {
            "urn:sdn:alpha:ds:biscoe", "urn:sdn:beta:ds:torgersen"}
        assert ids(r.search("penguins", categories=["OPEN"], platforms=["beta"])) == {
            "urn:sdn:beta:ds:torgersen"}


def test_closed_stub_hides_description_and_columns(fed):
    with fed.researcher() as r:
        stub = r.record("urn:sdn:alpha:ds:dream")
        full = r.record("urn:sdn:alpha:ds:biscoe")
    assert stub["stub"] is True
    assert set(stub) == {"id", "title", "node_id", "platform_id", "subjects",
                         "security_grade", "sharing_category", "stub"}
    assert full["record_count"] == 168
    assert {f["name"] for f in full["fields"]} >= {"species", "body_mass_g"}
    assert "path" not in json.dumps(full).lower().replace("spatial", "")


def test_catalog_cli_search_show_export(fed, tmp_path):
    ident = ["--identity", str(fed.researcher_dir)]
    out = fed.cli("catalog", "search", "penguins", "--subject", "Zoology", "--json", *ident)
    assert [h["id"] for h in json.loads(out.stdout)] == ["urn:sdn:beta:ds:torgersen"]
    table = fed.cli("catalog", "search", "penguins", *ident).stdout
    assert "urn:sdn:alpha:ds:biscoe" in table
    ttl = tmp_path / "b.ttl"
    fed.cli("catalog", "export", "urn:sdn:alpha:ds:biscoe", "--format", "dcat",
            "--out", str(ttl), *ident)
    g = rdflib.Graph().parse(ttl, format="turtle")
    titles = {str(o) for o in g.objects(None, rdflib.DCTERMS.title)}
    assert "Penguins of Biscoe Island" in titles
    cr = fed.cli("catalog", "export", "urn:sdn:alpha:ds:biscoe", "--format", "croissant", *ident)
    assert json.loads(cr.stdout)["sdn:securityGrade"] == "G1"
    bad = fed.cli("catalog", "export", "urn:sdn:alpha:ds:dream", "--format", "croissant",
                  *ident, check=False)
    assert bad.returncode == 1 and "stub" in bad.stderr and "Traceback" not in bad.stderr


def test_node_list_update_remove_republishes(fed, penguins_meta):
    listed = json.loads(fed.node_cli("alpha", "dataset", "list", "--json").stdout)
    assert {d["id"] for d in listed} == {"urn:sdn:alpha:ds:biscoe", "urn:sdn:alpha:ds:dream"}
    shown = json.loads(fed.node_cli("alpha", "dataset", "show", "biscoe", "--json").stdout)
    assert shown["distributions"][0]["sha256"]
    meta = write_meta(fed, "alpha", "biscoe2", penguins_meta,
                      title={**penguins_meta["title"], "en": "Biscoe penguins, revised"})
    fed.node_cli("alpha", "dataset", "update", "biscoe", "--meta", meta)
    with fed.researcher() as r:
        wait_for(lambda: ids(r.search("revised")) == {"urn:sdn:alpha:ds:biscoe"}, 15,
                 "the updated title to be searchable")
        fed.node_cli("alpha", "dataset", "remove", "dream")
        wait_for(lambda: "urn:sdn:alpha:ds:dream" not in ids(r.search("")), 15,
                 "the removed dataset to leave the catalog")
        fed.node_cli("alpha", "dataset", "add", "dream.csv", "--meta",
                     str(fed.node_dir("alpha") / "dream.meta.yaml"))
        wait_for(lambda: "urn:sdn:alpha:ds:dream" in ids(r.search("")), 15, "re-added dataset")


BAD_CASES = [
    ("missing licence", {"license": None}, "license"),
    ("unknown field", {"colour": "blue"}, "colour"),
    ("invalid pair", {"security_grade": "G3", "sharing_category": "OPEN"}, "OPEN"),
    ("below PI floor", {"personal_info": {"status": "identifiable", "sensitive": True,
                                          "categories": ["medical_health"]}}, "floor"),
]


@pytest.mark.parametrize("label,changes,needle", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_invalid_metadata_is_refused_and_nothing_registered(fed, penguins_meta, label,
                                                            changes, needle):
    meta = {k: v for k, v in {**penguins_meta, **changes}.items() if v is not None}
    path = fed.node_dir("beta") / "bad.meta.yaml"
    path.write_text(yaml.safe_dump(meta))
    before = fed.node_cli("beta", "dataset", "list", "--json").stdout
    out = fed.node_cli("beta", "dataset", "add", "core.csv", "--id", "bad", "--meta", str(path),
                       check=False)
    assert out.returncode == 1
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert fed.node_cli("beta", "dataset", "list", "--json").stdout == before


def test_bad_files_are_refused(fed, penguins_meta, tmp_path):
    meta = write_meta(fed, "beta", "ok", penguins_meta)
    outside = tmp_path / "outside.csv"
    outside.write_text("a,b\n1,2\n")
    (fed.node_dir("beta") / "data" / "broken.csv").write_text("a,b\n1,2\n3,4,5,6\n7,8\n")
    (fed.node_dir("beta") / "data" / "escape.csv").symlink_to(outside)
    for file, needle in ((str(outside), "outside"), ("../node.yaml", "outside"),
                         ("escape.csv", "outside"), ("nothere.csv", "no such file"),
                         ("broken.csv", "broken.csv")):
        out = fed.node_cli("beta", "dataset", "add", file, "--meta", meta, "--id", "x",
                           check=False)
        assert out.returncode == 1, file
        assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr
    listed = json.loads(fed.node_cli("beta", "dataset", "list", "--json").stdout)
    assert {d["id"] for d in listed} == {"urn:sdn:beta:ds:torgersen", "urn:sdn:beta:ds:core"}


def _channel(fed, files: TlsFiles):
    return secure_channel(fed.address, files)


def test_plaintext_and_foreign_ca_are_refused(fed, tmp_path):
    from scifed.pki import init_ca, make_key_and_csr, sign_csr

    with grpc.insecure_channel(fed.address) as ch:
        with pytest.raises(grpc.RpcError) as exc:
            cpbg.CoordinatorApiStub(ch).WhoAmI(cpb.WhoAmIRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    other = tmp_path / "other-ca"
    init_ca(other, coordinator_hosts=["127.0.0.1"])
    csr = make_key_and_csr(tmp_path / "eve", name="eve", role="researcher")
    cert = sign_csr(other, csr, role="researcher")
    files = TlsFiles(fed.ca_dir / "ca.crt", cert, tmp_path / "eve" / "researcher.key")
    with _channel(fed, files) as ch:
        with pytest.raises(grpc.RpcError) as exc:
            cpbg.CoordinatorApiStub(ch).WhoAmI(cpb.WhoAmIRequest(), timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


def test_roles_come_from_the_certificate(fed):
    with fed.researcher() as r:
        assert r.whoami() == {"name": "alice", "role": "researcher"}
        for operators_only in (r.nodes, r.all_jobs, r.revocations):
            with pytest.raises(grpc.RpcError) as exc:  # every job of every researcher, ...
                operators_only()
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        link = fpbg.NodeLinkStub(r._channel)
        with pytest.raises(grpc.RpcError) as exc:
            link.SyncCatalog(fpb.SyncCatalogRequest(records_json=[]), timeout=5)
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as exc:
            link.Register(fpb.RegisterRequest(platform="fake"), timeout=5)
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with fed.operator() as op:
        assert set(op.nodes()["name"]) == set(NODES)
        assert op.all_jobs() == [] and op.revocations().has_crl
        with pytest.raises(grpc.RpcError) as exc:  # the operator never fetches a result
            op.stub.GetResult(cpb.GetJobRequest(job_id="job-x"), timeout=5)
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_revoked_certificate_is_refused(fed):
    mallory = fed.add_researcher("mallory")
    from coordinator.client import Client

    with Client(mallory) as c:
        assert c.whoami()["name"] == "mallory"
        fed.cli("ca", "revoke", "--name", "mallory", "--role", "researcher", "--ca-dir",
                str(fed.ca_dir))
        with pytest.raises(grpc.RpcError) as exc:
            c.search("")
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in exc.value.details()


def test_node_offline_then_back_online(fed):
    def status(op, name):
        df = op.nodes()
        return bool(df[df.name == name].online.iloc[0])

    with fed.operator() as op:
        assert status(op, "beta")
        assert fed.stop("beta") == 0  # SIGTERM: it exits by itself (not killed at 15 s)
        wait_for(lambda: not status(op, "beta"), 15, "beta to show offline")
        out = fed.cli("nodes", "list", "--identity", str(fed.operator_dir))
        assert "offline" in out.stdout
        fed.start_node("beta")
        wait_for(lambda: status(op, "beta"), 20, "beta to come back online")


def test_nodes_reconnect_after_coordinator_restart(fed):
    fed.stop("coordinator")
    st = json.loads(fed.node_cli("alpha", "status", "--json").stdout)
    wait_for(lambda: not json.loads(fed.node_cli("alpha", "status", "--json").stdout)["connected"],
             20, "alpha to notice the coordinator is gone")
    fed.start_coordinator()
    with fed.operator() as op:
        wait_for(lambda: bool(op.nodes().online.all()), 30, "both nodes to reconnect")
    st = json.loads(fed.node_cli("alpha", "status", "--json").stdout)
    assert st["connected"] and st["published"] == 2


def test_a_revoked_node_is_cut_off_at_once(fed):
    """Revoking a connected node's certificate closes its task stream within seconds,
    without a restart, and its reconnects are refused. (Last in the module: beta stays
    revoked.)"""
    import time

    def online(op, name):
        df = op.nodes()
        return bool(df[df.name == name].online.iloc[0])

    with fed.operator() as op:
        wait_for(lambda: online(op, "beta"), 20, "beta to be online")
        started = time.monotonic()
        fed.cli("ca", "revoke", "--name", "beta", "--role", "node", "--ca-dir", str(fed.ca_dir))
        wait_for(lambda: not online(op, "beta"), 10, "beta's stream to close")
        print(f"beta cut off {time.monotonic() - started:.2f} s after the revocation")
        time.sleep(3)  # its link retries: every attempt is refused
        assert not online(op, "beta")
    assert "revoked" in fed.log_text("beta")
