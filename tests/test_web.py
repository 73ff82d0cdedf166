"""The web page end to end in headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import os
import shutil

import pytest

from metarec.serve.app import create_app
from metarec.serve.background import running

CHROMIUM = os.environ.get("METAREC_CHROMIUM") or shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.slow
def test_page_creates_user_adapts_on_like_and_searches(artifact, tmp_path):
    if not CHROMIUM:
        pytest.skip("Chromium not installed (.ci/run installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    app = create_app(artifact, f"sqlite:///{tmp_path / 'web.db'}")
    with running(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(base)
        page.fill("#user", "web-user")
        page.fill("#profile", "I enjoy space and rocket stories")
        page.click("#create")
        page.wait_for_selector("#recs li")
        assert page.locator("#recs li").count() == 10
        assert "matches your profile" in page.inner_text("#recs")
        first = page.locator("#recs li button.like").first.get_attribute("data-item")
        before = page.inner_text("#recs")
        page.locator("#recs li button.like").first.click()
        page.wait_for_function("(b) => document.querySelector('#recs').innerText !== b", arg=before)
        ids = [page.locator("#recs li button.like").nth(i).get_attribute("data-item") for i in range(10)]
        assert first not in ids  # the liked item left the list; the list was re-adapted
        assert "because you liked" in page.inner_text("#recs")
        page.fill("#query", "dragon wizard castle")
        page.click("#search")
        page.wait_for_selector("#results li")
        assert page.locator("#results li").count() == 10
        page.fill("#user", "nobody")
        page.click("#load")
        page.wait_for_function("document.querySelector('#status').innerText.includes('unknown user')")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000
