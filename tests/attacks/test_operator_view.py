"""A curious operator: it reads everything the coordinator's operator API hands it about
the federation's work (ListAllJobs, over every researcher's jobs, and ListNodes), looking
for what a job released or why a node refused it, run through the real pipeline (the
in-memory link: real driver, gate, release path, sealing).

Both belong to the researcher alone: the result is sealed to the researcher's key, and so
is a node's reason for a refusal. The operator's listing carries job states only. Checked
on the first version of ListAllJobs, which listed each job as GetJob shows it (with its
tasks): the reply held every node's sealed refusal, bytes that are the researcher's own
and that no operator page needs.
"""

from __future__ import annotations

from islands import EXACT, ISLANDS, island_federation, job

from protos.scifed.v1 import coordinator_pb2 as pb
from scifed.states import JobStatus


def operator_reads(fed) -> bytes:
    """Everything the operator's listings return, as it travels."""
    api = fed.coordinator.api
    return (api.ListAllJobs(pb.ListJobsRequest(), None).SerializeToString()
            + api.ListNodes(pb.ListNodesRequest(), None).SerializeToString())


def released_values(result: dict) -> set[str]:
    """The released statistics as text or as the bytes of a double, wherever they sit."""
    import struct

    out: set[bytes] = set()

    def walk(v) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, float) and v != int(v):
            out.update((repr(v).encode(), f"{v:.2f}".encode(), struct.pack("<d", v)))

    walk({k: v for k, v in result.items() if k not in ("meta", "provenance")})
    return out


def test_the_operator_reads_no_result_and_no_reason(tmp_path, penguins, penguins_meta):
    fed = island_federation(tmp_path, penguins, penguins_meta)
    try:
        done, result = fed.run(job(EXACT))
        refused = fed.wait(fed.submit(job({"columns": ["species"]})))
        assert refused.status == JobStatus.FAILED
        reasons = [t for t in refused.tasks if t.sealed_reason]
        assert reasons and all("species" in t.detail for t in reasons)  # alice reads them
        sealed_result = fed.coordinator.jobs.sealed_result(done.job_id, fed.researcher)
        seen = operator_reads(fed)
        listed = fed.coordinator.api.ListAllJobs(pb.ListJobsRequest(), None).jobs
    finally:
        fed.__exit__(None, None, None)
    # nothing that is the researcher's: no result, no reason, sealed or in clear
    values = released_values(result)
    assert values and not [v for v in values if v in seen]
    assert sealed_result[:64] not in seen
    for t in reasons:
        assert t.sealed_reason[:64] not in seen
        assert t.detail.encode() not in seen
    assert all(not j.tasks and not j.progress for j in listed)
    # the operator sees both jobs, their states and who ran them
    states = {j.job_id: (j.status, j.researcher) for j in listed}
    assert states[done.job_id] == ("done", fed.researcher)
    assert states[refused.job_id] == ("failed", fed.researcher)
    assert sorted(done.contributors) == sorted(ISLANDS)
