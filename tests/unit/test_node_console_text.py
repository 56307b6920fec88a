"""The node console speaks Chinese everywhere: no template carries English text of its
own (every label comes from the catalog), every word the node sends as data — a state,
a delivery method, a policy value — has its Chinese term, and the policy page rendered
in Chinese shows no English besides the data it displays."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import pytest

from jobs.registry import names
from node import approvals, review
from node.console import messages  # noqa: F401 - registers the interface text
from node.console.app import NAV
from node.policy import ACCESS_WORDS, SETTINGS, Decision, effective, load_override
from scifed.delivery import METHODS
from scifed.grading import DELIVERY_METHODS, Access, PublicationMode
from scifed.states import StudyStatus
from scifed.web import i18n
from scifed.web.app import Console
from scifed.web.sessions import SessionStore

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = sorted([*(REPO / "node" / "console" / "templates").glob("*.html"),
                    *(REPO / "scifed" / "web" / "templates").glob("*.html")])
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
# code and data blocks, then any tag; a placeholder shows an example of what to type
# (YAML, a path), the same in every language, but alt, title and aria-label are read
CODE = re.compile(r"<(script|style|pre|code|textarea)\b.*?</\1>", re.S)
TAG = re.compile(r"<[^>]*>", re.S)
READ_ATTR = re.compile(r"""\b(?:alt|title|aria-label)=(["'])(.*?)\1""", re.S)
WORD = re.compile(r"[A-Za-z]{2,}")
# names, not English: the product's, file formats', the hash's, and the language switch,
# which names English in English
NOT_ENGLISH_TEXT = {"scifed", "YAML", "JSON", "SHA", "English"}


def english_words(html: str) -> list[str]:
    said = [a.group(2) for a in READ_ATTR.finditer(html)]
    text = re.sub(r"&[a-z]+;|&#\d+;", " ", TAG.sub(" ", CODE.sub(" ", html)))
    return [w for part in (*said, text) for w in WORD.findall(part)
            if w not in NOT_ENGLISH_TEXT]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_no_template_carries_english_text_of_its_own(path):
    assert english_words(JINJA.sub(" ", path.read_text())) == []


def test_the_check_finds_bare_english():
    assert english_words('<th>{{ t("ac.at") }}</th><th>sha256</th>'.replace(
        '{{ t("ac.at") }}', "")) == ["sha"]
    assert english_words('<img alt="a plot">') == ["plot"]
    assert english_words("<pre>min_cell_count: 3</pre><code>key</code>") == []


def test_every_word_the_node_sends_has_its_chinese_term():
    zh = i18n.Translator("zh")
    words = {*approvals.STATES, *review.STATES, *StudyStatus, *METHODS, *DELIVERY_METHODS,
             *get_args(PublicationMode), *ACCESS_WORDS, *(a.name.lower() for a in Access),
             *get_args(Decision.__annotations__["outcome"]),
             "granted", "revoked",          # access grants (node/delivery/desk.py)
             "open", "cleared",             # alerts (node/alerts.py)
             "accepted", "declined",        # this node's answer to a study
             "download", "answer", "offline",  # delivery kinds
             "pass", "warn", "fail",        # scorecard statuses
             "True", "False"}
    missing = sorted(w for w in words if zh.term(w) == w)
    assert missing == []
    assert zh.term("urn:sdn:dream:ds:penguins") == "urn:sdn:dream:ds:penguins"  # data


def test_every_policy_setting_and_origin_has_its_label():
    keys = i18n.catalog_keys()
    assert [s for s in SETTINGS if f"pol.set.{s}" not in keys] == []
    assert {f"pol.origin.{o}" for o in ("default", "override", "auditing")} <= keys


def render(template: str, lang: str, **ctx) -> str:
    console = Console(title_key="node.title", nav=NAV, packages=["node.console"])
    session = SessionStore().create("ada", "officer")
    from node.console.pages import when

    request = SimpleNamespace(url=SimpleNamespace(path="/policy/x"))
    return console.templates.env.get_template(template).render(
        t=i18n.Translator(lang), session=session, nav=NAV, title_key="node.title",
        request=request, notice=None, problem=None, when=when, **ctx)


def test_the_policy_page_in_chinese_shows_english_only_in_its_data():
    text = "min_cell_count: 10\nquery_auditing: true\n"
    pol = effective("G1", "OPEN", load_override(text, "node console"),
                    "override node console")
    shown = {"dataset_id": "urn:sdn:dream:ds:penguins", **pol.as_dict(),
             "override": {"yaml": text, "source": "node console", "set_by": "ada",
                          "justification": "小于十户的村庄", "updated_ms": 1_700_000_000_000}}
    html = render("policy_one.html", "zh", pol=shown, override=text,
                  justification="小于十户的村庄", problems=[])
    data = [shown["dataset_id"], "ada", "officer", "UTC", "G1", "OPEN", *names()]
    visible = html
    for value in data:
        visible = visible.replace(value, " ")
    assert english_words(visible) == []
    assert "覆盖" in html and "由 ada 设定" in html and "最小单元计数" in html
    assert "默认" in html and "开启查询审计后的默认值" in html
    english = render("policy_one.html", "en", pol=shown, override=text,
                     justification="x", problems=[])
    assert "set by ada" in english and "default" in english


def test_a_results_disclosure_checks_are_labelled_in_chinese():
    """The provenance of a result under review (node/release.py's checks), shown as a
    table whose names are Chinese; the node's own sentences stay as it wrote them."""
    import json

    checks = {"release_node": "biscoe",
              "rules": {"k": 10, "min_contributors": 3, "pooling": "3 contributors",
                        "release": "dp at dream", "study_members": 3},
              "policy": {"category": "OPEN", "dataset": "urn:sdn:biscoe:ds:penguins",
                         "decision": "job_types.stats", "dp_required": False,
                         "epsilon_per_query": None, "grade": "G1", "min_cell_count": 1,
                         "min_contributors": 1, "node": "biscoe",
                         "sources": {"min_cell_count": "default G1/OPEN (governance §2.6)"}}}
    why = "this node contributed G4/CONDITIONAL data"
    v = {"review_id": "rv-1", "state": "withheld", "job_id": "job-1", "job_type": "stats",
         "researcher": "alice", "dataset_id": "urn:sdn:dream:ds:census", "grade": "G4",
         "category": "CONDITIONAL", "study_purpose": "普查", "why": why,
         "result_sha256": "ab" * 32, "view": {}, "checks": checks}
    html = render("review.html", "zh", v=v, plots={}, checks=json.dumps(checks))
    assert "发布节点" in html and "最小单元计数（k）" in html and "各值来源" in html
    assert "不予发布" in html and "否" in html  # the state and dp_required: False
    visible, data = html, []
    for value in (why, "ab" * 32, "ada", "officer", "UTC", "job-1", "rv-1", "alice",
                  "stats", "biscoe",
                  "urn:sdn:dream:ds:census", "urn:sdn:biscoe:ds:penguins", "G4/CONDITIONAL",
                  "G1", "OPEN", "job_types.stats", "3 contributors", "dp at dream",
                  "default G1/OPEN (governance §2.6)"):
        data.append(value)
    for value in sorted(data, key=len, reverse=True):  # a name inside another last
        visible = visible.replace(value, " ")
    assert english_words(visible) == []
