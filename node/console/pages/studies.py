"""Studies: the invitations of this node, accepted with the datasets it attaches, or
declined."""

from __future__ import annotations

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse

from protos.scifed.v1 import federation_pb2 as fpb
from protos.scifed.v1 import node_admin_pb2 as pb
from scifed.errors import UserError
from scifed.web.sessions import Session


def install(nc) -> None:
    app, user = nc.app, nc.console.user

    def page(request: Request, s: Session, **ctx):
        admin = nc.admin(s)
        me = admin.Status(pb.StatusRequest(), timeout=10).node_name
        studies = admin.ListStudies(pb.ListStudiesLocalRequest(), timeout=30).studies
        datasets = admin.ListDatasets(pb.ListDatasetsRequest(), timeout=30).datasets
        rows = []
        for st in studies:
            mine = next((m for m in st.members if m.node == me), None)
            rows.append({"study": st, "mine": mine,
                         "accepted": sum(m.state == "accepted" for m in st.members)})
        return nc.render(request, "studies.html", rows=rows, datasets=datasets, **ctx)

    @app.get("/studies", response_class=HTMLResponse)
    def studies(request: Request, s: Session = Depends(user)):
        return page(request, s)

    @app.post("/studies/{study_id}", response_class=HTMLResponse)
    async def answer(request: Request, study_id: str, s: Session = Depends(user),
                     answer: str = Form(...)):
        from starlette.concurrency import run_in_threadpool

        form = await request.form()
        chosen = [str(d) for d in form.getlist("datasets")]
        accept = answer == "accept"
        if accept and not chosen:
            raise UserError(nc.t(request)("st.pick"))
        st = await run_in_threadpool(nc.admin(s).AnswerStudy, fpb.AnswerInvitationRequest(
            study_id=study_id, accept=accept, datasets=chosen if accept else []), timeout=60)
        notice = nc.t(request)("st.answered", name=st.name, status=nc.t(request).term(st.status))
        return await run_in_threadpool(page, request, s, notice=notice)
