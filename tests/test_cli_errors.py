"""Bad input through the real `vaelab` command: one `vaelab: error:` line, exit status 2, no file touched.

Each case runs the command in its own subprocess inside its own folder. The subprocesses start together
(a few at a time) because each one spends ~1.5 s importing torch; every case is still reported on its own.
Nothing here depends on timing: no sleeps, and each subprocess has a limit (10 minutes) that only a hung
command reaches, however slow or busy the machine.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from idx_files import IDX_STEMS, idx_bytes, write_idx_set


def _train(case: Path, *flags: str) -> list[str]:
    """A tiny training command whose run folder would be case/run (it must never appear)."""
    return ["train", "--out", str(case / "run"), "--epochs", "1", "--hidden", "8", "--quiet", *flags]


def _idx_dir(case: Path, damage: Callable[[Path], None]) -> str:
    """A good gzipped IDX set in case/idx, then damaged by `damage(folder)`."""
    write_idx_set(case / "idx", n_train=20, n_test=10)
    damage(case / "idx")
    return str(case / "idx")


def _replace_train_images(payload: bytes, gz: bool = False) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / f"{IDX_STEMS[0]}.gz").unlink()
        if gz:
            (folder / f"{IDX_STEMS[0]}.gz").write_bytes(payload)
        else:
            (folder / IDX_STEMS[0]).write_bytes(payload)

    return damage


GOOD_IMAGES = idx_bytes(np.zeros((20, 28, 28), np.uint8))


def _npz(case: Path, **arrays) -> str:
    np.savez(case / "data.npz", allow_pickle=True, **arrays)
    return str(case / "data.npz")


def _pickled_object_npz(case: Path) -> str:
    """An npz whose `x` unpickles by calling os.mkdir(case/unpickled); the snapshot would show that folder."""

    class Unpickled:
        def __reduce__(self):
            return (os.mkdir, (str(case / "unpickled"),))

    x = np.empty(1, dtype=object)
    x[0] = Unpickled()
    return _npz(case, x=x)


def _file(case: Path, name: str, payload: bytes) -> str:
    (case / name).write_bytes(payload)
    return str(case / name)


def _config_folder(case: Path) -> str:
    (case / "run.toml").mkdir()
    return str(case / "run.toml")


def _run(case: Path, run_dir: Path) -> str:
    shutil.copytree(run_dir, case / "run")
    return str(case / "run")


def _altered_run(case: Path, run_dir: Path) -> str:
    path = Path(_run(case, run_dir))
    weights = next(path.glob("checkpoint-*.safetensors"))
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 0x01  # one bit of the last weight
    weights.write_bytes(bytes(payload))
    return str(path)


def _mnist_shaped(case: Path) -> str:
    return _npz(case, x=np.zeros((10, 28, 28), np.uint8))


# name -> (what the error line must say, builder(case folder, a trained 8x8 VAE run folder) -> argv)
CASES: dict[str, tuple[str, Callable[[Path, Path], list[str]]]] = {
    "unknown-data-set": ("unknown data set 'mnist6k'", lambda c, r: _train(c, "--data", "mnist6k")),
    "idx-file-missing": (
        "missing IDX file t10k-labels-idx1-ubyte",
        lambda c, r: _train(c, "--data", _idx_dir(c, lambda f: (f / f"{IDX_STEMS[3]}.gz").unlink())),
    ),
    "idx-truncated": (
        "holds 15679 bytes",
        lambda c, r: _train(c, "--data", _idx_dir(c, _replace_train_images(GOOD_IMAGES[:-1]))),
    ),
    "idx-bad-magic": (
        "bad magic",
        lambda c, r: _train(c, "--data", _idx_dir(c, _replace_train_images(b"\x00\x01" + GOOD_IMAGES[2:]))),
    ),
    "idx-header-claims-2^31-images": (
        "header says (2147483648, 28, 28)",
        lambda c, r: _train(
            c,
            "--data",
            _idx_dir(c, _replace_train_images(GOOD_IMAGES[:4] + struct.pack(">I", 2**31) + GOOD_IMAGES[8:])),
        ),
    ),
    "idx-truncated-gz": (
        "cannot read IDX file",
        lambda c, r: _train(c, "--data", _idx_dir(c, _replace_train_images(gzip.compress(GOOD_IMAGES)[:-40], gz=True))),
    ),
    "npz-without-x": (
        "no array named 'x'",
        lambda c, r: _train(c, "--data", _npz(c, images=np.zeros((4, 8, 8)))),
    ),
    "npz-nan-pixels": (
        "NaN or infinite pixels",
        lambda c, r: _train(c, "--data", _npz(c, x=np.full((10, 8, 8), np.nan))),
    ),
    "npz-pixels-above-1": ("must lie in [0, 1]", lambda c, r: _train(c, "--data", _npz(c, x=np.full((10, 8, 8), 2.0)))),
    "npz-pickled-object": ("cannot read npz", lambda c, r: _train(c, "--data", _pickled_object_npz(c))),
    "z-dim-0": ("z_dim must be a positive integer", lambda c, r: _train(c, "--data", "digits", "--z-dim", "0")),
    "beta-negative": ("beta must be a finite number >= 0", lambda c, r: _train(c, "--data", "digits", "--beta", "-1")),
    "batch-size-0": (
        "batch_size must be a positive integer",
        lambda c, r: _train(c, "--data", "digits", "--batch-size", "0"),
    ),
    "z-dim-not-a-number": (
        "argument --z-dim: invalid int value: 'abc'",
        lambda c, r: _train(c, "--data", "digits", "--z-dim", "abc"),
    ),
    "evaluate-other-shape": (
        "has images of shape (1, 28, 28), but the model",
        lambda c, r: ["evaluate", _run(c, r), "--data", _mnist_shaped(c)],
    ),
    "resume-other-shape": (
        "has images of shape (1, 28, 28), but the checkpoint",
        lambda c, r: [
            "train",
            "--resume",
            "--out",
            _run(c, r),
            "--data",
            _mnist_shaped(c),
            "--epochs",
            "10",
            "--quiet",
        ],
    ),
    "resume-other-kind": (
        "model kind 'vae', not 'ae'",
        lambda c, r: ["train", "--model", "ae", "--resume", "--out", _run(c, r), "--epochs", "10", "--quiet"],
    ),
    "resume-other-network": (
        "cannot resume with another network (z_dim 8 -> 4)",
        lambda c, r: ["train", "--resume", "--out", _run(c, r), "--z-dim", "4", "--epochs", "10", "--quiet"],
    ),
    "altered-checkpoint": ("checkpoint was altered or corrupted", lambda c, r: ["evaluate", _altered_run(c, r)]),
    "toml-key-twice": (
        "'z_dim' and 'z-dim' set the same setting",
        lambda c, r: _train(c, "--config", _file(c, "run.toml", b"z_dim = 3\nz-dim = 4\n")),
    ),
    "config-is-a-folder": (
        "is a folder, not a TOML config file",
        lambda c, r: _train(c, "--config", _config_folder(c)),
    ),
    "config-not-utf8": (
        "not UTF-8 text",
        lambda c, r: _train(c, "--config", _file(c, "run.toml", b"\xff\xfe\x00\x01\x89PNG binary")),
    ),
    "config-5000-digit-int": (
        "cannot read config file",
        lambda c, r: _train(c, "--config", _file(c, "run.toml", b"epochs = " + b"9" * 5000 + b"\n")),
    ),
    "config-4000-digit-int": (
        "z_dim must be a positive integer and at most 65536",
        lambda c, r: _train(c, "--config", _file(c, "run.toml", b"z_dim = " + b"9" * 4000 + b"\n")),
    ),
    "config-hidden-1e9": (
        "'hidden' must be a list of integers",
        lambda c, r: [  # no --hidden flag to override it
            "train",
            "--out",
            str(c / "run"),
            "--data",
            "digits",
            "--epochs",
            "1",
            "--quiet",
            "--config",
            _file(c, "run.toml", b"hidden = [1e9]\n"),
        ],
    ),
    "hidden-10^9": (
        "each hidden width must be a positive integer and at most 65536",
        lambda c, r: _train(c, "--data", "digits", "--hidden", "1000000000"),
    ),
    "out-is-a-file": (
        "is a file, not a folder; choose another --out",
        lambda c, r: ["train", "--data", "digits", "--out", _file(c, "notes.txt", b"mine"), "--epochs", "1", "--quiet"],
    ),
    "out-below-a-file": (
        "is a file, not a folder; choose another --out",
        lambda c, r: [
            "train",
            "--data",
            "digits",
            "--out",
            _file(c, "notes.txt", b"mine") + "/run",
            "--epochs",
            "1",
            "--quiet",
        ],
    ),
    "model-unknown": ("argument --model: invalid choice: 'gan'", lambda c, r: _train(c, "--model", "gan")),
    "sample-seed-negative": (
        "argument --seed: expected an integer from 0 to 4294967295",
        lambda c, r: ["sample", _run(c, r), "--seed", "-1", "-o", str(c / "s.png")],
    ),
    "explore-into-a-missing-folder": (
        "does not exist",
        lambda c, r: ["explore", _run(c, r), "-o", str(c / "missing" / "e.html")],
    ),
    "explore-onto-a-folder": ("is a folder", lambda c, r: ["explore", _run(c, r), "-o", str(c)]),
    "evaluate-onto-a-folder": ("is a folder", lambda c, r: ["evaluate", _run(c, r), "--skip-iwae", "-o", str(c)]),
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, vae_run):
    """name -> (subprocess result, snapshot of the case folder before, after), all cases run concurrently."""
    base = tmp_path_factory.mktemp("cli_errors")
    argvs = {}
    for name, (_, build) in CASES.items():
        (base / name).mkdir()
        argvs[name] = build(base / name, vae_run.path)
    before = {name: _snapshot(base / name) for name in CASES}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = dict(zip(argvs, pool.map(lambda argv: run_cli(*argv, cwd=base, timeout=600), argvs.values())))
    return {name: (results[name], before[name], _snapshot(base / name)) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_error_line_status_2_and_touches_no_file(outcomes, name):
    result, before, after = outcomes[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaelab: error: ") and lines[0] != "vaelab: error: ", lines
    assert CASES[name][0] in lines[0]
    assert sorted(after) == sorted(before), "files appeared or vanished"
    assert after == before, "a file changed"
