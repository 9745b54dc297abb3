"""TensorBoard logging: event files written per epoch and read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import builtins
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vaelab.errors import VaelabError
from vaelab.tensorboard_log import log_epoch, open_writer, scalar_tag


def _row(epoch: int, offset: float = 0.0) -> dict:
    """A history row as train.py writes it, numbers that differ per epoch (and a string, which is no scalar)."""
    return {
        "epoch": epoch,
        "train_loss": 30.0 - epoch + offset,
        "train_recon": 25.0 - epoch,
        "train_kl": 5.0 + epoch,
        "test_loss": 31.5 - epoch + offset,
        "test_recon": 26.0 - epoch,
        "test_kl": 5.5 + epoch,
        "beta": 1.0,
        "seconds": 0.25 * epoch,
        "images_per_second": 4000.0,
        "scaling": "per image",
    }


def _images(seed: int, n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))  # (N, C, H, W) like digits


def _write(log_dir, epochs, first_epoch: int = 1, offset: float = 0.0) -> None:
    with open_writer(log_dir, first_epoch=first_epoch) as writer:
        for epoch in epochs:
            log_epoch(writer, epoch, _row(epoch, offset), _images(epoch), _images(100), _images(200 + epoch))


def _read(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_every_number_of_every_epoch_reads_back_as_a_scalar(tmp_path):
    _write(tmp_path, range(1, 4))
    events = _read(tmp_path)
    numeric = [k for k, v in _row(1).items() if k not in ("epoch", "scaling")]
    assert sorted(events.Tags()["scalars"]) == sorted(scalar_tag(k) for k in numeric)
    for key in numeric:
        logged = events.Scalars(scalar_tag(key))
        assert [e.step for e in logged] == [1, 2, 3]
        assert [e.value for e in logged] == pytest.approx([_row(epoch)[key] for epoch in (1, 2, 3)])


def test_tags_group_metrics_by_split():
    assert [scalar_tag(k) for k in ("train_loss", "test_kl", "beta", "images_per_second")] == [
        "train/loss",
        "test/kl",
        "run/beta",
        "run/images_per_second",
    ]


def test_each_epoch_has_a_grid_of_samples_and_of_reconstructions_under_their_inputs(tmp_path):
    _write(tmp_path, range(1, 3))
    events = _read(tmp_path)
    assert sorted(events.Tags()["images"]) == ["images/reconstructions", "images/samples"]
    samples, recon = events.Images("images/samples"), events.Images("images/reconstructions")
    assert [e.step for e in samples] == [e.step for e in recon] == [1, 2]
    # 16 images of 8x8, 8 per row, each tile enlarged 6x to 48 px, 1 px white borders: 2 rows of samples,
    # and 4 rows of reconstructions (2 rows of inputs, each followed by its reconstructions).
    assert {(e.width, e.height) for e in samples} == {(8 * 9 * 6 + 6, 2 * 9 * 6 + 6)}
    assert {(e.width, e.height) for e in recon} == {(8 * 9 * 6 + 6, 4 * 9 * 6 + 6)}
    assert samples[0].encoded_image_string.startswith(b"\x89PNG")
    assert samples[0].encoded_image_string != samples[1].encoded_image_string


@pytest.mark.parametrize("n, rows, columns", [(20, 2, 8), (5, 1, 5)])
def test_every_original_sits_right_above_its_reconstruction(tmp_path, n, rows, columns):
    grey = torch.arange(2.0 * n).view(-1, 1, 1, 1).expand(-1, 1, 8, 8) / (2 * n)  # tile i is flat grey i / 2n
    originals, reconstructions = grey[:n], grey[n:]
    with open_writer(tmp_path) as writer:
        log_epoch(writer, 1, {}, originals, originals, reconstructions)
    png = _read(tmp_path).Images("images/reconstructions")[0].encoded_image_string
    pixels = torch.tensor(np.array(Image.open(io.BytesIO(png)).convert("L")), dtype=torch.float32) / 255
    centre = 1 + 4  # a tile's centre pixel before the 6x enlargement: border, then half of 8
    tiles = pixels[6 * centre :: 6 * 9, 6 * centre :: 6 * 9]  # (2 * rows, columns): one grey level per tile
    expected = torch.stack([part[r * columns : (r + 1) * columns] for r in range(rows) for part in grey.split(n)])
    assert tiles.shape == (2 * rows, columns)  # with 20, the last 4 do not fill a row and are left out
    assert tiles == pytest.approx(expected[..., 0, 0, 0], abs=1 / 255)


def test_a_resumed_run_replaces_the_epochs_an_interrupted_run_had_logged(tmp_path):
    _write(tmp_path, range(1, 4))  # an interrupted run logged epochs 1-3; its checkpoint holds epoch 1
    _write(tmp_path, range(2, 4), first_epoch=2, offset=100.0)
    logged = _read(tmp_path).Scalars("train/loss")
    assert [(e.step, e.value) for e in logged] == [(1, 29.0), (2, 128.0), (3, 127.0)]


def test_without_tensorboard_the_error_names_the_install_command(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(VaelabError, match=r"pip install 'vaelab\[tensorboard\]'"):
        open_writer(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_train_with_tensorboard_flag_logs_every_epoch_of_the_real_run(tmp_path, cli):
    board = tmp_path / "board"
    result = cli(
        "train",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--z-dim",
        "2",
        "--quiet",
        "--tensorboard",
        str(board),
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(board))
    events.Reload()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [(e.step, e.value) for e in events.Scalars("test/loss")]
    assert logged == [(row["epoch"], pytest.approx(row["test_loss"])) for row in history]
    assert {"images/samples", "images/reconstructions"} <= set(events.Tags()["images"])
