"""The node's delivery desk: a researcher's access requests, downloads and in-node
service queries, and the officer's grants, offline transfers and revocations.

Every call is decided again from the dataset's current record and cell
(:mod:`node.delivery.rules`), the grant as this node recorded it, and the researcher's
certificate (signed request, CRL): never from what the coordinator relays. Each manifest,
chunk and query is a call the researcher signed with the certificate the grant was made
for, fresh and answered once, so the coordinator cannot spend a grant on its own; a
query's SQL and the reason it is refused travel sealed, so the coordinator never reads
them. Prepared downloads share one disk budget (``delivery_max_bytes``). Whatever a
request says, the node delivers only the grant's columns by the grant's method to the
grant's researcher, sealed to the seal key that researcher signed for; a refusal changes
nothing but the audit chain, which records every grant, delivery and refusal with the
recipient and the hash.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import shutil
import threading
from pathlib import Path

from node.approvals import Approvals, ApproverRegistry
from node.audit import AuditLog
from node.data import DataFile
from node.datasets import DatasetRegistry
from node.delivery import rules, service
from node.delivery.grants import Grant, GrantBook
from node.guard import audit_and_record
from node.policy import PolicyBook
from node.store import DatasetRow
from node.studies import NodeStudies
from scifed.approver_keys import b64, verifies
from scifed.chain import canonical
from scifed.config import NodeConfig
from scifed.delivery import (
    CALL_MAX_AGE_MS,
    CHUNK_BYTES,
    AccessKind,
    AccessRequest,
    GrantList,
    GrantRef,
    GrantsReply,
    GrantView,
    SealedReply,
    answer_context,
    chunk_context,
    manifest_context,
    query_context,
    sign_manifest,
    verify_call,
    verify_request,
)
from scifed.errors import NotFound, UserError
from scifed.filters import quote_identifier
from scifed.grading import Access
from scifed.sealing import SealKeyClaim, load_seal_key, make_claim, open_sealed, seal
from scifed.sentences import say, structure
from scifed.wire import now_ms

# An officer's record of an offline transfer is a statement of its own kind, signed
# under its own domain (never valid as an approval decision or a registry change).
OFFLINE_DOMAIN = b"scifed-offline-transfer-v1\n"
# Each grant may hold a copy of the data at the node (its prepared download): a bound on
# live grants per researcher and dataset is a bound on that disk.
MAX_LIVE_GRANTS = 16
_SOURCE = "source_sha256"  # beside a prepared download's signed manifest: its file's version
OFFLINE_FIELDS = ("node", "dataset_id", "recipient", "what", "sha256", "medium",
                  "approver", "key")


def offline_statement(*, node: str, dataset_id: str, recipient: str, what: str, sha256: str,
                      medium: str, approver: str, key: str) -> dict:
    """What the officer signs to record one offline transfer."""
    return {"node": node, "dataset_id": dataset_id, "recipient": recipient, "what": what,
            "sha256": sha256, "medium": medium, "approver": approver, "key": key}


def _sealed_to(claim: dict) -> tuple[str, str]:
    """Whom a request's deliveries are sealed to: the certificate and seal key (its
    claim's signature differs each time it is made)."""
    return str(claim.get("cert_pem")), str(claim.get("seal_public"))


def _current(extract: dict | None, row: DatasetRow) -> bool:
    """Was a grant's prepared download made from the dataset's file as registered now?
    (An officer who refreshes a dataset, say to remove a withdrawn person's row, stops
    every earlier extract of it.)"""
    return extract is not None and \
        extract.get(_SOURCE) == row.record["distributions"][0]["sha256"]


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n} bytes)"


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


class Delivery:
    def __init__(self, cfg: NodeConfig, registry: DatasetRegistry, studies: NodeStudies,
                 approvals: Approvals, audit: AuditLog, policies: PolicyBook) -> None:
        self.cfg = cfg
        self.node = cfg.name
        self.registry = registry
        self.studies = studies
        self.approvals = approvals
        self.audit = audit
        self.policies = policies
        self.grants = GrantBook(registry.store)
        self.ca_pem = cfg.tls.ca.read_bytes()
        self.extracts = cfg.state_dir / "deliveries"
        self._preparing = threading.Lock()
        self.sweep()  # what expired while the node was down frees its disk at start

    @functools.cached_property
    def _claim(self) -> dict:
        """This node's seal key claim, which a researcher seals a service query to."""
        tls = self.cfg.tls
        return make_claim(tls.key.parent, name=self.node, role="node", cert_path=tls.cert,
                          key_path=tls.key).to_dict()

    def handlers(self) -> dict:
        """The task handlers of delivery, beside the runner's job handlers."""
        from node.runner import typed

        return {AccessKind.REQUEST: typed(AccessRequest, self.request),
                AccessKind.LIST: typed(GrantList, self.list),
                AccessKind.MANIFEST: typed(GrantRef, self.manifest),
                AccessKind.CHUNK: typed(GrantRef, self.chunk),
                AccessKind.QUERY: typed(GrantRef, self.query)}

    # -- refusals ---------------------------------------------------------------------
    def _refuse(self, subject: str, researcher: str, what: str, reason: str,
                grant_id: str | None = None) -> UserError:
        """Audit a refusal (who asked for what, and why) and return it to raise."""
        self.audit.append("policy", "access.refused", subject,
                          {"researcher": researcher, "what": what, "reason": reason,
                           "grant_id": grant_id})
        return UserError(say("desk.refuses", node=self.node, what=what, reason=reason))

    def _row_for(self, record_id: str) -> DatasetRow:
        for row in self.registry.list():
            if row.record.get("id") == record_id or row.dataset_id == record_id:
                return row
        raise NotFound(f"no dataset '{record_id[:100]}' at node {self.node}")

    # -- a researcher's request -------------------------------------------------------
    def request(self, req: AccessRequest) -> GrantView:
        statement, claim, _ = verify_request(req, self.ca_pem)
        researcher = claim.name
        crl = self.studies.trust.fresh(f"access:{researcher}")
        self.studies.trust.check_researcher(crl, req.claim, "an access request", researcher)
        for earlier in self.grants.list(researcher=researcher):
            if earlier.request["statement"] == statement:  # a retry, or a relay's replay
                return self._view(earlier)
        row = self._row_for(str(statement["record_id"]))
        record = row.record
        method = statement["method"]
        what = say("desk.what.method", method=method, dataset=row.dataset_id)
        admission = rules.online_access(record, method, _today())
        if admission.refused:
            raise self._refuse(row.dataset_id, researcher, what, admission.reason)
        names = [f["name"] for f in record.get("fields", [])]
        unknown = [c for c in statement["columns"] if c not in names]
        if unknown:
            raise self._refuse(row.dataset_id, researcher, what,
                               say("desk.unknown_columns",
                                   columns=", ".join(map(repr, unknown))))
        required = {c["code"] for c in record.get("conditions_of_use", [])}
        required.add(f"license:{record.get('license', '')}")
        missing = sorted(required - set(statement["conditions_accepted"]))
        if missing:
            raise self._refuse(row.dataset_id, researcher, what,
                               say("desk.conditions", missing=", ".join(missing)))
        study = str(statement["study"])
        if record["sharing_category"] == "CONDITIONAL":
            if not study:
                raise self._refuse(row.dataset_id, researcher, what, say("desk.study"))
            try:
                self.studies.attached(study, row.dataset_id)
            except UserError as exc:
                raise self._refuse(row.dataset_id, researcher, what, str(exc)) from None
        columns = list(statement["columns"]) or (names if method == "in_node_service" else [])
        same = (row.dataset_id, method, columns, statement["format"], study,
                _sealed_to(req.claim))
        for earlier in self.grants.list(researcher=researcher):
            if (earlier.dataset_id, earlier.method, earlier.columns, earlier.format,
                    earlier.study, _sealed_to(earlier.request["claim"])) == same \
                    and self._live(earlier):
                return self._view(earlier)  # asked again: that grant, not another copy
        live = sum(1 for g in self.grants.list(researcher=researcher)
                   if g.dataset_id == row.dataset_id and self._live(g))
        if live >= MAX_LIVE_GRANTS:
            raise self._refuse(row.dataset_id, researcher, what,
                               say("desk.live_grants", live=live, most=MAX_LIVE_GRANTS))
        auto = admission.access is Access.AUTO
        with self.registry.store.tx() as con:
            grant_id = GrantBook.insert(
                con, dataset_id=row.dataset_id, record_id=record["id"], researcher=researcher,
                method=method, columns=columns, fmt=statement["format"],
                purpose=statement["purpose"], study=study,
                request={"statement": statement, "signature": b64(req.signature),
                         "claim": req.claim},
                state="granted" if auto else "pending", reason=admission.reason)
            AuditLog.append_in(con, "policy", "access.granted" if auto else "access.held",
                               row.dataset_id,
                               {"grant_id": grant_id, "researcher": researcher,
                                "method": method, "columns": columns,
                                "purpose": statement["purpose"], "reason": admission.reason})
        if not auto:
            cols = ", ".join(columns) or say("access.all_columns")
            appr = self.approvals.request(
                job_id=grant_id, dataset_id=row.dataset_id, study_id=study,
                job_type=f"access.{method}", researcher=researcher,
                grade=record["security_grade"],
                reason=say("access.held", method=method, columns=cols,
                           purpose=statement["purpose"]),
                spec={"access": statement})
            with self.registry.store.tx() as con:
                GrantBook.update(con, grant_id, approval_id=appr.approval_id)
        return self._view(self.grants.get(grant_id))

    def _state(self, grant: Grant) -> tuple[str, str, int | None]:
        """The grant's state now (the approval's, where it has one), its officer's
        conditions and expiry."""
        if grant.state in ("revoked", "denied"):
            return grant.state, "", None
        if grant.approval_id is None:  # automatic: the end the officer set, if any
            return grant.state, "", grant.expires_ms
        appr = self.approvals.request(job_id=grant.grant_id, dataset_id=grant.dataset_id,
                                      study_id=grant.study, job_type=f"access.{grant.method}",
                                      researcher=grant.researcher, grade="", reason="",
                                      spec={}, create=False)
        if appr is None:
            return "pending", "", None
        approved = [d for d in appr.decisions if d["approve"]]
        denied = [d for d in appr.decisions if not d["approve"]]
        conditions = approved[-1]["reason"] if approved else (denied[-1]["reason"]
                                                              if denied else "")
        state = {"approved": "granted", "denied": "denied", "expired": "expired",
                 "withdrawn": "revoked"}.get(appr.state, "pending")
        ends = [e for e in (appr.expires_ms, grant.expires_ms) if e is not None]
        return state, conditions, min(ends) if ends else None

    def _live(self, grant: Grant) -> bool:
        """Is the grant granted or waiting for the officer, and not expired?"""
        state, _, expires = self._state(grant)
        return state in ("granted", "pending") and (expires is None or expires >= now_ms())

    def _view(self, grant: Grant) -> GrantView:
        state, conditions, expires = self._state(grant)
        return GrantView(grant_id=grant.grant_id, node=self.node, dataset_id=grant.dataset_id,
                         record_id=grant.record_id, researcher=grant.researcher,
                         method=grant.method, columns=grant.columns, format=grant.format,
                         state=state, reason=grant.reason, conditions=conditions,
                         expires_ms=expires, created_ms=grant.created_ms,
                         node_claim=self._claim)

    def list(self, req: GrantList) -> GrantsReply:
        return GrantsReply(grants=[self._view(g) for g in self.grants.list(
            researcher=req.researcher)])

    def _usable(self, ref: GrantRef, method: str,
                what: str) -> tuple[Grant, DatasetRow, bytes, dict]:
        """The grant, its dataset, the grantee's seal key and the researcher's signed
        call (``what``: manifest, chunk or query), if the researcher made this call, for
        the first time, and the grant may deliver by ``method`` now; else a refusal,
        audited."""
        try:
            grant = self.grants.get(ref.grant_id)
        except NotFound:
            raise self._refuse("access", ref.researcher,
                               say("desk.what.grant", grant=ref.grant_id[:40]),
                               say("desk.no_grant")) from None
        said = say("desk.what.call", call=what, grant=grant.grant_id)
        if ref.researcher != grant.researcher:
            raise self._refuse(grant.dataset_id, ref.researcher, said,
                               say("desk.not_theirs"), grant.grant_id)
        try:
            call = verify_call(ref, what=what, node=self.node, researcher=grant.researcher,
                               cert_pem=str(grant.request["claim"]["cert_pem"]).encode(),
                               now=now_ms())
        except UserError as exc:
            raise self._refuse(grant.dataset_id, ref.researcher, said, str(exc),
                               grant.grant_id) from None
        with self.registry.store.tx() as con:
            first = GrantBook.first_call(con, nonce=call["nonce"], grant_id=grant.grant_id,
                                         at_ms=call["at_ms"],
                                         forget_before_ms=now_ms() - CALL_MAX_AGE_MS)
        if not first:
            raise self._refuse(grant.dataset_id, ref.researcher, said,
                               say("desk.replayed"), grant.grant_id)
        what = say("desk.what.call", call=method, grant=grant.grant_id)
        if method != grant.method:
            raise self._refuse(grant.dataset_id, ref.researcher, what,
                               say("desk.wrong_method", granted=grant.method, method=method),
                               grant.grant_id)
        state, _, expires = self._state(grant)
        if state != "granted":
            raise self._refuse(grant.dataset_id, ref.researcher, what,
                               say("desk.state", state=state), grant.grant_id)
        if expires is not None and expires < now_ms():
            raise self._refuse(grant.dataset_id, ref.researcher, what, say("desk.expired"),
                               grant.grant_id)
        try:
            row = self.registry.get(grant.dataset_id)
        except NotFound:
            raise self._refuse(grant.dataset_id, ref.researcher, what,
                               say("desk.unregistered"), grant.grant_id) from None
        admission = rules.online_access(row.record, method, _today())
        if admission.refused:
            raise self._refuse(grant.dataset_id, ref.researcher, what, admission.reason,
                               grant.grant_id)
        if admission.access is Access.APPROVAL and grant.approval_id is None:
            raise self._refuse(grant.dataset_id, ref.researcher, what,
                               say("desk.needs_approval"),
                               grant.grant_id)
        claim = grant.request["claim"]
        crl = self.studies.trust.fresh(f"access:{grant.researcher}")
        self.studies.trust.check_researcher(crl, claim, grant.grant_id, grant.researcher)
        return grant, row, SealKeyClaim.from_dict(claim).seal_public, call

    # -- download -----------------------------------------------------------------------
    def manifest(self, ref: GrantRef) -> SealedReply:
        grant, row, seal_public, _ = self._usable(ref, "download", "manifest")
        with self._preparing:  # one extract per grant, however many ask at once
            grant = self.grants.get(grant.grant_id)
            extract = grant.extract if _current(grant.extract, row) else \
                self._prepare(grant, row)
        signed = {k: v for k, v in extract.items() if k != _SOURCE}
        return SealedReply(sealed=seal(seal_public, canonical(signed).encode(),
                                       context=manifest_context(grant.grant_id)))

    def sweep(self) -> None:
        """Remove the prepared downloads of grants that deliver no more (revoked, denied,
        expired) and what an interrupted preparation left: their disk is free again.
        Runs at start, before each preparation and with every heartbeat
        (``CoordinatorLink(housekeeping=...)``), so a grant that expires while the node
        runs frees its disk within a beat; each removal is audited (grant, bytes)."""
        if not self.extracts.exists():
            return
        for grant in self.grants.list():
            if grant.extract is None or self._live(grant):
                continue
            path = self._extract_path(grant)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue  # removed before (revoked, or an earlier sweep)
            path.unlink(missing_ok=True)
            self.audit.append("policy", "access.extract.removed", grant.dataset_id,
                              {"grant_id": grant.grant_id, "researcher": grant.researcher,
                               "bytes": size, "state": self._state(grant)[0]})
        for leftover in self.extracts.glob("*.tmp"):
            leftover.unlink(missing_ok=True)

    def _prepared_bytes(self, *, besides: Path) -> int:
        """The disk prepared downloads hold now (but ``besides``, about to be replaced)."""
        return sum(p.stat().st_size for p in self.extracts.iterdir()
                   if p.is_file() and p != besides)

    def _within_budget(self, grant: Grant, row: DatasetRow, used: int, size: int) -> None:
        bound = self.cfg.delivery_max_bytes
        if used + size > bound:
            raise self._refuse(
                row.dataset_id, grant.researcher, f"download under grant {grant.grant_id}",
                f"preparing it takes {_mib(size)}, but the prepared downloads of this "
                f"node's grants hold {_mib(used)} of its bound of {_mib(bound)} "
                "(delivery_max_bytes in node.yaml); the officer frees space by revoking "
                "grants no longer needed (`scifed node access revoke GRANT --reason "
                "TEXT`), and the files of expired grants are removed; then download "
                "again", grant.grant_id)

    def _extract_path(self, grant: Grant) -> Path:
        return self.extracts / f"{grant.grant_id}.{grant.format if grant.columns else 'data'}"

    def _prepare(self, grant: Grant, row: DatasetRow) -> dict:
        """Freeze what the grant delivers in the node's state directory (the registered
        file, or the granted columns written by DuckDB), and sign its manifest; refused,
        with nothing left behind, where it would take prepared downloads beyond the
        node's ``delivery_max_bytes``."""
        from scifed.at_rest import private_dir

        private_dir(self.extracts)
        self.sweep()
        out = self._extract_path(grant)
        tmp = out.with_suffix(".tmp")
        source = self.registry.data_path(row.dataset_id)
        registered = row.record["distributions"][0]["sha256"]
        used = self._prepared_bytes(besides=out)
        if not grant.columns:
            self._within_budget(grant, row, used, source.stat().st_size)
            shutil.copyfile(source, tmp)
        else:
            target = str(tmp).replace("'", "''")
            with DataFile(source, version=registered) as data:
                cols = ", ".join(quote_identifier(c) for c in grant.columns)
                data.con.execute(f"COPY (SELECT {cols} FROM {data.source}) TO '{target}' "
                                 f"(FORMAT {grant.format})")
            try:
                self._within_budget(grant, row, used, tmp.stat().st_size)
            except UserError:
                tmp.unlink(missing_ok=True)
                raise
        tmp.replace(out)
        digests, whole, size = [], hashlib.sha256(), 0
        with out.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                whole.update(chunk)
                digests.append(hashlib.sha256(chunk).hexdigest())
                size += len(chunk)
        if not grant.columns and whole.hexdigest() != registered:
            out.unlink(missing_ok=True)
            raise UserError(f"node {self.node}: the file of {row.dataset_id} changed since "
                            "it was registered; the officer updates the dataset first")
        manifest = {"grant_id": grant.grant_id, "node": self.node,
                    "dataset_id": row.dataset_id, "record_id": grant.record_id,
                    "researcher": grant.researcher, "method": "download",
                    "columns": grant.columns,
                    "format": grant.format if grant.columns else Path(source).suffix[1:],
                    "sha256": whole.hexdigest(), "size": size, "chunk_bytes": CHUNK_BYTES,
                    "chunks": len(digests), "chunk_sha256": digests}
        signed = sign_manifest(manifest, node=self.node, cert_path=self.cfg.tls.cert,
                               key_path=self.cfg.tls.key)
        extract = {**signed, _SOURCE: registered}
        with self.registry.store.tx() as con:
            GrantBook.update(con, grant.grant_id, extract=extract)
            GrantBook.deliver(con, grant_id=grant.grant_id, dataset_id=row.dataset_id,
                              recipient=grant.researcher, kind="download",
                              sha256=manifest["sha256"],
                              detail={"size": size, "chunks": len(digests),
                                      "columns": grant.columns, "format": manifest["format"]})
            AuditLog.append_in(con, "policy", "access.download", row.dataset_id,
                               {"grant_id": grant.grant_id, "recipient": grant.researcher,
                                "sha256": manifest["sha256"], "size": size,
                                "columns": grant.columns})
        return extract

    def chunk(self, ref: GrantRef) -> SealedReply:
        grant, row, seal_public, call = self._usable(ref, "download", "chunk")
        index = call["index"]  # the chunk the researcher signed for
        if grant.extract is None:
            raise UserError(f"node {self.node}: ask for grant {grant.grant_id}'s manifest "
                            "before its chunks")
        if not _current(grant.extract, row):
            raise UserError(f"node {self.node}: the dataset changed since grant "
                            f"{grant.grant_id}'s download was prepared; run the download "
                            "again for the data as it is now")
        manifest = grant.extract["manifest"]
        if not 0 <= index < manifest["chunks"]:
            raise UserError(f"node {self.node}: grant {grant.grant_id} has chunks 0 to "
                            f"{manifest['chunks'] - 1}, not {index}")
        with self._extract_path(grant).open("rb") as f:
            f.seek(index * manifest["chunk_bytes"])
            data = f.read(manifest["chunk_bytes"])
        if hashlib.sha256(data).hexdigest() != manifest["chunk_sha256"][index]:
            raise UserError(f"node {self.node}: the prepared file of grant {grant.grant_id} "
                            "changed at rest; the officer revokes it and the researcher "
                            "asks again")
        if index == manifest["chunks"] - 1:
            self.audit.append("policy", "access.download.served", grant.dataset_id,
                              {"grant_id": grant.grant_id, "recipient": grant.researcher,
                               "sha256": manifest["sha256"]})
        return SealedReply(sealed=seal(seal_public, data, context=chunk_context(
            grant.grant_id, manifest["sha256"], index, manifest["chunks"])))

    # -- in-node service ----------------------------------------------------------------
    def query(self, ref: GrantRef) -> SealedReply:
        grant, row, seal_public, call = self._usable(ref, "in_node_service", "query")
        try:
            sql = open_sealed(load_seal_key(self.cfg.tls.key.parent), ref.sealed_query,
                              context=query_context(grant.grant_id, call["nonce"])).decode()
        except (UserError, UnicodeDecodeError):
            raise self._refuse(row.dataset_id, grant.researcher,
                               say("desk.what.call", call="query", grant=grant.grant_id),
                               say("desk.unsealed"), grant.grant_id) from None
        query_sha = hashlib.sha256(sql.encode()).hexdigest()

        def sealed(body: dict) -> SealedReply:
            """An answer or a refusal, sealed to the grantee: a refusal may quote the
            query, which the coordinator never reads."""
            return SealedReply(sealed=seal(seal_public, canonical(
                {"grant_id": grant.grant_id, "query_sha256": query_sha, **body}).encode(),
                context=answer_context(grant.grant_id, query_sha)))

        record = row.record
        k = max(self.policies.effective(record).min_cell_count, service.MIN_GROUP)
        registered = record["distributions"][0]["sha256"]
        with DataFile(self.registry.data_path(row.dataset_id), version=registered) as data:
            cols = ", ".join(quote_identifier(c) for c in grant.columns)
            frame = data.con.sql(f"SELECT {cols} FROM {data.source}").df()  # noqa: S608
        what = say("desk.what.query", sha=query_sha[:12])
        try:
            result = service.run(frame, sql, rows_allowed=rules.rows_allowed(
                record, _today()), k=k)
            answer = result.body
            body = canonical({"grant_id": grant.grant_id, "query_sha256": query_sha,
                              **answer})
            digest = hashlib.sha256(body.encode()).hexdigest()
            self._audited(grant, row, query_sha, result, k, registered, digest)
        except UserError as exc:
            reason = exc.args[0] if exc.args else str(exc)
            self._refuse(row.dataset_id, grant.researcher, what, reason, grant.grant_id)
            said = structure(reason)  # its key and fields too, for the researcher's console
            return sealed({"refused": str(exc), **({"refused_said": said} if said else {})})
        return sealed(answer)

    def _audited(self, grant: Grant, row: DatasetRow, query_sha: str,
                 result: service.Answer, k: int, registered: str, digest: str) -> None:
        """In one transaction: the query auditor's check of an aggregate answer's groups
        against every earlier exact answer on the dataset (service answers and federated
        jobs alike, whoever asked), and the record of the delivery."""
        answer = result.body
        with self.registry.store.tx() as con:
            if result.sets is not None:
                audit_and_record(con, job_id=f"{grant.grant_id}:{query_sha}",
                                 dataset_id=row.dataset_id, sha256=registered,
                                 sets=result.sets, k=k, node=self.node)
            GrantBook.deliver(con, grant_id=grant.grant_id, dataset_id=row.dataset_id,
                              recipient=grant.researcher, kind="answer", sha256=digest,
                              detail={"query_sha256": query_sha, "mode": answer["mode"],
                                      "rows": len(answer["rows"]),
                                      "withheld": answer["withheld"]})
            AuditLog.append_in(con, "policy", "access.answer", row.dataset_id,
                               {"grant_id": grant.grant_id, "recipient": grant.researcher,
                                "query_sha256": query_sha, "sha256": digest,
                                "mode": answer["mode"], "withheld": answer["withheld"]})

    # -- the officer --------------------------------------------------------------------
    def officer_list(self, state: str = "") -> list[dict]:
        return [{**self._view(g).shown(), "purpose": g.purpose, "study": g.study,
                 "approval_id": g.approval_id} for g in self.grants.list()
                if not state or self._state(g)[0] == state]

    def officer_show(self, grant_id: str) -> dict:
        grant = self.grants.get(grant_id)
        return {**self._view(grant).shown(), "purpose": grant.purpose,
                "study": grant.study, "approval_id": grant.approval_id,
                "request": grant.request["statement"],
                "manifest": grant.extract["manifest"] if grant.extract else None,
                "deliveries": self.grants.deliveries(grant_id)}

    def deliveries(self) -> list[dict]:
        return self.grants.deliveries()

    def revoke(self, grant_id: str, reason: str, actor: str) -> dict:
        if not reason.strip():
            raise UserError("a revocation needs a reason (--reason TEXT)")
        grant = self.grants.get(grant_id)
        with self.registry.store.tx() as con:
            GrantBook.update(con, grant_id, state="revoked", reason=reason)
            AuditLog.append_in(con, actor, "access.revoked", grant.dataset_id,
                               {"grant_id": grant_id, "researcher": grant.researcher,
                                "reason": reason})
        self._extract_path(grant).unlink(missing_ok=True)
        return self.officer_show(grant_id)

    def expire(self, grant_id: str, expires_ms: int, reason: str, actor: str) -> dict:
        """The officer sets when a grant ends — the only end an automatic grant (an
        in-node service, an OPEN download) has; it may only come sooner than an end
        already set. Audited; a call after it is refused as expired, and the sweep frees
        its prepared download."""
        if not reason.strip():
            raise UserError("setting a grant's expiry needs a reason (--reason TEXT)")
        if expires_ms <= 0:
            raise UserError("--expires: give when the grant ends (e.g. 30d, 12h, 2026-12-31)")
        grant = self.grants.get(grant_id)
        state, _, ends = self._state(grant)
        if state not in ("granted", "pending"):
            raise UserError(f"grant {grant_id} is {state}: it has nothing left to expire")
        if ends is not None and expires_ms > ends:
            raise UserError(f"grant {grant_id} already ends at {ends} (unix ms); an expiry "
                            "may only bring its end sooner; nothing changed")
        with self.registry.store.tx() as con:
            GrantBook.update(con, grant_id, expires_ms=expires_ms)
            AuditLog.append_in(con, actor, "access.expiry", grant.dataset_id,
                               {"grant_id": grant_id, "researcher": grant.researcher,
                                "expires_ms": expires_ms, "reason": reason})
        self.sweep()
        return self.officer_show(grant_id)

    def record_offline(self, *, dataset: str, recipient: str, what: str, sha256: str,
                       medium: str, by: str, statement: str, signature: bytes) -> dict:
        """Record an offline transfer the officer made, signed with their approver key;
        nothing goes over the network. Refused where the cell admits none."""
        import json

        row = self.registry.get(dataset)
        admission = rules.offline_access(row.record)
        if admission.refused:
            raise self._refuse(row.dataset_id, recipient, say("desk.what.offline"),
                               admission.reason)
        if not (len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256)):
            raise UserError("--sha256: the lower-case hex sha256 of what was handed over")
        for name, value in (("recipient", recipient), ("what", what), ("medium", medium)):
            if not value.strip():
                raise UserError(f"an offline transfer record needs --{name}")
        try:
            signed = json.loads(statement)
        except ValueError:
            raise UserError("the signed offline-transfer statement is not JSON") from None
        with self.registry.store.tx() as con:
            person = ApproverRegistry.active_in(con, by)
            if person.role != "officer":
                raise UserError(f"{person.name} is a {person.role}: an offline transfer is "
                                "recorded by the data officer")
            expected = offline_statement(node=self.node, dataset_id=row.dataset_id,
                                         recipient=recipient, what=what, sha256=sha256,
                                         medium=medium, approver=person.name,
                                         key=person.fingerprint)
            if signed != expected or not verifies(person.public_key, expected, signature,
                                                  OFFLINE_DOMAIN):
                raise UserError(f"the record is not signed by {person.name}'s registered key "
                                f"{person.fingerprint} over exactly this transfer; nothing "
                                "was recorded")
            delivery_id = GrantBook.deliver(
                con, grant_id=None, dataset_id=row.dataset_id, recipient=recipient,
                kind="offline", sha256=sha256,
                detail={"what": what, "medium": medium, "by": person.name,
                        "key": person.fingerprint, "signature": b64(signature)})
            AuditLog.append_in(con, person.name, "access.offline", row.dataset_id,
                               {"delivery_id": delivery_id, "recipient": recipient,
                                "what": what, "sha256": sha256, "medium": medium,
                                "key": person.fingerprint, "signature": b64(signature)})
        return {"delivery_id": delivery_id, "dataset_id": row.dataset_id,
                "recipient": recipient, "what": what, "sha256": sha256, "medium": medium,
                "by": person.name}
