"""The coordinator side of aggregate job types: (vocabulary,) compute, release — and,
where the release asks for it, more rounds.

The coordinator does not sum: it hands the release node every contributor's ciphertext
with that node's signed attestation of it (:class:`scifed.tasks.Contribution`), and the
release node checks them and sums them itself (node/release.py), so a coordinator that
left a node out, counted one twice or took another job's ciphertext is refused there.

This is the template :meth:`AggregateJob.coordinate`; a type only says whether it needs
a vocabulary phase, how many exchange steps between the nodes it needs before the compute
(``exchange_steps``; then every node must answer every step and contribute), and how to
decode. Categories travel sealed under the study key (every
node forms their union itself, so the coordinator never learns a category in clear); a
release node's state between rounds and each round's query travel sealed the same way.
"""

from __future__ import annotations

from typing import Any

from jobs.base import Driver, JobFailed, JobType, Run, quorum, released
from scifed.recovery import recoverable, shortfall
from scifed.states import IN_OUTPUT_REVIEW, Phase
from scifed.tasks import (
    MAX_ATTEMPTS,
    CiphertextReply,
    ComputeReply,
    ComputeRequest,
    Contribution,
    ExchangeReply,
    ExchangeRequest,
    Inbound,
    ReleaseReply,
    ReleaseRequest,
    Reserved,
    ReviewReply,
    ReviewRequest,
    RoundRequest,
    TaskKind,
    UnmaskReply,
    UnmaskRequest,
    VocabReply,
)

MAX_ROUNDS = 40  # a multi-round release (exact quantiles) needs ~4-6; more means a bug


class AggregateJob(JobType):
    """A job whose nodes each contribute one vector, summed under encryption.

    Restartable: every task it sends is made from the job's stored spec and study and
    from the nodes' earlier replies, so a re-run after a coordinator restart sends the
    same tasks and each node replays the answers it kept (node/gate.py)."""

    restartable = True

    def wants_vocabulary(self, params: Any) -> bool:
        """Whether the layout depends on categories the nodes hold."""
        return False

    def coordinate(self, driver: Driver, run: Run) -> bytes:
        params = run.spec.params
        headers = {n: driver.header(run, n) for n in run.targets}
        vocabularies: list[bytes] = []
        nodes = list(run.targets)
        if self.wants_vocabulary(params):
            driver.set_phase(run, Phase("vocabulary"))
            answers, failed = driver.fanout(run, "vocabulary", TaskKind.VOCAB, headers,
                                            VocabReply)
            quorum(run, answers, failed)
            vocabularies = [answers[n].vocabulary for n in sorted(answers)]
            nodes = sorted(answers)
        # every node holds the job's ε before any computes: a job that cannot get its
        # quorum this way fails here, charged nothing anywhere
        driver.set_phase(run, Phase("reserve"))
        reserved, failed = driver.fanout(run, "reserve", TaskKind.RESERVE,
                                         {n: headers[n] for n in nodes}, Reserved)
        quorum(run, reserved, failed)
        steps = self.exchange_steps(params, len(nodes))
        if steps:  # a protocol between the nodes: each of them, in every step
            _all_answered(nodes, reserved, failed)
        nodes = sorted(reserved)
        inbound = _exchange(driver, run, headers, nodes, steps) if steps else {}
        computed, attempt, masking = _compute(driver, run, headers, nodes, vocabularies,
                                              inbound, exact=bool(steps))
        contributors = sorted(computed)
        dropped = sorted(set(masking) - set(computed))  # masked for, answer never came
        reveals = _reveal(driver, run, headers, computed, attempt, masking)
        masking = {n: masking[n] for n in contributors}  # the further rounds' set
        driver.set_phase(run, Phase("aggregate"))
        driver.set_contributors(run, contributors)
        release_node = run.release_node(contributors)
        request = ReleaseRequest(
            **headers[release_node].model_dump(), vocabularies=vocabularies,
            k=max(a.k for a in computed.values()), contributors=contributors,
            dp={n: a.dp for n, a in computed.items() if a.dp},
            contributions=_contributions(computed, contributors),
            min_contributors=max(a.min_contributors for a in computed.values()),
            study_members=run.study.members, attempt=attempt, reveals=reveals,
            dropped=dropped, reviewer_claims=masking)
        for round_no in range(1, MAX_ROUNDS + 1):
            driver.set_phase(run, Phase("release"))
            out, failed = driver.fanout(run, "release", TaskKind.RELEASE,
                                        {release_node: request}, ReleaseReply)
            if release_node not in out:
                raise JobFailed(failed[release_node])
            answer: ReleaseReply = out[release_node]
            if answer.reviews:  # contributors' officers review the result first
                request = request.model_copy(update={"verdicts": {
                    **request.verdicts,
                    **contributor_reviews(driver, run, headers, release_node, answer)}})
                out, failed = driver.fanout(run, "release", TaskKind.RELEASE,
                                            {release_node: request}, ReleaseReply)
                if release_node not in out:
                    raise JobFailed(failed[release_node])
                answer = out[release_node]
                if answer.reviews:
                    raise JobFailed(f"release node {release_node} still waits for the "
                                    "output review of " + ", ".join(sorted(answer.reviews)))
            if answer.sealed is not None or answer.withheld is not None:
                return released(driver, run, release_node, answer)
            phase = Phase("round", round_no)
            driver.set_phase(run, phase)
            counts, failed = driver.fanout(
                run, str(phase), TaskKind.ROUND,
                {n: RoundRequest(**headers[n].model_dump(), query=answer.query,
                                 masking=masking) for n in contributors}, CiphertextReply)
            if set(counts) != set(contributors):
                raise JobFailed("a node dropped out during a further round of the release: "
                                + "; ".join(failed[n] for n in sorted(failed)))
            request = request.model_copy(update={
                "contributions": _contributions(counts, contributors), "state": answer.state})
        raise JobFailed("the release did not finish within the round limit")


def _compute(driver: Driver, run: Run, headers: dict, nodes: list[str],
             vocabularies: list[bytes], inbound: dict, *, exact: bool
             ) -> tuple[dict[str, ComputeReply], int, dict[str, dict]]:
    """The compute, masked for the nodes asked; after a dropout, a fresh attempt among
    the survivors (node/masking.py) while the quorum holds. ``exact``: a job with exchange
    steps, where every node must take part. Returns the final attempt's replies, its
    number and the seal key claims its contributions are masked for."""
    asked, why = list(nodes), {}
    for attempt in range(1, MAX_ATTEMPTS + 1):
        step = Phase("compute") if attempt == 1 else Phase("compute", attempt)
        phase = str(step)
        driver.set_phase(run, step)
        masking = driver.seal_claims(asked)
        payloads = {n: ComputeRequest(**headers[n].model_dump(), vocabularies=vocabularies,
                                      exchange=inbound.get(n), masking=masking,
                                      attempt=attempt) for n in asked}
        computed, failed = driver.fanout(run, phase, TaskKind.COMPUTE, payloads,
                                         ComputeReply)
        failed = {**why, **failed}
        quorum(run, computed, failed)
        if exact:
            _all_answered(nodes, computed, failed)
        if set(computed) == set(asked) or recoverable(len(asked), len(computed)):
            return computed, attempt, masking  # the unmask takes the dropped out
        why, asked = failed, sorted(computed)  # the survivors mask afresh for each other
    raise JobFailed(f"nodes kept dropping out: no attempt of {MAX_ATTEMPTS} had every node "
                    "it asked contribute")


def contributor_reviews(driver: Driver, run: Run, headers: dict, release_node: str,
            answer: ReleaseReply) -> dict[str, dict]:
    """Relay the result, sealed to each contributor whose own cell asks for its officer's
    output review, and collect their signed verdicts (the release node checks them); a
    withholding ends the job withheld, its reason sealed to the researcher."""
    driver.set_phase(run, Phase(IN_OUTPUT_REVIEW))
    replies, failed = driver.fanout(run, "output review", TaskKind.REVIEW, {
        n: ReviewRequest(**headers[n].model_dump(), release_node=release_node, sealed=blob,
                         result_sha256=answer.result_sha256)
        for n, blob in answer.reviews.items()}, ReviewReply)
    if failed:
        raise JobFailed("; ".join(failed[n] for n in sorted(failed)))
    for node in sorted(replies):
        if replies[node].withheld is not None:
            released(driver, run, node, ReleaseReply(withheld=replies[node].withheld),
                     "output review")
    return {n: r.verdict for n, r in replies.items()}


def _reveal(driver: Driver, run: Run, headers: dict, computed: dict[str, ComputeReply],
            attempt: int, masking: dict[str, dict]) -> dict[str, bytes]:
    """The contributors' answers to the unmask of the final attempt, sealed for the
    release node (node/masking.py). A set of two: both self-mask seeds, or the sum cannot
    be unmasked. Three or more: each one's shares of the others' seeds and its pairwise
    seeds with the nodes whose answer never came; a node that drops here is still summed
    (t shares of its seed suffice) while t + 1 answer and none was left out already."""
    contributors = sorted(computed)
    if len(contributors) < 2:
        return {}
    dropped = sorted(set(masking) - set(computed))
    driver.set_phase(run, Phase("unmask"))
    answers, failed = driver.fanout(run, "unmask", TaskKind.UNMASK, {
        n: UnmaskRequest(**headers[n].model_dump(), attempt=attempt,
                         contributors=contributors, dropped=dropped, masking=masking,
                         shares={s: r.shares[n] for s, r in computed.items()
                                 if n in r.shares}) for n in contributors}, UnmaskReply)
    missing = sorted(set(contributors) - set(answers))
    need = shortfall(len(masking), len(dropped), len(answers)) if missing else None
    if need:
        raise JobFailed(f"a node dropped out after the set of contributors was final, and "
                        f"taking the masks off the sum needs {need}: "
                        + "; ".join(failed.get(m, f"node {m} did not answer")
                                    for m in missing))
    return {m: answers[m].sealed for m in sorted(answers)}


def _all_answered(nodes: list[str], answers: dict, failed: dict[str, str]) -> None:
    missing = sorted(set(nodes) - set(answers))
    if missing:
        raise JobFailed("every node of a job with exchange steps must take part: "
                        + "; ".join(failed.get(n, f"node {n} did not answer")
                                    for n in missing))


def _exchange(driver: Driver, run: Run, headers: dict, nodes: list[str],
              steps: int) -> dict[str, Inbound]:
    """Run the exchange steps: every node in each, the blobs each addressed to a peer
    relayed to it at the next step (sealed for it: the coordinator learns their sizes).
    The peers are the job's nodes, the one that will release first. Returns what the
    last step addressed to each node, for its compute."""
    first = run.release_node(nodes)
    peers = [first, *sorted(n for n in nodes if n != first)]
    blobs: dict[str, dict[str, bytes]] = {n: {} for n in nodes}
    for step in range(steps):
        phase = Phase("exchange", step + 1, steps)
        driver.set_phase(run, phase)
        payloads = {n: ExchangeRequest(**headers[n].model_dump(), exchange=Inbound(
            step=step, peers=peers, blobs=blobs[n])) for n in nodes}
        answers, failed = driver.fanout(run, str(phase), TaskKind.EXCHANGE, payloads,
                                        ExchangeReply)
        _all_answered(nodes, answers, failed)
        blobs = {n: {} for n in nodes}
        for sender in sorted(answers):
            for recipient, blob in answers[sender].outbound.items():
                if recipient not in blobs:
                    raise JobFailed(f"node {sender} addressed a node outside the job "
                                    f"({recipient!r}) in exchange step {step + 1}")
                blobs[recipient][sender] = blob
    return {n: Inbound(step=steps, peers=peers, blobs=blobs[n]) for n in nodes}


def _contributions(replies: dict[str, ComputeReply | CiphertextReply],
                   contributors: list[str]) -> list[Contribution]:
    """Each contributor's ciphertext with its attestation, for the release node."""
    return [Contribution(node=n, ciphertext=replies[n].ciphertext,
                         attestation=replies[n].attestation) for n in contributors]
