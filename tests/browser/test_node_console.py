"""The node console in a real browser, on a real federation on loopback (coordinator and
two nodes as processes with mTLS): an officer logs in with their approver key (a wrong
passphrase, an unknown name and someone else's key are each refused), registers a
dataset from the form (two metadata problems shown at once, then fixed), reads its
profile and scorecard, attaches it to a study, and approves a pending job on its
G1/CLOSED cell, which then runs to a result that matches pandas on the same rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from harness.federation import LocalFederation, wait_for
from node.console.app import build
from scifed.config import NodeConfig, load_config
from scifed.states import StudyStatus
from scifed.web import serve

NODES = {"biscoe": "Palmer Biscoe", "dream": "Palmer Dream", "torgersen": "Palmer Torgersen"}
# dream's second dataset: G4/CONDITIONAL, whose jobs need the officer (three nodes at least)
CENSUS = {"security_grade": "G4", "sharing_category": "CONDITIONAL",
          "conditions_of_use": [{"code": "no_reidentification",
                                 "text": "No attempt to identify individual animals."}],
          "grade_assessment": {
              "factors": {"domain": "ecology", "scale": "population census"},
              "impact_object": "organization_rights", "impact_degree": "general",
              "rationale": "unpublished census of the platform", "assessed_by": "officer",
              "assessed_on": "2026-01-15", "next_review": "2027-01-14"},
          "approvals": [{"type": "important_data_filing", "ref": "F-1", "date": "2026-01-10"}]}
REPO = Path(__file__).resolve().parents[2]
PASSPHRASE = "a passphrase for the test approvers"


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("console"), NODES, task_timeout_seconds=10)
    fed.setup()
    fed.start_all()
    try:
        for node in ("biscoe", "torgersen"):
            fed.add_dataset(node, penguins[penguins.island == node.title()], penguins_meta,
                            "penguins")
        fed.add_dataset("dream", penguins[penguins.island == "Dream"],
                        {**penguins_meta, **CENSUS}, "census")
        fed.add_dataset("dream", penguins[penguins.island == "Dream"], {
            **penguins_meta, "security_grade": "G2", "sharing_category": "CONDITIONAL",
            "conditions_of_use": [{"code": "cite", "text": "Cite Gorman et al."}]}, "cond")
        penguins[penguins.island == "Dream"].to_csv(
            fed.node_dir("dream") / "data" / "penguins.csv", index=False)
        fed.approver("dream")
        fed.approver("dream", "li", "liaison")
        yield fed
    finally:
        fed.stop_all()


@pytest.fixture(scope="module")
def console(fed):
    nc = build(load_config(fed.node_config("dream"), NodeConfig))
    running = serve.start(nc.app)
    yield running.url
    running.stop()


def log_in(page, url: str, name: str, key, passphrase: str = PASSPHRASE) -> None:
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#key_path", str(key))
    page.fill("#passphrase", passphrase)
    page.click("#login button[type=submit]")


def pending(fed, dataset: str = "penguins") -> list[dict]:
    return [a for a in json.loads(fed.node_cli("dream", "approvals", "list", "--json").stdout)
            if a["dataset_id"].endswith(f":{dataset}")]


def test_an_officer_registers_scores_and_approves_in_the_console(fed, console, page, shot,
                                                                 penguins, tmp_path):
    url = console
    officer = fed.approver("dream")
    liaison = fed.approver("dream", "li", "liaison")

    page.goto(url + "/datasets")
    assert "/login" in page.url  # every page is behind login
    shot(page, "login")
    log_in(page, url, "officer", officer, "not the passphrase")
    assert "wrong passphrase" in page.inner_text("[role=alert]")
    shot(page, "login-wrong-passphrase")
    log_in(page, url, "nobody", officer)
    assert "No approver named nobody" in page.inner_text("[role=alert]")
    log_in(page, url, "officer", liaison)
    assert "registered to li, not to officer" in page.inner_text("[role=alert]")
    assert page.context.cookies() == []  # no session for any of the three

    log_in(page, url, "officer", officer)
    assert page.url.endswith("/datasets")
    assert page.is_visible("text=Signed in as")
    assert "officer" in page.inner_text("header .who")
    shot(page, "datasets-empty")

    # Register from the form: two mistakes, both reported at once, then fixed.
    page.click("text=Register a dataset")
    meta = (REPO / "configs" / "datasets" / "penguins.yaml").read_text()
    meta += "delivery_methods: [metadata_only, in_node_service]\n"
    page.fill("#path", "penguins.csv")
    page.fill("#title_en", "Penguins of Dream Island")
    page.select_option("#security_grade", "G1")
    page.select_option("#sharing_category", "CLOSED")
    page.fill("#version", "one")
    page.fill("#contact_email", "desk-at-example")
    (tmp_path / "dream.yaml").write_text(meta)
    page.set_input_files("#meta_file", str(tmp_path / "dream.yaml"))  # the YAML, uploaded
    page.click("#register button[type=submit]")
    problems = page.locator("#problems li").all_inner_texts()
    assert len(problems) == 2, problems
    assert any(p.startswith("version:") for p in problems)
    assert any(p.startswith("contact_point.email:") for p in problems)
    shot(page, "register-two-problems")
    assert page.input_value("#title_en") == "Penguins of Dream Island"  # nothing lost
    assert page.input_value("#meta_yaml") == meta  # the upload, kept to edit
    page.fill("#version", "1.0.0")
    page.fill("#contact_email", "desk@example.org")
    page.click("#register button[type=submit]")
    assert page.inner_text("[role=status]") == "Dataset urn:sdn:dream:ds:penguins registered."
    dream = penguins[penguins.island == "Dream"]
    assert page.inner_text("#datasets").count("penguins") >= 1
    assert str(len(dream)) in page.inner_text("#datasets")
    shot(page, "datasets")

    page.click("#datasets a:text('penguins')")
    profile = page.inner_text("#profile")
    assert "body_mass_g" in profile and str(int(dream.body_mass_g.isna().sum())) in profile
    shot(page, "dataset-profile")
    page.click("text=Quality scorecard")
    page.fill("#metric", "Q5a")
    page.click("#score button[type=submit]")
    assert "justification" in page.inner_text("#error-message")  # an override says why
    page.go_back()
    page.fill("#metric", "Q5d")  # failed: a declared class (Gentoo) is absent
    page.fill("#justification", "Gentoo do not breed on Dream Island")
    page.click("#score button[type=submit]")
    page.wait_for_selector("#quality-grade", timeout=300_000)  # after the progress
    assert page.locator("img.plot").count() == 2
    assert "Q1a" in page.inner_text("#metrics")
    overrides = page.inner_text("#overrides")
    assert "Q5d (fail)" in overrides and "Gentoo do not breed on Dream Island" in overrides
    assert "officer" in overrides  # who overrode it, from the console's login
    shot(page, "scorecard")
    page.click("text=中文")  # the same report in Chinese: dimensions, thresholds, gates
    metrics = page.inner_text("#metrics")
    assert "完整性" in metrics and "通过 ≥ 0.95；警告 ≥ 0.8；未通过 < 0.8" in metrics
    assert "字段与模式一致，且 sha256 与目录一致" in metrics  # Q2b's detail, a gate's
    shot(page, "scorecard-zh")
    page.click("text=English")

    page.click("header nav >> text=Policy")
    assert "default G1/CLOSED" in page.inner_text("main")
    shot(page, "policy")
    page.click("text=Effective policy of urn:sdn:dream:ds:penguins")
    policy_url = page.url
    assert "No override" in page.inner_text("#no-override")
    assert page.locator("#reset").count() == 0  # nothing to reset
    k = page.locator("table.policy tr[data-key=min_cell_count]")
    page.fill("#override", "min_cell_count: 5\n")  # no justification: refused, kept
    page.click("#apply")
    assert "justification" in page.inner_text("ul.problems")
    assert page.input_value("#override") == "min_cell_count: 5\n"
    why = "colonies under five nests identify their owners"
    page.fill("#justification", why)
    page.fill("#override", "min_cell_count: 1\n")  # loosening k = 3 is refused
    page.click("#apply")
    assert "tighten" in page.inner_text("ul.problems")
    assert k.locator("td").nth(1).inner_text() == "3"
    assert "default" in k.locator("td").nth(2).inner_text()
    page.fill("#override", "min_cell_count: 5\n")
    page.click("#apply")
    assert "updated" in page.inner_text("[role=status]")
    assert k.locator("td").nth(1).inner_text() == "5"
    assert "override" in k.locator("td").nth(2).inner_text()
    assert "set by officer" in k.locator("td").nth(2).inner_text()
    nodes = page.locator("table.policy tr[data-key=min_nodes]")
    assert "default G1/CLOSED" in nodes.locator("td").nth(2).inner_text()
    # the override in force, as the node keeps it: its YAML, who, when and why
    assert page.inner_text("#override-yaml").strip() == "min_cell_count: 5"
    assert page.inner_text("#override-by") == "officer"
    assert page.inner_text("#override-why") == why
    assert page.inner_text("#override-at").startswith(dt.datetime.now(dt.UTC).strftime("%Y-"))
    shown = json.loads(fed.node_cli("dream", "policy", "show", "penguins", "--json").stdout)
    assert shown["override"]["set_by"] == "officer"
    assert shown["override"]["justification"] == why
    assert {r["key"]: r["value"] for r in shown["settings"]}["min_cell_count"] == "5"
    shot(page, "policy-tightened")
    page.goto(policy_url)  # a fresh visit: the form holds the override in force, to edit
    assert page.input_value("#override") == "min_cell_count: 5\n"
    assert page.input_value("#justification") == why
    page.click("text=中文")
    assert page.inner_text("#in-force h2") == "当前生效的覆盖"
    assert "由 officer 设定" in k.locator("td").nth(2).inner_text()
    assert "最小单元计数" in k.locator("td").nth(0).inner_text()
    shot(page, "policy-zh")
    page.click("text=English")
    page.click("#reset")  # back to the cell's defaults
    assert "reset" in page.inner_text("[role=status]")
    assert page.is_visible("#no-override") and page.locator("#reset").count() == 0
    assert k.locator("td").nth(1).inner_text() == "3"
    assert "default G1/CLOSED" in k.locator("td").nth(2).inner_text()
    assert json.loads(fed.node_cli("dream", "policy", "show", "penguins",
                                   "--json").stdout)["override"] is None
    page.fill("#override", "min_cell_count: 5\n")  # tightened again for what follows
    page.fill("#justification", why)
    page.click("#apply")
    assert k.locator("td").nth(1).inner_text() == "5"

    # A study: dream attaches its dataset in the console, biscoe with the CLI.
    with fed.operator() as op:
        st = op.create_study("console", "species differences in body mass", ["biscoe",
                                                                              "dream"], 0)
        op.add_researcher("console", "alice")
        fed.node_cli("biscoe", "studies", "accept", st.study_id, "--datasets", "penguins")
        page.click("header nav >> text=Studies")
        card = page.locator(f"#study-{st.study_id}")
        card.locator("input[value='urn:sdn:dream:ds:penguins']").check()
        card.locator("button[value=accept]").click()
        assert "Study console" in page.inner_text("[role=status]")
        wait_for(lambda: op.study("console").status == StudyStatus.ACTIVE, 60,
                 "the study to become active")
    page.goto(url + "/studies")
    shot(page, "studies")

    # A job on dream's G1/CLOSED cell waits for approval; the officer approves it.
    spec = ("study: console\ntype: stats\ndatasets: {biscoe: penguins, dream: penguins}\n"
            "stats: {columns: [body_mass_g], measures: [count, mean]}\n")
    with fed.researcher() as r:
        job = r.submit(spec)
        wait_for(lambda: pending(fed), 30, "the approval request at dream")
        page.click("header nav >> text=Approvals")
        assert job in page.inner_text("#approvals")
        shot(page, "approvals")
        page.click("#approvals a")
        assert page.inner_text("#purpose") == "species differences in body mass"
        assert "approval" in page.inner_text("#policy-decision")
        assert "No DP noise" in page.inner_text("#privacy-cost")
        assert "body_mass_g" in page.inner_text("#spec")
        shot(page, "approval")
        page.fill("#expires", "1d")
        page.click("#approve button[type=submit]")
        assert page.inner_text("#approval-state") == "approved"
        assert "signed by officer" in page.inner_text("[role=status]")
        shot(page, "approved")
        info = r.wait(job, timeout=90)
        assert info.status == "done", info.error
        res = r.result(job)
    pooled = penguins[penguins.island.isin(["Biscoe", "Dream"])].body_mass_g
    assert res.summary.loc["body_mass_g", "count"] == pooled.count()
    assert res.summary.loc["body_mass_g", "mean"] == pytest.approx(pooled.mean(), rel=1e-9)
    (decided,) = [a for a in json.loads(fed.node_cli("dream", "approvals", "list", "--state",
                                                     "all", "--json").stdout)]
    assert decided["decisions"][0]["by"] == "officer"  # signed with the officer's key

    page.click("header nav >> text=Budget")
    assert "penguins" in page.inner_text("#budget")
    shot(page, "budget")
    page.click("header nav >> text=Audit log")
    assert "approval.decide" in page.inner_text("#audit") or \
        "approval" in page.inner_text("#audit")
    page.fill("#q", "dataset.add")
    page.click("#audit-filter button:text('Filter')")
    added = page.locator("#audit tr", has_text="dataset.add").all_inner_texts()
    shot(page, "audit-filtered")
    assert len(added) == 3, page.inner_text("#audit")  # two by the CLI, penguins here
    assert "officer" in next(r for r in added if "ds:penguins" in r)
    page.click("#audit-filter button[name=verify]")
    assert "Audit chain intact" in page.inner_text("#verified")
    shot(page, "audit")
    with page.expect_download() as dl:
        page.click("text=Export JSONL")
    lines = open(dl.value.path(), encoding="utf-8").read().splitlines()
    assert json.loads(lines[0])["seq"] == 1
    page.click("header nav >> text=Alerts")
    shot(page, "alerts")
    page.click("text=中文")
    assert page.inner_text("h1") == "告警"
    shot(page, "alerts-zh")
    page.click("header nav >> text=数据集")
    shot(page, "datasets-zh")
    # no script failed (the refusals above are pages with status 400/401, not errors)
    assert [e for e in page.console_errors if not e.startswith("Failed to load")] == []


def held(fed) -> list[dict]:
    return json.loads(fed.node_cli("dream", "review", "list", "--json").stdout)


def test_a_liaison_cannot_approve_what_needs_the_officer(fed, console, page, shot):
    """G4 data needs the officer: the liaison's signed approval is refused by the node,
    the console shows the node's reason, and the request stays pending; the officer's
    approval then lets the job run; its pooled result is held for the officer's output
    review and released in the console; the budget page shows the ε it charged."""
    with fed.operator() as op:
        st = op.create_study("census", "census trends", ["biscoe", "dream", "torgersen"], 0)
        op.add_researcher("census", "alice")
        for node, dataset in (("biscoe", "penguins"), ("dream", "census"),
                              ("torgersen", "penguins")):
            fed.node_cli(node, "studies", "accept", st.study_id, "--datasets", dataset)
        wait_for(lambda: op.study("census").status == StudyStatus.ACTIVE, 60,
                 "the study to become active")
    spec = ("study: census\ntype: stats\n"
            "datasets: {biscoe: penguins, dream: census, torgersen: penguins}\n"
            "stats: {columns: [body_mass_g], measures: [count]}\n")
    with fed.researcher() as r:
        job = r.submit(spec)
        wait_for(lambda: pending(fed, "census"), 60, "the approval request for census")
        log_in(page, url := console, "li", fed.approver("dream", "li", "liaison"))
        assert "li" in page.inner_text("header .who") and "liaison" in \
            page.inner_text("header .who")
        (req,) = pending(fed, "census")
        page.goto(f"{url}/approvals/{req['approval_id']}")
        assert "G4" in page.inner_text("main")
        assert "ε = 0.5" in page.inner_text("#privacy-cost")  # the G4 cell's DP per query
        page.click("#approve button[type=submit]")
        assert "a liaison may decide up to G3" in page.inner_text("[role=alert]")
        assert page.inner_text("#approval-state") == "pending"
        shot(page, "liaison-refused")
        (still,) = pending(fed, "census")
        assert still["decisions"] == []

        # The officer approves it: the job runs under the G4 cell's DP and is charged.
        page.click("text=Log out")
        log_in(page, url, "officer", fed.approver("dream"))
        page.goto(f"{url}/approvals/{req['approval_id']}")
        page.click("#approve button[type=submit]")
        assert page.inner_text("#approval-state") == "approved"
        # G4 is reviewed before it leaves: the officer sees the pooled result, releases it.
        wait_for(lambda: held(fed), 90, "the result held for output review at dream")
        page.click("header nav >> text=Review")
        page.click("#reviews a")
        assert "body_mass_g" in page.inner_text("#review-result")
        shot(page, "review")
        page.click("#release button[type=submit]")
        assert page.inner_text("#review-state") == "released"
        info = r.wait(job, timeout=90)
        assert info.status == "done", info.error
    page.click("header nav >> text=Budget")
    census = page.locator("#budget tr", has_text="ds:census").inner_text()
    assert "0.5" in census and "alice 0.5" in census and "3.5" in census  # of 4.0 a year
    assert page.is_visible("#budget-chart")
    shot(page, "budget-charged")


def test_an_officer_decides_access_and_records_an_offline_transfer(fed, console, page, shot):
    """Delivery: a researcher's request for CONDITIONAL data waits; the officer approves
    it in the console with conditions and an expiry, the download then equals the node's
    column subset (pandas) and its hash is listed; CLOSED data leaves only by an offline
    transfer, recorded here under the officer's signature."""
    import hashlib

    import pandas as pd

    url = console
    fed.create_study("delivery", {"dream": "cond"})
    ident = ("--identity", str(fed.researcher_dir), "--json")
    grant = json.loads(fed.cli(
        "access", "request", "urn:sdn:dream:ds:cond", "--purpose", "morphometrics",
        "--accept", "cite", "--accept", "license:CC0-1.0", "--study", "delivery",
        "--columns", "species,body_mass_g", "--format", "csv", *ident).stdout)
    assert grant["state"] == "pending"
    log_in(page, url, "officer", fed.approver("dream"))
    page.click("header nav >> text=Access")
    assert grant["grant_id"] in page.inner_text("#grants")
    page.click(f"#grants a:text('{grant['grant_id']}')")
    assert page.inner_text("#grant-purpose") == "morphometrics"
    shot(page, "access-request")
    page.fill("#conditions", "no onward transfer")
    page.fill("#grant-expires", "7d")
    page.click("#grant-approve button[type=submit]")
    assert page.inner_text("#grant-state") == "granted"
    assert page.inner_text("#grant-conditions") == "no onward transfer"
    out = fed.root / "cond.csv"
    got = json.loads(fed.cli("access", "download", grant["grant_id"], "--out", str(out),
                             *ident).stdout)
    truth = pd.read_csv(fed.node_dir("dream") / "data" / "cond.csv")[["species",
                                                                      "body_mass_g"]]
    pd.testing.assert_frame_equal(pd.read_csv(out), truth)
    assert got["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    page.reload()  # the decision was redirected to this page: a reload sends nothing again
    assert got["sha256"] in page.inner_text("table.deliveries")
    shot(page, "access-granted")

    disk = (fed.node_dir("dream") / "data" / "penguins.csv").read_bytes()
    page.click("header nav >> text=Access")
    page.click("text=Record an offline transfer")
    page.select_option("#dataset_id", "urn:sdn:dream:ds:penguins")
    page.fill("#recipient", "alice (Zhejiang Univ.)")
    page.fill("#what", "penguins.csv, all columns")
    page.fill("#medium", "encrypted USB disk, by hand")
    page.fill("#sha256", hashlib.sha256(disk).hexdigest())
    shot(page, "offline-form")
    page.click("#offline button[type=submit]")
    assert "recorded" in page.inner_text("[role=status]")
    row = page.locator("table.deliveries tr", has_text=hashlib.sha256(disk).hexdigest())
    assert "alice (Zhejiang Univ.)" in row.inner_text()
    shot(page, "access")

    # The same tables in Chinese: every label and every state or method word translated.
    page.click("text=中文")
    assert page.inner_text("h1") == "数据访问申请与交付"
    listed = page.locator("#grants tr", has_text=grant["grant_id"]).inner_text()
    assert "已授权" in listed and "granted" not in listed
    kinds = page.locator("table.deliveries").inner_text()
    assert "线下" in kinds and "下载" in kinds and "SHA-256 哈希" in kinds
    shot(page, "access-zh")
    page.click(f"#grants a:text('{grant['grant_id']}')")
    assert page.inner_text("#grant-state") == "已授权"
    assert "研究者签名的申请" in page.inner_text("main")
    shot(page, "grant-zh")
    page.goto(url + "/access-offline")
    assert page.inner_text("h1") == "登记线下交付"
    shot(page, "offline-zh")


@pytest.fixture(scope="module")
def reviewed(fed) -> str:
    """A study over dream's G4 census: each job needs dream's officer, and its pooled
    result their output review before it leaves."""
    fed.create_study("reviewed", {"biscoe": "penguins", "dream": "census",
                                  "torgersen": "penguins"}, purpose="census decline")
    return "reviewed"


@pytest.fixture
def researcher_page(fed, browser, tmp_path):
    """The researcher's own console (`scifed ui`) in a browser page of its own."""
    from cli.ui.app import build as build_ui

    app, client = build_ui(fed.researcher_dir, downloads=tmp_path / "downloads")
    running = serve.start(app.app)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(f"{running.url}/login?token={app.sessions.login_token()}")
    pg.ui_url = running.url
    yield pg
    ctx.close()
    running.stop()
    client.close()


CENSUS_JOB = ("study: reviewed\ntype: stats\n"
              "datasets: {biscoe: penguins, dream: census, torgersen: penguins}\n"
              "stats: {columns: [body_mass_g], measures: [count]}\n")


def audit_entries(fed, action: str) -> list[dict]:
    return [e for e in json.loads(fed.node_cli("dream", "audit", "list", "--json").stdout)
            if e["action"] == action]


def open_census_approval(fed, r, page, url) -> tuple[str, dict]:
    """Submit the census job, wait for dream's approval request, and open it logged in as
    dream's officer: the job id and the request."""
    job = r.submit(CENSUS_JOB)
    wait_for(lambda: [a for a in pending(fed, "census") if a["job_id"] == job], 60,
             "the approval request for the census job")
    (req,) = [a for a in pending(fed, "census") if a["job_id"] == job]
    log_in(page, url, "officer", fed.approver("dream"))
    page.goto(f"{url}/approvals/{req['approval_id']}")
    return job, req


def test_an_officer_denies_a_job_with_a_reason(fed, console, reviewed, page, shot,
                                               researcher_page):
    """The officer denies a held job in the console with a reason: the researcher's
    console shows the job failed with that reason from dream, nothing was computed, and
    the audit log holds the decision signed with the officer's registered key."""
    from scifed.approver_keys import fingerprint, load_key, public_pem

    url = console
    reason = "the census may not be pooled with Biscoe before its publication"
    with fed.researcher() as r:
        job, req = open_census_approval(fed, r, page, url)
        page.click("#deny button[type=submit]")  # a denial without a reason: refused
        assert "needs a reason" in page.inner_text("#error-message")
        assert pending(fed, "census")[0]["decisions"] == []
        page.goto(f"{url}/approvals/{req['approval_id']}")
        page.fill("#reason", reason)
        shot(page, "deny-form")
        page.click("#deny button[type=submit]")
        assert page.inner_text("#approval-state") == "denied"
        assert "signed by officer" in page.inner_text("[role=status]")
        assert reason in page.inner_text("main")  # in the decisions so far
        shot(page, "denied")
        info = r.wait(job, timeout=90)
    assert info.status == "failed" and reason in info.error

    researcher_page.goto(f"{researcher_page.ui_url}/jobs/{job}")
    researcher_page.wait_for_selector("#job-status [data-status=failed]")
    error = researcher_page.inner_text("#job-error")
    assert reason in error and "dream" in error and "denied" in error
    assert researcher_page.locator("#see-result").count() == 0
    shot(researcher_page, "researcher-sees-denied")
    assert [c for c in audit_entries(fed, "budget.charge") if c["details"].get(
        "job_id") == job] == []  # nothing was computed, nothing charged

    (entry,) = [e for e in audit_entries(fed, "approval.deny")
                if e["details"]["approval_id"] == req["approval_id"]]
    officer_key = fingerprint(public_pem(load_key(fed.approver("dream"),
                                                  PASSPHRASE.encode())))
    assert entry["actor"] == "officer" and entry["details"]["key"] == officer_key
    assert entry["details"]["reason"] == reason and entry["details"]["signature"]
    page.click("header nav >> text=Audit log")
    page.fill("#q", "approval.deny")
    page.click("#audit-filter button:text('Filter')")
    page.click("#audit-filter button[name=verify]")
    assert "Audit chain intact" in page.inner_text("#verified")
    row = page.locator("#audit tr", has_text="approval.deny").first
    assert "officer" in row.inner_text()
    row.locator("summary").click()
    details = row.locator("pre.details").inner_text()
    assert reason in details and officer_key in details and "signature" in details
    shot(page, "audit-denial")


def test_an_officer_withholds_a_result_under_review(fed, console, reviewed, page, shot,
                                                    researcher_page):
    """The officer approves a census job, then withholds its pooled result in output
    review: the researcher's console shows the job withheld with no result to open, the
    client has no result either, and the audit log holds the signed withholding over the
    result's hash."""
    url = console
    reason = "the count of the census is below what the platform publishes"
    with fed.researcher() as r:
        job, req = open_census_approval(fed, r, page, url)
        page.click("#approve button[type=submit]")
        assert page.inner_text("#approval-state") == "approved"
        wait_for(lambda: [v for v in held(fed) if v["job_id"] == job], 90,
                 "the census result held for output review")
        (v,) = [v for v in held(fed) if v["job_id"] == job]
        researcher_page.goto(f"{researcher_page.ui_url}/jobs/{job}")
        researcher_page.wait_for_selector("#phase-note")  # "in output review"
        shot(researcher_page, "researcher-sees-in-review")

        page.goto(f"{url}/review/{v['review_id']}")
        assert "body_mass_g" in page.inner_text("#review-result")
        page.fill("#withhold-reason", reason)
        shot(page, "withhold-form")
        page.click("#withhold button[type=submit]")
        assert page.inner_text("#review-state") == "withheld"
        assert "withheld, signed by officer" in page.inner_text("[role=status]")
        assert page.locator("#release").count() == 0  # decided: no second decision
        shot(page, "withheld")
        info = r.wait(job, timeout=90)
        assert info.status == "withheld" and reason in info.error
        with pytest.raises(Exception, match="withheld"):
            r.result(job)  # nothing was released

    researcher_page.goto(f"{researcher_page.ui_url}/jobs/{job}")
    researcher_page.wait_for_selector("#job-status [data-status=withheld]")
    assert reason in researcher_page.inner_text("#job-error")
    assert researcher_page.locator("#see-result").count() == 0
    shot(researcher_page, "researcher-sees-withheld")
    (entry,) = [e for e in audit_entries(fed, "review.withhold")
                if e["details"]["review_id"] == v["review_id"]]
    assert entry["actor"] == "officer" and entry["details"]["reason"] == reason
    assert entry["details"]["result_sha256"] == v["result_sha256"]
    assert [e for e in audit_entries(fed, "review.release")
            if e["details"]["job_id"] == job] == []
    page.goto(f"{url}/review?state=all")
    assert "withheld" in page.locator("#reviews tr", has_text=job).inner_text()
    page.click("text=中文")  # the switch comes back to the path: all reviews again
    page.goto(f"{url}/review?state=all")
    assert "不予发布" in page.locator("#reviews tr", has_text=job).inner_text()
    shot(page, "reviews-zh")
    page.goto(f"{url}/review/{v['review_id']}")
    checks = page.inner_text("#review-checks")  # the result's provenance, labelled
    assert "发布节点" in checks and "最小单元计数（k）" in checks and "biscoe" in checks
    shot(page, "review-zh")
