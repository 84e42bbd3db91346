"""Debian's Chromium, headless, for the console's browser tests (Playwright never downloads one).

Without Chromium on PATH the tests fail (never skip) and say how to install it.
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: What a page may take to show a change (the console polls every 1.5 s).
WAIT_MS = 30_000


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium is not installed, and the console's browser tests need it: run "
                    "`apt-get install -y chromium` (Playwright drives the system's Chromium; "
                    "it downloads no browser)")
    return path


def launch(playwright):
    """A headless Chromium browser from the system's executable."""
    return playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
