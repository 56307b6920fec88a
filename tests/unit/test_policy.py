"""The policy engine: one test per cell of the default matrix (governance §2.6), overrides
that may only tighten, and the tables of docs/governance.md §2.6 read against the code's
matrix (`scifed/grading.py`), so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.registry import names
from node.policy import DEFAULTS, decide, effective, load_override
from scifed.errors import UserError
from scifed.grading import CELL_DEFAULTS, POLICY_MATRIX, VALID_PAIRS, Access, min_cell_count

# (grade, category) -> expected outcome for (stats, train) as the matrix reads.
EXPECTED = {
    ("G1", "OPEN"): ("allow", "allow"),
    ("G1", "CONDITIONAL"): ("allow", "allow"),
    ("G1", "CLOSED"): ("approval", "approval"),
    ("G2", "OPEN"): ("allow", "allow"),
    ("G2", "CONDITIONAL"): ("allow", "allow"),
    ("G2", "CLOSED"): ("approval", "approval"),
    ("G3", "CONDITIONAL"): ("allow", "allow"),
    ("G3", "CLOSED"): ("approval", "approval"),
    ("G4", "CONDITIONAL"): ("approval", "approval"),
    ("G4", "CLOSED"): ("approval", "deny"),
    ("G5", "CONDITIONAL"): ("approval", "approval"),
    ("G5", "CLOSED"): ("deny", "deny"),
    ("G6", "CLOSED"): ("deny", "deny"),
}
K = {"G1": {"OPEN": 1, "CONDITIONAL": 3, "CLOSED": 3}, "G2": {"OPEN": 3},
     "G3": {}, "G4": {}, "G5": {}}


def test_matrix_covers_exactly_the_valid_pairs():
    assert set(DEFAULTS) == set(VALID_PAIRS) == set(EXPECTED)


@pytest.mark.parametrize("cell", sorted(EXPECTED), ids=lambda c: f"{c[0]}-{c[1]}")
def test_each_cell_decides_as_the_matrix_says(cell):
    grade, category = cell
    pol = effective(grade, category)
    for job_type, expected in zip(("stats", "train"), EXPECTED[cell], strict=True):
        # where training needs DP-SGD, the access rule is read with an ε under the cap
        eps = 1.0 if job_type == "train" and pol.fl_dp_required and expected != "deny" else None
        dec = decide(pol, job_type=job_type, n_nodes=5, record={}, now_date="2026-06-01",
                     requested_epsilon=eps)
        assert dec.outcome == expected, (cell, job_type, dec)
        if eps is not None:
            plain = decide(pol, job_type=job_type, n_nodes=5, record={},
                           now_date="2026-06-01")
            assert (plain.outcome, plain.rule) == ("deny", "fl_dp_required")
        if expected == "deny":
            assert f"{grade}/{category}" in dec.reason
    # Parameters of the default table.
    k_default = {"G1": 3, "G2": 5}.get(grade, 10)
    assert pol.min_cell_count == K.get(grade, {}).get(category, k_default)
    assert pol.min_nodes == {"G1": 1, "G2": 2}.get(grade, 3)
    assert pol.he_required == (grade >= "G3")
    assert pol.query_auditing == (grade >= "G2")
    assert pol.agg_dp_required == (cell in {("G4", "CONDITIONAL"), ("G5", "CONDITIONAL"),
                                            ("G5", "CLOSED"), ("G6", "CLOSED")})
    if grade in ("G3", "G4", "G5"):
        assert pol.epsilon_per_query == {"G3": 1.0}.get(grade, 0.5)
        assert pol.annual_budget == {"G3": 10.0, "G4": 4.0, "G5": 2.0}[grade]


def test_dp_is_applied_with_the_per_query_cap():
    pol = effective("G4", "CONDITIONAL")
    dec = decide(pol, job_type="stats", n_nodes=3, record={})
    assert dec.dp and dec.epsilon == 0.5 and dec.outcome == "approval"
    too_much = decide(pol, job_type="stats", n_nodes=3, record={}, requested_epsilon=2.0)
    assert too_much.outcome == "deny" and "per-query cap" in too_much.reason


def test_min_nodes_embargo_and_expired_approvals_deny():
    pol = effective("G3", "CONDITIONAL")
    assert decide(pol, job_type="stats", n_nodes=2, record={}).rule == "min_nodes"
    emb = decide(effective("G1", "OPEN"), job_type="stats", n_nodes=1,
                 record={"embargo_until": "2099-01-01"})
    assert emb.outcome == "deny" and "embargo" in emb.reason
    old = decide(pol, job_type="stats", n_nodes=3, now_date="2026-06-01",
                 record={"approvals": [{"type": "ethics", "ref": "E-1", "expires": "2026-01-01"}]})
    assert old.outcome == "deny" and "E-1" in old.reason


def test_override_tightens_and_names_its_source():
    ov = load_override("job_types: {stats: approval, train: forbidden}\nmin_cell_count: 20\n"
                       "dp: {required: true, epsilon_per_query: 0.2, annual_budget: 3}\n", "o.yaml")
    pol = effective("G3", "CONDITIONAL", ov, "override o.yaml")
    assert pol.min_cell_count == 20 and pol.sources["min_cell_count"] == "override o.yaml"
    assert pol.sources["min_nodes"].startswith("default G3/CONDITIONAL")
    assert decide(pol, job_type="stats", n_nodes=3, record={}).outcome == "approval"
    assert decide(pol, job_type="train", n_nodes=3, record={}).outcome == "deny"
    assert {r[0] for r in pol.rows()} >= {f"job type {j}" for j in names()}


@pytest.mark.parametrize("text,needle", [
    ("min_cell_count: 2", "min_cell_count"),
    ("job_types: {stats: automatic}", "job_types.stats"),
    ("dp: {epsilon_per_query: 5}", "dp.epsilon_per_query"),
    ("he_required: false", "he_required"),
    ("min_nodes: 1", "min_nodes"),
])
def test_a_loosening_override_is_refused_with_the_rule_named(text, needle):
    ov = load_override(text, "loose.yaml")
    with pytest.raises(UserError) as exc:
        effective("G3", "CLOSED", ov)
    assert needle in str(exc.value) and "only tighten" in str(exc.value)


@pytest.mark.parametrize("text,needle", [
    ("colour: red", "colour"),
    ("min_cell_count: lots", "min_cell_count"),
    ("job_types: {stats: sometimes}", "job_types.stats"),
    ("dp: {epsilon_per_query: -1}", "dp.epsilon_per_query"),
    ("- a list", "mapping"),
    ("a: [unclosed", "YAML"),
])
def test_bad_override_yaml_gives_one_clear_message(text, needle):
    with pytest.raises(UserError) as exc:
        load_override(text, "bad.yaml")
    assert needle in str(exc.value) and "bad.yaml" in str(exc.value)


# -- the refused-query allowance (governance §2.5 "Refusals count") -----------------------
@pytest.mark.parametrize("cell", sorted(EXPECTED), ids=lambda c: f"{c[0]}-{c[1]}")
def test_cells_that_audit_queries_carry_the_default_refusal_allowance(cell):
    pol = effective(*cell)
    expected = (10, 3) if pol.query_auditing else (None, None)
    assert (pol.refusal_allowance, pol.refusal_run) == expected
    assert pol.sources["refusal_allowance"].startswith(f"default {cell[0]}/{cell[1]}")
    shown = {r[0]: r[1] for r in pol.rows()}
    assert shown["refusal_allowance"] == ("10" if pol.query_auditing else "-")


def test_an_override_lowers_the_refusal_allowance_and_run():
    ov = load_override("refusal_allowance: 2\nrefusal_run: 2\n", "strict.yaml")
    pol = effective("G2", "CONDITIONAL", ov, "override strict.yaml")
    assert (pol.refusal_allowance, pol.refusal_run) == (2, 2)
    assert pol.sources["refusal_allowance"] == pol.sources["refusal_run"] == \
        "override strict.yaml"
    same = effective("G2", "CONDITIONAL", load_override("refusal_allowance: 10", "o.yaml"))
    assert same.refusal_allowance == 10 and same.refusal_run == 3


@pytest.mark.parametrize("text,needle", [
    ("refusal_allowance: 11", "refusal_allowance"),
    ("refusal_run: 4", "refusal_run"),
])
def test_an_override_cannot_raise_the_refusal_allowance(text, needle):
    with pytest.raises(UserError) as exc:
        effective("G2", "CONDITIONAL", load_override(text, "loose.yaml"))
    assert needle in str(exc.value) and "only tighten" in str(exc.value)


def test_the_refusal_allowance_needs_query_auditing():
    with pytest.raises(UserError) as exc:
        effective("G1", "CONDITIONAL", load_override("refusal_allowance: 2", "o.yaml"))
    assert "query_auditing" in str(exc.value)
    # switched on at G1: the default numbers, which the same override may lower
    pol = effective("G1", "CONDITIONAL", load_override("query_auditing: true", "o.yaml"),
                    "override o.yaml")
    assert (pol.refusal_allowance, pol.refusal_run) == (10, 3)
    assert "override o.yaml" in pol.sources["refusal_allowance"]
    pol = effective("G1", "CONDITIONAL", load_override(
        "query_auditing: true\nrefusal_allowance: 4\n", "o.yaml"))
    assert (pol.refusal_allowance, pol.refusal_run) == (4, 3)
    with pytest.raises(UserError, match="only tighten"):
        effective("G1", "CONDITIONAL", load_override(
            "query_auditing: true\nrefusal_run: 5\n", "o.yaml"))


@pytest.mark.parametrize("text", ["refusal_allowance: 0", "refusal_run: -1",
                                  "refusal_run: often"])
def test_a_bad_refusal_allowance_is_a_clear_message(text):
    with pytest.raises(UserError) as exc:
        load_override(text, "bad.yaml")
    assert text.split(":")[0] in str(exc.value) and "bad.yaml" in str(exc.value)


# -- docs/governance.md §2.6 is the code's matrix ------------------------------------------
DOCS = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
_ACCESS_WORDS = {"automatic": Access.AUTO, "approval": Access.APPROVAL,
                 "forbidden": Access.FORBIDDEN, "A": Access.AUTO, "R": Access.APPROVAL}
_NONE = {"–", "-", "—"}


def _section_tables(number: str) -> list[list[dict[str, str]]]:
    """The markdown tables of a section of the governance doc, as rows of {header: cell}."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(f"\n### {number} ")
    end = text.index("\n### ", start + 1)
    tables, lines = [], []
    for line in text[start:end].splitlines() + [""]:
        if line.strip().startswith("|"):
            lines.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if lines:
            header, rows = lines[0], lines[2:]  # lines[1] is the |---| rule
            tables.append([dict(zip(header, row, strict=True)) for row in rows])
            lines = []
    return tables


def _table(number: str, first_header: str, second_header: str) -> list[dict[str, str]]:
    found = [t for t in _section_tables(number)
             if t and list(t[0])[:2] == [first_header, second_header]]
    assert len(found) == 1, f"§{number}: one table headed {first_header} | {second_header}"
    return found[0]


def _cells(name: str) -> list[tuple[str, str]]:
    """'G1 OPEN, G2 OPEN' or 'G1, G2 (all)' → the (grade, category) pairs it names."""
    out = []
    for part in name.split(","):
        words = part.replace("(all)", "").split()
        out += ([(words[0], words[1])] if len(words) == 2
                else [c for c in sorted(VALID_PAIRS) if c[0] == words[0]])
    return out


def _plain(value: str) -> str:
    return value.replace("**", "").strip()


def _flag(value: str) -> bool:
    assert _plain(value) in {"yes"} | _NONE, value
    return _plain(value) == "yes"


def _number(value: str) -> float | None:
    return None if _plain(value) in _NONE else float(_plain(value))


def _by_cell(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    out: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        for cell in _cells(row["Cell"]):
            assert cell not in out, f"{cell} is listed twice"
            out[cell] = row
    assert set(out) == set(VALID_PAIRS), set(VALID_PAIRS) ^ set(out)
    return out


def _documented(columns: dict, second: str):
    """(cell, header, documented value, the code's value) for every cell of the §2.6
    table whose second column is ``second``; a column the test does not know fails."""
    for cell, row in _by_cell(_table("2.6", "Cell", second)).items():
        unknown = set(row) - set(columns) - {"Cell"}
        assert not unknown, f"columns {unknown}: teach this test what they mean"
        for header, value in row.items():
            if header != "Cell":
                yield cell, header, value, columns[header](CELL_DEFAULTS[cell])


def test_the_documented_access_and_thresholds_are_the_codes_matrix():
    columns = {
        "Aggregate jobs": lambda d: d.agg, "Training jobs": lambda d: d.fl,
        "Min cell count k": lambda d: d.k, "Min nodes": lambda d: d.min_nodes,
        "Min contributors": lambda d: d.min_contributors, "HE": lambda d: d.he_required,
        "Output review": lambda d: d.output_review,
        "Query auditing": lambda d: d.query_auditing,
        "Refusal allowance (a year / in a row)":
            lambda d: (d.refusal_allowance, d.refusal_run),
        "Dual approval": lambda d: d.dual_approval,
    }
    for cell, header, value, code in _documented(columns, "Aggregate jobs"):
        if isinstance(code, Access):
            doc = _ACCESS_WORDS[_plain(value)]
        elif isinstance(code, bool):
            doc = _flag(value)
        elif isinstance(code, tuple):
            doc = ((None, None) if _plain(value) in _NONE
                   else tuple(int(v) for v in _plain(value).split("/")))
        else:
            doc = int(_plain(value))
        assert doc == code, (cell, header, value, code)


def test_the_documented_dp_budgets_are_the_codes_matrix():
    columns = {
        "DP for aggregates": lambda d: d.agg_dp_required,
        "DP-SGD for training": lambda d: d.fl_dp_required,
        "ε per query": lambda d: d.epsilon_per_query,
        "Annual ε per dataset": lambda d: d.annual_budget,
        "δ": lambda d: d.delta, "Training ε cap": lambda d: d.fl_epsilon_max,
    }
    for cell, header, value, code in _documented(columns, "DP for aggregates"):
        if isinstance(code, bool):
            assert _plain(value) in {"required", "if asked"}, (cell, header, value)
            assert (_plain(value) == "required") == code, (cell, header, value)
        else:
            assert _number(value) == code, (cell, header, value, code)


def test_the_documented_delivery_methods_are_the_codes_matrix():
    headers = {"metadata only": "metadata_only", "download": "download",
               "offline transfer": "offline_transfer", "in-node service": "in_node_service"}
    for cell, row in _by_cell(_table("2.6", "Cell", "metadata only")).items():
        assert set(row) - {"Cell"} == set(headers), row
        for header, method in headers.items():
            value = _plain(row[header])
            doc = Access.FORBIDDEN if value in _NONE else _ACCESS_WORDS[value]
            assert doc == POLICY_MATRIX[cell].delivery[method], (cell, header, value)


def test_the_scorecard_and_the_policy_engine_read_one_k():
    for cell in VALID_PAIRS:
        assert min_cell_count(*cell) == effective(*cell).min_cell_count == \
            CELL_DEFAULTS[cell].k
    assert min_cell_count("G2", "OPEN") == 3  # governance §2.6, the G2/OPEN cell


def test_each_setting_says_whether_the_cell_or_the_override_gave_it():
    ov = load_override("min_cell_count: 20\nquery_auditing: true\n", "o.yaml")
    rows = {r["key"]: r for r in effective("G1", "OPEN", ov, "override o.yaml").settings()}
    assert rows["min_cell_count"]["origin"] == "override"
    assert rows["min_cell_count"]["value"] == "20"
    assert rows["min_nodes"]["origin"] == "default"
    assert rows["job_types.stats"]["origin"] == "default"
    assert rows["refusal_run"]["origin"] == "auditing"  # what switching auditing on brings
    plain = effective("G1", "OPEN").settings()
    assert {r["origin"] for r in plain} == {"default"}


def test_the_override_in_force_keeps_its_yaml_author_time_and_justification(tmp_path):
    import sqlite3

    from node.audit import AuditLog
    from node.policy import PolicyBook
    from node.store import NodeStore

    store = NodeStore(tmp_path / "node.db")
    book = PolicyBook(store)
    record = {"id": "urn:sdn:n:ds:x", "security_grade": "G2", "sharing_category": "OPEN"}
    assert book.in_force(record["id"]) is None
    text = "min_cell_count: 10  # small towns\n"
    with pytest.raises(UserError, match="loosen"):
        book.set(record, "min_cell_count: 1\n", "node console", "ada", "because")
    assert book.in_force(record["id"]) is None  # nothing written for a refusal
    book.set(record, text, "node console", "ada", "towns under 10 households")
    got = book.in_force(record["id"])
    assert (got["yaml"], got["set_by"], got["justification"], got["source"]) == (
        text, "ada", "towns under 10 households", "node console")
    assert got["updated_ms"] > 0
    (entry,) = [e for e in AuditLog(store).entries() if e.action == "policy.set"]
    assert entry.actor == "ada" and "towns under 10 households" in str(entry.details)
    book.reset(record, "ada")
    assert book.in_force(record["id"]) is None

    # a database from before the override kept its author: opened, it gains the columns
    old = tmp_path / "old.db"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE policy_overrides (dataset_id TEXT PRIMARY KEY, yaml TEXT NOT "
                "NULL, source TEXT NOT NULL, updated_ms INTEGER NOT NULL)")
    con.execute("INSERT INTO policy_overrides VALUES (?,?,?,?)",
                (record["id"], "min_nodes: 4\n", "strict.yaml", 5))
    con.commit()
    con.close()
    kept = PolicyBook(NodeStore(old)).in_force(record["id"])
    assert kept == {"yaml": "min_nodes: 4\n", "source": "strict.yaml", "set_by": "",
                    "justification": "", "updated_ms": 5}
