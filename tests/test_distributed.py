"""torchrun: N processes compute what one computes, resume from each other's checkpoints, and stop together.

Every job here is a real `torchrun --nproc-per-node 2` on the CPU (gloo over 127.0.0.1), on the digits set,
bounded by DEADLINE_SECONDS and polled, never slept on.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaelab import load_run
from vaelab.distributed import Processes
from vaelab.noise import ImageNoise
from vaelab.train import epoch_order

DEADLINE_SECONDS = 300  # for seconds of work: generous on a loaded machine; every wait ends as soon as it can
# An uneven last batch (1437 = 14 * 100 + 37, shared 19/18), dynamic binarisation, free bits (a clamp of the global
# batch's mean KL per dimension), KL warm-up and clipping: every part of a step that could differ between N and 1.
FLAGS = (
    "--data digits --hidden 64 --z-dim 8 --batch-size 100 --seed 1 --binarize dynamic --free-bits 0.1 "
    "--kl-warmup 1 --clip-grad 50 --quiet"
).split()
# One thread per process whatever the number of processes (torchrun sets it only for more than one): a matrix
# product's float sums depend on the thread count.
ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, nproc: int = 2, **kwargs) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node nproc ARGS`, waited for at most DEADLINE_SECONDS."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=DEADLINE_SECONDS, **kwargs)


def vaelab_train(*args: str) -> subprocess.CompletedProcess:
    """`vaelab train ARGS` in one process."""
    command = [sys.executable, "-m", "vaelab", "train", *args]
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=DEADLINE_SECONDS)


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    pointer = json.loads((run_dir / "checkpoint.json").read_text())
    return load_file(str(run_dir / pointer["file"]))


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float = 1e-4) -> None:
    """Every tensor of a and b (weights and Adam's moments) within `rel` of each other, relative to its norm."""
    assert a.keys() == b.keys()
    for name in a:
        gap = (a[name].double() - b[name].double()).norm() / a[name].double().norm().clamp(min=1e-12)
        assert gap < rel, (name, gap.item())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    _ok(vaelab_train(*FLAGS, "--epochs", "2", "--out", str(out)))
    return out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "run"
    _ok(torchrun("-m", "vaelab", "train", *FLAGS, "--epochs", "2", "--out", str(out)))
    return out


def test_shares_of_a_global_batch_hold_each_image_once_in_rank_order():
    for world in (1, 2, 3, 4):
        for size in range(0, 11):
            shares = [Processes(rank, world).rows(size) for rank in range(world)]
            assert [i for share in shares for i in range(size)[share]] == list(range(size))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1
        chunks = [list(Processes(rank, world).chunks(7)) for rank in range(world)]
        assert sorted(c for cs in chunks for c in cs) == list(range(7))


def test_epoch_order_changes_between_epochs_and_depends_on_seed_and_epoch_only():
    first, second = epoch_order(1, 1, 1437), epoch_order(1, 2, 1437)
    assert sorted(first.tolist()) == list(range(1437))
    assert not torch.equal(first, second)
    assert torch.equal(first, epoch_order(1, 1, 1437)) and not torch.equal(first, epoch_order(2, 1, 1437))


def test_the_noise_of_a_share_is_its_rows_of_the_global_draw():
    like = torch.empty(7, 3)
    whole = ImageNoise(11, 7, slice(0, 7), torch.device("cpu"))
    expected = (whole.uniform_like(like), whole.normal_like(like))  # in this order, as a training step draws
    for world in (2, 3):
        parts = []
        for rank in range(world):
            rows = Processes(rank, world).rows(7)
            noise = ImageNoise(11, 7, rows, torch.device("cpu"))
            parts.append((noise.uniform_like(like[rows]), noise.normal_like(like[rows])))
        assert torch.equal(torch.cat([u for u, _ in parts]), expected[0])
        assert torch.equal(torch.cat([n for _, n in parts]), expected[1])


def test_two_processes_train_the_numbers_of_one_with_the_same_global_batch(one_process, two_processes):
    one, two = _rows(one_process), _rows(two_processes)
    assert [r["processes"] for r in one] == [1, 1] and [r["processes"] for r in two] == [2, 2]
    assert [r["device"] for r in two] == ["cpu", "cpu"]
    for a, b in zip(one, two):
        for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), (a["epoch"], key)
    assert_close_weights(_weights(one_process), _weights(two_processes))
    # Only rank 0 wrote: one checkpoint, no temporary left by a second writer.
    assert sorted(p.name for p in two_processes.iterdir()) == sorted(p.name for p in one_process.iterdir())


def test_resume_with_one_process_from_a_two_process_checkpoint(tmp_path, one_process):
    out = tmp_path / "run"
    _ok(torchrun("-m", "vaelab", "train", *FLAGS, "--epochs", "1", "--out", str(out)))
    _ok(vaelab_train(*FLAGS, "--epochs", "2", "--out", str(out), "--resume"))
    assert [r["processes"] for r in _rows(out)] == [2, 1]
    for a, b in zip(_rows(one_process), _rows(out)):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert_close_weights(_weights(one_process), _weights(out))


# The training script of the kill test: `vaelab train` in which rank 1, before its optimizer step number argv[1],
# writes its pid into the file argv[2] and holds still to be killed; if torchrun dies first, it exits.
HOLD_RANK_1 = """
import os, sys, time
from pathlib import Path
from torch.optim.optimizer import register_optimizer_step_pre_hook
from vaelab.cli import main

hold_at, held = int(sys.argv[1]), Path(sys.argv[2])
steps, parent = 0, os.getppid()

def hold(optimizer, args, kwargs):
    global steps
    steps += 1
    if steps == hold_at and os.environ["RANK"] == "1":
        Path(f"{held}.part").write_text(str(os.getpid()))
        os.replace(f"{held}.part", held)
        while os.getppid() == parent:
            time.sleep(0.05)
        os._exit(3)

register_optimizer_step_pre_hook(hold)
sys.exit(main(["train", *sys.argv[3:]]))
"""


def _wait_until(done) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_killed_process_ends_the_job_and_resume_continues_its_last_checkpoint(tmp_path, digits, two_processes):
    out, held, script = tmp_path / "run", tmp_path / "held", tmp_path / "hold.py"
    script.write_text(HOLD_RANK_1)
    steps_per_epoch = math.ceil(len(digits.x_train) / 100)
    hold_at = steps_per_epoch + steps_per_epoch // 2  # half-way through epoch 2: epoch 1 is on disk
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    command += [str(hold_at), str(held), *FLAGS, "--epochs", "2", "--out", str(out)]
    log = tmp_path / "log.txt"
    with open(log, "wb") as sink:
        job = subprocess.Popen(command, env=ENV, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until(lambda: held.exists() or job.poll() is not None)
        assert held.exists(), f"rank 1 never reached step {hold_at} (exit {job.poll()}): {log.read_text()[-3000:]}"
        os.kill(int(held.read_text()), signal.SIGKILL)
        status = job.wait(timeout=DEADLINE_SECONDS)  # bounded: the job ends by itself, it does not hang
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert status != 0
    assert load_run(out).epoch == 1  # the committed checkpoint, its SHA-256 checked
    assert len(_rows(out)) == 1 and not [p for p in out.iterdir() if ".tmp" in p.name or p.name.startswith(".")]

    _ok(torchrun("-m", "vaelab", "train", *FLAGS, "--epochs", "2", "--out", str(out), "--resume"))
    resumed, whole = _weights(out), _weights(two_processes)
    assert resumed.keys() == whole.keys()
    for name in whole:
        assert torch.equal(resumed[name], whole[name]), name


EVALUATE_ON_RANKS = """
import json, sys, torch
from vaelab import RunConfig, build_model, load_data
from vaelab.distributed import joined, launched
from vaelab.evaluate import dataset_loss

data = load_data("digits")
torch.manual_seed(0)
model = build_model(RunConfig(z_dim=8, hidden=[64]), data.image_shape)
with joined(launched(), torch.device("cpu")) as processes:
    results = [
        dataset_loss(model, data.x_test[:n], beta=2.0, seed=5, batch_size=50, processes=processes) for n in (359, 30)
    ]
if processes.is_main:
    print(json.dumps(results))
"""


def test_evaluation_over_two_processes_equals_one_process_exactly(tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(EVALUATE_ON_RANKS)
    # 359 images in chunks of 50: the ranks measure 200 and 159 images; of 30 images, one chunk, and rank 1 none.
    results = []
    for nproc in (1, 2):
        done = torchrun(str(script), nproc=nproc)
        _ok(done)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert results[1] == results[0]
