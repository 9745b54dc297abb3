"""Shared fixtures: small real runs on scikit-learn's 8x8 digits, trained once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaelab import RunConfig, load_data, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits():
    return load_data("digits")


def _run(tmp_path_factory, digits, **fields):
    config = RunConfig(data="digits", epochs=5, hidden=[64], batch_size=64, seed=0, **fields)
    return train(config, tmp_path_factory.mktemp(f"{config.model}_z{config.z_dim}"), data=digits, progress=False)


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory, digits):
    """A VAE with z_dim=8 trained 5 epochs on digits."""
    return _run(tmp_path_factory, digits, model="vae", z_dim=8)


@pytest.fixture(scope="session")
def ae_run(tmp_path_factory, digits):
    """An AutoEncoder with z_dim=8 trained 5 epochs on digits."""
    return _run(tmp_path_factory, digits, model="ae", z_dim=8)


@pytest.fixture(scope="session")
def vae2d_run(tmp_path_factory, digits):
    """A VAE with a 2-D latent trained 5 epochs on digits, for the 2-D pictures."""
    return _run(tmp_path_factory, digits, model="vae", z_dim=2)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `vaelab` command in a subprocess (python -m vaelab.cli), capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "vaelab.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    """The `vaelab` command as a function: cli("train", "--data", "digits", ...) -> CompletedProcess."""
    return run_cli


# ----- a headless Chromium driven by Playwright, for the explorer's and the report's pages -----

CHROMIUM = os.environ.get("VAELAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BROWSER_TIMEOUT_MS = 120_000  # every wait on the browser: conditions polled to this deadline, never fixed sleeps


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser test needs Playwright for Python: pip install 'playwright>=1.40' (no browser download)"
        )
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"the browser test needs Chromium at {CHROMIUM}: apt-get install chromium (or set VAELAB_CHROMIUM)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=BROWSER_TIMEOUT_MS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; the test fails afterwards if the page logged any console error or threw."""
    context = browser.new_context(viewport={"width": 1000, "height": 1200})
    context.set_default_timeout(BROWSER_TIMEOUT_MS)  # navigation, screenshots and waits alike
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    yield page
    context.close()
    assert errors == []
