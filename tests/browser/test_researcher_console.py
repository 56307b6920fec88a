"""The researcher console (`scifed ui`) in a real browser, against a real federation on
loopback: a coordinator and three nodes over mTLS gRPC, the penguins split by island and
Seattle's weather by year.

The researcher searches the catalog with a facet, opens a dataset page and downloads its
DCAT and Croissant files, submits a `stats` job from the form's fields — first with two
wrong values, and sees each one's message under its field and nothing submitted, then a
valid one with its histogram edges in the advanced YAML box —
watches it run, and reads its result table, which must equal pandas on the pooled rows,
and its histogram plot. Then they request access to an OPEN dataset (first without
accepting its conditions of use), download it with its progress shown, and the sha256
the page shows as verified is the node's own file's. Last, they query a CONDITIONAL
dataset inside its node under an in-node service grant: the answer table equals pandas
on the node's rows, groups below the node's k withheld, and the node's refusals (SQL it
does not accept, a revoked grant) are shown in its words. Every page is saved as a
screenshot."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess

import grpc
import numpy as np
import pandas as pd
import pytest
import rdflib
from playwright.sync_api import expect
from vega_datasets import data as vega

from cli.ui.app import build
from coordinator import access_client as ac
from harness.federation import CLI, LocalFederation, _die_with_parent
from node.delivery.service import MIN_GROUP
from node.policy import effective
from scifed.web import serve

ISLANDS = {"biscoe": "Biscoe", "dream": "Dream", "torgersen": "Torgersen"}
YEARS = {"biscoe": [2012], "dream": [2013], "torgersen": [2014, 2015]}
COLS = ["bill_length_mm", "flipper_length_mm", "body_mass_g"]
EDGES = [2500, 3500, 4500, 5500, 6500]

# Seattle's weather graded G2 CONDITIONAL, so the grade facet has two values
WEATHER = {"security_grade": "G2", "sharing_category": "CONDITIONAL",
           "conditions_of_use": [{"code": "research_only", "text": "For research only."}]}


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta, weather_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("resui"),
                          {n: f"Palmer {i}" for n, i in ISLANDS.items()},
                          task_timeout_seconds=6)
    fed.setup()
    fed.start_all()
    weather = vega.seattle_weather()
    weather["date"] = pd.to_datetime(weather["date"])
    try:
        for node, island in ISLANDS.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
            fed.add_dataset(node, weather[weather.date.dt.year.isin(YEARS[node])],
                            {**weather_meta, **WEATHER}, "weather")
        fed.node_cli("biscoe", "dataset", "quality", "penguins", "--fast")
        fed.create_study("penguins", {n: "penguins" for n in ISLANDS})
        fed.create_study("weather", {"biscoe": "weather"}, purpose="rain by season")
        fed.weather = weather
        fed.penguins = penguins
        yield fed
    finally:
        fed.stop_all()


@pytest.fixture
def console(fed, tmp_path):
    app, client = build(fed.researcher_dir, downloads=tmp_path / "downloads")
    running = serve.start(app.app)
    yield app, running.url
    running.stop()
    client.close()


def cells(page, selector: str) -> pd.DataFrame:
    """A rendered table as text cells, columns from its header."""
    head = page.eval_on_selector_all(f"{selector} thead th", "els => els.map(e => e.innerText)")
    rows = page.eval_on_selector_all(
        f"{selector} tr:has(td)", "rs => rs.map(r => [...r.cells].map(c => c.innerText))")
    return pd.DataFrame(rows, columns=head)


def test_researcher_searches_submits_watches_and_reads_a_result(fed, console, page, shot,
                                                                tmp_path):
    app, url = console
    df = fed.penguins
    page.goto(f"{url}/login?token={app.sessions.login_token()}")

    # -- the catalog, then a facet ------------------------------------------------------
    assert page.inner_text("#found") == "6 datasets"
    shot(page, "catalog")
    with page.expect_response(lambda r: "grade=G2" in r.url):
        page.check("#facet-grade input[value=G2]")
    expect(page.locator("#found")).to_have_text("3 datasets")
    found = cells(page, "#hits")
    assert set(found["Grade"]) == {"G2"} and set(found["Node"]) == set(ISLANDS)
    assert "grade=G2" in page.url  # the facet is in the address: shareable, reloadable
    shot(page, "catalog-facet-G2")
    page.uncheck("#facet-grade input[value=G2]")
    expect(page.locator("#found")).to_have_text("6 datasets")

    # -- a dataset page and its metadata downloads ---------------------------------------
    page.click("#hits a[href*='biscoe%3Ads%3Apenguins']")
    assert "urn:sdn:biscoe:ds:penguins" in page.inner_text("main")
    facts = dict(zip(*[page.eval_on_selector_all(f"#facts tr {c}", "es => es.map(e => "
                                                 "e.innerText)") for c in ("th", "td")],
                     strict=True))
    assert facts["Sensitivity grade"] == "G1" and facts["Sharing category"] == "OPEN"
    assert facts["Rows"] == str((df.island == "Biscoe").sum())
    with fed.researcher() as r:
        quality = r.record("urn:sdn:biscoe:ds:penguins")["quality"]
    assert page.inner_text("#quality-score") == (
        f"Score {quality['score']:.1f} of 100, grade {quality['grade']}")
    fields = cells(page, "#fields").set_index("Name")
    biscoe = df[df.island == "Biscoe"]
    assert fields.loc["body_mass_g", "Missing"] == str(biscoe.body_mass_g.isna().sum())
    assert float(fields.loc["body_mass_g", "Mean"]) == pytest.approx(
        biscoe.body_mass_g.mean(), rel=1e-5)
    shot(page, "dataset")
    with page.expect_download() as dl:
        page.click("#exports a[href$='format=dcat']")
    graph = rdflib.Graph().parse(dl.value.path(), format="turtle")
    dcat = rdflib.Namespace("http://www.w3.org/ns/dcat#")
    assert (None, rdflib.RDF.type, dcat.Dataset) in graph
    assert dl.value.suggested_filename == "penguins.dcat.ttl"
    with page.expect_download() as dl:
        page.click("#exports a[href$='format=croissant']")
    croissant = json.loads(open(dl.value.path(), encoding="utf-8").read())
    described = {f["name"] for rs in croissant["recordSet"] for f in rs["field"]}
    assert set(COLS) <= described

    # -- the job form: the stats fields, two wrong values, then a valid job ----------------
    page.click("text=Use in a job")
    page.select_option("#study", "penguins")
    page.select_option("#type", "regression")  # each type brings its own fields (htmx)
    expect(page.locator("#p-family")).to_be_visible()
    assert page.locator("#p-family option").all_inner_texts()[1:] == [
        "gaussian", "binomial", "poisson", "gamma"]
    page.select_option("#type", "stats")
    expect(page.locator("#p-columns")).to_be_visible()
    expect(page.locator("#p-family")).to_have_count(0)
    assert page.is_checked("#p-measures input[value=variance]")  # the spec's default
    assert "histograms" in page.inner_text("#advanced-only")  # the YAML box holds those
    for node in ISLANDS:
        page.check(f"#datasets input[value='urn:sdn:{node}:ds:penguins']")
    page.fill("#p-columns", "bill_length_mm, bill_length_mm")
    page.fill("#p-correlation", "body_mass_g")
    # checked as it is typed, with the schema `scifed job submit` applies: both at once
    expect(page.locator("#problem-p-columns")).to_have_text("duplicate column: bill_length_mm")
    expect(page.locator("#problem-p-correlation")).to_have_text(
        "list at least 2 columns to correlate")
    shot(page, "form-invalid")
    with fed.researcher() as r:
        before = len(r.jobs(limit=200))
    page.click("#submit-job")  # submitted anyway: refused here, nothing sent, entries kept
    expect(page.locator("#problem-p-columns")).to_have_text("duplicate column: bill_length_mm")
    assert page.input_value("#p-columns") == "bill_length_mm, bill_length_mm"
    with fed.researcher() as r:
        assert len(r.jobs(limit=200)) == before
    page.fill("#p-columns", ", ".join(COLS))
    page.fill("#p-correlation", "")
    page.click("#advanced summary")  # a key the type lacks, in the YAML box
    page.fill("#params", f"histogram:\n  body_mass_g: {EDGES}\n")
    expect(page.locator("#problem-params")).to_have_text(
        "histogram: Extra inputs are not permitted")
    expect(page.locator("#problem-p-columns")).to_have_text("")
    page.fill("#params", f"histograms:\n  body_mass_g: {EDGES}\n")
    expect(page.locator("#form-valid")).to_be_visible()
    shot(page, "form-valid")
    page.click("#submit-job")

    # -- live progress -------------------------------------------------------------------
    page.wait_for_url("**/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    shot(page, "job-progress")
    page.wait_for_selector("#job-status [data-status=done]", timeout=180_000)
    assert cells(page, "#tasks")["State"].tolist() and page.url.endswith(job_id)
    shot(page, "job-done")

    # -- the result: the table equals pooled pandas, the histogram is drawn -----------------
    page.click("#see-result")
    assert "signed by node" in page.inner_text("#verified")
    summary = cells(page, "table[data-table=summary]").set_index("column")
    for col in COLS:
        assert int(summary.loc[col, "count"]) == df[col].count()
        assert float(summary.loc[col, "mean"]) == pytest.approx(df[col].mean(), abs=1e-6)
        assert float(summary.loc[col, "variance"]) == pytest.approx(df[col].var(), rel=1e-6)
    hist = cells(page, "table[data-table=histogram_body_mass_g]")
    counts, _ = np.histogram(df.body_mass_g.dropna(), bins=EDGES)
    assert hist["count"].astype(int).tolist() == counts.tolist()
    src = page.get_attribute("img[data-plot='histogram_body_mass_g.png']", "src")
    png = base64.b64decode(src.split(",", 1)[1])
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size == (600, 320)  # the stats view's own figure
    shot(page, "result")
    with page.expect_download() as dl:
        page.click("#downloads a[href$='summary.csv']")
    downloaded = pd.read_csv(dl.value.path()).set_index("column")
    assert downloaded.loc["body_mass_g", "mean"] == pytest.approx(df.body_mass_g.mean())

    # -- the job list, and the same page in Chinese -------------------------------------
    page.goto(f"{url}/jobs")
    listed = cells(page, "#jobs")
    assert listed.iloc[0]["Job"] == job_id and listed.iloc[0]["State"] == "done"
    shot(page, "jobs")
    page.click("text=中文")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert "已完成" in page.inner_text("#jobs")
    shot(page, "jobs-zh")
    page.goto(f"{url}/jobs/{job_id}/result")
    shot(page, "result-zh")
    # the one refused submission is the only failed request; nothing broke the CSP
    assert page.console_errors == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"]


def test_researcher_requests_access_and_downloads_a_verified_file(fed, console, page, shot):
    app, url = console
    page.goto(f"{url}/login?token={app.sessions.login_token()}")
    page.goto(f"{url}/dataset?id=urn%3Asdn%3Abiscoe%3Ads%3Apenguins")
    page.click("#request-link")
    page.fill("#purpose", "teaching: body size of penguins")
    page.check("#columns input[value=body_mass_g]")
    page.click("#request-access")  # no condition of use accepted: refused, entries kept
    assert "accept the dataset's conditions of use" in page.inner_text("p.problem")
    assert page.input_value("#purpose") == "teaching: body size of penguins"
    assert page.is_checked("#columns input[value=body_mass_g]")
    shot(page, "access-request-refused")
    page.uncheck("#columns input[value=body_mass_g]")  # the whole file
    for box in page.query_selector_all("#conditions input"):
        box.check()
    page.click("#request-access")
    grant = page.inner_text("#new-grant").rsplit(" ", 1)[-1]
    row = page.locator(f"#grants tr[data-grant='{grant}']")
    expect(row).to_contain_text("granted")  # OPEN G1: granted at once
    shot(page, "access-grants")
    row.locator("button.download").click()
    expect(page.locator("#download-verified")).to_be_visible(timeout=120_000)
    node_file = fed.node_dir("biscoe") / "data" / "penguins.csv"
    truth = hashlib.sha256(node_file.read_bytes()).hexdigest()
    assert page.inner_text("#download-sha256") == truth
    saved = page.inner_text("#download-path")
    assert hashlib.sha256(open(saved, "rb").read()).hexdigest() == truth
    assert page.get_attribute("#download-bar", "value") == str(node_file.stat().st_size)
    shot(page, "access-download")
    with page.expect_download() as dl:
        page.click("text=Save a copy from the browser")
    assert hashlib.sha256(open(dl.value.path(), "rb").read()).hexdigest() == truth
    page.click("text=中文")
    shot(page, "access-download-zh")
    assert page.console_errors == [
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"]


def test_researcher_queries_inside_the_node_and_reads_the_answer(fed, console, page, shot):
    app, url = console
    page.goto(f"{url}/login?token={app.sessions.login_token()}")
    page.goto(f"{url}/dataset?id=urn%3Asdn%3Abiscoe%3Ads%3Aweather")
    page.click("#request-link")
    page.select_option("#method", "in_node_service")
    page.fill("#purpose", "rainy days by weather type")
    page.select_option("#study", "weather")
    for box in page.query_selector_all("#conditions input"):
        box.check()
    page.click("#request-access")
    grant = page.inner_text("#new-grant").rsplit(" ", 1)[-1]
    row = page.locator(f"#grants tr[data-grant='{grant}']")
    expect(row).to_contain_text("granted")  # G2 CONDITIONAL service: automatic
    row.locator("a.query").click()
    assert page.inner_text("#grant-state") == "granted"
    sql = ("SELECT weather, count(*) AS n, avg(precipitation) AS rain FROM data "
           "GROUP BY weather")
    page.fill("#sql", sql)
    page.click("#run-query")

    # the answer, opened here, equals pandas on the node's rows; small groups withheld
    shard = fed.weather[fed.weather.date.dt.year.isin(YEARS["biscoe"])]
    k = max(effective("G2", "CONDITIONAL").min_cell_count, MIN_GROUP)
    truth = shard.groupby("weather").precipitation.agg(["count", "mean"])
    shown, small = truth[truth["count"] >= k], truth[truth["count"] < k]
    got = cells(page, "#answer").set_index("weather").sort_index()
    assert got.index.tolist() == shown.index.tolist()
    assert got["n"].astype(int).tolist() == shown["count"].tolist()
    assert got["rain"].astype(float).round(6).tolist() == shown["mean"].round(6).tolist()
    assert page.inner_text("#answer-note") == (
        f"{len(shown)} rows (aggregates, each group of at least {k} rows)")
    assert page.is_visible("#answer-withheld") == bool(len(small))
    shot(page, "service-answer")
    # groups of one row each (a day): every one is below k, so nothing comes out
    page.fill("#sql", "SELECT date, avg(precipitation) AS rain FROM data GROUP BY date")
    page.click("#run-query")
    assert page.is_visible("#answer-empty")
    assert page.inner_text("#answer-withheld").startswith(
        f"{shard.date.nunique()} groups withheld")
    shot(page, "service-withheld")
    page.click("text=中文")  # the same query, asked again in Chinese
    page.fill("#sql", sql)
    page.click("#run-query")
    assert page.inner_text("#answer-note") == (
        f"{len(shown)} 行（汇总结果，每组至少 {k} 行）")
    shot(page, "service-answer-zh")
    page.click("header a.lang")

    # SQL the node does not accept: its message, the query kept to edit
    page.fill("#sql", "SELECT * FROM data")
    page.click("#run-query")
    assert page.inner_text("#query-reason").startswith("in-node service:")
    assert page.input_value("#sql") == "SELECT * FROM data"
    assert not page.is_visible("#answer")
    shot(page, "service-refused")

    # the officer revokes the grant: the node refuses the same honest query
    fed.node_cli("biscoe", "access", "revoke", grant, "--reason", "study ended")
    page.fill("#sql", sql)
    page.click("#run-query")
    assert "revoked" in page.inner_text("#query-reason")
    assert page.inner_text("#grant-state") == "revoked"
    shot(page, "service-revoked")
    assert set(page.console_errors) == {
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"}


def test_scifed_ui_prints_a_login_address_that_works_once(fed, browser, page, shot):
    proc = subprocess.Popen([*CLI, "ui", "--identity", str(fed.researcher_dir), "--port", "0",
                             "--json"], stdout=subprocess.PIPE, text=True, cwd=fed.root,
                            preexec_fn=_die_with_parent)
    try:
        lines: list[str] = []
        while True:  # the JSON object is printed once the socket is bound
            line = proc.stdout.readline()
            assert line, "scifed ui exited before printing its address"
            lines.append(line)
            try:
                printed = json.loads("".join(lines))
                break
            except ValueError:
                continue
        assert printed["researcher"] == "alice"
        assert printed["url"].startswith("http://127.0.0.1:")
        page.goto(printed["login"])
        assert page.inner_text("#found") == "6 datasets"
        assert page.is_visible("text=Signed in as")
        other = browser.new_page()  # the same address again, as someone else would
        other.goto(printed["login"])
        assert other.is_visible("text=Login failed") and not other.is_visible("#found")
        shot(other, "login-refused")
        other.close()
    finally:
        proc.terminate()
        proc.wait(15)


def test_the_job_form_and_a_nodes_refusal_read_in_chinese(fed, console, page, shot):
    """The form's help and its problems, and a refusal the node sends back through the
    coordinator as a call's error, in Chinese; the CLI reads the same refusal in the
    node's English."""
    app, url = console
    page.goto(f"{url}/login?token={app.sessions.login_token()}")
    page.click("header a.lang")
    assert page.get_attribute("html", "lang") == "zh-CN"
    page.goto(f"{url}/submit?study=penguins&type=train")
    expect(page.locator("#p-rounds")).to_be_visible()
    helps = page.locator(".param small").all_inner_texts()
    assert helps and all(re.search(r"[\u4e00-\u9fff]", h) for h in helps), helps
    assert page.inner_text(".param[data-field=rounds] small") == "联邦训练的轮数"
    page.check("#datasets input[value='urn:sdn:biscoe:ds:penguins']")
    page.fill("#p-rounds", "0")
    page.fill("#p-lr", "fast")
    expect(page.locator("#problem-p-rounds")).to_have_text("应大于或等于 1")
    expect(page.locator("#problem-p-lr")).to_have_text("应为数值")
    expect(page.locator("#problem-p-features")).to_have_text("必填项")
    shot(page, "form-zh")

    # a CONDITIONAL dataset asked for without its study: the node refuses
    rid = "urn:sdn:biscoe:ds:weather"
    page.goto(f"{url}/access/request?id={rid.replace(':', '%3A')}")
    page.click("#request-access")  # the console's own check first: no purpose
    assert page.inner_text("p.problem") == "请说明数据将用于什么（用途）"
    page.select_option("#method", "download")
    page.fill("#purpose", "降水的季节变化")
    for box in page.query_selector_all("#conditions input"):
        box.check()
    page.click("#request-access")
    refused = page.inner_text("p.problem")
    assert refused.startswith("节点 biscoe 拒绝") and "研究项目" in refused, refused
    assert page.input_value("#purpose") == "降水的季节变化"
    shot(page, "access-refused-zh")
    with fed.researcher() as r, pytest.raises(grpc.RpcError) as caught:
        ac.request_access(r, rid, method="download", purpose="rain",
                          accept=[c["code"] for c in ac.conditions(r.record(rid))])
    assert caught.value.details().startswith("node biscoe refuses download of")
    assert set(page.console_errors) == {
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"}
