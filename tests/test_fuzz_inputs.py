"""Randomly corrupted run files and data files, fed to every command: one error line or a correct answer, never
a traceback, and nothing outside the command's own output changed.

The cases are seeded (the same on every run) and run the real command line in-process (`vaelab.cli.main`),
so a few hundred of them take seconds rather than a torch import each.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from idx_files import write_idx_set
from test_run_folder_safety import TINY, snapshot
from vaelab import RunConfig, train
from vaelab.cli import main

SEED = 20261125
RUN_CASES = 150
DATA_CASES = 60
ODD_VALUES = [None, -1, 0, 2**70, 1e308, -1e-9, "x", "../../victim", "/etc/passwd", [], {}, [1, 2, 3], True, ""]


def mutate_json(text: str, rng: random.Random) -> bytes:
    """Either a random value anywhere in the document replaced by an odd one, or raw bytes flipped/cut."""
    if rng.random() < 0.6:
        document = json.loads(text)
        holder, key = _random_slot(document, rng)
        if holder is not None:
            holder[key] = rng.choice(ODD_VALUES)
        return json.dumps(document).encode()
    return mutate_bytes(text.encode(), rng)


def _random_slot(document, rng: random.Random):
    """A random (container, key) inside `document`, walking down a few levels."""
    holder, key = None, None
    node = document
    for _ in range(rng.randint(1, 4)):
        if isinstance(node, dict) and node:
            holder, key = node, rng.choice(sorted(node))
        elif isinstance(node, list) and node:
            holder, key = node, rng.randrange(len(node))
        else:
            break
        node = holder[key]
    return holder, key


def mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    kind = rng.choice(["flip", "cut", "insert"])
    if kind == "cut":
        return bytes(data[: rng.randrange(len(data))])
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        if kind == "flip":
            data[position] = rng.randrange(256)
        else:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
    return bytes(data)


def commands(run: Path, out: Path) -> list[list[str]]:
    return [
        ["sample", str(run), "-n", "4", "-o", str(out / "s.png")],
        ["reconstruct", str(run), "-n", "4", "-o", str(out / "r.png")],
        ["evaluate", str(run), "--skip-iwae", "--skip-samples", "--skip-latent", "--quiet", "-o", str(out / "e.json")],
        ["plot", "curves", str(run), "-o", str(out / "c.png")],
        ["train", "--resume", "--epochs", "2", "--quiet", "--out", str(run)],
    ]


def run_case(argv: list[str], capsys) -> tuple[int, str]:
    """The command's exit status and stderr; any exception escaping main() fails the test with its traceback."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own exits
        status = exc.code
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, digits):
    return train(RunConfig(**TINY), tmp_path_factory.mktemp("fuzz") / "run", data=digits, progress=False).path


def test_corrupted_run_files_never_give_a_traceback(tmp_path, pristine, capsys):
    rng = random.Random(SEED)
    statuses = []
    for case in range(RUN_CASES):
        root = tmp_path / f"case{case}"
        run, out = root / "run", root / "out"
        shutil.copytree(pristine, run)
        out.mkdir()
        name = rng.choice(["checkpoint.json", "config.json", "metrics.jsonl"])
        (run / name).write_bytes(
            mutate_json(
                (run / name).read_text().splitlines()[0] if name == "metrics.jsonl" else (run / name).read_text(), rng
            )
        )
        argv = rng.choice(commands(run, out))
        before = snapshot(run)
        status, err = run_case(argv, capsys)
        context = f"case {case}: {name} -> {argv[0]}: {err}"
        assert status in (0, 2), context
        if status == 2:
            assert len(err.strip().splitlines()) == 1 and err.startswith("vaelab: error:"), context
        if status == 2 or argv[0] != "train":  # only a successful train may change the run folder
            assert snapshot(run) == before, context
        statuses.append(status)
    assert statuses.count(2) > RUN_CASES // 3, "the corruptions should mostly be refused"


def _npz(path: Path, rng: np.random.Generator) -> None:
    np.savez(path, x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y=rng.integers(0, 3, 60))


def test_corrupted_npz_and_idx_files_never_give_a_traceback(tmp_path, capsys):
    rng = random.Random(SEED + 1)
    arrays = np.random.default_rng(SEED)
    for case in range(DATA_CASES):
        root = tmp_path / f"case{case}"
        root.mkdir()
        if case % 2:
            source = root / "data.npz"
            _npz(source, arrays)
            victim = source
        else:
            source = root / "idx"
            source.mkdir()
            write_idx_set(source, n_train=40, n_test=20, size=8, gz=bool(case % 4), seed=case)
            victim = rng.choice(sorted(source.iterdir()))
        victim.write_bytes(mutate_bytes(victim.read_bytes(), rng))
        out = root / "run"
        status, err = run_case(
            [
                "train",
                "--data",
                str(source),
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--z-dim",
                "2",
                "--quiet",
                "--out",
                str(out),
            ],
            capsys,
        )
        context = f"case {case}: {victim.name}: {err}"
        assert status in (0, 2), context
        if status == 2:
            assert len(err.strip().splitlines()) == 1 and err.startswith("vaelab: error:"), context
            assert not out.exists(), context
