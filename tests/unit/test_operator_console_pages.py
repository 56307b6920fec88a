"""The operator console without a federation: it refuses an identity that is not an
operator's, keeps every page and live part behind login, names a bad filter in one
message before asking the coordinator anything, and says in place when the coordinator
does not answer (and keeps asking)."""

from __future__ import annotations

import httpx
import pytest

from cli.opconsole.app import build
from coordinator.client import ClientConfig
from harness.federation import free_port
from scifed.config import write_config
from scifed.errors import UserError
from scifed.pki import init_ca, make_key_and_csr, sign_csr
from scifed.web import serve


def identity(tmp_path, role: str, name: str, coordinator: str):
    ca = tmp_path / "ca"
    if not ca.exists():
        init_ca(ca, coordinator_hosts=["127.0.0.1"])
    d = tmp_path / name
    sign_csr(ca, make_key_and_csr(d, name=name, role=role), role=role)
    (d / "ca.crt").write_bytes((ca / "ca.crt").read_bytes())
    write_config(d / "client.yaml", ClientConfig(name=name, role=role,
                                                 coordinator=coordinator))
    return d


@pytest.fixture
def served(tmp_path):
    nowhere = f"127.0.0.1:{free_port()}"  # no coordinator listens here
    app = build(identity(tmp_path, "operator", "ops", nowhere), refresh_s=1)
    running = serve.start(app.app)
    yield app, running.url, tmp_path, nowhere
    running.stop()
    app.close()


def test_only_an_operator_identity_serves_it(served):
    _, _, tmp_path, nowhere = served
    with pytest.raises(UserError, match="needs an operator's"):
        build(identity(tmp_path, "researcher", "alice", nowhere))


def test_pages_behind_login_and_what_they_say(served):
    app, url, _, _ = served
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as c:
        for path in ("/", "/nodes", "/studies", "/jobs", "/revocations"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login")
        r = c.get("/nodes/live", headers={"HX-Request": "true"})
        assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login"
        assert c.get(f"/login?token={app.sessions.login_token()}").status_code == 303
        r = c.get("/jobs", params={"status": "finished"})
        assert r.status_code == 400
        assert "status &#39;finished&#39;: choose one of submitted, running" in r.text
        r = c.get("/nodes/live")  # the coordinator is down: said in place, status 200
        assert r.status_code == 200 and 'id="unreachable"' in r.text
        assert "cannot reach the coordinator" in r.text and 'hx-trigger="every 1s"' in r.text
        r = c.get("/revocations")  # a full page too, which keeps asking
        assert r.status_code == 200 and 'id="unreachable"' in r.text
        assert "<h1>Revocations</h1>" in r.text and 'hx-get="/revocations/live"' in r.text


@pytest.mark.parametrize("seconds,en,zh", [(None, "never", "从未"), (4.9, "4 s", "4 秒"),
                                           (125, "2 min", "2 分钟"), (7300, "2 h", "2 小时"),
                                           (90000, "1 d", "1 天")])
def test_ages_in_both_languages(seconds, en, zh):
    from cli.opconsole.app import age_in
    from scifed.web.i18n import Translator

    assert (age_in(Translator("en"), seconds), age_in(Translator("zh"), seconds)) == (en, zh)


def test_every_job_and_study_state_has_a_label_in_both_languages():
    """The jobs page lists every state in its filter: a state without a label (one added
    to scifed.states later, such as ``withheld``) would make the page fail whole."""
    import cli.opconsole.messages  # noqa: F401  (registers the labels)
    from scifed.states import JobStatus, StudyStatus
    from scifed.web import i18n

    for lang in i18n.LANGUAGES:
        t = i18n.Translator(lang)
        for s in JobStatus:
            assert t(f"op.job.{s.value}")
        for s in StudyStatus:
            assert t(f"op.study.{s.value}")
