"""A real browser for the deployed tests: Debian's ``chromium`` driven by the ``playwright`` package.

Both come from the project's own setup (``make browser``, run by ``make test``; the ``test`` extra):
playwright never downloads a browser here. Chromium runs headless as root on a closed network, so
it gets ``--no-sandbox`` and no background networking (without those flags its connections are
refused). Screenshots are test artifacts under ``var/test-artifacts/ui/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "var" / "test-artifacts" / "ui"
VIEWPORT = {"width": 1280, "height": 900}


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser, closed (with playwright's driver) on exit."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
