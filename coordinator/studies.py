"""Joint studies: invitations, acceptance, activation, and the study key's life cycle.

A study becomes active once `min_nodes` invited nodes have accepted. The lead node then
generates the BFV study key (scifed.he), signs a statement of it (study, version,
members, key id, public context hash) with its node certificate key and seals a copy of
the secret context to every member beside that statement; the coordinator checks the
statement, then stores only the public context and the signed, sealed copies. A member
keeps a copy only if the lead's signature chains to the federation CA and names the key
inside. Any change in the accepted membership rotates the key (a new version), so a node
that joins later cannot read what was encrypted before, and one that leaves cannot read
what comes after.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field

from sqlalchemy import select

from coordinator import audit
from coordinator.db import Database, Node, Study, StudyKeyShare, StudyMember, StudyResearcher
from coordinator.sessions import NodeSessions
from scifed.errors import NotFound, UserError
from scifed.sealing import KeyStatement, SignedKeyShare, check_signature
from scifed.states import StudyStatus
from scifed.tasks import KeygenReply, KeygenRequest, TaskKind
from scifed.wire import now_ms

log = logging.getLogger("scifed.coordinator.studies")
# Held while a study's membership is written and while a new key is activated, so that an
# answer cannot land between the activation's membership check and its commit (that
# activated a key missing the newly accepted node, and nothing keyed it again).
_MEMBERSHIP = threading.Lock()


@dataclass(frozen=True)
class StudyView:
    study_id: str
    name: str
    purpose: str
    status: str
    min_nodes: int
    members: dict[str, tuple[str, list[str]]]  # node -> (state, datasets)
    researchers: list[str]
    key_version: int
    lead_node: str | None
    accepted: list[str] = field(default_factory=list)


def _view(session, study: Study) -> StudyView:
    members = session.scalars(select(StudyMember).where(
        StudyMember.study_id == study.study_id).order_by(StudyMember.node_name)).all()
    researchers = session.scalars(select(StudyResearcher.researcher).where(
        StudyResearcher.study_id == study.study_id).order_by(StudyResearcher.researcher)).all()
    return StudyView(
        study.study_id, study.name, study.purpose, study.status, study.min_nodes,
        {m.node_name: (m.state, list(m.datasets or [])) for m in members}, list(researchers),
        study.key_version, study.lead_node,
        [m.node_name for m in members if m.state == "accepted"])


def _find(session, key: str) -> Study:
    study = session.get(Study, key) or session.scalars(
        select(Study).where(Study.name == key)).first()
    if study is None:
        raise NotFound(f"no study '{key}'")
    return study


def create_study(db: Database, *, name: str, purpose: str, nodes: list[str], min_nodes: int,
                 created_by: str) -> StudyView:
    nodes = list(dict.fromkeys(n.strip() for n in nodes if n.strip()))
    if not name.strip():
        raise UserError("a study needs a name")
    if not purpose.strip():
        raise UserError("a study needs a purpose (--purpose): officers decide on it")
    if not nodes:
        raise UserError("a study needs at least one node (--nodes A,B,C)")
    min_nodes = min_nodes or len(nodes)
    if not 1 <= min_nodes <= len(nodes):
        raise UserError(f"--min-nodes {min_nodes}: must be between 1 and the "
                        f"{len(nodes)} invited nodes")
    with db.session() as s:
        known = set(s.scalars(select(Node.name)).all())
        unknown = [n for n in nodes if n not in known]
        if unknown:
            raise UserError(f"unknown node(s): {', '.join(unknown)} (see `scifed nodes list`)")
        if s.scalars(select(Study).where(Study.name == name)).first():
            raise UserError(f"a study named '{name}' already exists")
        study = Study(study_id=f"st-{uuid.uuid4().hex[:12]}", name=name, purpose=purpose,
                      min_nodes=min_nodes, status=StudyStatus.PENDING, created_by=created_by,
                      created_ms=now_ms(), key_version=0)
        s.add(study)
        s.flush()
        for n in nodes:
            s.add(StudyMember(study_id=study.study_id, node_name=n, state="invited",
                              datasets=[]))
        s.flush()
        audit.append_in(s, created_by, "study.create", study.study_id,
                        {"name": name, "purpose": purpose, "nodes": nodes,
                         "min_nodes": min_nodes})
        return _view(s, study)


def add_researcher(db: Database, study: str, researcher: str) -> StudyView:
    if not researcher.strip():
        raise UserError("give the researcher's certificate name")
    with db.session() as s:
        st = _find(s, study)
        if s.get(StudyResearcher, (st.study_id, researcher)) is None:
            s.add(StudyResearcher(study_id=st.study_id, researcher=researcher))
            s.flush()
        return _view(s, st)


def get_study(db: Database, key: str) -> StudyView:
    with db.session() as s:
        return _view(s, _find(s, key))


def list_studies(db: Database, *, node: str | None = None,
                 researcher: str | None = None) -> list[StudyView]:
    with db.session() as s:
        q = select(Study).order_by(Study.created_ms)
        if node is not None:
            q = q.join(StudyMember).where(StudyMember.node_name == node)
        if researcher is not None:
            q = q.join(StudyResearcher).where(StudyResearcher.researcher == researcher)
        return [_view(s, st) for st in s.scalars(q).all()]


def answer(db: Database, study: str, node: str, *, accept: bool,
           datasets: list[str]) -> tuple[StudyView, bool]:
    """Record a node's answer; True when the accepted membership changed (key to rotate)."""
    if accept and not datasets:
        raise UserError("accepting a study needs the datasets this node contributes")
    with _MEMBERSHIP, db.session() as s:
        st = _find(s, study)
        member = s.get(StudyMember, (st.study_id, node))
        if member is None:
            raise UserError(f"node {node} is not invited to study '{st.name}'")
        was_member = member.state == "accepted"
        member.state = "accepted" if accept else "declined"
        member.datasets = sorted(set(datasets)) if accept else []
        member.answered_ms = now_ms()
        s.flush()
        accepted = s.scalars(select(StudyMember.node_name).where(
            StudyMember.study_id == st.study_id, StudyMember.state == "accepted")).all()
        changed = was_member != accept
        if changed and len(accepted) >= st.min_nodes:
            st.status = StudyStatus.KEYING
        elif len(accepted) < st.min_nodes:
            st.status = StudyStatus.PENDING
        s.flush()
        return _view(s, st), changed and st.status == StudyStatus.KEYING


def sealed_share(db: Database, study_id: str, version: int, node: str) -> bytes:
    """``node``'s copy of key ``version``, sealed to it by the lead (b"" if none)."""
    with db.session() as s:
        share = s.get(StudyKeyShare, (study_id, version, node))
        return share.sealed_secret if share is not None else b""


class StudyKeys:
    """Asks a lead node to (re)generate a study's key and stores what comes back."""

    RETRY_FIRST_S = 2.0
    RETRY_MAX_S = 60.0

    def __init__(self, db: Database, sessions: NodeSessions, timeout: float = 120) -> None:
        self.db = db
        self.sessions = sessions
        self.timeout = timeout
        self._lock = threading.Lock()
        self._retry: threading.Timer | None = None
        self._backoff = self.RETRY_FIRST_S

    def pending(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(Study.study_id).where(
                Study.status == StudyStatus.KEYING)).all())

    def rotate_pending(self) -> None:
        """Key every study waiting for one; called on activation and when a node connects."""
        threading.Thread(target=self._rotate_all, daemon=True, name="study-keys").start()

    def _rotate_all(self) -> None:
        with self._lock:
            for _ in range(3):  # membership may change while a key is being made
                pending = self.pending()
                if not pending:
                    self._backoff = self.RETRY_FIRST_S
                    return
                for study_id in pending:
                    try:
                        self._rotate(study_id)
                    except Exception as exc:  # stays 'keying': retried after a pause
                        log.warning("study %s: key generation postponed (retried in %.0f s): "
                                    "%s", study_id, self._backoff,
                                    str(exc) or type(exc).__name__)
                        self._retry_later()
                        return

    def _retry_later(self) -> None:
        """A lead that timed out under load or went offline must not leave a study keying
        until some node happens to reconnect: try again after a pause that doubles up to
        a minute (a connection still retries at once)."""
        if self._retry is not None:
            self._retry.cancel()
        self._retry = threading.Timer(self._backoff, self.rotate_pending)
        self._retry.daemon = True
        self._retry.start()
        self._backoff = min(self._backoff * 2, self.RETRY_MAX_S)

    def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()

    def _rotate(self, study_id: str) -> None:
        with self.db.session() as s:
            st = s.get(Study, study_id)
            accepted = s.scalars(select(StudyMember.node_name).where(
                StudyMember.study_id == study_id, StudyMember.state == "accepted")
                .order_by(StudyMember.answered_ms)).all()
            claims = {n.name: n.seal_claim for n in s.scalars(
                select(Node).where(Node.name.in_(accepted))).all()}
            version = st.key_version + 1
        missing = [n for n in accepted if not claims.get(n)]
        if missing:
            raise UserError(f"no seal key registered for {', '.join(missing)}")
        online = set(self.sessions.connected())
        lead = next((n for n in accepted if n in online), None)
        if lead is None:
            raise UserError("no accepted member is online to generate the key")
        payload = KeygenRequest(study_id=study_id, version=version, members=claims)
        result = self.sessions.send(lead, TaskKind.KEYGEN, payload.dumps()).result(self.timeout)
        if not result.ok:
            raise UserError(f"lead node {lead}: {result.error}")
        out = KeygenReply.loads(result.payload)
        shares = out.shares
        if set(shares) != set(accepted):
            raise UserError(f"lead node {lead} returned shares for {sorted(shares)}, "
                            f"expected {sorted(accepted)}")
        _check_signed(out, KeyStatement.of(study_id=study_id, key_version=version, lead=lead,
                                           members=accepted, key_id=b"",
                                           public_context=out.public_context), lead)
        with _MEMBERSHIP, self.db.session() as s:
            st = s.get(Study, study_id)
            now_accepted = s.scalars(select(StudyMember.node_name).where(
                StudyMember.study_id == study_id, StudyMember.state == "accepted")).all()
            if set(now_accepted) != set(accepted) or st.key_version >= version:
                return  # membership moved on meanwhile: the next pass makes a new key
            st.key_version = version
            st.lead_node = lead
            st.public_context = out.public_context
            for node, blob in shares.items():
                s.add(StudyKeyShare(study_id=study_id, version=version, node_name=node,
                                    sealed_secret=blob))
            st.status = StudyStatus.ACTIVE
            audit.append_in(s, "coordinator", "study.key.activate", study_id,
                            {"version": version, "lead": lead, "members": sorted(shares),
                             "public_context_sha256": audit.sha256_hex(out.public_context)})
        log.info("study %s: key version %d generated by %s for %d members", study_id,
                 version, lead, len(shares))


def _check_signed(out: KeygenReply, expected: KeyStatement, lead: str) -> None:
    """Every share carries the lead's signed statement of this study, version, membership
    and public context (members would refuse it otherwise: better to keep the study
    keying, and say why, than to store shares no member takes)."""
    for node, blob in sorted(out.shares.items()):
        try:
            share = SignedKeyShare.loads(blob)
            got = share.statement
            if (got.study_id, got.key_version, got.lead, got.members,
                    got.public_context_sha256) != (
                    expected.study_id, expected.key_version, expected.lead, expected.members,
                    expected.public_context_sha256):
                raise UserError(f"its statement {got.to_dict()} is not of this key "
                                f"(v{expected.key_version} for {', '.join(expected.members)})")
            check_signature(share)
        except UserError as exc:
            raise UserError(f"lead node {lead}: the share for {node}: {exc}") from None


def get_study_public_context(db: Database, study_id: str) -> bytes:
    with db.session() as s:
        st = _find(s, study_id)
        if st.public_context is None:
            raise UserError(f"study '{st.name}' has no key yet")
        return st.public_context


def to_proto(view: StudyView):
    from protos.scifed.v1 import federation_pb2 as pb

    return pb.StudyInfo(
        study_id=view.study_id, name=view.name, purpose=view.purpose, status=view.status,
        min_nodes=view.min_nodes, researchers=view.researchers,
        key_version=view.key_version, lead_node=view.lead_node or "",
        members=[pb.StudyMember(node=n, state=st, datasets=ds)
                 for n, (st, ds) in view.members.items()])
