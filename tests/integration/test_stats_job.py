"""The first joint study end to end: studies, study keys, a BFV-encrypted `stats` job
over real nodes on 127.0.0.1, the result sealed to the researcher — checked against
pandas on the pooled data, and the coordinator checked to hold nothing in clear."""

from __future__ import annotations

import json
import sqlite3

import grpc
import numpy as np
import pandas as pd
import pytest
import yaml
from vega_datasets import data as vega

from harness.federation import LocalFederation, wait_for
from scifed.he import context_is_private

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
YEARS = {"biscoe": [2012], "dream": [2013], "torgersen": [2014, 2015]}
COLS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
EDGES = [2500, 3000, 3500, 4000, 4500, 5000, 5500, 6000, 6500]
PROBS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]

def job_yaml(**spec) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta, weather_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("stats"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()},
                          task_timeout_seconds=6)
    fed.setup()
    fed.start_all()
    weather = vega.seattle_weather()
    weather["date"] = pd.to_datetime(weather["date"])
    try:
        for node, island in ISLANDS.items():
            ddir = fed.node_dir(node) / "data"
            penguins[penguins.island == island].to_csv(ddir / "penguins.csv", index=False)
            weather[weather.date.dt.year.isin(YEARS[node])].to_csv(ddir / "weather.csv",
                                                                   index=False)
            for name, meta in (("penguins", penguins_meta), ("weather", weather_meta)):
                mp = fed.node_dir(node) / f"{name}.yaml"
                mp.write_text(yaml.safe_dump(meta, allow_unicode=True))
                fed.node_cli(node, "dataset", "add", f"{name}.csv", "--meta", str(mp))
        fed.penguins, fed.weather = penguins, weather
        fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
        fed.create_study("weather", {n: "weather" for n in ISLANDS}, min_nodes=2)
        yield fed
    finally:
        fed.stop_all()


def run_job(fed, spec_text: str, *, expect_fail: bool = False):
    with fed.researcher() as r:
        job_id = r.submit(spec_text)
        info = r.wait(job_id, timeout=180)
        if expect_fail:
            assert info.status == "failed", info
            return info
        assert info.status == "done", info.error
        return r.result(job_id), info


def test_penguins_stats_equal_pooled_pandas(fed):
    df = fed.penguins
    res, info = run_job(fed, job_yaml(
        study="penguins", type="stats", datasets={n: "penguins" for n in ISLANDS},
        stats={"columns": COLS, "histograms": {"body_mass_g": EDGES},
               "quantiles": {"body_mass_g": PROBS, "flipper_length_mm": [0.5]},
               "group_counts": ["species", "sex"], "correlation": COLS}))
    assert sorted(info.contributors) == sorted(ISLANDS)
    assert res.rows == len(df)
    for col in COLS:
        row = res.summary.loc[col]
        assert row["count"] == df[col].count() and row["missing"] == df[col].isna().sum()
        assert row["mean"] == pytest.approx(df[col].mean(), rel=1e-6)
        assert row["variance"] == pytest.approx(df[col].var(), rel=1e-6)
        assert row["std"] == pytest.approx(df[col].std(), rel=1e-6)
    counts, _ = np.histogram(df.body_mass_g.dropna(), bins=EDGES)
    assert res.histograms["body_mass_g"]["count"].tolist() == counts.tolist()
    species = res.groups["species"].set_index("value")["count"]
    assert species.to_dict() == df.species.value_counts().to_dict()
    assert res.groups["sex"].set_index("value")["count"].to_dict() == \
        df.sex.value_counts().to_dict()
    np.testing.assert_allclose(res.correlation.loc[COLS, COLS].to_numpy(),
                               df[COLS].corr().to_numpy(), rtol=1e-6)
    for p in PROBS:
        assert res.quantiles.loc["body_mass_g", str(p)] == pytest.approx(
            df.body_mass_g.quantile(p), rel=1e-6)
    assert res.quantiles.loc["flipper_length_mm", "0.5"] == pytest.approx(
        df.flipper_length_mm.median(), rel=1e-6)


def test_weather_split_by_year_with_filter(fed):
    w = fed.weather
    sel = w[(w.weather != "sun") & (w.temp_max > 10)]
    res, _ = run_job(fed, job_yaml(
        study="weather", type="stats",
        datasets=[f"urn:sdn:{n}:ds:weather" for n in ISLANDS],
        filter="weather != 'sun' and temp_max > 10",
        stats={"columns": ["temp_max", "precipitation", "wind"],
               "measures": ["count", "mean", "variance"],
               "histograms": {"precipitation": [0, 1, 5, 10, 20, 60]},
               "quantiles": {"temp_max": [0.05, 0.5, 0.95]},
               "group_counts": ["weather"], "correlation": ["temp_max", "temp_min", "wind"]}))
    assert res.rows == len(sel)
    for col in ("temp_max", "precipitation", "wind"):
        assert res.summary.loc[col, "mean"] == pytest.approx(sel[col].mean(), rel=1e-6)
        assert res.summary.loc[col, "variance"] == pytest.approx(sel[col].var(), rel=1e-6)
    assert "sum" not in res.summary.columns
    counts, _ = np.histogram(sel.precipitation, bins=[0, 1, 5, 10, 20, 60])
    assert res.histograms["precipitation"]["count"].tolist() == counts.tolist()
    assert res.groups["weather"].set_index("value")["count"].to_dict() == \
        sel.weather.value_counts().to_dict()
    np.testing.assert_allclose(res.correlation.to_numpy(),
                               sel[["temp_max", "temp_min", "wind"]].corr().to_numpy(),
                               rtol=1e-6)
    for p in (0.05, 0.5, 0.95):
        assert res.quantiles.loc["temp_max", str(p)] == pytest.approx(
            sel.temp_max.quantile(p), rel=1e-6)


def test_cli_submit_status_result(fed, tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(job_yaml(study="penguins", type="stats",
                             datasets={n: "penguins" for n in ISLANDS},
                             stats={"columns": ["body_mass_g"],
                                    "histograms": {"body_mass_g": EDGES}}))
    ident = ["--identity", str(fed.researcher_dir)]
    job_id = fed.cli("job", "submit", str(spec), "--wait", *ident).stdout.strip()
    status = fed.cli("job", "status", job_id, *ident).stdout
    assert "done" in status
    printed = fed.cli("job", "result", job_id, *ident).stdout
    assert "body_mass_g" in printed and "4201.75" in printed
    out = tmp_path / "res"
    fed.cli("job", "result", job_id, "--out", str(out), *ident)
    assert (out / "histogram_body_mass_g.png").read_bytes()[:4] == b"\x89PNG"
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "count"] == 342


# (label, changes, the stage that refuses it, what the message names). "submission": the
# coordinator refuses SubmitJob and nothing is created; "node": the job is created and a
# node's own check fails it.
BAD_JOBS = [
    ("unknown column", {"stats": {"columns": ["wingspan"]}}, "submission", "wingspan"),
    ("wrong column type", {"stats": {"columns": ["species"]}}, "node", "species"),
    ("filter beyond comparisons", {"filter": "__import__('os').system('id') == 0",
                                   "stats": {"columns": ["body_mass_g"]}}, "submission",
     "filter: function calls are not allowed"),
    ("filter on a missing column", {"filter": "wingspan > 30"}, "submission",
     "filter: unknown column 'wingspan' in dataset penguins at node"),
    ("bins not increasing", {"stats": {"histograms": {"body_mass_g": [3000, 2000, 4000]}}},
     "submission", "increasing"),
    ("study not joined", {"study": "nope"}, "submission", "nope"),
    ("dataset not attached", {"datasets": {"biscoe": "weather", "dream": "penguins",
                                           "torgersen": "penguins"}}, "submission",
     "not attached"),
]


@pytest.mark.parametrize("label,changes,stage,needle", BAD_JOBS, ids=[b[0] for b in BAD_JOBS])
def test_bad_jobs_are_refused_with_a_reason(fed, label, changes, stage, needle):
    spec = {"study": "penguins", "type": "stats", "datasets": {n: "penguins" for n in ISLANDS},
            "stats": {"columns": ["body_mass_g"]}, **changes}
    with fed.researcher() as r:
        if stage == "submission":
            with pytest.raises(grpc.RpcError) as exc:
                r.submit(job_yaml(**spec))
            assert exc.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                        grpc.StatusCode.NOT_FOUND)
            assert needle in exc.value.details()
            return
        info = r.wait(r.submit(job_yaml(**spec)), timeout=60)
    assert info.status == "failed" and needle in info.error
    # the nodes refused before releasing anything: at the budget reservation (the filter
    # is compiled on first contact) or at compute (the data check)
    assert info.phase in ("reserve", "compute")
    assert all(t.state == "failed" for t in info.tasks if t.phase == info.phase)


def test_inactive_study_and_outsider_are_refused(fed):
    import grpc

    fed.create_study("pending-study", {"biscoe": "penguins", "dream": "penguins"},
                     accept=False)
    fed.create_study("closed-circle", {n: "penguins" for n in ISLANDS}, researchers=())
    with fed.researcher() as r:
        for study, needle in (("pending-study", "not active"),
                              ("closed-circle", "not a researcher")):
            with pytest.raises(grpc.RpcError) as exc:
                r.submit(job_yaml(study=study, type="stats",
                                  datasets={"biscoe": "penguins", "dream": "penguins"},
                                  stats={"columns": ["body_mass_g"]}))
            assert needle in exc.value.details()


def test_node_offline_past_timeout_fails_the_job(fed):
    fed.stop("dream")
    try:
        info = run_job(fed, job_yaml(study="penguins", type="stats",
                                     datasets={n: "penguins" for n in ISLANDS},
                                     stats={"columns": ["body_mass_g"]}), expect_fail=True)
        assert "dream" in info.error and "offline" in info.error
        # The weather study needs 2 of 3 nodes: the quorum holds without dream.
        res, info = run_job(fed, job_yaml(study="weather", type="stats",
                                          datasets={n: "weather" for n in ISLANDS},
                                          stats={"columns": ["temp_max"]}))
        assert sorted(info.contributors) == ["biscoe", "torgersen"]
        w = fed.weather
        assert res.summary.loc["temp_max", "count"] == (w.date.dt.year != 2013).sum()
    finally:
        fed.start_node("dream")
        with fed.operator() as op:
            wait_for(lambda: bool(op.nodes().online.all()), 30, "dream back online")


def test_coordinator_holds_nothing_in_clear(fed):
    """The coordinator's database and log, after a job of its own, hold no value that job
    computed: neither pooled nor per-node statistics of a filtered selection."""
    w = fed.weather
    sel = w[(w.weather != "sun") & (w.wind > 3)]
    res, info = run_job(fed, job_yaml(
        study="weather", type="stats", datasets={n: "weather" for n in ISLANDS},
        filter="weather != 'sun' and wind > 3",
        stats={"columns": ["temp_max", "wind"], "group_counts": ["weather"],
               "quantiles": {"temp_max": [0.5]}}))
    assert res.summary.loc["temp_max", "mean"] == pytest.approx(sel.temp_max.mean(), rel=1e-9)
    db = fed.coord_dir / "state" / "coordinator.db"
    with sqlite3.connect(db) as con:
        contexts = [r[0] for r in con.execute("SELECT public_context FROM studies "
                                              "WHERE public_context IS NOT NULL")]
        blobs = [r[0] for r in con.execute("SELECT sealed_secret FROM study_key_shares")]
        (sealed,) = con.execute("SELECT sealed_result FROM jobs WHERE job_id=?",
                                (info.job_id,)).fetchone()
        dump = "\n".join(con.iterdump())
    assert contexts and blobs and sealed
    assert not any(context_is_private(c) for c in [*contexts, *blobs, sealed])
    text = dump + fed.log_text("coordinator")
    per_node = [sel[sel.date.dt.year.isin(years)] for years in YEARS.values()]
    clear = [f"{sel.temp_max.mean():.4f}", f"{sel.temp_max.sum():.1f}",
             f"{sel.temp_max.var():.4f}", f"{sel.wind.mean():.4f}", f"{sel.wind.sum():.1f}",
             f"{sel.temp_max.median()}",
             *[f"{p.temp_max.mean():.4f}" for p in per_node],
             *[f"{p.temp_max.sum():.1f}" for p in per_node]]
    for needle in clear:
        assert needle not in text, needle
    # the categories travelled sealed: no weather label the job grouped by, in clear,
    # beside its count
    for value, count in sel.weather.value_counts().items():
        assert f'"{value}": {count}' not in text


def test_membership_change_rotates_the_key(fed):
    with fed.operator() as op:
        before = op.study("weather").key_version
        out = fed.node_cli("dream", "studies", "decline", op.study("weather").study_id)
        assert "declined" in out.stdout
        wait_for(lambda: op.study("weather").key_version == before + 1
                 and op.study("weather").status == "active", 30, "the key to rotate")
        st = op.study("weather")
        assert {m.node: m.state for m in st.members}["dream"] == "declined"
    db = fed.coord_dir / "state" / "coordinator.db"
    with sqlite3.connect(db) as con:
        holders = {r[0] for r in con.execute(
            "SELECT node_name FROM study_key_shares WHERE study_id=? AND version=?",
            (st.study_id, before + 1))}
    assert holders == {"biscoe", "torgersen"}  # the node that left cannot read on
    res, _ = run_job(fed, job_yaml(study="weather", type="stats",
                                   datasets={"biscoe": "weather", "torgersen": "weather"},
                                   stats={"columns": ["wind"]}))
    assert res.summary.loc["wind", "count"] == (fed.weather.date.dt.year != 2013).sum()
    spec = fed.root / "declined.yaml"
    spec.write_text(job_yaml(study="weather", type="stats",
                             datasets={n: "weather" for n in ISLANDS},
                             stats={"columns": ["wind"]}))
    refused = fed.cli("job", "submit", str(spec), "--identity", str(fed.researcher_dir),
                      check=False)
    assert refused.returncode == 1 and "node dream is not a member" in refused.stderr
    fed.node_cli("dream", "studies", "accept", st.study_id, "--datasets", "weather")
    with fed.operator() as op:
        wait_for(lambda: op.study("weather").key_version == before + 2, 30, "re-keying")
    listed = fed.cli("study", "list", "--identity", str(fed.operator_dir)).stdout
    assert "weather" in listed and "active" in listed


def js(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def test_federated_quality_report_equals_pooled_pandas(fed):
    res, info = run_job(fed, job_yaml(study="weather", type="quality",
                                      datasets={n: "weather" for n in ISLANDS},
                                      quality={"target": "weather"}))
    w = fed.weather
    assert res.rows == len(w)
    metrics = res.metrics.set_index("metric")
    assert metrics.loc["Q1a", "value"] == pytest.approx(1 - w.isna().sum().sum() / w.size)
    assert metrics.loc["Q4c", "status"] == "pass"
    labels = sorted(w.weather.unique())
    pooled = w.weather.value_counts().reindex(labels).to_numpy(float)
    assert res.classes.set_index("label")["count"].to_dict() == \
        w.weather.value_counts().to_dict()
    shift = res.label_shift.set_index("node")["js_distance"]
    for node, years in YEARS.items():
        part = w[w.date.dt.year.isin(years)].weather.value_counts().reindex(labels, fill_value=0)
        assert shift[node] == pytest.approx(js(part.to_numpy(float), pooled), abs=1e-9)
    assert metrics.loc["Q4d", "value"] == pytest.approx(shift.max())
    p = pooled / pooled.sum()
    assert metrics.loc["Q5a", "value"] == pytest.approx(-(p * np.log(p)).sum() / np.log(5))


def test_quality_scorecard_is_published_and_searchable(fed, tmp_path):
    out = tmp_path / "q.json"
    printed = fed.node_cli("biscoe", "dataset", "quality", "penguins", "--fast",
                           "--out", str(out)).stdout
    report = json.loads(out.read_text())
    assert report["grade"] in ("A", "B") and "Q9a" in printed and report["mode"] == "fast"
    refused = fed.node_cli("biscoe", "dataset", "quality", "penguins", "--fast",
                           "--override", "Q5a", check=False)
    assert refused.returncode == 1 and "justification" in refused.stderr
    fed.node_cli("biscoe", "dataset", "quality", "penguins", "--fast", "--override", "Q6",
                 "--justification", "outliers reviewed by the curator", "--out", str(out))
    assert json.loads(out.read_text())["overrides"][0]["metric"] == "Q6"
    with fed.researcher() as r:
        wait_for(lambda: set(r.search("", min_quality="B")["id"])
                 == {"urn:sdn:biscoe:ds:penguins"}, 20, "the quality grade to be searchable")
        rec = r.record("urn:sdn:biscoe:ds:penguins")
    assert rec["quality"]["grade"] == report["grade"]
    listed = fed.cli("catalog", "search", "--min-quality", "B", "--identity",
                     str(fed.researcher_dir)).stdout
    assert "urn:sdn:biscoe:ds:penguins" in listed


def test_node_catalog_exports(fed, tmp_path):
    import mlcroissant as mlc
    import rdflib

    ttl = tmp_path / "cat.ttl"
    fed.node_cli("dream", "catalog", "export", "--format", "dcat", "--out", str(ttl))
    g = rdflib.Graph().parse(ttl, format="turtle")
    dcat = rdflib.Namespace("http://www.w3.org/ns/dcat#")
    catalogs = list(g.subjects(rdflib.RDF.type, dcat.Catalog))
    assert len(catalogs) == 1
    assert len(list(g.objects(catalogs[0], dcat.dataset))) == 2
    cdir = tmp_path / "croissant"
    fed.node_cli("dream", "catalog", "export", "--format", "croissant", "--out", str(cdir))
    docs = sorted(cdir.glob("*.json"))
    assert [d.name for d in docs] == ["penguins.croissant.json", "weather.croissant.json"]
    mlc.Dataset(jsonld=json.loads(docs[0].read_text()))  # validates, raises on errors
