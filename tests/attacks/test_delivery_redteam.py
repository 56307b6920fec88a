"""An attacker's review of delivery: a researcher (alone or colluding), a deviating
coordinator that rewrites what it relays, and a researcher who tries to exhaust the
node. Real node and coordinator cores, real PKI and sealing, the in-memory link; each
attack is checked against the rows it tries to learn."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from staff import staff_meta, staff_table

from coordinator import access_client as ac
from harness.inmemory import InMemoryFederation, researcher_client
from node.audit import AuditLog
from node.delivery import service
from protos.scifed.v1 import coordinator_pb2 as pb
from scifed.delivery import GrantsReply
from scifed.errors import UserError

NODE = "alpha"
ACCEPT = ["no_reidentification", "license:CC0-1.0"]


def tiers() -> pd.DataFrame:
    """Staff whose salaries sit on a few scales, but for one person (row 5, the
    director) who earns a salary of their own."""
    table = staff_table().drop(columns="node")
    table["salary"] = 50_000.0 + 10_000.0 * (table.index % 2)
    table.loc[5, "salary"] = 123_456.78
    return table


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = InMemoryFederation(tmp_path_factory.mktemp("rtdeliver"), [NODE]).__enter__()
    table = staff_table().drop(columns="node")
    fed.add_dataset(NODE, table, staff_meta("G1", "OPEN"), "open")
    for name, frame in (("cond", table), ("tiers", tiers()), ("diff", table)):
        fed.add_dataset(NODE, frame, staff_meta("G2", "CONDITIONAL"), name)
        fed.create_study(f"rt-{name}", {NODE: name})
    fed.table = table
    yield fed
    fed.__exit__(None, None, None)


def record_id(name: str) -> str:
    return f"urn:sdn:{NODE}:ds:{name}"


def core(fed):
    return fed.nodes[NODE]


def ask(client, name: str, method: str = "in_node_service", **kw):
    kw.setdefault("accept", ACCEPT)
    kw.setdefault("purpose", "methods paper")
    if name != "open":
        kw.setdefault("study", f"rt-{name}")
    return ac.request_access(client, record_id(name), method=method, **kw)


def audit_text(fed) -> str:
    return "\n".join(str(e.details) for e in AuditLog(core(fed).store).entries())


def test_distinct_aggregates_do_not_name_one_persons_value(fed):
    """avg and stddev of the DISTINCT salaries of a group of many rows are the mean and
    spread of its few distinct values: with two of them, each value comes out, the
    director's own salary among them. Only count(DISTINCT ...) is answered."""
    client = researcher_client(fed)
    grant = ask(client, "tiers")
    director = tiers().loc[5]
    sql = ("SELECT department, avg(DISTINCT salary) AS a, stddev(DISTINCT salary) AS s, "
           "count(DISTINCT salary) AS c FROM data GROUP BY department")
    try:
        frame, _ = ac.query(client, grant, sql)
    except UserError as exc:
        assert "DISTINCT" in str(exc)
    else:  # the attack: solve for the three distinct values of the director's group
        row = frame.set_index("department").loc[director.department]
        assert row.c == 3
        values = sorted(tiers().query("department == @director.department").salary.unique())
        assert not math.isclose(row.a * 3 - sum(values[:2]), director.salary), \
            "sum(DISTINCT) names the director's salary"
    frame, _ = ac.query(client, grant, "SELECT department, count(DISTINCT salary) AS c "
                        "FROM data GROUP BY department")
    truth = tiers().groupby("department").salary.nunique()
    assert frame.set_index("department").c.sort_index().tolist() == truth.tolist()


def test_the_total_minus_the_shown_groups_is_not_a_withheld_persons_salary(fed):
    """One director among 180 staff: grouped by title the director's group is withheld,
    but the total of all salaries minus the shown titles' totals was that one salary.
    The node audits service answers with the query auditor of federated jobs: an answer
    that would leave fewer than k rows in some atom of everything answered is refused."""
    client = researcher_client(fed)
    grant = ask(client, "diff")
    total, _ = ac.query(client, grant, "SELECT sum(salary) AS s FROM data")
    assert total.s[0] == pytest.approx(fed.table.salary.sum())
    try:
        by_title, said = ac.query(client, grant, "SELECT title, sum(salary) AS s FROM data "
                                  "GROUP BY title")
    except UserError as exc:
        assert "query auditing" in str(exc)
        assert "1 row" not in str(exc)  # the refusal says nothing of counts
    else:
        assert said["withheld"] == 1
        difference = total.s[0] - by_title.s.sum()
        assert difference != pytest.approx(fed.table.loc[5, "salary"]), \
            "the difference of two answers is the director's salary"
    # a grouping whose groups all hold k rows is still answered, equal to pandas
    frame, _ = ac.query(client, grant, "SELECT department, count(*) AS n FROM data "
                        "GROUP BY department")
    truth = fed.table.groupby("department").size()
    assert frame.set_index("department").n.sort_index().tolist() == truth.tolist()


def test_a_failing_query_sends_no_value_of_the_data_in_clear(fed):
    """DuckDB's error() and failing casts quote values of the data: the refusal (sealed
    to the researcher now, and once in clear through the coordinator) would carry rows,
    and so would the node's audit chain, which records every refusal's reason."""
    client = researcher_client(fed)
    grant = ask(client, "open", columns=["zip_code", "department"])
    zips = set(fed.table.zip_code)
    for sql in ["SELECT error(string_agg(zip_code, ',')) FROM data",
                "SELECT CAST(department AS INTEGER) FROM data",
                "SELECT zip_code::DATE FROM data"]:
        with pytest.raises(UserError, match="in-node service") as exc:
            ac.query(client, grant, sql)
        message = str(exc.value)
        assert not any(z in message for z in zips), f"{sql}: {message}"
        assert not any(d in message for d in fed.table.department.unique()), message
    chain = audit_text(fed)
    assert not any(z in chain for z in zips)
    # an honest mistake still says what is wrong
    with pytest.raises(UserError, match="salary"):
        ac.query(client, grant, "SELECT salary FROM data")


def test_a_forged_listing_does_not_make_the_researcher_take_another_file(fed):
    """The coordinator relays the grant listing unsigned. It swaps the columns of two of
    alice's grants of the same dataset: she downloads what the listing shows as her grant
    of age and gets the salary column, signed by the node for that grant. The client
    checks that the node's manifest names the dataset, columns and format of the grant
    the researcher was shown."""
    client = researcher_client(fed)
    age = ask(client, "open", method="download", columns=["age"])
    salary = ask(client, "open", method="download", columns=["salary"])
    shown = {age.grant_id: salary.columns, salary.grant_id: age.columns}

    def swap(method, reply):
        if method != "ListAccess":
            return reply
        grants = [g.model_copy(update={"columns": shown.get(g.grant_id, g.columns)})
                  for g in GrantsReply.loads(reply.payload).grants]
        return pb.AccessAnswer(payload=GrantsReply(grants=grants).dumps(),
                               unreached=list(reply.unreached))
    client.stub.tamper = swap
    (believed,) = [g for g in ac.list_access(client)[0] if g.columns == ["age"]
                   and g.grant_id in shown]
    out = fed.root / "age.parquet"
    try:
        ac.download(client, believed.grant_id, out)
    except UserError as exc:
        assert "columns" in str(exc) and not out.exists()
    else:
        assert list(pd.read_parquet(out).columns) == ["age"], \
            "the researcher accepted another grant's file as the one shown"


def test_the_same_request_again_is_not_a_new_copy_at_the_node(fed):
    """Each request (a new nonce) made a new grant, and each grant's first manifest a
    full copy of the data in the node's state directory: a loop of requests fills its
    disk. The same request of a live grant (same researcher, dataset, method, columns,
    format, study and key) is that grant."""
    client = researcher_client(fed, "dora")
    grants = {ask(client, "open", method="download", columns=["age", "salary"],
                  purpose=f"paper {i}").grant_id for i in range(4)}
    for g in grants:
        ac.manifest(client, next(x for x in ac.list_access(client)[0] if x.grant_id == g))
    assert len(grants) == 1, f"{len(grants)} grants and copies for one request"
    # a different column set is a different grant
    other = ask(client, "open", method="download", columns=["age"])
    assert other.grant_id not in grants


def test_a_runaway_query_is_stopped(fed, monkeypatch):
    """Where rows are allowed the researcher's text runs as written: a query that never
    ends, or builds a result far beyond any answer, would hold the node's CPU and memory.
    The node stops it at its time and size limits and says so."""
    client = researcher_client(fed)
    grant = ask(client, "open", columns=["age"])
    monkeypatch.setattr(service, "QUERY_SECONDS", 1.0)
    with pytest.raises(UserError, match="time limit"):
        ac.query(client, grant, "SELECT count(*) FROM range(1000000000000) a")
    monkeypatch.setattr(service, "QUERY_SECONDS", 600.0)
    with pytest.raises(UserError, match="answer is larger"):
        ac.query(client, grant, "SELECT repeat('x', 1000000) AS big FROM range(100)")
    frame, said = ac.query(client, grant, "SELECT age FROM data WHERE age > 60")
    assert len(frame) == (fed.table.age > 60).sum() and said["mode"] == "rows"


def test_a_query_learns_no_path_of_the_node_and_a_huge_one_is_not_parsed(fed):
    """Where rows are allowed, DuckDB's own tables answer too: its settings named the
    node's home directory (secret_directory) and its extension listing failed with the
    home path in the message. A query of megabytes took the node seconds to parse."""
    from pathlib import Path

    client = researcher_client(fed)
    grant = ask(client, "open", columns=["age"])
    home = str(Path.home())
    frame, _ = ac.query(client, grant, "SELECT name, value FROM duckdb_settings()")
    assert frame.value.notna().any()
    leaked = frame[frame.value.astype(str).str.contains(home, regex=False)]
    assert leaked.empty, leaked.to_dict("records")
    for sql in ("SELECT * FROM duckdb_extensions()", "SELECT * FROM duckdb_secrets()"):
        try:
            frame, _ = ac.query(client, grant, sql)
            assert home not in frame.to_json()
        except UserError as exc:
            assert home not in str(exc)
    with pytest.raises(UserError, match="more than the 20000"):
        ac.query(client, grant, "SELECT " + " + ".join(["age"] * 50_000) + " FROM data")


@pytest.mark.parametrize("columns", [[], ["person_id", "title"]])
def test_a_download_prepared_before_the_officer_withdrew_a_row_does_not_deliver_it(
        fed, columns):
    """The first manifest freezes the grant's file at the node. The officer then removes
    a person's row (consent withdrawn) and refreshes the dataset; the grant, prepared
    before, went on delivering the frozen file with that row. A download is of the data
    as registered now: a grant's extract of another version is prepared afresh."""
    name = f"upd{len(columns)}"
    table = fed.table.copy()
    fed.add_dataset(NODE, table, staff_meta("G1", "OPEN"), name)
    client = researcher_client(fed)
    grant = ask(client, name, method="download", columns=columns, fmt="csv", study="")
    ac.manifest(client, grant)  # prepared with the director's row
    table.drop(index=5).to_csv(core(fed).cfg.data_dir / f"{name}.csv", index=False)
    core(fed).registry.update(name, refresh_data=True)
    out = fed.root / f"{name}.csv"
    try:
        ac.download(client, grant, out)
    except UserError as exc:
        assert "changed" in str(exc)
        ac.download(client, grant, out)  # asked again: the data as it is now
    got = pd.read_csv(out)
    assert "director" not in set(got.title), "a withdrawn row was delivered"
    assert len(got) == len(table) - 1


def test_a_researcher_cannot_pile_up_grants_of_one_dataset(fed):
    """Each distinct column subset is a grant of its own, and each grant's download a
    copy at the node: one researcher looping over subsets would fill its disk. A
    researcher holds at most MAX_LIVE_GRANTS live grants of a dataset."""
    from itertools import combinations

    from node.delivery.desk import MAX_LIVE_GRANTS

    client = researcher_client(fed, "erin")
    names = list(fed.table.columns)
    subsets = [list(c) for n in (1, 2, 3) for c in combinations(names, n)]
    assert len(subsets) > MAX_LIVE_GRANTS
    for columns in subsets[:MAX_LIVE_GRANTS]:
        ask(client, "open", method="download", columns=columns)
    before = len(core(fed).delivery.grants.list(researcher="erin"))
    with pytest.raises(UserError, match=f"{MAX_LIVE_GRANTS} live grants"):
        ask(client, "open", method="download", columns=subsets[MAX_LIVE_GRANTS])
    assert len(core(fed).delivery.grants.list(researcher="erin")) == before
    # a revoked grant frees its place
    core(fed).delivery.revoke(ac.list_access(client)[0][0].grant_id, "done", "officer")
    ask(client, "open", method="download", columns=subsets[MAX_LIVE_GRANTS])
