"""The training loop: it learns, it is reproducible, it survives SIGKILL, and it stops cleanly on NaN."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vaelab import RunConfig, build_model, load_run, train
from vaelab.data import ImageData
from vaelab.errors import VaelabError
from vaelab.evaluate import dataset_loss
from vaelab.train import LOSS_SCALING, kl_weight


def test_training_on_digits_lowers_the_test_loss_far_below_its_start(vae_run, digits):
    torch.manual_seed(vae_run.config.seed)
    untrained = build_model(vae_run.config, digits.image_shape)
    start = dataset_loss(untrained, digits.x_test)["loss"]
    final = vae_run.history[-1]["test_loss"]
    assert final < 0.75 * start, (start, final)
    losses = [row["test_loss"] for row in vae_run.history]
    assert losses[-1] < losses[0]


def test_metrics_lines_state_units_and_parts(vae_run):
    rows = [json.loads(line) for line in (vae_run.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, vae_run.config.epochs + 1))
    for r in rows:
        assert r["scaling"] == LOSS_SCALING
        assert r["test_loss"] == pytest.approx(r["test_recon"] + r["beta"] * r["test_kl"])
        assert r["seconds"] > 0 and r["train_kl"] > 0
        assert len(r["test_kl_per_dim"]) == vae_run.config.z_dim
        assert sum(r["test_kl_per_dim"]) == pytest.approx(r["test_kl"], rel=1e-9)


def test_two_runs_with_one_seed_give_identical_weights(tmp_path, digits):
    config = RunConfig(data="digits", epochs=2, hidden=[32], z_dim=4, seed=3)
    a = train(config, tmp_path / "a", data=digits, progress=False)
    b = train(config, tmp_path / "b", data=digits, progress=False)
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    c = train(RunConfig(**{**config.to_dict(), "seed": 4}), tmp_path / "c", data=digits, progress=False)
    assert not torch.equal(a.model.decoder[0].weight, c.model.decoder[0].weight)


def test_resume_continues_to_the_same_weights_in_process(tmp_path, digits):
    config = RunConfig(data="digits", epochs=3, hidden=[32], z_dim=4, binarize="dynamic", kl_warmup=2)
    whole = train(config, tmp_path / "whole", data=digits, progress=False)
    train(RunConfig(**{**config.to_dict(), "epochs": 1}), tmp_path / "split", data=digits, progress=False)
    resumed = train(config, tmp_path / "split", resume=True, data=digits, progress=False)
    for (name, pa), pb in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert [r["test_loss"] for r in whole.history] == [r["test_loss"] for r in resumed.history]


def _cli(*args):
    return [sys.executable, "-m", "vaelab.cli", "train", "--quiet", *args]


def _weights(run_dir):
    pointer = json.loads((run_dir / "checkpoint.json").read_text())
    return {k: v for k, v in load_file(str(run_dir / pointer["file"])).items()}


# `vaelab train` in a process that holds still before its optimizer step number HOLD_AT (argv[1]): it creates the
# file argv[2] and waits there to be killed. An end of its stdin (the test itself died) ends it instead.
HOLD_AT_STEP = """
import os, sys
from pathlib import Path
from torch.optim.optimizer import register_optimizer_step_pre_hook
from vaelab.cli import main

hold_at, held = int(sys.argv[1]), Path(sys.argv[2])
steps = 0

def hold(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == hold_at:
        held.touch()
        sys.stdin.read()
        os._exit(3)

register_optimizer_step_pre_hook(hold)
sys.exit(main(["train", "--quiet", *sys.argv[3:]]))
"""
DEADLINE_SECONDS = 300  # for a few seconds of work: generous on a loaded machine, and the loop exits when it is done


def _wait_until(done) -> None:
    """Poll `done()` until it holds or DEADLINE_SECONDS pass (the caller then asserts what it needs)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_run_killed_mid_epoch_and_resumed_ends_with_the_uninterrupted_weights(tmp_path, digits):
    flags = ["--data", "digits", "--epochs", "2", "--batch-size", "16", "--hidden", "64", "--seed", "1"]
    steps_per_epoch = math.ceil(len(digits.x_train) / 16)
    # Killed half-way through epoch 2, whatever the machine's speed: epoch 1 is committed on disk, and the weights
    # and Adam moments of the steps since then exist only in the killed process.
    hold_at = steps_per_epoch + steps_per_epoch // 2
    killed, held, log = tmp_path / "killed", tmp_path / "held", tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        argv = [sys.executable, "-c", HOLD_AT_STEP, str(hold_at), str(held), *flags, "--out", str(killed)]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_until(lambda: held.exists() or proc.poll() is not None)
        assert held.exists(), f"training never reached step {hold_at} (exit {proc.poll()}): {log.read_text()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((killed / "checkpoint.json").read_text())["epoch"] == 1
    assert len((killed / "metrics.jsonl").read_text().splitlines()) == 1

    resumed = subprocess.run(
        _cli(*flags, "--out", str(killed), "--resume"), capture_output=True, text=True, timeout=DEADLINE_SECONDS
    )
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole"
    subprocess.run(_cli(*flags, "--out", str(whole)), check=True, capture_output=True, timeout=DEADLINE_SECONDS)
    a, b = _weights(killed), _weights(whole)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert (killed / "metrics.jsonl").read_text().count("\n") == 2
    assert not list(killed.glob("*.tmp")) and len(list(killed.glob("checkpoint-*.safetensors"))) == 1


def test_non_finite_loss_stops_naming_epoch_and_batch_and_keeps_last_checkpoint(tmp_path, digits):
    config = RunConfig(data="digits", epochs=1, hidden=[16], z_dim=2, batch_size=100)
    train(config, tmp_path, data=digits, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    poisoned = digits.x_train.clone()
    poisoned[:] = float("nan")
    bad = ImageData("digits", poisoned, digits.y_train, digits.x_test, digits.y_test)
    with pytest.raises(VaelabError, match=r"non-finite loss .* at epoch 2, batch 1"):
        train(RunConfig(**{**config.to_dict(), "epochs": 2}), tmp_path, resume=True, data=bad, progress=False)
    # config.json legitimately records the raised epoch count; the checkpoint itself must be untouched.
    checkpoint_files = {n: b for n, b in before.items() if n.startswith("checkpoint")}
    assert {n: (tmp_path / n).read_bytes() for n in checkpoint_files} == checkpoint_files
    assert load_run(tmp_path).epoch == 1


def test_kl_warmup_ramps_beta_linearly_to_its_value():
    config = RunConfig(beta=2.0, kl_warmup=2)
    assert [kl_weight(config, step, 10) for step in (0, 5, 10, 20, 30)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert kl_weight(RunConfig(beta=2.0), 0, 10) == 2.0


def test_free_bits_keep_kl_from_collapsing(tmp_path, digits):
    base = dict(data="digits", epochs=3, hidden=[32], z_dim=8, beta=8.0)
    collapsed = train(RunConfig(**base), tmp_path / "plain", data=digits, progress=False)
    floored = train(RunConfig(**base, free_bits=0.5), tmp_path / "fb", data=digits, progress=False)
    assert floored.history[-1]["test_kl"] > collapsed.history[-1]["test_kl"]


def test_training_refuses_to_overwrite_an_existing_run(vae_run, digits):
    with pytest.raises(VaelabError, match="already holds a run"):
        train(vae_run.config, vae_run.path, data=digits, progress=False)
