"""The operator's console in a real browser against a real federation on loopback: a
coordinator and two nodes as processes with mTLS, a study, a released job and a refused
one, a revoked researcher; the console is `scifed operator console` with the operator's
identity directory, as a process.

The operator logs in by the one-time address the console prints, sees both nodes online
with the audit head each node itself holds, stops one node's process by its PID and
watches the page (never reloaded) show it offline at a refresh; the studies page shows
members, answers and key epoch as the coordinator has them; the jobs page shows each
job's state and neither the result nor the reason the node sealed to the researcher; the
revocations page names the revoked researcher with the serial the CA's own index holds.
Every page is saved as a screenshot, in English and one in Chinese."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from harness.federation import CLI, LocalFederation, wait_for

NODES = {"alpha": "Alpha Marine Lab", "beta": "Beta Polar Institute"}
ISLAND = {"alpha": "Biscoe", "beta": "Dream"}
REFRESH_S = 1.0


def job_yaml(**spec) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


@pytest.fixture(scope="module")
def fed(tmp_path_factory, penguins, penguins_meta):
    fed = LocalFederation(tmp_path_factory.mktemp("opui"), NODES, heartbeat_seconds=0.5,
                          offline_after_seconds=2.0, task_timeout_seconds=10)
    fed.setup()
    fed.start_all()
    try:
        for node, island in ISLAND.items():
            fed.add_dataset(node, penguins[penguins.island == island], penguins_meta,
                            "penguins")
        fed.pooled = penguins[penguins.island.isin(ISLAND.values())].body_mass_g.dropna()
        fed.create_study("seabirds", {n: "penguins" for n in NODES},
                         purpose="penguin morphology across islands")
        spec = {"study": "seabirds", "type": "stats",
                "datasets": {n: "penguins" for n in NODES}}
        with fed.researcher() as r:
            fed.done_job = r.submit(job_yaml(**spec, stats={"columns": ["body_mass_g"]}))
            fed.done_info = r.wait(fed.done_job, timeout=120)
            fed.result = r.result_json(fed.done_job)
            # a node refuses it (a text column has no mean); its reason is sealed to alice
            fed.refused_job = r.submit(job_yaml(**spec, stats={"columns": ["species"]}))
            fed.refused_info = r.wait(fed.refused_job, timeout=120)
        # mallory calls the coordinator once, then the CA revokes her certificate
        from coordinator.client import Client

        with Client(fed.add_researcher("mallory")) as c:
            assert c.whoami()["name"] == "mallory"
        fed.cli("ca", "revoke", "--name", "mallory", "--role", "researcher", "--ca-dir",
                str(fed.ca_dir))
        with fed.operator() as op:
            wait_for(lambda: any(x.name == "mallory" for x in op.revocations().revoked), 30,
                     "the coordinator to enforce the new CRL")
        yield fed
    finally:
        fed.stop_all()


@pytest.fixture(scope="module")
def opconsole(fed):
    """`scifed operator console` as the operator starts it, on a free port; yields the
    one-time login address it prints. Stopped by its PID."""
    proc = subprocess.Popen([*CLI, "operator", "console", "--identity", str(fed.operator_dir),
                             "--port", "0", "--refresh", str(REFRESH_S), "--json"],
                            cwd=fed.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        printed = ""
        while True:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"the console did not start: {proc.stderr.read()}")
            printed += line
            if line.startswith("}"):
                break
        yield json.loads(printed)
    finally:
        proc.terminate()
        proc.wait(15)


def text_of(page, selector: str) -> str:
    return " ".join(page.inner_text(selector).split())


def test_operator_watches_the_federation(fed, opconsole, page, shot):
    url, login = opconsole["url"], opconsole["login"]
    assert fed.done_info.status == "done", fed.done_info.error
    assert fed.refused_info.status == "failed"

    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.goto(url + "/nodes")
    assert "/login" in page.url  # behind login
    page.goto(login)  # the one-time address the console printed
    assert page.url.endswith("/nodes")
    assert page.evaluate("typeof htmx") == "object"

    # -- nodes: both online, each with the audit head the node itself holds --------------
    for node in NODES:
        page.wait_for_selector(f'tr[data-node="{node}"] .status .badge.ok')
    for node in NODES:
        entries = json.loads(fed.node_cli(node, "audit", "list", "--json").stdout)
        last = entries[-1]

        def shows_head(node=node, last=last) -> bool:
            return f"#{last['seq']} {last['hash'][:12]}" in text_of(
                page, f'tr[data-node="{node}"]')

        wait_for(shows_head, 15, f"{node}'s audit head on the page")
    row = text_of(page, 'tr[data-node="alpha"]')
    assert "Alpha Marine Lab" in row and "online" in row
    assert "2 of 2 nodes online" in text_of(page, "#nodes-summary")
    shot(page, "nodes-online")

    # -- a node process stops (by its PID): the page, never reloaded, shows it offline --
    page.evaluate("window.stillTheSamePage = true")
    assert fed.stop("beta") == 0
    page.wait_for_selector('tr[data-node="beta"] .status .badge.bad', timeout=20_000)
    assert page.evaluate("window.stillTheSamePage") is True  # htmx swapped it in place
    assert "offline" in text_of(page, 'tr[data-node="beta"]')
    assert "online" in text_of(page, 'tr[data-node="alpha"] .status')
    assert "1 of 2 nodes online" in text_of(page, "#nodes-summary")
    shot(page, "nodes-one-offline")

    # -- studies: members, their answers, key epoch, as the coordinator holds them -------
    page.click("nav >> text=Studies")
    with fed.operator() as op:
        study = op.study("seabirds")
    row = text_of(page, 'tr[data-study="seabirds"]')
    assert study.study_id in row and "active" in row and "2 / 2" in row
    assert study.key_version >= 1
    assert text_of(page, 'tr[data-study="seabirds"] .key-epoch') == str(study.key_version)
    for node in NODES:
        assert "accepted" in text_of(page, f'tr[data-study="seabirds"] [data-member="{node}"]')
    assert "alice" in row and study.lead_node in row
    shot(page, "studies")

    # -- jobs: states, never a result or a node's sealed reason --------------------------
    page.click("nav >> text=Jobs")
    # a loaded host may make one listing time out; the page keeps asking until it answers
    page.wait_for_selector(f'tr[data-job="{fed.done_job}"]', timeout=90_000)
    done = text_of(page, f'tr[data-job="{fed.done_job}"]')
    refused = text_of(page, f'tr[data-job="{fed.refused_job}"]')
    assert "done" in done and "alice" in done and "stats" in done
    assert "failed" in refused
    html = page.content()
    reason = fed.refused_info.error  # opened by alice with her seal key
    assert "species" in reason and reason not in html
    opened = [t.detail for t in fed.refused_info.tasks if t.sealed_reason]
    assert opened and all(d and d not in html for d in opened)  # each node's own reason
    body = fed.result["columns"]["body_mass_g"]  # what alice opened: pooled pandas's
    assert body["mean"] == pytest.approx(fed.pooled.mean(), rel=1e-9)
    for value in (body["mean"], body["std"]):
        assert not [x for x in (repr(value), f"{value:.1f}", f"{value:.2f}") if x in html]
    with fed.operator() as op:  # the reply itself carries no tasks, progress or result
        listed = {j.job_id: j for j in op.all_jobs()}
    assert {fed.done_job, fed.refused_job} <= set(listed)
    assert all(not j.tasks and not j.progress for j in listed.values())
    shot(page, "jobs")
    page.select_option("#status", "failed")
    page.click("form.filters button")
    page.wait_for_selector(f'tr[data-job="{fed.refused_job}"]')
    assert page.query_selector(f'tr[data-job="{fed.done_job}"]') is None
    shot(page, "jobs-failed")

    # -- revocations: the revoked researcher, with the serial of the CA's own index ------
    page.click("nav >> text=Revocations")
    ca = json.loads(fed.cli("ca", "list", "--json", "--ca-dir", str(fed.ca_dir)).stdout)
    serial = next(f"{e['serial']:x}" for e in ca if e["name"] == "mallory")
    row = text_of(page, f'tr[data-serial="{serial}"]')
    assert "mallory" in row and "researcher" in row
    assert "CRL number" in text_of(page, "#crl")
    cli = json.loads(fed.cli("operator", "revocations", "--identity", str(fed.operator_dir),
                             "--json").stdout)  # the page and the command show one list
    shown = {el.get_attribute("data-serial") for el in page.query_selector_all("#revoked tr")
             if el.get_attribute("data-serial")}
    assert shown == {r["serial"] for r in cli["revoked"]} and serial in shown
    shot(page, "revocations")

    # -- the same page in Chinese --------------------------------------------------------
    page.click("text=中文")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert "研究人员" in text_of(page, f'tr[data-serial="{serial}"]')
    page.click("nav >> text=节点")
    page.wait_for_selector('tr[data-node="beta"] .status .badge.bad')
    assert "离线" in text_of(page, 'tr[data-node="beta"]')
    shot(page, "nodes-zh")
    assert missing == [] and page.console_errors == []

    # -- the coordinator stops: the page says so in place, and keeps asking --------------
    page.click("text=English")
    assert fed.stop("coordinator") == 0
    page.wait_for_selector("#unreachable", timeout=30_000)
    assert "cannot reach the coordinator" in text_of(page, "#unreachable")  # and why
    assert page.evaluate("typeof htmx") == "object"
    shot(page, "coordinator-unreachable")


def test_the_login_address_works_once_and_only_an_operator_serves_it(fed, opconsole, page):
    """Whoever opens the printed address first is the operator; it opens nothing again.
    A researcher's identity directory starts no operator console."""
    refused = fed.cli("operator", "console", "--identity", str(fed.researcher_dir), "--port",
                      "0", check=False)
    assert refused.returncode == 1 and "needs an operator's" in refused.stderr
    page.goto(opconsole["login"])
    assert "/login" in page.url and page.is_visible("text=Login failed")
    page.goto(opconsole["url"] + "/jobs")
    assert "/login" in page.url

