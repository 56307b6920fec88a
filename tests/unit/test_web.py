"""The consoles' shared posture (scifed/web): interface text complete in both languages,
state-changing requests refused without the same origin and the session's CSRF token,
security headers on every page, redirects that stay on the console, and no listening
beyond loopback without TLS."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import httpx
import pytest
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from scifed.errors import UserError
from scifed.web import i18n, serve
from scifed.web.app import CSP, Console, safe_next
from scifed.web.sessions import COOKIE, SessionStore

REPO = Path(__file__).resolve().parents[2]


def tiny_console() -> Console:
    c = Console(title_key="app.name", nav=[("/", "common.refresh")])
    c.enable_token_login("ada", "researcher")

    @c.app.get("/", response_class=HTMLResponse)
    async def home(request: Request, s=Depends(c.user)):
        return c.render(request, "error.html", message=f"hello {s.user}")

    @c.app.post("/act")
    async def act(s=Depends(c.user)):
        return PlainTextResponse("done")

    @c.app.get("/boom")
    async def boom(s=Depends(c.user)):
        raise UserError("dataset penguins: no column 'wings'")

    return c


@pytest.fixture
def served():
    c = tiny_console()
    running = serve.start(c.app)
    yield c, running.url
    running.stop()


def logged_in(c: Console, url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, follow_redirects=False)
    r = client.get(f"/login?token={c.sessions.login_token()}")
    assert r.status_code == 303 and COOKIE in r.cookies
    return client


# Every console module that registers interface text; each console adds its own here.
CONSOLE_MODULES: tuple[str, ...] = ("node.console.messages", "cli.opconsole.messages",
                                   "cli.ui.messages")
TEMPLATE_KEY = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+)["']""")


def test_every_interface_text_has_both_languages_and_every_key_used_exists():
    for mod in CONSOLE_MODULES:
        importlib.import_module(mod)
    assert i18n.check_catalog() == []
    used = {(path.relative_to(REPO), key)
            for path in REPO.glob("*/**/templates/**/*.html") if ".venv" not in path.parts
            for key in TEMPLATE_KEY.findall(path.read_text())}
    assert used, "no template found"
    # a key ending in "." is the prefix of keys made from data (``"pol.set." + key``),
    # checked where that data is defined (tests/unit/test_node_console_text.py)
    missing = sorted(f"{p}: {k}" for p, k in used
                     if not k.endswith(".") and k not in i18n.catalog_keys())
    assert missing == []


def test_a_page_behind_login_redirects_and_a_login_token_works_once(served):
    c, url = served
    anon = httpx.Client(base_url=url, follow_redirects=True)
    r = anon.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    tok = c.sessions.login_token()
    assert anon.get(f"/login?token={tok}").status_code == 200  # followed: logged in
    assert "hello ada" in anon.get("/").text
    again = httpx.Client(base_url=url).get(f"/login?token={tok}", follow_redirects=False)
    assert again.status_code == 401


def test_state_changing_requests_need_the_origin_and_the_csrf_token(served):
    c, url = served
    client = logged_in(c, url)
    s = c.sessions.get(client.cookies[COOKIE])
    # a cross-site form post: the browser sends the cookie's session only with SameSite
    # lax/none, but the Origin check refuses it regardless
    assert client.post("/act", data={"csrf": s.csrf},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/act", data={"csrf": s.csrf}).status_code == 403  # no origin
    assert client.post("/act", data={"csrf": "wrong"},
                       headers={"Origin": url}).status_code == 403
    ok = client.post("/act", data={"csrf": s.csrf}, headers={"Origin": url})
    assert ok.status_code == 200 and ok.text == "done"
    assert client.post("/act", headers={"Origin": url, "X-CSRF-Token": s.csrf}).text == "done"


def test_pages_carry_the_security_headers_and_user_errors_show_one_message(served):
    c, url = served
    client = logged_in(c, url)
    r = client.get("/boom")
    assert r.status_code == 400
    assert "dataset penguins: no column &#39;wings&#39;" in r.text
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"


def test_the_language_switch_serves_chinese(served):
    c, url = served
    client = logged_in(c, url)
    r = client.get("/lang/zh?next=/", follow_redirects=True)
    assert '<html lang="zh-CN">' in r.text and "退出登录" in r.text
    client.cookies.set("lang", "en")
    assert "Log out" in client.get("/").text


@pytest.mark.parametrize("target,expected", [
    ("/jobs?x=1", "/jobs?x=1"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
    ("", "/"), (None, "/")])
def test_redirects_stay_on_the_console(target, expected):
    assert safe_next(target) == expected


def test_a_console_beyond_loopback_needs_tls(tmp_path):
    with pytest.raises(UserError, match="not this host only: give --tls-cert"):
        serve.tls_files("0.0.0.0", None, None)
    with pytest.raises(UserError, match="both --tls-cert and --tls-key"):
        serve.tls_files("127.0.0.1", tmp_path / "c.pem", None)
    with pytest.raises(UserError, match="no such file"):
        serve.tls_files("10.1.2.3", tmp_path / "c.pem", tmp_path / "k.pem")
    assert serve.tls_files("127.0.0.1", None, None) is None
    assert serve.tls_files("::1", None, None) is None


def test_sessions_expire_when_idle():
    store = SessionStore(idle_s=0)
    s = store.create("ada", "researcher")
    assert store.get(s.token) is None
