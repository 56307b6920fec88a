"""The node's own sentences on Chinese pages: a policy decision's reason, a delivery
refusal, an alert's reason and a result's disclosure-check notes are made by the node
as a key plus fields (scifed/sentences.py), read in English exactly as before by the CLI
and the logs, and shown in Chinese on a Chinese page, with only the data (names,
numbers, grades) left in English."""

from __future__ import annotations

import json
import re
from html import unescape
from types import SimpleNamespace

import pandas as pd
import pytest
from markupsafe import escape

from cli.ui import messages as ui_messages  # noqa: F401 - the researcher console's text
from node.alerts import RefusalMonitor
from node.console import messages  # noqa: F401 - registers the interface text
from node.console.app import NAV
from node.delivery import rules, service
from node.policy import decide, effective, load_override
from node.review import sentences_in
from node.store import NodeStore
from scifed import sentences
from scifed.errors import UserError
from scifed.sentences import rebuild, say, structure
from scifed.web import i18n
from scifed.web.app import Console
from scifed.web.sessions import SessionStore
from tests.unit.test_node_console_text import english_words

COMMON = ["ada", "officer", "UTC", "scifed"]


def page(packages: list[str], title_key: str, template: str, lang: str, **ctx) -> str:
    console = Console(title_key=title_key, nav=NAV, packages=packages)
    session = SessionStore().create("ada", "officer")
    from node.console.pages import when

    request = SimpleNamespace(url=SimpleNamespace(path="/x"))
    return console.templates.env.get_template(template).render(
        t=i18n.Translator(lang), session=session, nav=NAV, title_key=title_key,
        request=request, notice=None, problem=None, when=when, **ctx)


def node_page(template: str, lang: str, **ctx) -> str:
    return page(["node.console"], "node.title", template, lang, **ctx)


def left_in_english(html: str, data: list[str]) -> list[str]:
    for value in sorted({*data, *COMMON}, key=len, reverse=True):  # a name inside another last
        html = html.replace(value, " ")
    return english_words(html)


def test_every_sentence_has_both_languages_and_the_same_fields():
    assert i18n.check_catalog() == []
    import string

    def names(text: str) -> set[str]:
        return {f for _, f, _, _ in string.Formatter().parse(text) if f}

    differ = {k: (en, zh) for k, (en, zh) in sentences.CATALOG.items() if names(en) != names(zh)}
    assert differ == {}


def test_the_english_text_is_the_nodes_sentence_as_before():
    """What the CLI, the logs and the audit chain read did not change."""
    record = {"security_grade": "G5", "sharing_category": "OPEN", "delivery_methods": []}
    adm = rules.online_access(record, "download", "2026-01-01")
    assert adm.reason == ("G5 OPEN data is never delivered (G5 is important or core data); "
                          "federated jobs are its only use")
    assert json.dumps({"reason": adm.reason}) == json.dumps({"reason": str(adm.reason)})
    again = rebuild(json.loads(json.dumps(structure(adm.reason))))
    assert again == adm.reason and again.key == "rule.never"
    assert structure("a person's own words") is None
    assert i18n.Translator("zh").said("a person's own words") == "a person's own words"


def approval(decision, **extra) -> dict:
    return {"approval_id": "ap-1", "state": "pending", "job_id": "job-1", "job_type": "stats",
            "researcher": "alice", "dataset_id": "urn:sdn:dream:ds:census", "grade": "G3",
            "study_id": "st-1", "reason": str(decision.reason),
            "reason_said": structure(decision.reason), "spec": {}, "decisions": [],
            "created_ms": 1_700_000_000_000, "expires_ms": None,
            "decision": {"outcome": decision.outcome, "rule": decision.rule,
                         "reason": str(decision.reason),
                         "reason_said": structure(decision.reason), "dp": False,
                         "epsilon": None}, **extra}


@pytest.mark.parametrize("override", ["job_types:\n  stats: approval\n",
                                      "approval_required: true\n"])
def test_the_policy_decisions_reason_on_the_approval_page_is_chinese(override):
    pol = effective("G3", "CONDITIONAL", load_override(override, "node console"),
                    say("src.override", source="node console"))
    dec = decide(pol, job_type="stats", n_nodes=3, record={})
    assert dec.outcome == "approval"
    a = approval(dec)
    zh = node_page("approval.html", "zh", a=a, study=None, spec_yaml="{}")
    data = ["ap-1", "job-1", "stats", "alice", "urn:sdn:dream:ds:census", "G3", "st-1",
            "CONDITIONAL", "approval", "node console"]
    assert left_in_english(zh, data) == []
    assert "需要审批" in zh or "要求数据官审批" in zh
    en = node_page("approval.html", "en", a=a, study=None, spec_yaml="{}")
    assert str(escape(dec.reason)) in en  # the English page reads as the CLI does
    lst = node_page("approvals.html", "zh", rows=[a], state="pending")
    assert left_in_english(lst, data) == []


def test_a_denials_reason_is_chinese_too():
    pol = effective("G3", "CONDITIONAL")
    dec = decide(pol, job_type="stats", n_nodes=1, record={})
    assert dec.outcome == "deny" and "needs at least" in dec.reason
    zh = i18n.Translator("zh").said(dec.reason)
    assert "至少需要" in zh and english_words(zh.replace("G3/CONDITIONAL", "")) == []


def test_the_check_fails_on_a_sentence_left_in_english():
    """The ground truth of this file's check: a reason shown as stored text (no key) on a
    Chinese page is English left over."""
    dec = decide(effective("G3", "CONDITIONAL"), job_type="stats", n_nodes=3, record={})
    a = approval(dec)
    a["decision"]["reason_said"] = None
    zh = node_page("approval.html", "zh", a=a, study=None, spec_yaml="{}")
    assert left_in_english(zh, ["ap-1", "job-1", "stats", "alice", "G3", "st-1",
                                "urn:sdn:dream:ds:census", "CONDITIONAL", "approval"])


def test_an_alerts_reason_is_chinese(tmp_path):
    monitor = RefusalMonitor(NodeStore(tmp_path / "node.db"))
    for i in range(3):
        monitor.refused("alice", "urn:sdn:dream:ds:census", f"job-{i}", allowance=10, run=3)
    rows = monitor.list("open")
    assert [r["reason"] for r in rows] == ["3 refused queries in a row (limit 3)"]
    zh = node_page("alerts.html", "zh", rows=rows, state="open")
    assert "连续 3 次被拒查询" in zh
    assert left_in_english(zh, ["alice", "urn:sdn:dream:ds:census"]) == []
    held = monitor.open_alert("alice", "urn:sdn:dream:ds:census", "job-9", allowance=10,
                              run=3)
    assert i18n.Translator("zh").said(say("alert.held", alert=held)) == \
        "告警：连续 3 次被拒查询（上限 3 次）"


def test_a_results_disclosure_check_notes_are_chinese():
    pol = effective("G4", "CONDITIONAL")
    checks = {"pooling": {"k": 10, "min_contributors": 3, "study_members": 3,
                          "release": say("chk.release.dp_at", nodes="dream"),
                          "pooling": say("chk.pool.n", n=3)},
              "min_cell_count": pol.min_cell_count,
              "sources": {"min_cell_count": pol.sources["min_cell_count"]},
              "suppression": say("chk.suppression")}
    why = say("review.own", grade="G4", category="CONDITIONAL",
              src=pol.sources["output_review"])
    stored = json.loads(json.dumps(checks))  # the checks as the node keeps them: text
    assert stored["pooling"]["pooling"] == "3 contributors"
    v = {"review_id": "rv-1", "state": "pending", "job_id": "job-1", "job_type": "stats",
         "researcher": "alice", "dataset_id": "urn:sdn:dream:ds:census", "grade": "G4",
         "category": "CONDITIONAL", "study_purpose": "普查", "why": str(why),
         "result_sha256": "ab" * 32, "view": {}, "checks": stored,
         "said": {"why": structure(why), "checks": sentences_in(checks)}}
    html = node_page("review.html", "zh", v=v, plots={}, checks="")
    assert "3 个贡献方" in html and "在 dream 加差分隐私噪声" in html
    assert "G4/CONDITIONAL 默认值" in html
    data = ["ab" * 32, "job-1", "rv-1", "alice", "stats", "dream",
            "urn:sdn:dream:ds:census", "G4", "CONDITIONAL"]
    assert left_in_english(html, data) == []


def test_a_refused_service_query_is_chinese_on_the_researchers_page():
    frame = pd.DataFrame({"island": ["biscoe"] * 6, "mass": range(6)})
    with pytest.raises(UserError) as caught:
        service.run(frame, "SELECT island, mass FROM data GROUP BY island",
                    rows_allowed=False, k=5)
    reason = caught.value.args[0]
    # as it travels: sealed in the answer as text beside its key and fields
    body = json.loads(json.dumps({"refused": str(caught.value),
                                  "refused_said": structure(reason)}))
    said = rebuild(body["refused_said"])
    assert said == body["refused"]
    grant = SimpleNamespace(grant_id="gr-1", record_id="urn:sdn:dream:ds:weather",
                            dataset_id="urn:sdn:dream:ds:weather", node="dream",
                            state="granted", expires_ms=None, columns=["island", "mass"])
    html = page(["cli.ui"], "ui.title", "access_query.html", "zh", grant=grant,
                sql="SELECT island, mass FROM data GROUP BY island", answer=None,
                refusal=said)
    assert "节点内服务" in html and "被选出但不是分组字段" in html
    data = ["gr-1", "urn:sdn:dream:ds:weather", "dream", "island", "mass",
            "SELECT island, mass FROM data GROUP BY island", "'mass'", "SELECT", "FROM",
            "GROUP BY", "count/sum/avg/stddev/variance", "data", "count", "sum", "avg",
            "stddev", "variance", "x", "SQL"]
    assert left_in_english(html, data) == []


def test_the_scorecards_gates_thresholds_and_dimensions_are_chinese(tmp_path, penguins,
                                                                    penguins_meta):
    """The quality page of the node console: each gate's detail, every threshold and every
    dimension in Chinese, from the report as the node sends it (JSON); the report's
    English reads as before."""
    from node.scorecard import GATES, compute_scorecard
    from tests.unit.test_quality import NOW, register

    meta = {**penguins_meta, "license": "Not-A-Licence"}  # one gate fails: Q8a
    path, record = register(tmp_path, "penguins", penguins.head(60), meta)
    report = json.loads(compute_scorecard(path, record, fast=True, now=NOW)
                        .model_dump_json())
    metrics = report["metrics"]
    assert metrics["Q8a"]["detail"] == "'Not-A-Licence' is not an SPDX licence identifier"
    assert metrics["Q1a"]["threshold"] == "pass ≥ 0.95; warn ≥ 0.8; fail < 0.8"
    assert metrics["Q2b"]["detail"].startswith("the file parses, its ")
    zh = i18n.Translator("zh")
    for m in GATES.values():  # every gate's detail is a sentence, said in Chinese
        r = metrics[m]
        shown = zh.said(r["detail"], r["said"].get("detail"))
        assert shown != r["detail"] and re.search(r"[\u4e00-\u9fff]", shown), (m, shown)
    html = node_page("quality.html", "zh", summary=SimpleNamespace(dataset_id="ds-1"),
                     record={}, run=None, report=report, plots=[])
    read = unescape(html)
    assert "门槛 Q8a 未通过：'Not-A-Licence' 不是 SPDX 许可协议标识" in read
    assert "通过 ≥ 0.95；警告 ≥ 0.8；未通过 < 0.8" in read and "完整性" in read
    gate_rows = re.findall(r"<tr><td>(Q\w+)</td>.*?</tr>", html, re.S)
    assert set(GATES.values()) <= set(gate_rows)
    for row in re.findall(r"<tr><td>Q\w+</td>.*?</tr>", html, re.S):
        metric = re.match(r"<tr><td>(Q\w+)</td>", row).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        dimension, threshold = cells[1], cells[4]
        named = ["sha256", "schema_hash", "SPDX", "LicenseRef-SDN-", "personal_info.status",
                 "none", "anonymized", "mlcroissant", "Not-A-Licence", "G1", "OPEN"]  # names
        assert english_words(dimension) == [], metric
        assert left_in_english(threshold, named) == [], (metric, threshold)
        if metric in GATES.values():
            names = [f.name for f in record.fields]
            assert left_in_english(cells[5], [*names, *named]) == [], (metric, cells[5])
