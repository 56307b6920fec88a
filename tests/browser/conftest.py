"""A real browser for the console tests: Playwright driving Debian's Chromium.

`.ci/run` installs chromium (and a CJK font, so the Chinese pages render) with apt when
missing. Where no Chromium is found these tests skip and say so; with
``SCIFED_REQUIRE_BROWSER=1`` (CI) they fail instead. Every test saves a screenshot of each
page it checks under ``test-artifacts/screenshots/`` (``shot``), to be looked at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SCIFED_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    chosen = os.environ.get("SCIFED_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for c in CANDIDATES:
        if Path(c).is_file():
            return c
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    why = None
    if exe is None:
        why = "no Chromium on this machine (apt-get install chromium; .ci/run does)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            why = "playwright is not installed (pip install -e '.[dev]')"
    if why:
        if os.environ.get("SCIFED_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, request) -> Iterator:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    yield pg
    ctx.close()


@pytest.fixture
def shot(request):
    """``shot(page, "name")`` saves a full-page screenshot as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = request.node.name.replace("/", "_").replace("[", "_").replace("]", "")

    def take(pg, name: str) -> Path:
        path = ARTIFACTS / f"{prefix}--{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path

    return take
