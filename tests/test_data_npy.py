"""vaelab.data.npz: a single .npy array of images, and the refusal of damaged or forged ones."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from test_data import _Unpickled, assert_refused_before_allocating
from vaelab.data import load_data
from vaelab.errors import VaelabError


def test_an_npy_of_images_is_split_80_20_without_labels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (25, 5, 6), np.uint8)
    np.save(tmp_path / "faces.npy", x)
    data = load_data(str(tmp_path / "faces.npy"))
    assert data.name == "faces" and data.image_shape == (1, 5, 6) and data.y_train is None
    assert (len(data.pixels_train), len(data.pixels_test)) == (20, 5)
    stored = sorted(image.tobytes() for image in torch.cat([data.pixels_train, data.pixels_test]).numpy())
    assert stored == sorted(image.tobytes() for image in x[:, None])


def test_an_npy_of_channels_last_floats_is_stored_as_8_bit_and_says_so(tmp_path):
    x = np.random.default_rng(1).random((10, 6, 6, 3)).astype(np.float32)
    np.save(tmp_path / "colour.npy", x)
    data = load_data(str(tmp_path / "colour.npy"), test_split=0.5)
    assert data.image_shape == (3, 6, 6) and len(data.pixels_test) == 5
    assert "round(255 x)" in data.description


def _forged_npy(shape: tuple[int, ...], n_bytes: int) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(n_bytes)


@pytest.mark.parametrize(
    "content, message",
    [
        (_forged_npy((100_000, 100_000, 100_000), 64), r"claims shape \(100000, 100000, 100000\) of uint8"),
        (_forged_npy((4, 8, 8), 255), r"claims shape \(4, 8, 8\) of uint8 \(256 bytes\) but holds 255"),
        (b"pixel,label\n0,1\n", r"cannot read \.npy"),
        (b"", r"cannot read \.npy"),
    ],
    ids=["1e15-items", "one-byte-short", "text", "empty"],
)
def test_a_damaged_or_forged_npy_is_refused_before_allocating(tmp_path, content, message):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    assert_refused_before_allocating(path, message)


def test_an_npy_of_pickled_objects_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    x = np.empty(1, dtype=object)
    x[0] = _Unpickled(marker)
    np.save(tmp_path / "evil.npy", x, allow_pickle=True)
    with pytest.raises(VaelabError, match=r"cannot read \.npy \(evil.npy holds Python objects; vaelab never unpickles"):
        load_data(str(tmp_path / "evil.npy"))
    assert not marker.exists()


def test_a_missing_npy_is_refused(tmp_path):
    with pytest.raises(VaelabError, match="no such file"):
        load_data(str(tmp_path / "absent.npy"))
