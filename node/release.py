"""The one release path: the release node decrypts the pooled numbers, has the job type
decode them under the aggregate-level disclosure rules, and seals the result to the
researcher with its provenance — or, for a multi-round release, seals its own state and
the next round's query for the members.

May pooled results leave this node? One answer for every job type: the release node's
own dataset in the study must admit the job as any task does (policy, and the officer's
approval where the cell asks for one), and a cell that asks for the officer's review of
outputs (``output_review``) releases nothing without that review. The coordinator, which
relays the ciphertexts, can read none of it.
"""

from __future__ import annotations

import json
import time

from jobs.base import NextRound, Pooled
from node.audit import AuditLog
from node.gate import Gate
from scifed.errors import UserError
from scifed.he import open_for_members, seal_for_members
from scifed.sealing import (
    SealKeyClaim,
    progress_context,
    refusal_context,
    result_context,
    seal,
    verify_claim,
)
from scifed.tasks import ReleaseReply, ReleaseRequest

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


def _pools_enough(contributors: int, need: int, members: int) -> bool:
    """One contributor (the release node's own data), three or more, or two where every
    policy allows two and the study has exactly two members (so a researcher cannot pick
    two nodes of a larger study)."""
    return contributors != 2 or need <= 1 or (need <= 2 and members == 2)


class ReleasePath:
    def __init__(self, gate: Gate, audit: AuditLog, ca_pem: bytes) -> None:
        self.gate = gate
        self.audit = audit
        self.ca_pem = ca_pem
        self.node = gate.node

    def _enough_contributors(self, req: ReleaseRequest, adm) -> None:
        if req.dp and len(req.dp) == len(req.contributors):
            return  # every contribution is noised: there is no exact share to take apart
        need = max(req.min_contributors, adm.policy.min_contributors)
        if not _pools_enough(len(req.contributors), need, req.study_members):
            raise UserError(f"node {self.node}: an exact pooled result needs at least 3 "
                            "contributors (two only in a two-member study whose policies "
                            "all allow it), so that no contributor can read another's share")

    def release(self, req: ReleaseRequest) -> ReleaseReply:
        adm = self.gate.admit(req, "release", audit=False)
        if adm.policy.output_review:
            raise UserError(f"node {self.node}: results on {adm.policy.grade}/"
                            f"{adm.policy.category} data leave only after the data "
                            f"officer's output review ({adm.policy.sources['output_review']}), "
                            "which this node does not offer yet")
        self._enough_contributors(req, adm)
        key, job_id = adm.key, req.job_id
        totals = {name: key.decrypt(blob) for name, blob in req.aggregates.items()}
        state = open_for_members(key, STATE, job_id, req.state) if req.state else None
        pooled = Pooled(totals=totals, vocab=vocabulary_union(key, job_id, req.vocabularies),
                        k=req.k, dp=req.dp, contributors=req.contributors,
                        record=adm.row.record, state=state,
                        stage=req.stage, round=req.round, extra=req.extra)
        try:
            out = adm.job.release(adm.params, pooled)
        except ValueError as exc:  # a corrupted aggregate: say so, release nothing
            raise UserError(f"node {self.node}: {exc}") from None
        if isinstance(out, NextRound):
            return ReleaseReply(state=seal_for_members(key, STATE, job_id, out.state),
                                query=seal_for_members(key, QUERY, job_id, out.query))
        result = dict(out.result)
        result["type"] = adm.spec.type
        result["meta"] = {"job_id": job_id, "study_id": req.study_id,
                          "contributors": req.contributors, "k": req.k,
                          **result.get("meta", {}), "released_by": self.node,
                          "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        claim = SealKeyClaim.from_dict(req.researcher_claim)
        public = researcher_key(req.researcher_claim, self.ca_pem, req.researcher)
        final = req.stage == "final"
        context = result_context(job_id) if final else progress_context(job_id, req.round)
        sealed = seal(public, json.dumps(result).encode(), context=context)
        self.audit.append("policy", "result.seal" if final else "result.progress",
                          adm.row.dataset_id, {"job_id": job_id, "researcher": claim.name,
                                               "contributors": req.contributors,
                                               "round": req.round})
        return ReleaseReply(sealed=sealed)
