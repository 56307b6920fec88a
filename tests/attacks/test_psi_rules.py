"""Attacks on ``psi`` through the real pipeline (in-memory link: real driver, gate,
release path, BFV, sealing), on staff records at G2 / CONDITIONAL (k = 5, query
auditing) held by three nodes with overlapping staff: a researcher who wants to know
whether one person is held by every node, and a coordinator that reads what it relays.

Against the first version of the rules (the pooled count refused only for 1 to k−1,
zero released, and no rule at the node) the probes answered: a filter leaving one
person gave "refused" for a member and a size of 0 for anyone else, and a node holding
one identifier did the same. With a node rule for 1 to k−1 identifiers (and the auditor
before it), which nodes refused a one-person filter, and in which words, still said
which nodes hold the person. Each test below is such an attack, failing now.

Where a node audits exact queries (G2 here), exact ``psi`` is refused outright: an
intersection's size is not a sum over one node's row sets, so two node sets, or two
complementary filters, differ by one person whom no node's partition isolates
(tests/attacks/test_new_types_review.py). The mechanics are therefore attacked on the
same staff at G1 / CONDITIONAL (k = 3, no auditing)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct

import pytest
import tenseal as ts
import yaml
from staff import NODES, attempt, staff_meta, staff_table

from harness.inmemory import InMemoryFederation
from jobs.psi import bfv, ecdh
from scifed.tasks import TaskKind

# alpha holds persons 0-99, beta 40-139, gamma 60-179: 60-99 are at every node
HELD = {"alpha": range(0, 100), "beta": range(40, 140), "gamma": range(60, 180)}
MEMBER, OUTSIDER = 100_071, 100_011  # at all three nodes / at alpha only


def psi(study: str, nodes=NODES, filter: str | None = None, **spec) -> str:
    job = {"study": study, "type": "psi", "datasets": {n: study for n in nodes},
           "psi": {"on": "person_id", **spec}}
    if filter:
        job["filter"] = filter
    return yaml.safe_dump(job, sort_keys=False)


def same(text: str) -> str:
    """A refusal without what differs between two jobs anyway (their ids)."""
    return re.sub(r"job-[0-9a-f]{12}", "JOB", text)


def spent(fed: InMemoryFederation) -> list:
    return [s for core in fed.nodes.values() for s in core.gate.ledger.spent()]


@pytest.fixture
def staff(tmp_path):
    df = staff_table().drop(columns="node")
    fed = InMemoryFederation(tmp_path, [*NODES, "probe"]).__enter__()
    for node, rows in HELD.items():
        fed.add_dataset(node, df.iloc[list(rows)], staff_meta(), "staff")
    fed.create_study("staff", {n: "staff" for n in NODES}, min_nodes=2)
    # the same staff at G1 / CONDITIONAL: k = 3 and no query auditing
    for node, rows in HELD.items():
        fed.add_dataset(node, df.iloc[list(rows)], staff_meta("G1", "CONDITIONAL"), "lowk")
    fed.create_study("lowk", {n: "lowk" for n in NODES}, min_nodes=2)
    # a platform whose dataset is one person (G1 OPEN: k = 1, so it does not refuse)
    for name, person in (("onein", MEMBER), ("oneout", OUTSIDER)):
        fed.add_dataset("probe", df[df.person_id == person], staff_meta("G1", "OPEN"), name)
        for node in ("alpha", "beta"):
            fed.add_dataset(node, df.iloc[list(HELD[node])], staff_meta(), name)
        fed.create_study(name, {"alpha": name, "beta": name, "probe": name}, min_nodes=2)
    fed.df = df
    yield fed
    fed.__exit__(None, None, None)


AUDITED = "psi: this node audits exact queries"


@pytest.mark.parametrize(("study", "k"), [("staff", 5), ("lowk", 3)])  # auditing, none
def test_a_filter_leaving_one_person_is_refused_alike_for_member_and_not(staff, study, k):
    answers = [attempt(staff, psi(study, filter=f"person_id == {who}"))
               for who in (MEMBER, OUTSIDER)]
    assert [r for r, _ in answers] == [None, None]
    rule = AUDITED if study == "staff" else \
        f"psi: the selection holds fewer than k={k} distinct identifiers here"
    for node in NODES:  # every node, whether it holds the person or not
        assert f"node {node}: {rule}" in answers[0][1]
    assert same(answers[0][1]) == same(answers[1][1])
    assert spent(staff) == []


def test_a_dataset_of_one_identifier_is_refused_alike(staff):
    answers = [attempt(staff, psi(name, nodes=("alpha", "beta", "probe")))
               for name in ("onein", "oneout")]
    assert [r for r, _ in answers] == [None, None]
    assert f"node alpha: {AUDITED}" in answers[0][1]  # alpha and beta audit (G2)
    assert same(answers[0][1]) == same(answers[1][1])


def test_at_an_auditing_node_exact_psi_is_refused_and_a_capped_dp_size_is_answered(staff):
    """Exact: refused at every auditing node, nothing read beyond the rule, nothing
    spent. With DP asked for: refused too while the cell sets no ε cap and budget (a
    researcher's ε would buy an almost exact size); answered, noisy, once the officers
    set them."""
    result, why = attempt(staff, psi("staff"))
    assert result is None
    assert all(f"node {n}: {AUDITED}" in why for n in NODES), why
    result, why = attempt(staff, psi("staff", dp={"epsilon": 1.0}))
    assert result is None
    assert "only with a per-query ε cap and an annual budget" in why, why
    assert spent(staff) == []
    for node in NODES:
        core = staff.nodes[node]
        core.gate.policies.set(core.registry.get("staff").record,
                                   "dp: {epsilon_per_query: 1.0, annual_budget: 10}\n",
                                   "dp.yaml", "officer")
    result, why = attempt(staff, psi("staff", dp={"epsilon": 1.0}))
    assert result is not None, why
    assert sorted(result["noised_at"]) == sorted(NODES)
    truth = len(set(HELD["alpha"]) & set(HELD["beta"]) & set(HELD["gamma"]))
    assert abs(result["intersection"] - truth) < 30  # three discrete Laplace(1) draws


def _blobs(value):
    """Every byte string a relayed payload carries: its base64 fields decoded."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _blobs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _blobs(v)
    elif isinstance(value, str) and len(value) >= 16:
        try:
            yield base64.b64decode(value, validate=True)
        except ValueError:
            pass


def test_the_coordinator_reads_no_identifier_from_what_it_relays(staff):
    result, why = attempt(staff, psi("lowk"))
    assert result is not None, why
    job_id = result["meta"]["job_id"]
    tasks = [t for link in staff.links.values() for t in link.tasks
             if json.loads(t.payload).get("job_id") == job_id]
    exchanged = [t for t in tasks if t.kind in (TaskKind.EXCHANGE, TaskKind.COMPUTE)
                 and json.loads(t.payload).get("exchange", {}).get("blobs")]
    assert len(exchanged) >= 2 * len(NODES)  # every step after the first, and the finals
    raw = b"".join(t.payload for t in tasks)
    relayed = b"".join(b for t in tasks for b in _blobs(json.loads(t.payload)))
    assert len(relayed) > 32 * sum(len(r) for r in HELD.values())  # the points travelled
    ids = [str(100_001 + i).encode() for r in HELD.values() for i in r]
    for clear, hashed in zip(ids, ecdh.hashed(job_id, ids), strict=True):
        for needle in (hashed, hashed[:ecdh.TRUNCATED],
                       hashlib.blake2b(clear, digest_size=32).digest()):
            assert needle not in raw and needle not in relayed
    # clear ids are 6-digit numbers: look for them as text in the payloads' JSON only
    # (random blobs hold any short byte string by chance)
    text = [json.dumps({k: v for k, v in json.loads(t.payload).items()
                        if k not in ("exchange", "key_share", "researcher_claim")})
            for t in tasks]
    assert not any(c.decode() in s for c in ids for s in text)


# -- PSI as a filter: salaries at alpha over the persons beta and gamma hold too ---------
def salaries(study: str = "staff", nodes=NODES, filter: str | None = None) -> str:
    job = yaml.safe_load(psi(study, nodes=nodes, filter=filter))
    job["psi"]["values"] = {"node": "alpha", "columns": ["salary"],
                            "bounds": {"salary": [40_000, 160_000]}}  # to 1 yuan
    return yaml.safe_dump(job, sort_keys=False)


@pytest.fixture
def seen(monkeypatch):
    """What each node's filter step receives, opened (node -> list of inbound dicts)."""
    from jobs.psi import filtering

    got: dict[str, list[dict[str, bytes]]] = {}
    step = filtering.step

    def recording(params, table, ex, limits):
        got.setdefault(limits.node, []).append(dict(ex.inbound))
        return step(params, table, ex, limits)

    monkeypatch.setattr(filtering, "step", recording)
    return got


def _salary_needles(values) -> list[bytes]:
    """Every way a salary could travel in clear: float64, as text, and the fixed-point
    value the filter encrypts (yuan above the minimum) as int64."""
    out = []
    for x in values:
        u = int(round(x - 40_000))
        out += [struct.pack("<d", x), struct.pack("<q", u), f"{x:.2f}".encode()]
    return out


def test_the_filter_releases_the_sums_and_nobody_reads_a_salary(staff, seen):
    result, why = attempt(staff, salaries("lowk"))
    assert result is not None, why
    df = staff.df
    held = set(HELD["alpha"]) & set(HELD["beta"]) & set(HELD["gamma"])
    yuan = df.iloc[sorted(held)].salary.round()  # the job's resolution: 1
    released = result["values"]["columns"]["salary"]
    assert result["intersection"] == released["n"] == len(yuan) == 40
    assert released["sum"] == yuan.sum()
    assert released["variance"] == pytest.approx(yuan.var(ddof=1), rel=1e-12)
    # the coordinator: no identifier (as above) and no salary in anything it relays
    job_id = result["meta"]["job_id"]
    tasks = [t for link in staff.links.values() for t in link.tasks
             if json.loads(t.payload).get("job_id") == job_id]
    raw = b"".join(t.payload for t in tasks)
    relayed = b"".join(b for t in tasks for b in _blobs(json.loads(t.payload)))
    everyone = df.iloc[list(HELD["alpha"])].salary
    ids = [str(p).encode() for p in df.iloc[list(HELD["alpha"])].person_id]
    for needle in [*_salary_needles(everyone), *ecdh.hashed(job_id, ids)]:
        assert needle not in raw and needle not in relayed
    # E (alpha's predecessor in the ring) opens what it receives: points and alpha's
    # ciphertexts under a key whose secret it never gets
    peers = [*result["meta"]["contributors"]]
    inbound = [b for node, steps in seen.items() if node != "alpha"
               for blobs in steps for b in blobs.values()]
    assert sum(map(len, inbound)) > 300_000  # the ciphertexts travelled (≈ 330 kB)
    opened = b"".join(inbound)
    for needle in _salary_needles(everyone):
        if len(needle) >= 8:  # random bytes hold short texts by chance
            assert needle not in opened
    contexts = [bfv.unframe(b, "test") for node, steps in seen.items() if node != "alpha"
                for blobs in steps for b in blobs.values()]
    public = [items[i + 1] for items in contexts for i in range(0, len(items) - 1, 2)
              if items[i] == b"context"]
    assert len(public) == 1 and sorted(peers) == sorted(NODES)
    ctx = ts.context_from(public[0])
    assert ctx.is_public() and not ctx.has_secret_key()


def test_a_filter_leaving_fewer_than_k_is_refused_without_its_size(staff):
    """At k = 3 each node holds 8 of the selected persons (no node rule fires); every
    node holds 2 of them, or none: refused alike, nothing spent."""
    texts = []
    for common in ([98, 99], []):
        alpha_only = [i for i in range(0, 8 - len(common))]
        two = [i for i in range(100, 108 - len(common))]
        people = ", ".join(str(100_001 + i) for i in [*common, *alpha_only, *two])
        result, why = attempt(staff, salaries("lowk", filter=f"person_id in [{people}]"))
        assert result is None
        texts.append(same(why))
    assert "the intersection holds fewer than k=3 identifiers" in texts[0]
    assert texts[0] == texts[1]
    assert "2" not in texts[0]
    assert spent(staff) == []


def test_the_filter_is_refused_where_a_node_audits_exact_queries(staff):
    """Sums over an intersection are no sums over a node's own rows: at G2 the filter is
    refused at every node, whatever the selection."""
    for flt in (None, f"person_id != {MEMBER}"):
        result, why = attempt(staff, salaries(filter=flt))
        assert result is None
        assert "psi with values is not available where the node audits exact" in why
    assert spent(staff) == []


def test_the_filter_under_dp_is_refused_before_a_row_is_read(staff):
    core = staff.nodes["beta"]
    core.gate.policies.set(core.registry.get("lowk").record,
                           "dp: {required: true, epsilon_per_query: 1.0, "
                           "annual_budget: 20}\n", "dp.yaml", "officer")
    result, why = attempt(staff, salaries("lowk"))
    assert result is None
    assert "node beta: psi with values is not available where policy requires" in why
    assert spent(staff) == []


# -- a coordinator that deviates in the exchange ---------------------------------------------
def deviate(fed, change) -> list:
    """Wrap the coordinator's fan-out of exchange steps: ``change(step, payloads)``
    returns the payloads it sends instead (None: the genuine ones). Step 0 is sent twice,
    as a coordinator resending it would; returns both answers to it."""
    jobs = fed.coordinator.jobs
    honest = jobs.fanout
    repeats: list = []

    def fanout(run, phase, kind, payloads, reply):
        if kind != TaskKind.EXCHANGE:
            return honest(run, phase, kind, payloads, reply)
        step = next(iter(payloads.values())).exchange.step
        payloads = change(step, dict(payloads)) or payloads
        answers = honest(run, phase, kind, payloads, reply)
        if step == 0:
            repeats.append((answers[0], honest(run, phase, kind, payloads, reply)[0]))
        return answers

    jobs.fanout = fanout
    return repeats


def with_inbound(payloads: dict, node: str, blobs: dict) -> dict:
    """The step's payloads with ``node``'s inbound blobs replaced."""
    moved = payloads[node].exchange.model_copy(update={"blobs": blobs})
    return {**payloads, node: payloads[node].model_copy(update={"exchange": moved})}


def test_a_coordinator_moving_an_exchange_blob_to_another_node_is_refused(staff):
    """At step 2 the coordinator hands beta the blob alpha made for gamma (under alpha's
    name): the blob is bound to (job, step, sender, recipient), so beta cannot open it
    and refuses; nothing is released or charged."""
    def swap(step, payloads):
        if step == 1:
            sender, blob = next(iter(payloads["gamma"].exchange.blobs.items()))
            return with_inbound(payloads, "beta", {sender: blob})
        return None

    deviate(staff, swap)
    result, why = attempt(staff, psi("lowk"))
    assert result is None
    assert "node beta: the blob of" in why and "was not made for this node" in why, why
    assert spent(staff) == []


def test_a_coordinator_resending_a_step_gets_the_same_answer_and_no_other(staff):
    """The coordinator sends step 1 twice, then step 2 with alpha's inbound blob dropped:
    the repeat is answered with the same bytes (a retry: nothing blinded afresh to
    compare), and the short step is refused by the protocol; nothing is charged."""
    repeats = deviate(staff, lambda step, payloads: with_inbound(payloads, "alpha", {})
                      if step == 1 else None)
    result, why = attempt(staff, psi("lowk"))
    assert result is None
    assert "node alpha: psi step 2 must bring the set of" in why, why
    (first, again), = repeats
    assert set(first) == set(NODES)
    assert {n: a.outbound for n, a in first.items()} == \
        {n: a.outbound for n, a in again.items()}
    assert spent(staff) == []
