"""The one release path: the release node decrypts the pooled numbers, has the job type
decode them under the aggregate-level disclosure rules, and seals the result to the
researcher with its provenance — or, for a multi-round release, seals its own state and
the next round's query for the members.

Every result leaves signed (:func:`scifed.sealing.sign_result`): the result and its
provenance — the job and its spec's hash, the study key version, the researcher, the
contributors with the datasets they read, this node's policy cell and the rules it
applied, the DP report, this node's audit head — under this node's certificate key, so
the researcher can tell a genuine result from one the coordinator sealed itself.

What it sums. The release task of an aggregate job carries every contributor's
ciphertext with that node's signed attestation of it (node/gate.py ``Gate.attest``), not
a sum of the coordinator's making. This node checks each attestation — a node certificate
of the CA naming the node, not revoked by this node's CRL, for this job, stage, round
(and the query this node sealed for it), study and key version, spec and researcher, over
the very ciphertext — one per contributor the task names and none else, and the k, fewest
contributors and DP the task reports equal what the contributors attest; then it sums the
ciphertexts itself (:func:`scifed.he.sum_ciphertexts`). Anything else is refused with one
message, audited (``release.refuse``), nothing released. The provenance lists, for every
contributor, the dataset (sha256, version, schema hash) and audit head it attested, and the
attestations themselves, so the researcher checks each signature.

Training jobs too (:meth:`ReleasePath._trained`): the release task carries, per round and
for the final evaluation, every contributor's masked ciphertexts, its signed attestation
and its revealed self-mask seed, as the ServerApp kept them — never a sum. This node
checks them as a chain (node/round_updates.py :func:`verify_rounds`): each attestation
for this job, stage, round and one attempt, masked for exactly the set of signers, over
the very ciphertexts; the sums made and unmasked here; and every contributor of a round
attests it trained from (``trained_from``) the model this node made of the round before.
So a model the coordinator summed otherwise, of another attempt or set, or with a
contributor's update hidden, is refused; and every node whose update reached any
released model or metric — a node that dropped after round 1 included — is seen with
its signed ``output_review`` flag. Those flags route the model to each such
contributor's officer exactly as for aggregate jobs, whichever member the coordinator
picked as release node, and live metrics are refused while any is carried.

May pooled results leave this node? One answer for every job type: the release node's
own dataset in the study must admit the job as any task does (policy, and the officer's
approval where the cell asks for one), and a cell that asks for the officer's review of
outputs (``output_review``) releases nothing without that review (node/review.py): the
signed result, after every disclosure rule, is held for the officer, and only a signed
release lets those very bytes be sealed to the researcher; a withheld result is never
sealed, only its reason. Live metrics of a training run are not released on such a cell
(the final result, which holds them, is reviewed). A contributor whose own cell asks for
review signs that in its attestation: this node then seals the held result to it, the
coordinator relays it, and the contributor answers a verdict signed by its node key
after its own officer's decision (:meth:`ReleasePath.review`); the result is sealed to
the researcher only once every such verdict says release. The coordinator, which relays
the ciphertexts, can read none of it.

Nor does anything leave for a job with a revoked contributor: the release task carries
each node's certificate as the coordinator knows it, and every contributor needs one
from the federation CA, naming it, that the node's newest CRL does not revoke
(:meth:`ReleasePath.check_contributors`; the researcher's claim is checked for every
task, node/runner.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np

from jobs.base import NextRound, Pooled
from jobs.spec import datasets_by_node
from node.approvals import Waiting
from node.audit import AuditLog
from node.gate import Admission, Gate, replay_refusal
from node.masking import (
    SHARED_FROM,
    compute_stage,
    lone,
    recovered_masks,
    revealed_masks,
)
from node.policy import pools_enough
from node.review import PHASE, OutputReviews, Review
from node.round_updates import verify_rounds
from scifed import he
from scifed.config import TlsConfig
from scifed.errors import UserError
from scifed.he import open_for_members, seal_for_members, sum_ciphertexts
from scifed.pki import Crl, verify_certificate
from scifed.sealing import (
    RESULT_PROVENANCE,
    SealKeyClaim,
    attested_dataset,
    canonical_json,
    canonical_sha256,
    load_seal_key,
    open_sealed,
    progress_context,
    refusal_context,
    result_context,
    result_digest,
    review_context,
    seal,
    sign_result,
    sign_verdict,
    verify_attestation,
    verify_claim,
    verify_result,
    verify_verdict,
)
from scifed.sentences import say
from scifed.tasks import ReleaseReply, ReleaseRequest, ReviewReply, ReviewRequest

VOCABULARY, STATE, QUERY = "job-vocabulary", "job-state", "job-query"


def researcher_key(claim: dict, ca_pem: bytes, researcher: str) -> bytes:
    """The seal key of the job's researcher, as the federation CA certifies it."""
    return verify_claim(SealKeyClaim.from_dict(claim), ca_pem, expect_role="researcher",
                        expect_name=researcher or None)


def seal_refusal(claim: dict | None, ca_pem: bytes, researcher: str, job_id: str | None,
                 node: str, reason: str) -> bytes | None:
    """A refusal's reason sealed to the job's researcher (bound to the job and this node,
    :func:`scifed.sealing.refusal_context`), or None where there is no certified seal key
    of that researcher to seal it to (no job, no claim, or a claim that does not verify)."""
    if not (claim and job_id):
        return None
    try:
        public = researcher_key(claim, ca_pem, researcher)
        return seal(public, reason.encode(), context=refusal_context(job_id, node))
    except (ValueError, AttributeError, KeyError, TypeError, UserError, RecursionError):
        return None


def vocabulary_union(key, job_id: str, blobs: list[bytes]) -> dict[str, list[str]]:
    """The union of every contributor's sealed categories, opened here."""
    union: dict[str, set[str]] = {}
    for blob in blobs:
        for col, values in open_for_members(key, VOCABULARY, job_id, blob).items():
            union.setdefault(col, set()).update(values)
    return {col: sorted(values) for col, values in union.items()}


@dataclass(frozen=True)
class Attested:
    """A release step's contributions, checked: their sum (made here), the compute
    attestations by node (the provenance lists them) and the round they are of."""

    total: bytes
    attestations: dict[str, dict]
    round: int
    reviewers: list[str]  # other contributors whose cells ask for their officer's review


class ReleasePath:
    def __init__(self, gate: Gate, audit: AuditLog, ca_pem: bytes,
                 tls: TlsConfig | None = None, reviews: OutputReviews | None = None) -> None:
        self.gate = gate
        self.audit = audit
        self.ca_pem = ca_pem
        self.node = gate.node
        self.tls = tls or gate.studies.cfg.tls  # the certificate key results are signed with
        self.reviews = reviews or OutputReviews(gate.store, gate.approvals)

    def check_contributors(self, crl: Crl, contributors: object, certs: dict[str, bytes],
                           job_id: str) -> None:
        """Refuse (audited) to release for ``contributors`` unless each has a node
        certificate in ``certs`` (what the task carries) that the federation CA issued,
        naming it, in date and not revoked by ``crl``: a coordinator that keeps a revoked
        node in a job holds no unrevoked certificate of it to show."""
        trust = self.gate.studies.trust
        if not isinstance(contributors, list) or not all(isinstance(c, str)
                                                         for c in contributors):
            return  # malformed: the request's own parsing refuses it
        for node in sorted(set(contributors)):
            said = f"node {self.node} releases nothing for job {job_id}"
            pem = certs.get(node)
            if not pem:
                raise trust.refuse(job_id, f"{said}: the task carries no certificate of "
                                   f"contributor {node}, so nothing shows that it is not "
                                   "revoked")
            try:
                ident = verify_certificate(pem, self.ca_pem, who=f"contributor {node!r}")
            except UserError as exc:
                raise trust.refuse(job_id, f"{said}: {exc}") from None
            if (ident.role, ident.name) != ("node", node):
                raise trust.refuse(job_id, f"{said}: the certificate it carries for "
                                   f"contributor {node} is of {ident.role} {ident.name!r}")
            if crl.revoked(ident.serial):
                raise trust.refuse(job_id, f"{said}: the certificate of contributor "
                                   f"{node} (serial {ident.serial}) is revoked "
                                   f"({crl.describe()})")

    def _enough_contributors(self, req: ReleaseRequest, adm: Admission) -> dict:
        """The pooling rule this release applies, as its provenance names it; raises
        where the contributors are too few for it."""
        need = max(req.min_contributors, adm.policy.min_contributors)
        rules = {"k": req.k, "min_contributors": need, "study_members": req.study_members}
        noised = sorted(req.dp)
        if noised and len(noised) == len(req.contributors):
            # every contribution is noised: there is no exact share to take apart
            return {**rules, "release": say("chk.release.dp"),
                    "pooling": say("chk.pool.noised")}
        if not pools_enough(len(req.contributors), need, req.study_members):
            raise UserError(f"node {self.node}: an exact pooled result needs at least 3 "
                            "contributors (two only in a two-member study whose policies "
                            "all allow it), so that no contributor can read another's share")
        n = len(req.contributors)
        pooling = (say("chk.pool.one") if n == 1 else say("chk.pool.two") if n == 2 else
                   say("chk.pool.n", n=n))
        return {**rules, "release": say("chk.release.dp_at", nodes=", ".join(noised))
                if noised else say("chk.release.exact"), "pooling": pooling}

    def _provenance(self, req: ReleaseRequest, adm: Admission, rules: dict,
                    attested: Attested, *, researcher: str, released_at: str) -> dict:
        """What this node signs about a result besides the result itself: every
        contributor's dataset and audit head as it attested them, and the attestations
        (of a training model: each node's latest round attestation, of every node whose
        update reached it)."""
        rec, pol = adm.row.record, adm.policy
        named = datasets_by_node(adm.spec)
        statements = {n: a["statement"] for n, a in attested.attestations.items()}
        datasets = {n: {"dataset": named.get(n, st["dataset"].get("dataset_id", "")),
                        **attested_dataset(st), "source": f"attested by {n}"}
                    for n, st in statements.items()}
        provenance = {"audit_heads": {n: st["audit_head"] for n, st in statements.items()},
                      "attestations": attested.attestations,
                      "attested_rounds": attested.round}
        dp_setting = "fl_dp_required" if adm.job.family == "fl" else "agg_dp_required"
        settings = ("min_cell_count", "min_contributors", dp_setting, "epsilon_per_query")
        seq, head = self.audit.head()
        return {
            "job_id": req.job_id, "job_type": adm.spec.type, "stage": req.stage,
            "round": req.round, "spec_sha256": canonical_sha256(req.spec),
            "study_id": req.study_id, "key_version": req.key_version,
            "researcher": researcher, "released_by": self.node, "released_at": released_at,
            "contributors": sorted(set(req.contributors)), "datasets": datasets,
            "policy": {"node": self.node, "dataset": rec.get("id", adm.row.dataset_id),
                       "grade": pol.grade, "category": pol.category,
                       "min_cell_count": pol.min_cell_count,
                       "min_contributors": pol.min_contributors,
                       "dp_required": getattr(pol, dp_setting),
                       "epsilon_per_query": pol.epsilon_per_query,
                       "decision": adm.decision.rule,
                       "sources": {name: pol.sources.get(name, "") for name in settings}},
            "rules": rules, "dp": req.dp,
            # this node's head as it releases (each contributor's, as it contributed, is
            # in ``audit_heads``)
            "audit_head": {"node": self.node, "seq": seq, "hash": head},
            **provenance,
        }

    def _attested(self, req: ReleaseRequest, adm: Admission, envelope: dict | None
                  ) -> Attested:
        """The contributions of this release step checked against their attestations
        (see the module's docstring), and their sum made here; else refused, audited."""
        job_id = req.job_id
        said = f"node {self.node} releases nothing for job {job_id}"

        def refuse(reason: str) -> UserError:
            message = f"{said}: {reason}"
            self.audit.append("policy", "release.refuse", adm.row.dataset_id,
                              {"job_id": job_id, "researcher": req.researcher,
                               "stage": req.stage, "reason": message})
            return UserError(message)

        if req.aggregates:
            raise refuse("the task carries a pooled sum of the coordinator's making; this "
                         "node sums the contributors' attested ciphertexts itself")
        named = list(req.contributors)
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise refuse(f"the task names contributor {', '.join(twice)} twice")
        given: dict = {}
        for c in req.contributions:
            if c.node in given:
                raise refuse(f"the task carries two contributions of {c.node} (one "
                             "attestation per node)")
            if c.node not in named:
                raise refuse(f"the task carries a contribution of {c.node}, which it does "
                             "not name as a contributor")
            given[c.node] = c
        missing = sorted(set(named) - set(given))
        if missing:
            raise refuse(f"the task names {', '.join(missing)} as a contributor, but "
                         "carries no contribution of it")
        expect = {"job_id": job_id, "study_id": req.study_id,
                  "key_version": req.key_version, "researcher": req.researcher,
                  "spec_sha256": canonical_sha256(req.spec),
                  # masks cancel only over the very set each contributor masked for (the
                  # contributors, and any node masked for that dropped: node/masking.py)
                  "masked_with": sorted([*named, *req.dropped])}
        if set(req.dropped) & set(named) or len(set(req.dropped)) != len(req.dropped):
            raise refuse("the task names a node both as a contributor and as dropped, or "
                         "as dropped twice")
        if envelope is None:
            expect |= {"stage": "compute", "round": 0, "query_sha256": "",
                       "attempt": req.attempt}
        else:
            if sorted(named) != envelope["contributors"]:
                raise refuse(f"the task names contributors {', '.join(sorted(named))}; the "
                             f"release began with {', '.join(envelope['contributors'])}")
            expect |= {"stage": "round", "round": envelope["round"],
                       "query_sha256": envelope["query_sha256"], "attempt": 0}
        revoked = self.gate.studies.trust.fresh(job_id).serials
        statements = {}
        for node in sorted(given):
            c = given[node]
            try:
                st = verify_attestation(c.attestation, self.ca_pem, node=node,
                                        expect=expect, revoked=revoked).statement
            except UserError as exc:
                raise refuse(str(exc)) from None
            digest = hashlib.sha256(c.ciphertext).hexdigest()
            if digest != st["ciphertext_sha256"]:
                raise refuse(f"the ciphertext given as {node}'s is not the one its "
                             f"attestation names (sha256 {digest[:16]}…, attested "
                             f"{st['ciphertext_sha256'][:16]}…)")
            statements[node] = st
        reviewers = sorted(n for n, st in statements.items()
                           if st["output_review"] and n != self.node)
        if envelope is None:
            k = max(st["k"] for st in statements.values())
            fewest = max(st["min_contributors"] for st in statements.values())
            dp = {n: st["dp"] for n, st in statements.items() if st["dp"]}
            attestations = {n: given[n].attestation for n in sorted(given)}
        else:
            k, fewest, dp = envelope["k"], envelope["min_contributors"], envelope["dp"]
            attestations = envelope["attestations"]
        if req.k != k:
            raise refuse(f"the task reports k = {req.k}, the contributors attest k = {k}")
        if req.min_contributors != fewest:
            raise refuse(f"the task reports {req.min_contributors} as the fewest "
                         f"contributors, the contributors attest {fewest}")
        if canonical_json(req.dp) != canonical_json(dp):
            raise refuse(f"the task reports DP at {', '.join(sorted(req.dp)) or 'no node'}, "
                         f"the contributors attest DP at {', '.join(sorted(dp)) or 'no node'}"
                         " (or other DP)")
        try:
            total = sum_ciphertexts(adm.key.public_bytes(),
                                    [given[n].ciphertext for n in sorted(given)])
        except UserError as exc:
            raise refuse(str(exc)) from None
        return Attested(total, attestations, envelope["round"] if envelope else 0, reviewers)

    def _trained(self, req: ReleaseRequest, adm: Admission
                 ) -> tuple[Attested, dict[str, np.ndarray], dict]:
        """A training job's rounds made again here from their contributors' attested
        updates (node/round_updates.py :func:`verify_rounds`) — never a sum of the
        coordinator's making — and the pooled sums the job type releases; else refused,
        audited. The contributors whose own cells ask for output review, in any round
        that reached the released model or metrics, review it before it leaves."""
        if req.aggregates:
            raise self._refused(adm, req, "the task carries pooled sums of the "
                                "coordinator's making; this node sums the rounds' attested "
                                "updates itself")
        expect = {"job_id": req.job_id, "study_id": req.study_id,
                  "key_version": req.key_version, "researcher": req.researcher,
                  "spec_sha256": canonical_sha256(req.spec), "dp": None}
        try:
            trained = verify_rounds(
                req.rounds, key=adm.key, ca_pem=self.ca_pem,
                revoked=self.gate.studies.trust.fresh(req.job_id).serials, expect=expect,
                through=req.round if req.stage == "progress" else None)
        except UserError as exc:
            raise self._refused(adm, req, str(exc)) from None
        totals, extra = trained.totals, dict(req.extra)
        by_round = {k: v for k, v in trained.contributors.items() if k != "final"}
        if req.stage == "progress":
            totals = {"metrics": totals["final_metrics"] if "final" in trained.contributors
                      else totals[f"metrics.{len(by_round)}"]}
        else:
            if "final" not in trained.contributors:
                raise self._refused(adm, req, "the training rounds given hold no final "
                                    "evaluation")
            final = trained.contributors["final"]
            if sorted(req.contributors) != final:
                raise self._refused(adm, req, f"the task names contributors "
                                    f"{', '.join(sorted(req.contributors))}; the final "
                                    f"evaluation was made by {', '.join(final)}")
            # what the result says of the rounds is what their attestations say
            extra |= {"rounds_done": len(by_round), "contributors_by_round": by_round}
        reviewers = [n for n in trained.flagged if n != self.node]
        return (Attested(b"", trained.attestations, len(by_round), reviewers), totals,
                extra)

    def _self_masks(self, req: ReleaseRequest, adm, envelope: dict | None,
                    total: bytes) -> np.ndarray | None:
        """The contributors' revealed self-masks of the attempt summed (node/masking.py);
        a sole contributor's lone mask, which only it can make, so only if it is this
        node; None for a further round of several (pairwise masks only) or a one-node job."""
        if lone(req, req.contributors):
            if req.contributors != [self.node]:
                raise UserError(f"node {self.node} refuses to release job {req.job_id}: its "
                                f"sole contributor {req.contributors[0]} releases its own sum")
            stage, round_no = (("round", envelope["round"]) if envelope is not None
                               else (compute_stage(req.attempt), 0))
            return self.gate.lone_mask(req, stage, round_no, he.parse(total).slots)
        if envelope is not None or len(req.contributors) < 2:
            return None
        try:
            if len(req.contributors) + len(req.dropped) >= SHARED_FROM:
                return recovered_masks(adm.key, req.job_id, req.reveals, req.contributors,
                                       req.dropped, req.attempt, he.parse(total).slots)
            if req.dropped:
                raise UserError(f"a set of {len(req.contributors) + len(req.dropped)} "
                                "recovers no dropped node")
            return revealed_masks(adm.key, req.job_id, req.reveals, req.contributors,
                                  req.attempt, he.parse(total).slots)
        except UserError as exc:
            raise UserError(f"node {self.node} refuses to release job {req.job_id}: "
                            f"{exc}") from None

    def release(self, req: ReleaseRequest) -> ReleaseReply:
        adm = self.gate.admit(req, "release", audit=False)
        reviewed = adm.policy.output_review
        if reviewed and req.stage == "progress":
            raise UserError(f"node {self.node}: results on {adm.policy.grade}/"
                            f"{adm.policy.category} data leave only after the data "
                            f"officer's output review ({adm.policy.sources['output_review']})"
                            ", so no live metrics are released; the final result, which "
                            "holds them, is reviewed")
        rules = self._enough_contributors(req, adm)
        step, digest, what = self._step(req)
        with self.gate.replays_audited(req, adm.row.dataset_id, "release"):
            with self.gate.store.tx() as con:
                prior = self.gate.answered(con, adm, step, digest, what)
        if prior is not None:  # a retry: the very reply this node gave, nothing new
            self.gate.retried(adm, step)
            return ReleaseReply.loads(prior)
        # held already (this node's officer, or other contributors', review it): their
        # decisions, not a new decode
        held = (self.reviews.find(req.job_id, adm.row.dataset_id, step)
                or self.reviews.withheld(req.job_id, adm.row.dataset_id)) \
            if req.stage == "final" else None
        if held is not None:
            if held.step == step and held.task_sha256 != digest:
                with self.gate.replays_audited(req, adm.row.dataset_id, "release"):
                    raise replay_refusal(self.node, req.job_id, what)
            return self._reviewed(req, adm, held, step, digest, what)
        key, job_id = adm.key, req.job_id
        envelope = open_for_members(key, STATE, job_id, req.state) if req.state else None
        if adm.job.needs_training:  # every round made again here from what nodes attest
            attested, totals, extra = self._trained(req, adm)
        else:
            attested, extra = self._attested(req, adm, envelope), req.extra
        if attested.reviewers and req.stage != "final":
            # live progress (or a release relabelled as it) would skip their reviews
            raise self._refused(adm, req, "the output review of contributor "
                                f"{', '.join(attested.reviewers)} comes before any "
                                "result leaves, so no live metrics are released; only "
                                "the final result, once reviewed")
        if not adm.job.needs_training:
            totals = {"sum": key.decrypt(attested.total, unmask=self._self_masks(
                req, adm, envelope, attested.total))}
        state = envelope["state"] if envelope else None
        pooled = Pooled(totals=totals, vocab=vocabulary_union(key, job_id, req.vocabularies),
                        k=req.k, dp=req.dp, contributors=req.contributors,
                        record=adm.row.record, state=state,
                        stage=req.stage, round=req.round, extra=extra)
        try:
            out = adm.job.release(adm.params, pooled)
        except ValueError as exc:  # a corrupted aggregate: say so, release nothing
            raise UserError(f"node {self.node}: {exc}") from None
        if isinstance(out, NextRound):
            # the query carries its round; the state (this node's alone) what the next
            # step's contributions must be attested for, and the compute's attestations
            round_no = attested.round + 1
            query = seal_for_members(key, QUERY, job_id, {"round": round_no,
                                                          "query": out.query})
            kept_state = {"state": out.state, "round": round_no,
                          "query_sha256": hashlib.sha256(query).hexdigest(),
                          "contributors": sorted(req.contributors),
                          "attestations": attested.attestations,
                          "k": req.k, "min_contributors": req.min_contributors,
                          "dp": req.dp}
            reply = ReleaseReply(state=seal_for_members(key, STATE, job_id, kept_state),
                                 query=query)
            with self.gate.replays_audited(req, adm.row.dataset_id, "release"):
                with self.gate.store.tx() as con:
                    kept = self.gate.keep(con, adm, step, digest, reply.dumps(), what)
            return ReleaseReply.loads(kept)
        final_stage = req.stage == "final"
        claim = SealKeyClaim.from_dict(req.researcher_claim)
        public = researcher_key(req.researcher_claim, self.ca_pem, req.researcher)
        released_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result = dict(out.result)
        result["type"] = adm.spec.type
        result["meta"] = {"job_id": job_id, "study_id": req.study_id,
                          "contributors": req.contributors, "k": req.k,
                          **result.get("meta", {}), "released_by": self.node,
                          "released_at": released_at}
        result[RESULT_PROVENANCE] = self._provenance(req, adm, rules, attested,
                                                     researcher=claim.name,
                                                     released_at=released_at)
        others = attested.reviewers if final_stage else []
        if reviewed or others:
            result[RESULT_PROVENANCE]["output_review"] = {
                "node": self.node if reviewed else None,
                "required_by": adm.policy.sources["output_review"] if reviewed else None,
                "contributors": others}
        signed = sign_result(result, node=self.node, cert_path=self.tls.cert,
                             key_path=self.tls.key)
        if reviewed or others:  # the very bytes that would be sealed wait for review
            plain = json.dumps(signed).encode()
            pol = adm.policy
            why = [say("review.own", grade=pol.grade, category=pol.category,
                       src=pol.sources["output_review"])] if reviewed else []
            if others:
                why.append(say("review.others", nodes=", ".join(others)))
            held = self.reviews.hold(
                job_id=job_id, dataset_id=adm.row.dataset_id, step=step, task_sha256=digest,
                study_id=req.study_id, researcher=claim.name, job_type=adm.spec.type,
                grade=pol.grade, category=pol.category,
                why=say("review.both", first=why[0], second=why[1]) if len(why) == 2
                else why[0],
                spec=req.spec, checks={**self._checks(adm, rules), "reviewers": others},
                result=plain, result_sha256=hashlib.sha256(plain).hexdigest(), own=reviewed)
            return self._reviewed(req, adm, held, step, digest, what)
        final = req.stage == "final"
        context = result_context(job_id) if final else progress_context(job_id, req.round)
        sealed = seal(public, json.dumps(signed).encode(), context=context)
        with self.gate.replays_audited(req, adm.row.dataset_id, "release"):
            with self.gate.store.tx() as con:  # the answer is kept with its release record
                kept = self.gate.keep(con, adm, step, digest,
                                      ReleaseReply(sealed=sealed).dumps(), what)
                AuditLog.append_in(con, "policy", "result.seal" if final else
                                   "result.progress", adm.row.dataset_id,
                                   {"job_id": job_id, "researcher": claim.name,
                                    "contributors": req.contributors, "round": req.round,
                                    "result_sha256": result_digest(signed)})
        return ReleaseReply.loads(kept)

    @staticmethod
    def _checks(adm: Admission, rules: dict) -> dict:
        """The disclosure checks a held result passed, as the officer reviews them: the
        pooling rule applied, this node's cell thresholds and their sources, DP."""
        pol = adm.policy
        return {"pooling": rules, "min_cell_count": pol.min_cell_count,
                "min_contributors": pol.min_contributors,
                "query_auditing": pol.query_auditing,
                "dp": {"applied": adm.decision.dp, "epsilon": adm.decision.epsilon},
                "sources": {n: pol.sources.get(n, "") for n in (
                    "min_cell_count", "min_contributors", "query_auditing", "output_review")},
                "suppression": say("chk.suppression")}

    def _reviewed(self, req: ReleaseRequest, adm: Admission, held: Review, step: str,
                  digest: str, what: str) -> ReleaseReply:
        """The answer to a release step under review: wait while the officer has not
        decided; a released result's kept bytes sealed to the researcher (with its
        release record); a withheld one's reason only, sealed to the researcher."""
        job_id = req.job_id
        if held.state == "pending":
            raise Waiting(f"in output review at node {self.node} ({held.review_id}): its "
                          "officer releases or withholds the pooled result", phase=PHASE)
        public = researcher_key(req.researcher_claim, self.ca_pem, req.researcher)
        if held.state == "released":
            others = held.checks.get("reviewers", [])
            missing = [n for n in others if n not in req.verdicts]
            if missing:  # each reviewing contributor's officer first (relayed, sealed)
                return ReleaseReply(reviews={
                    n: seal(self._reviewer_key(req, adm, n), held.result,
                            context=review_context(job_id, n)) for n in missing},
                    result_sha256=held.result_sha256)
            self._check_verdicts(req, adm, held, others)
            sealed = seal(public, held.result, context=result_context(job_id))
            reply = ReleaseReply(sealed=sealed)
        else:
            reply = ReleaseReply(withheld=seal(public, held.withheld_message(self.node),
                                               context=refusal_context(job_id, self.node)))
        with self.gate.replays_audited(req, adm.row.dataset_id, "release"):
            with self.gate.store.tx() as con:
                prior = self.gate.answered(con, adm, step, digest, what)
                if prior is not None:  # a concurrent copy of the task answered first
                    return ReleaseReply.loads(prior)
                kept = self.gate.keep(con, adm, step, digest, reply.dumps(), what)
                details = {"job_id": job_id, "researcher": held.researcher,
                           "contributors": req.contributors, "round": req.round,
                           "review_id": held.review_id, "review": held.state}
                if held.state == "released":
                    details["result_sha256"] = result_digest(held.document())
                    details["reviewed_by"] = [d["by"] for d in held.decisions if d["release"]]
                AuditLog.append_in(con, "policy", "result.seal" if held.state == "released"
                                   else "result.withheld", adm.row.dataset_id, details)
        return ReleaseReply.loads(kept)

    def _refused(self, adm: Admission, req: ReleaseRequest, reason: str) -> UserError:
        """Refuse the release (one message, audited as ``release.refuse``)."""
        message = f"node {self.node} releases nothing for job {req.job_id}: {reason}"
        self.audit.append("policy", "release.refuse", adm.row.dataset_id,
                          {"job_id": req.job_id, "researcher": req.researcher,
                           "stage": req.stage, "reason": message})
        return UserError(message)

    def _reviewer_key(self, req: ReleaseRequest, adm: Admission, node: str) -> bytes:
        """The seal key of reviewing contributor ``node``, as the federation CA certifies
        it (the task carries every contributor's claim)."""
        claim = req.reviewer_claims.get(node)
        if not claim:
            raise self._refused(adm, req, f"the task carries no seal key of contributor "
                                f"{node}, whose officer must review the result")
        try:
            return verify_claim(SealKeyClaim.from_dict(claim), self.ca_pem,
                                expect_role="node", expect_name=node)
        except (UserError, ValueError, KeyError, TypeError) as exc:
            raise self._refused(adm, req, f"the seal key given for contributor {node} is "
                                f"not its own: {exc}") from None

    def _check_verdicts(self, req: ReleaseRequest, adm: Admission, held: Review,
                        others: list[str]) -> None:
        """Every reviewing contributor's verdict on exactly the held result, signed by
        that node, says release; else refused (a coordinator that skips a reviewer, or
        forges or moves a verdict, gets nothing)."""
        revoked = self.gate.studies.trust.fresh(req.job_id).serials
        for node in others:
            try:
                st = verify_verdict(req.verdicts[node], self.ca_pem, node=node, expect={
                    "job_id": req.job_id, "release_node": self.node,
                    "result_sha256": held.result_sha256}, revoked=revoked)
            except UserError as exc:
                raise self._refused(adm, req, str(exc)) from None
            if st["decision"] != "release":
                raise self._refused(adm, req, f"the officer of contributor {node} withheld "
                                    "the result")

    def review(self, req: ReviewRequest) -> ReviewReply:
        """As a contributor whose own cell asks for output review: the result another
        node releases, sealed to this node, checked (signed by that release node, for
        this job, its researcher and spec, holding this node's own attested
        contribution), held for this node's officer; then this node's verdict, signed
        with its node key, and a withholding's reason sealed to the researcher."""
        adm = self.gate.admit(req, "release", audit=False)
        job_id, said = req.job_id, f"node {self.node} reviews nothing for job {req.job_id}"
        try:
            plain = open_sealed(load_seal_key(self.tls.key.parent), req.sealed,
                                context=review_context(job_id, self.node))
        except UserError:
            raise UserError(f"{said}: the result given was not sealed to this node for "
                            "this job") from None
        digest = hashlib.sha256(plain).hexdigest()
        if digest != req.result_sha256:
            raise UserError(f"{said}: the result given is not the one named (sha256 "
                            f"{digest[:16]}…, named {req.result_sha256[:16]}…)")
        try:
            doc = json.loads(plain)
            verified = verify_result(doc, self.ca_pem, job_id=job_id,
                                     researcher=req.researcher,
                                     spec_sha256=canonical_sha256(req.spec),
                                     revoked=self.gate.studies.trust.fresh(job_id).serials)
        except (ValueError, UserError) as exc:
            raise UserError(f"{said}: {exc}") from None
        if verified.signer != req.release_node:
            raise UserError(f"{said}: the result is signed by node {verified.signer}, not "
                            f"by its release node {req.release_node}")
        if self.node not in dict(verified.attested):
            raise UserError(f"{said}: the result does not hold this node's attested "
                            "contribution")
        step = f"review:{req.release_node}"
        held = (self.reviews.find(job_id, adm.row.dataset_id, step)
                or self.reviews.withheld(job_id, adm.row.dataset_id))
        if held is None:
            pol = adm.policy
            held = self.reviews.hold(
                job_id=job_id, dataset_id=adm.row.dataset_id, step=step, task_sha256=digest,
                study_id=req.study_id, researcher=req.researcher, job_type=adm.spec.type,
                grade=pol.grade, category=pol.category,
                why=say("review.contributed", grade=pol.grade, category=pol.category,
                        src=pol.sources["output_review"], release_node=req.release_node),
                spec=req.spec, checks={"release_node": req.release_node,
                                       "rules": verified.provenance.get("rules", {}),
                                       "policy": verified.provenance.get("policy", {})},
                result=plain, result_sha256=digest)
        if held.step == step and held.task_sha256 != digest:
            with self.gate.replays_audited(req, adm.row.dataset_id, "review"):
                raise replay_refusal(self.node, job_id, "its officer reviews another result "
                                     f"of this job from {req.release_node}")
        if held.state == "pending":
            raise Waiting(f"in output review at node {self.node} ({held.review_id}): its "
                          "officer releases or withholds the pooled result", phase=PHASE)
        release = held.state == "released"
        verdict = sign_verdict({
            "job_id": job_id, "node": self.node, "release_node": req.release_node,
            "result_sha256": digest, "decision": "release" if release else "withhold",
            "review_id": held.review_id,
            "reviewed_by": [{"by": d["by"], "role": d["role"], "key": d["key"]}
                            for d in held.decisions]},
            node=self.node, cert_path=self.tls.cert, key_path=self.tls.key)
        if release:
            return ReviewReply(verdict=verdict)
        public = researcher_key(req.researcher_claim, self.ca_pem, req.researcher)
        return ReviewReply(verdict=verdict, withheld=seal(
            public, held.withheld_message(self.node),
            context=refusal_context(job_id, self.node)))

    @staticmethod
    def _step(req: ReleaseRequest) -> tuple[str, str, str]:
        """The release step a request is (its stage, round, and the state it continues:
        each step of a multi-round release is answered once), what its answer is made of
        (the pooled ciphertexts and every other input of the decode), and the words of
        the refusal of a step asked again from other inputs."""
        state = hashlib.sha256(req.state or b"").hexdigest()
        step = f"release:{req.stage}:{req.round}:{state[:32]}"
        digest = canonical_sha256({
            "aggregates": {n: hashlib.sha256(b).hexdigest()
                           for n, b in sorted(req.aggregates.items())},
            "rounds": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(req.rounds.items())},
            "contributions": [[c.node, hashlib.sha256(c.ciphertext).hexdigest(),
                               canonical_sha256(c.attestation)]
                              for c in req.contributions],
            "vocabularies": [hashlib.sha256(v).hexdigest() for v in req.vocabularies],
            "contributors": req.contributors, "dp": req.dp, "k": req.k,
            **({"dropped": req.dropped} if req.dropped else {}),
            "min_contributors": req.min_contributors, "study_members": req.study_members,
            "extra": req.extra})
        label = (f"progress of round {req.round}" if req.stage == "progress" else
                 "final result" if req.state is None else "release (a later round)")
        return step, digest, f"it released this job's {label} from other pooled ciphertexts"
