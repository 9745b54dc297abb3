"""The `vaelab` command end to end on digits, as a user runs it."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib import metadata

import matplotlib.image as mpimg
import pytest

from conftest import REPO
from vaelab import load_run
from vaelab.cli import INACTIVE_KL_NATS, build_parser, collapse_warning
from vaelab.config import GROUPS, MODELS, RunConfig


def test_train_evaluate_sample_reconstruct_end_to_end(tmp_path, cli):
    run = tmp_path / "vae"
    done = cli(
        "train",
        "--model",
        "vae",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--z-dim",
        "4",
        "--hidden",
        "32",
        "--beta",
        "1",
        "--seed",
        "0",
        "--out",
        str(run),
    )
    assert done.returncode == 0, done.stderr
    assert "trained for 2 epochs" in done.stdout and "epoch 2/2  train loss" in done.stdout
    lines = (run / "metrics.jsonl").read_text().splitlines()
    for written in ("config.json", "checkpoint-0002.safetensors", "metrics.jsonl"):
        assert written in done.stdout and (run / written).is_file()
    assert re.search(r"done in \d+\.\d s", done.stdout)
    assert f"vaelab evaluate {run}" in done.stdout and f"vaelab report {run}" in done.stdout
    # This small VAE keeps almost no KL: the warning follows the history's own KL per unit (absent for an AE).
    warning = collapse_warning(json.loads(lines[-1]).get("test_kl_per_dim"))
    assert ("posterior collapsed" in done.stderr) == (warning is not None)
    assert len(lines) == 2 and json.loads(lines[-1])["epoch"] == 2

    done = cli("evaluate", str(run), "--skip-iwae", "--skip-samples", "--skip-latent")
    if done.returncode == 2 and "unrecognized arguments" in done.stderr:  # before the evaluation flags exist
        done = cli("evaluate", str(run))
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["data"] == "digits"

    for command, name in (("sample", "s.png"), ("reconstruct", "r.png")):
        done = cli(command, str(run), "-o", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        image = mpimg.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 16 and image.std() > 0.01


def test_config_file_keys_equal_flags_and_flags_override_it(tmp_path, cli):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "ae"\ndata = "digits"\nz-dim = 3\nhidden = [16, 8]\nepochs = 1\nlr = 0.002\n')
    run = tmp_path / "ae"
    done = cli("train", "--config", str(toml), "--z-dim", "5", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"], saved["z_dim"], saved["hidden"], saved["lr"]) == ("ae", 5, [16, 8], 0.002)


def test_resume_takes_the_saved_config_and_more_epochs(tmp_path, cli):
    run = tmp_path / "r"
    assert (
        cli(
            "train", "--data", "digits", "--epochs", "1", "--z-dim", "3", "--hidden", "16", "--out", str(run), "--quiet"
        ).returncode
        == 0
    )
    done = cli("train", "--resume", "--epochs", "2", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "trained for 2 epochs" in done.stdout  # --quiet: the summary alone
    saved = json.loads((run / "config.json").read_text())
    assert (saved["z_dim"], saved["epochs"]) == (3, 2)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_help_lists_every_subcommand(cli):
    done = cli("--help")
    assert done.returncode == 0
    for command in ("train", "evaluate", "sample", "reconstruct"):
        assert command in done.stdout


def _subcommands() -> dict:
    return build_parser()._subparsers._group_actions[0].choices


def test_every_flag_of_every_subcommand_has_a_one_line_help():
    for name, parser in _subcommands().items():
        for action in parser._actions:
            assert action.help and "\n" not in action.help, (name, action.dest)


def test_train_flags_show_the_fields_help_default_and_choices_in_the_fields_group():
    train = _subcommands()["train"]
    group_of = {a.dest: g.title for g in train._action_groups for a in g._group_actions}
    actions = {a.dest: a for a in train._actions}
    for f in dataclasses.fields(RunConfig):
        action = actions[f.name]
        assert action.help.startswith(f.metadata["help"]) and "(default " in action.help, f.name
        assert action.choices == f.metadata["choices"], f.name
        assert group_of[f.name] == f.metadata["group"], f.name
    assert {group_of[name] for name in ("config", "out", "resume", "quiet")} == {"run"}


def test_train_help_names_the_groups_data_sets_and_choices(cli):
    done = cli("train", "--help")
    assert done.returncode == 0, done.stderr
    for text in (
        *(f"{g}:" for g in GROUPS),
        "mnist5k",
        "digits",
        "fashion-mnist",
        ".npz",
        "{" + ",".join(MODELS) + "}",
        "(default 20)",
        "(default 0.001)",
    ):
        assert text in done.stdout, text


def test_version_is_the_installed_packages(cli):
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"vaelab {metadata.version('vaelab')}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["train", "--help"],
        ["sample", "--help"],
        ["train", "--z-dim", "abc", "--out", "x"],
        ["sample", "run", "--seed", "-1"],
        ["train", "--hidden", "1000000000", "--out", "x"],
    ],
)
def test_help_version_and_argument_errors_import_no_torch_numpy_or_matplotlib(tmp_path, argv):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vaelab.cli", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode in (0, 2), done.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "vaelab" in imported and not imported & {"torch", "numpy", "matplotlib"}


def test_collapse_warning_when_more_than_half_the_units_carry_no_kl():
    assert collapse_warning(None) is None and collapse_warning([]) is None  # an AutoEncoder: no KL per unit
    assert collapse_warning([2.0, 1.5, 0.001, 0.0]) is None  # half inactive is a compact code, not a collapse
    assert collapse_warning([2.0, INACTIVE_KL_NATS, INACTIVE_KL_NATS]) is None  # at the threshold: active
    warning = collapse_warning([0.9, 0.002, 0.0, 0.009])
    assert "3 of 4 latent units are inactive" in warning
    assert "--kl-warmup" in warning and "--free-bits" in warning


def _screen(raw: bytes) -> list[str]:
    """The lines a terminal shows for this output: a carriage return goes back to column 0 and overwrites."""
    lines = []
    for line in raw.decode().split("\n"):
        shown = ""
        for part in line.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown.rstrip())
    return [line for line in lines if line]


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_training_with_one_message_its_status_and_a_loadable_run(tmp_path, sig, status):
    run = tmp_path / "run"
    # Ctrl-C must reach Python as KeyboardInterrupt even when this test runs where SIGINT is ignored (a
    # background job): the child starts with the default disposition, as an interactive shell gives it.
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vaelab.cli",
            "train",
            "--data",
            "digits",
            "--epochs",
            "100000",
            "--hidden",
            "16",
            "--z-dim",
            "2",
            "--out",
            str(run),
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 600  # a generous bound for importing torch and one epoch on a busy machine
        while not ((run / "checkpoint.json").exists() and (run / "config.json").exists()):
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.1)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=600)
    finally:
        child.kill()  # no-op when it has ended
    assert child.returncode == status, stderr.decode()
    assert b"Traceback" not in stderr
    assert _screen(stderr)[-1] == "vaelab: interrupted", _screen(stderr)[-3:]
    assert load_run(run).epoch >= 1
