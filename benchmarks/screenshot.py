"""Screenshot of the web page for the README: ml-100k MAML artefact, a user with a profile and two likes.

Usage: python benchmarks/screenshot.py [out.png]   (needs Debian's chromium)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path) -> int:
    from playwright.sync_api import sync_playwright

    from metarec.data.sources import movielens
    from metarec.models import build_model
    from metarec.models.io import save_model
    from metarec.serve.app import create_app
    from metarec.serve.background import running

    ds = movielens.load("ml-100k")
    with tempfile.TemporaryDirectory() as tmp:
        art = save_model(build_model("meta", {"algorithm": "maml"}, seed=42).fit(ds), Path(tmp) / "m", ds)
        app = create_app(art, f"sqlite:///{tmp}/shot.db")
        with running(app) as base, sync_playwright() as p:
            args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=args)
            page = browser.new_page(viewport={"width": 1000, "height": 1100})
            page.goto(base)
            page.fill("#user", "ada")
            page.fill("#profile", "I love space adventures and science fiction")
            page.click("#create")
            page.wait_for_selector("#recs li")
            for _ in range(2):
                before = page.inner_text("#recs")
                page.locator("#recs li button.like").first.click()
                page.wait_for_function("(b) => document.querySelector('#recs').innerText !== b", arg=before)
            page.fill("#query", "a heist with a twist")
            page.click("#search")
            page.wait_for_selector("#results li")
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "web.png"))
