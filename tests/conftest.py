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
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def cli():
    """The `vaelab` command as a function: cli("train", "--data", "digits", ...) -> CompletedProcess."""
    return run_cli
