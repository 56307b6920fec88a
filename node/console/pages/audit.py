"""Audit log: the chain's entries with a filter, its verification against the heads
the coordinator recorded, and an export for an auditor."""

from __future__ import annotations

import json

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, Response

from node.console.pages import when
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.errors import UserError
from scifed.web.sessions import Session

SHOWN = 500  # entries on one page; the export has them all


def matches(entry: dict, text: str) -> bool:
    text = text.lower()
    return any(text in str(entry.get(k, "")).lower() for k in ("action", "actor", "subject"))


def pretty(details: dict) -> str:
    """An entry's details as the officer reads them: indented, names in their own script."""
    return json.dumps(details, indent=2, ensure_ascii=False)


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request, s: Session = Depends(user), q: str = "", since: int = 0,
              verify: str = ""):
        entries = json.loads(nc.admin(s).AuditList(pb.AuditListRequest(since_seq=since),
                                                   timeout=30).json)
        shown = [e for e in entries if not q or matches(e, q)][-SHOWN:][::-1]
        verified = None
        if verify:
            verified = json.loads(nc.admin(s).AuditVerify(pb.AuditVerifyRequest(
                against_coordinator=True), timeout=60).json)
        return nc.render(request, "audit.html", entries=shown, total=len(entries), q=q,
                         since=since, verified=verified, when=when, pretty=pretty)

    @app.get("/audit/export")
    def export(fmt: str = "jsonl", s: Session = Depends(user)):
        if fmt not in ("jsonl", "csv"):
            raise UserError(f"audit export format {fmt!r}: choose jsonl or csv")
        text = nc.admin(s).AuditExport(pb.AuditExportRequest(format=fmt), timeout=60).json
        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return Response(text, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{nc.cfg.name}-audit.{fmt}"'})
