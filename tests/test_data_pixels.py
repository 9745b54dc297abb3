"""Data held as uint8 with its scale; floats made a batch at a time; binarised targets stored as bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from idx_files import write_idx_set
from vaelab import devices as devices_module
from vaelab.config import RunConfig
from vaelab.data import ImageData, load_data, training_pixels, training_targets
from vaelab.data import images as images_module
from vaelab.train import train


@pytest.mark.parametrize("source, max_value", [("mnist5k", 255), ("digits", 16), ("idx", 255), ("npz", 255)])
def test_every_source_is_held_as_uint8_and_read_as_pixels_over_its_max_value(tmp_path, source, max_value):
    if source == "idx":
        write_idx_set(tmp_path / "idx")
    np.savez(tmp_path / "set.npz", x=np.arange(10 * 16, dtype=np.uint8).reshape(10, 4, 4))
    name = {"idx": str(tmp_path / "idx"), "npz": str(tmp_path / "set.npz")}.get(source, source)
    data = load_data(name)
    assert data.pixels_train.dtype == torch.uint8 and data.pixels_test.dtype == torch.uint8
    assert data.max_value == max_value and int(data.pixels_train.max()) <= max_value
    assert torch.equal(data.x_train, data.pixels_train.float() / max_value)
    assert torch.equal(data.x_test, data.pixels_test.float() / max_value)
    assert data.x_test is data.x_test  # converted once: every measure reads it


def test_digits_keep_their_17_levels_exactly():
    data = load_data("digits")
    assert set(data.x_train.unique().tolist()) == {k / 16 for k in range(17)}


def test_float_images_given_directly_are_kept_as_they_are(digits):
    floats = ImageData("floats", digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    assert floats.max_value == 1 and floats.pixels_train.dtype == torch.float32
    assert torch.equal(floats.x_train, digits.x_train) and torch.equal(floats.x_test, digits.x_test)


def test_static_binarisation_is_stored_as_bits_with_max_value_1(digits):
    config = RunConfig(binarize="static", seed=3)
    train_bits, test_bits = training_pixels(config, digits)
    for bits in (train_bits, test_bits):
        assert bits.values.dtype == torch.uint8 and bits.max_value == 1
        assert set(bits.values.unique().tolist()) == {0, 1}
    train_floats, test_floats = training_targets(config, digits)
    assert torch.equal(train_floats, train_bits.floats()) and torch.equal(test_floats, test_bits.floats())


def test_training_converts_a_batch_at_a_time_never_a_whole_training_split(digits, tmp_path, monkeypatch):
    converted = []
    to_float = images_module.to_float

    def recording(values, max_value):
        converted.append(len(values))
        return to_float(values, max_value)

    monkeypatch.setattr(images_module, "to_float", recording)
    monkeypatch.setattr(devices_module, "to_float", recording)  # the loop converts its batches on the device
    config = RunConfig(data="digits", epochs=1, batch_size=100, hidden=[16], z_dim=2)
    train(config, tmp_path / "run", data=digits, progress=False)
    assert len(digits.pixels_train) == 1437 and converted
    assert max(converted) <= 1000  # training batches of 100; the per-epoch test loss in slices of 1000 at most
    assert converted.count(100) == 14  # 1437 images: 14 full batches and one of 37


def test_training_from_uint8_gives_the_weights_training_from_floats_gives(digits, tmp_path):
    config = RunConfig(data="digits", epochs=2, batch_size=128, hidden=[32], z_dim=3, binarize="dynamic")
    floats = ImageData("digits", digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    a = train(config, tmp_path / "uint8", data=digits, progress=False).model.state_dict()
    b = train(config, tmp_path / "float", data=floats, progress=False).model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
