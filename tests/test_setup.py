"""The bare-machine set-up: `make test` first runs .ci/system-deps, which installs the tests' Debian packages.

The script runs for real under bash, with a PATH that holds only stand-ins for dpkg-query, id and apt-get: the
stand-ins say which packages are installed and who we are, and apt-get records its calls instead of installing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "system-deps"
BASH = "/bin/bash"
PACKAGES = ["chromium", "fonts-dejavu-core", "dataset-fashion-mnist"]


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """run(installed=[...], uid=N, *args, **env) -> (CompletedProcess, apt-get calls as lines)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    # dpkg-query -W -f='${Status}' PACKAGE: the status line for the listed packages, an error for the others.
    _stand_in(
        bin_dir,
        "dpkg-query",
        'for p in $INSTALLED; do [ "$p" = "$3" ] && printf "install ok installed" '
        '&& exit 0; done; echo "no packages found matching $3" >&2; exit 1',
    )
    _stand_in(bin_dir, "id", 'echo "$FAKE_UID"')
    _stand_in(bin_dir, "apt-get", f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "{log}"')

    def run(*args: str, installed: list[str], uid: int = 0, path: Path = bin_dir, **env: str):
        environ = {"PATH": str(path), "INSTALLED": " ".join(installed), "FAKE_UID": str(uid), **env}
        result = subprocess.run([BASH, str(SCRIPT), *args], env=environ, capture_output=True, text=True, timeout=60)
        return result, log.read_text().splitlines() if log.exists() else []

    return run


def test_nothing_is_installed_when_every_package_is_there(machine):
    result, apt = machine(installed=PACKAGES)
    assert (result.returncode, result.stdout, result.stderr, apt) == (0, "", "", [])


def test_root_installs_only_the_missing_packages_without_recommends_and_without_questions(machine):
    result, apt = machine(installed=["fonts-dejavu-core"])
    assert result.returncode == 0, result.stderr
    assert apt == [
        "DEBIAN_FRONTEND=noninteractive update -q",
        "DEBIAN_FRONTEND=noninteractive install -y --no-install-recommends chromium dataset-fashion-mnist -q",
    ]


def test_without_root_one_line_names_the_command_and_the_exit_is_non_zero(machine):
    result, apt = machine(installed=PACKAGES[1:], uid=1000)
    assert result.returncode == 1 and apt == [] and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "apt-get update && apt-get install -y --no-install-recommends chromium" in result.stderr


def test_dry_run_says_what_it_would_install_and_installs_nothing(machine):
    result, apt = machine("--dry-run", installed=[])
    assert result.returncode == 0 and apt == []
    assert result.stdout.startswith("would run: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install")
    assert result.stdout.rstrip().endswith(" ".join(PACKAGES))


def test_a_chromium_named_by_vaelab_chromium_replaces_the_package(machine, tmp_path):
    browser = tmp_path / "my-chromium"
    _stand_in(tmp_path, browser.name, "exit 0")
    result, apt = machine(installed=PACKAGES[1:], VAELAB_CHROMIUM=str(browser))
    assert (result.returncode, apt) == (0, [])
    result, apt = machine(installed=PACKAGES, VAELAB_CHROMIUM=str(tmp_path / "absent"))
    assert result.returncode == 1 and "VAELAB_CHROMIUM" in result.stderr and apt == []


def test_without_dpkg_a_chromium_binary_is_all_it_asks_for(machine, tmp_path):
    bare = tmp_path / "bare-bin"  # no dpkg-query, no apt-get: not a Debian machine
    bare.mkdir()
    browser = tmp_path / "chromium"
    _stand_in(tmp_path, browser.name, "exit 0")
    result, apt = machine(installed=[], path=bare, VAELAB_CHROMIUM=str(browser))
    assert (result.returncode, result.stderr, apt) == (0, "", [])


def test_make_test_runs_the_system_deps_before_pytest_and_ci_runs_make_test():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    plan = subprocess.run(["make", "-n", "test"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert ".ci/system-deps" in lines
    assert lines.index(".ci/system-deps") < next(i for i, line in enumerate(lines) if "pytest" in line)
    assert (REPO / ".ci" / "run").read_text().splitlines()[-1] == "make test"
