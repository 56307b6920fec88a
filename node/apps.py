"""Which Flower apps this node runs: the apps of its own installed scifed, and the app
bundles its officer approved by hash — nothing the coordinator ships on its own.

A SuperLink hands every SuperNode the FAB of a run, and a stock Flower ClientApp process
installs it and runs whatever code it names. A coordinator that deviates could so ship a
ClientApp of its own that asks the local API for the granted rows and sends them
anywhere. The node's ClientApp executor (``node/executor.py``) therefore asks this
module about each task's FAB before it runs anything: a FAB whose bytes equal the one
the node builds from one of its job types (``JobType.flower_app``) runs that job type's
installed ClientApp, never code from the bundle; a FAB whose sha256 the officer listed
in ``trusted_apps`` runs as shipped; anything else is refused and audited, and no row is
read, because only a running ClientApp asks for a training grant.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass

import jobs
from node.audit import AuditLog
from scifed.errors import UserError
from scifed.flower_apps import build_fab, client_app_ref, fab_sha256

log = logging.getLogger("scifed.node.apps")

# Refusals and first acceptances of a run are audited; later messages of an accepted
# run are not (one entry per round and node would say nothing new).
_ACCEPTED_RUNS_KEPT = 1024


@dataclass(frozen=True)
class Verdict:
    sha256: str
    trusted: bool
    client_app: str = ""   # own app: the installed ClientApp to run ("" = run the FAB's)
    reason: str = ""


class AppTrust:
    def __init__(self, node: str, audit: AuditLog, approved: list[str]) -> None:
        self.node = node
        self.audit = audit
        self.approved = frozenset(approved)
        self._accepted: dict[int, str] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def own(self) -> dict[str, tuple[str, str]]:
        """sha256 → (job type, installed ClientApp) of every registered type's app."""
        apps = {}
        for name in jobs.registry.names():
            app = jobs.registry.get(name).flower_app
            if app is not None:
                apps[build_fab(app.app_dir).hash_str] = (name, app.client_app)
        return apps

    def check(self, content: bytes, *, run_id: int, job_id: str) -> Verdict:
        """May this node run the FAB of Flower run ``run_id`` (for job ``job_id``)?"""
        digest = fab_sha256(content)
        if digest in self.own:
            job_type, ref = self.own[digest]
            verdict = Verdict(digest, True, client_app=ref)
            how = f"the {job_type} app of this node's scifed"
        elif digest in self.approved:
            try:
                ref = client_app_ref(content)
            except UserError as exc:
                return self._refuse(digest, run_id, job_id, str(exc))
            verdict = Verdict(digest, True)
            how = f"approved by the officer (ClientApp {ref})"
        else:
            return self._refuse(digest, run_id, job_id,
                                "it is neither an app of this node's scifed nor one its "
                                "officer approved (trusted_apps)")
        with self._lock:
            first = self._accepted.get(run_id) != digest
            if first:
                if len(self._accepted) >= _ACCEPTED_RUNS_KEPT:
                    self._accepted.clear()
                self._accepted[run_id] = digest
        if first:
            self.audit.append("flower", "app.run", job_id or f"flower run {run_id}",
                              {"sha256": digest, "run_id": run_id, "trusted_as": how})
        return verdict

    def _refuse(self, digest: str, run_id: int, job_id: str, why: str) -> Verdict:
        reason = (f"node {self.node} refuses to run the Flower app sha256:{digest[:16]}… "
                  f"of run {run_id}: {why}")
        self.audit.append("flower", "app.refused", job_id or f"flower run {run_id}",
                          {"sha256": digest, "run_id": run_id, "reason": why})
        log.warning("%s", reason)
        return Verdict(digest, False, reason=reason)
