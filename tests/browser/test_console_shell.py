"""The consoles' shared shell in a real browser: the one-time login address, the nav,
the language switch to Chinese, htmx loading under the Content-Security-Policy with no
console error, and a logout that ends the session."""

from __future__ import annotations

import pytest
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from scifed.web import serve
from scifed.web.app import Console


@pytest.fixture
def shell():
    c = Console(title_key="app.name", nav=[("/", "common.refresh")])
    c.enable_token_login("ada", "researcher")

    @c.app.get("/", response_class=HTMLResponse)
    async def home(request: Request, s=Depends(c.user)):
        return c.render(request, "error.html", message=f"hello {s.user}")

    running = serve.start(c.app)
    yield c, running.url
    running.stop()


def test_login_language_and_logout_in_a_browser(shell, page, shot):
    c, url = shell
    page.goto(url + "/")
    assert "/login" in page.url  # behind login
    page.goto(f"{url}/login?token={c.sessions.login_token()}")
    assert page.inner_text("#error-message") == "hello ada"
    assert page.evaluate("typeof htmx") == "object"  # the shipped htmx ran under the CSP
    shot(page, "en")
    page.click("text=中文")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.is_visible("text=退出登录")
    shot(page, "zh")
    page.click("text=退出登录")
    assert "/login" in page.url
    page.goto(url + "/")
    assert "/login" in page.url  # the session is gone
    assert page.console_errors == []
