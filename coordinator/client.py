"""Python client for researchers and operators; the `scifed` CLI is built on it.

An identity directory (made by `scifed researcher init` / `scifed operator init`) holds
`client.yaml` (name, role, coordinator address), the private key `<role>.key`, the
certificate `<name>.crt` issued by the federation CA, and `ca.crt`; optionally the CA's
`crl.pem`. The client keeps each job spec it submits under `jobs/`, so that a result can
be checked against the spec the researcher wrote, not the one the coordinator relayed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from protos.scifed.v1 import coordinator_pb2 as pb
from protos.scifed.v1 import coordinator_pb2_grpc as pbg
from scifed.config import load_config
from scifed.errors import UserError
from scifed.pki import load_crl_serials
from scifed.sealing import (
    VerifiedResult,
    canonical_sha256,
    load_seal_key,
    make_claim,
    open_refusals,
    open_result,
    open_sealed,
    progress_context,
    verify_result,
)
from scifed.states import JobStatus
from scifed.tls import TlsFiles, secure_channel


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: str
    coordinator: str


@dataclass(frozen=True)
class IdentityDir:
    path: Path
    cfg: ClientConfig

    @classmethod
    def load(cls, path: Path) -> IdentityDir:
        path = Path(path)
        if not (path / "client.yaml").exists():
            raise UserError(f"{path} is not an identity directory (no client.yaml); make one "
                            "with `scifed researcher init` or `scifed operator init`")
        return cls(path, load_config(path / "client.yaml", ClientConfig))

    def tls(self) -> TlsFiles:
        files = TlsFiles(self.path / "ca.crt", self.path / f"{self.cfg.name}.crt",
                         self.path / f"{self.cfg.role}.key")
        for f in (files.ca, files.cert):
            if not f.exists():
                raise UserError(f"{f} is missing: the operator signs your CSR with "
                                f"`scifed ca sign` and gives you it and ca.crt")
        return files


def spec_checks(spec: dict) -> dict:
    """What a result is checked against from the researcher's own job spec (the form
    the coordinator stores, ``JobSpec.to_dict()``): its hash and the nodes it names."""
    from jobs.spec import datasets_by_node, parse_job_dict

    return {"spec_sha256": canonical_sha256(spec),
            "spec_nodes": sorted(datasets_by_node(parse_job_dict(spec)))}


def load_spec_file(path: Path) -> dict:
    """A job.yaml as the coordinator stores it, for :meth:`Client.open_result`."""
    from jobs.spec import load_job

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    return load_job(text, str(path)).to_dict()


class Client:
    """One researcher's or operator's connection to the coordinator."""

    def __init__(self, identity: Path, coordinator: str | None = None,
                 timeout: float = 30) -> None:
        self.identity = IdentityDir.load(identity)
        self.address = coordinator or self.identity.cfg.coordinator
        self.timeout = timeout
        self._channel = secure_channel(self.address, self.identity.tls())
        self.stub = pbg.CoordinatorApiStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def whoami(self) -> dict:
        r = self.stub.WhoAmI(pb.WhoAmIRequest(), timeout=self.timeout)
        return {"name": r.name, "role": r.role}

    def search(self, query: str = "", *, subjects=(), platforms=(), grades=(), categories=(),
               keywords=(), columns=(), limit: int = 50,
               min_quality: str = "") -> pd.DataFrame:
        """Search the federated catalog; one row per dataset."""
        r = self.stub.SearchCatalog(pb.SearchRequest(
            query=query, subjects=subjects, platforms=platforms, grades=grades,
            categories=categories, keywords=keywords, columns=columns, limit=limit,
            min_quality=min_quality),
            timeout=self.timeout)
        return pd.DataFrame(
            [{"id": h.record_id, "title": h.title, "node": h.node, "platform": h.platform,
              "grade": h.grade, "category": h.category, "subjects": list(h.subjects),
              "rows": h.record_count if not h.stub else None, "stub": h.stub,
              "quality": h.quality or None}
             for h in r.hits],
            columns=["id", "title", "node", "platform", "grade", "category", "subjects",
                     "rows", "stub", "quality"])

    def record(self, record_id: str) -> dict:
        r = self.stub.GetRecord(pb.GetRecordRequest(record_id=record_id), timeout=self.timeout)
        return json.loads(r.record_json)

    def nodes(self) -> pd.DataFrame:
        r = self.stub.ListNodes(pb.ListNodesRequest(), timeout=self.timeout)
        return pd.DataFrame(
            [{"name": n.name, "platform": n.platform, "online": n.online,
              "last_seen": pd.to_datetime(n.last_seen_unix_ms, unit="ms", utc=True)
              if n.last_seen_unix_ms else None,
              "datasets": n.datasets, "version": n.software_version,
              "audit_seq": n.audit_seq if n.audit_hash else None,
              "audit_hash": n.audit_hash or None,
              "audit_received": pd.to_datetime(n.audit_received_unix_ms, unit="ms", utc=True)
              if n.audit_received_unix_ms else None} for n in r.nodes],
            columns=["name", "platform", "online", "last_seen", "datasets", "version",
                     "audit_seq", "audit_hash", "audit_received"])

    def all_jobs(self, *, study: str = "", status: str = "", limit: int = 0) -> list:
        """Operators: every researcher's jobs, newest first (states only: JobInfo
        summaries without tasks, progress or result)."""
        return list(self.stub.ListAllJobs(pb.ListJobsRequest(study=study, status=status,
                                                             limit=limit),
                                          timeout=self.timeout).jobs)

    def revocations(self):
        """Operators: the CRL the coordinator enforces (ListRevocationsReply), each
        revoked certificate named where the coordinator has seen it."""
        return self.stub.ListRevocations(pb.ListRevocationsRequest(), timeout=self.timeout)

    # -- studies -------------------------------------------------------------------------
    def create_study(self, name: str, purpose: str, nodes: list[str], min_nodes: int = 0):
        return self.stub.CreateStudy(pb.CreateStudyRequest(
            name=name, purpose=purpose, nodes=nodes, min_nodes=min_nodes), timeout=self.timeout)

    def add_researcher(self, study: str, researcher: str):
        return self.stub.AddResearcher(pb.AddResearcherRequest(
            study=study, researcher=researcher), timeout=self.timeout)

    def studies(self) -> list:
        return list(self.stub.ListStudies(pb.ListStudiesRequest(),
                                          timeout=self.timeout).studies)

    def study(self, key: str):
        for st in self.studies():
            if key in (st.study_id, st.name):
                return st
        raise UserError(f"no study '{key}' visible to you")

    # -- jobs ----------------------------------------------------------------------------
    def submit(self, spec_yaml: str, spec_name: str = "job.yaml") -> str:
        """Submit a job (the text of a job.yaml); returns its id."""
        ident = self.identity
        claim = make_claim(ident.path, name=ident.cfg.name, role=ident.cfg.role,
                           cert_path=ident.tls().cert, key_path=ident.tls().key)
        info = self.stub.SubmitJob(pb.SubmitJobRequest(
            spec_yaml=spec_yaml, spec_name=spec_name,
            seal_claim_json=json.dumps(claim.to_dict())), timeout=self.timeout)
        self._remember_spec(info.job_id, spec_yaml, spec_name)
        return info.job_id

    def _spec_path(self, job_id: str) -> Path:
        return self.identity.path / "jobs" / f"{Path(job_id).name}.spec.json"

    def _remember_spec(self, job_id: str, spec_yaml: str, spec_name: str) -> None:
        """Keep the spec as submitted (the coordinator accepted it, so it parses)."""
        from jobs.spec import load_job

        try:
            spec = load_job(spec_yaml, spec_name).to_dict()
            path = self._spec_path(job_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(spec, sort_keys=True), encoding="utf-8")
        except (UserError, OSError):
            pass  # the result is then checked without it

    def _remembered_spec(self, job_id: str) -> dict | None:
        try:
            return json.loads(self._spec_path(job_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _trust(self) -> tuple[bytes, set[int]]:
        """The federation CA this identity trusts, and the serials its CRL revokes."""
        tls = self.identity.tls()
        crl = self.identity.path / "crl.pem"
        return tls.ca.read_bytes(), load_crl_serials(crl, tls.ca) if crl.exists() else set()

    def jobs(self, *, study: str = "", status: str = "", limit: int = 0) -> list:
        """This researcher's jobs, newest first (JobInfo summaries without tasks)."""
        return list(self.stub.ListJobs(pb.ListJobsRequest(study=study, status=status,
                                                          limit=limit),
                                       timeout=self.timeout).jobs)

    def job(self, job_id: str, wait: float = 0.0):
        """The job's JobInfo, with each node's sealed refusal reason opened into the
        task's ``detail`` and the job's ``error`` (the coordinator holds only "refused
        at node X"). ``wait``: seconds the coordinator may wait for the job to change
        before it answers (a long poll)."""
        info = self.stub.GetJob(pb.GetJobRequest(job_id=job_id, wait_ms=int(wait * 1000)),
                                timeout=self.timeout + wait)
        sealed = {t.node: t.sealed_reason for t in info.tasks if t.sealed_reason}
        if sealed:
            info.error, reasons = open_refusals(load_seal_key(self.identity.path),
                                                info.job_id, info.error, sealed)
            for t in info.tasks:
                if t.sealed_reason and t.node in reasons:
                    t.detail = reasons[t.node]
        return info

    def resume(self, job_id: str):
        return self.stub.ResumeJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout)

    def cancel(self, job_id: str):
        return self.stub.CancelJob(pb.GetJobRequest(job_id=job_id), timeout=self.timeout)

    def wait(self, job_id: str, timeout: float = 600, poll: float = 10.0):
        """Block until the job is done or failed; returns its final JobInfo. Each ask
        waits at the coordinator up to ``poll`` seconds for the job to change (a long
        poll: the answer comes as soon as the job moves, without sleeping here)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            info = self.job(job_id, wait=max(0.0, min(poll, left)))
            if JobStatus(info.status).stopped:
                return info
            if time.monotonic() > deadline:
                raise UserError(f"job {job_id} still {info.status} after {timeout:.0f}s")

    def open_result(self, job_id: str, *, allow_unsigned: bool = False,
                    spec: dict | None = None) -> tuple[dict, VerifiedResult | None]:
        """The released result opened with this researcher's seal key, and what vouches
        for it: the release node's signature, checked against the federation CA, this
        job, this researcher, the contributors the coordinator reports, and the job spec
        (``spec``, else the one this client kept when it submitted the job). A result
        that fails is refused with the reason; an unsigned one too, unless
        ``allow_unsigned`` (then nothing vouches for it: the verification is None)."""
        sealed = self.stub.GetResult(pb.GetJobRequest(job_id=job_id), timeout=self.timeout)
        reported = list(self.job(job_id).contributors)
        spec = spec if spec is not None else self._remembered_spec(job_id)
        ca_pem, revoked = self._trust()
        return open_result(load_seal_key(self.identity.path), sealed.sealed, ca_pem,
                           job_id=job_id, allow_unsigned=allow_unsigned,
                           researcher=self.identity.cfg.name, reported_contributors=reported,
                           revoked=revoked, **(spec_checks(spec) if spec else {}))

    def result_json(self, job_id: str) -> dict:
        """The released result, opened with this researcher's seal key and verified
        (:meth:`open_result`): the job type's fields, ``meta`` and the signed
        ``provenance``."""
        return self.open_result(job_id)[0]

    def live_metrics(self, info) -> list[dict]:
        """A `train` job's pooled metrics per round so far (``info`` from :meth:`job`),
        opened with this researcher's seal key: round r's training loss, and the
        validation of the model after round r (known once round r+1 has run)."""
        key = load_seal_key(self.identity.path)
        ca_pem, revoked = self._trust()
        rounds: dict[int, dict] = {}
        for p in info.progress:
            plain = json.loads(open_sealed(key, p.sealed,
                                           context=progress_context(info.job_id, p.round)))
            verify_result(plain, ca_pem, job_id=info.job_id, stage="progress",
                          round_no=p.round, researcher=self.identity.cfg.name,
                          revoked=revoked)
            for entry in plain["metrics"]:
                rounds.setdefault(entry["round"], {}).update(entry)
        return [rounds[r] for r in sorted(rounds)]

    def result(self, job_id: str):
        """The released result as pandas DataFrames (the job type's view, `jobs/*/view.py`)."""
        from jobs.views import load_result

        return load_result(self.result_json(job_id))
