"""A real headless Chromium (Debian's) driven by Playwright, one fresh profile per context."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture
def new_browser(tmp_path: Path) -> Iterator[Callable[[str], object]]:
    """new_browser(name) -> a Playwright Page in its own fresh Chromium profile."""
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.fail("Debian chromium is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    contexts = []

    def make(name: str):
        profile = tmp_path / f"chromium-{name}"
        profile.mkdir()
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1360, "height": 900})
        ctx.set_default_timeout(20_000)
        contexts.append(ctx)
        return ctx.pages[0] if ctx.pages else ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()
    pw.stop()
