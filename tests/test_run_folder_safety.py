"""A run folder handed over by someone else, or shared by two commands, cannot be turned against the user.

Every case runs the real `vaelab` command on a real crafted folder and checks three things: exit status 2 with
one `vaelab: error:` line, no traceback, and that nothing outside the command's own output changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_cli
from vaelab import RunConfig, load_run, train
from vaelab.errors import VaelabError
from vaelab.runs import read_history

TINY = dict(data="digits", epochs=1, hidden=[16], z_dim=2, batch_size=200, seed=0)
TINY_FLAGS = ["--data", "digits", "--hidden", "16", "--z-dim", "2", "--batch-size", "200", "--quiet"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (symlinks as their target's name), to check that nothing changed."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = b"-> " + os.readlink(path).encode()
        elif path.is_file():
            out[key] = path.read_bytes()
    return out


def assert_one_error_line(result: subprocess.CompletedProcess, match: str = "") -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaelab: error:"), result.stderr
    assert "Traceback" not in result.stderr and match in lines[0], result.stderr


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, digits):
    """A one-epoch run to copy into each case."""
    return train(RunConfig(**TINY), tmp_path_factory.mktemp("base") / "run", data=digits, progress=False)


@pytest.fixture
def shared(tmp_path, base_run):
    """A copy of the base run inside `tmp_path/shared`, beside a victim folder that must never change."""
    run = tmp_path / "shared" / "run"
    shutil.copytree(base_run.path, run)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious")
    shutil.copy(next(run.glob("checkpoint-*.safetensors")), victim / "checkpoint-0002.safetensors")
    return run, victim


def rewrite_pointer(run: Path, **fields) -> None:
    pointer = json.loads((run / "checkpoint.json").read_text())
    pointer.update(fields)
    (run / "checkpoint.json").write_text(json.dumps(pointer))


@pytest.mark.parametrize("name", ["../../victim/checkpoint-0002.safetensors", "ABSOLUTE"])
def test_a_checkpoint_name_outside_the_folder_is_refused_and_deletes_nothing(shared, name):
    run, victim = shared
    target = victim / "checkpoint-0002.safetensors"
    name = str(target) if name == "ABSOLUTE" else name
    # The SHA matches the victim's file, so only the name check stands between resume and unlinking it.
    rewrite_pointer(run, file=name, sha256=hashlib.sha256(target.read_bytes()).hexdigest())
    before = snapshot(victim)
    result = run_cli("train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--resume")
    assert_one_error_line(result, "plain name")
    assert snapshot(victim) == before


def test_planted_symlinks_never_redirect_a_write_outside_the_folder(shared):
    run, victim = shared
    outside = victim / "notes.txt"
    for name in (
        "config.json.tmp",
        "checkpoint.json.tmp",
        "metrics.jsonl.tmp",
        "eval.json.tmp",
        "checkpoint-0002.safetensors.tmp",
        ".config.json.tmp",
    ):
        (run / name).symlink_to(outside)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(outside)  # a link at the target's own name is replaced, not written through
    before = snapshot(victim)
    resumed = run_cli("train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    evaluated = run_cli("evaluate", str(run), "--skip-iwae", "--skip-samples", "--skip-latent", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert snapshot(victim) == before
    assert not (run / "metrics.jsonl").is_symlink() and load_run(run).epoch == 2


def test_a_second_writer_of_a_locked_run_folder_gets_one_line(shared):
    run, _ = shared
    before = snapshot(run)
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running `train` holds it
        result = run_cli("train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--resume")
    finally:
        os.close(fd)
    assert_one_error_line(result, "in use by another vaelab command")
    assert snapshot(run) == before


def test_two_trains_into_one_folder_at_once_leave_one_whole_run(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "vaelab.cli", "train", *TINY_FLAGS, "--epochs", "3", "--out", str(out)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert loser.count("\n") == 1 and ("in use" in loser or "already holds a run" in loser), loser
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert load_run(out).epoch == 3


def test_a_new_run_refuses_an_unrelated_folder_and_leaves_it_alone(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "metrics.jsonl").write_text("my numbers\n")
    before = snapshot(folder)
    result = run_cli("train", *TINY_FLAGS, "--epochs", "1", "--out", str(folder))
    assert_one_error_line(result, "not empty and is not a vaelab run")
    assert snapshot(folder) == before


def test_train_out_onto_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    assert_one_error_line(run_cli("train", *TINY_FLAGS, "--out", str(target)), "not a folder")
    assert target.read_text() == "keep"


def test_a_diverging_resume_leaves_the_run_byte_for_byte(shared):
    run, _ = shared
    before = snapshot(run)
    result = run_cli("train", *TINY_FLAGS, "--epochs", "3", "--lr", "1e10", "--out", str(run), "--resume")
    assert_one_error_line(result, "non-finite loss")
    assert "last good checkpoint (epoch 1)" in result.stderr
    assert snapshot(run) == before


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_folder_and_says_so(tmp_path):
    out = tmp_path / "deep" / "run"
    result = run_cli("train", *TINY_FLAGS, "--epochs", "2", "--lr", "1e10", "--out", str(out))
    assert_one_error_line(result, "no checkpoint was written")
    assert "intact" not in result.stderr and not out.exists()


def test_a_resume_with_a_bad_history_is_refused_byte_for_byte(shared):
    run, _ = shared
    rewrite_pointer(run, history=["not a row"])
    before = snapshot(run)
    assert_one_error_line(run_cli("train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--resume"), "history")
    assert snapshot(run) == before


def _rewrite_checkpoint(run: Path, change) -> None:
    """Alter the checkpoint's tensors and recompute its SHA-256, as a forger would."""
    pointer = json.loads((run / "checkpoint.json").read_text())
    path = run / pointer["file"]
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))
    rewrite_pointer(run, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update({"optim.0.exp_avg": torch.zeros(3, 3)}), "optim.0.exp_avg is 3x3"),
        (lambda t: t.update({"optim.0.exp_avg": t["optim.0.exp_avg"].double()}), "optim.0.exp_avg"),
        (lambda t: t.update({"optim.x.y.z": torch.zeros(1)}), "optim.x.y.z unexpected"),
        (lambda t: t.pop("optim.1.exp_avg_sq"), "optim.1.exp_avg_sq missing"),
        (lambda t: t.update({"model.decoder.0.weight": torch.zeros(5, 7)}), "decoder.0.weight is 5x7"),
        (lambda t: t.update({"other": torch.zeros(1)}), "unexpected tensors other"),
    ],
)
def test_forged_tensors_are_refused_naming_the_tensor(shared, change, message):
    run, _ = shared
    _rewrite_checkpoint(run, change)
    with pytest.raises(VaelabError, match=message.replace(".", r"\.")):
        load_run(run)


POINTER_DEFECTS = {
    "file a number": {"file": 3},
    "missing sha256": {"sha256": None},
    "missing kind": {"kind": None},
    "epoch a string": {"epoch": "two"},
    "huge image": {"image_shape": [1, 100000, 100000]},
    "float image": {"image_shape": [1, 1e5, 1e5]},
    "negative epoch": {"epoch": -1},
    "history too short": {"history": []},
}


@pytest.mark.parametrize("defect", POINTER_DEFECTS)
def test_checkpoint_pointer_fields_of_the_wrong_type_or_size_are_refused(shared, defect):
    run, _ = shared
    rewrite_pointer(run, **POINTER_DEFECTS[defect])
    with pytest.raises(VaelabError, match="not a valid vaelab checkpoint pointer"):
        load_run(run)


@pytest.mark.parametrize(
    "payload",
    [
        b"[1, 2, 3]",
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"epoch": ' + b"9" * 5000 + b"}",
    ],
)
@pytest.mark.parametrize("name", ["checkpoint.json", "config.json"])
def test_json_files_that_are_not_objects_or_not_json_are_refused(shared, name, payload):
    run, _ = shared
    (run / name).write_bytes(payload)
    with pytest.raises(VaelabError, match=name):
        load_run(run)


@pytest.mark.parametrize("field, value", [("hidden", "400"), ("z_dim", [2]), ("lr", {"a": 1}), ("model", 3)])
def test_config_values_of_the_wrong_kind_are_refused(shared, field, value):
    run, _ = shared
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(VaelabError, match=field):
        load_run(run)


def test_every_command_reading_a_doctored_run_ends_in_one_line(shared):
    run, _ = shared
    rewrite_pointer(run, epoch="two")
    (run / "config.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    for command in (
        ["sample", str(run), "-o", str(run.parent / "s.png")],
        ["evaluate", str(run), "--quiet"],
        ["train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--resume"],
    ):
        assert_one_error_line(run_cli(*command))
    assert not (run.parent / "s.png").exists()


def test_a_bad_metrics_line_is_reported_with_its_number(shared):
    run, _ = shared
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(good + good + "{broken\n")
    with pytest.raises(VaelabError, match=r"metrics.jsonl, line 3"):
        read_history(load_run(run))


@pytest.fixture
def small_disk(tmp_path):
    """A real 96 kB file system (tmpfs), so 'disk full' is the kernel's ENOSPC; skipped where we cannot mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("needs permission to mount a tmpfs (root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_new_run_on_a_full_disk_leaves_no_half_folder(small_disk):
    (small_disk / "filler").write_bytes(b"\0" * 80_000)
    out = small_disk / "run"
    result = run_cli("train", *TINY_FLAGS, "--hidden", "64", "--epochs", "1", "--out", str(out))
    assert_one_error_line(result, "cannot write")
    assert not out.exists() and sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_resume_on_a_full_disk_leaves_the_run_byte_for_byte(small_disk, base_run):
    run = small_disk / "run"
    shutil.copytree(base_run.path, run)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * max(0, free - 2048))
    before = snapshot(run)
    assert_one_error_line(run_cli("train", *TINY_FLAGS, "--epochs", "2", "--out", str(run), "--resume"), "cannot write")
    assert snapshot(run) == before


def test_a_new_run_on_a_read_only_file_system_says_so(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("needs permission to mount a tmpfs (root)")
    try:
        assert_one_error_line(run_cli("train", *TINY_FLAGS, "--out", str(mount / "run")), "cannot create")
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_written_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    from vaelab.atomic import atomic_write_bytes

    mask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "out.txt", b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
