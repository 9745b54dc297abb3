"""vaelab.data.cifar: CIFAR-10/100 binary batches (folder or .tar.gz) read into the cache; damaged files refused."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch

from image_files import CIFAR10_NAMES, cifar_records, tar_gz, write_cifar10, write_cifar100
from vaelab.data import load_data
from vaelab.errors import VaelabError


def _load(source, cache):
    return load_data(str(source), cache_dir=str(cache))


def test_cifar10_folder_reads_back_the_records_written_in_file_order(tmp_path):
    arrays = write_cifar10(tmp_path / "cifar-10-batches-bin")
    data = _load(tmp_path / "cifar-10-batches-bin", tmp_path / "cache")
    assert data.name == "cifar-10" and data.image_shape == (3, 32, 32) and data.max_value == 255
    assert data.pixels_train.dtype == torch.uint8
    np.testing.assert_array_equal(data.pixels_train.numpy(), arrays["x_train"])
    np.testing.assert_array_equal(data.pixels_test.numpy(), arrays["x_test"])
    assert data.y_train.tolist() == arrays["y_train"].tolist() and data.y_test.tolist() == arrays["y_test"].tolist()
    assert data.label_names == list(CIFAR10_NAMES)


def test_the_folder_holding_the_unpacked_archive_is_read_too(tmp_path):
    write_cifar10(tmp_path / "downloads" / "cifar-10-batches-bin")
    assert len(_load(tmp_path / "downloads", tmp_path / "cache").pixels_train) == 20


def test_cifar100_uses_the_fine_label_of_its_two_label_bytes(tmp_path):
    arrays = write_cifar100(tmp_path / "cifar-100-binary")
    data = _load(tmp_path / "cifar-100-binary", tmp_path / "cache")
    assert data.name == "cifar-100"
    np.testing.assert_array_equal(data.pixels_test.numpy(), arrays["x_test"])
    assert data.y_train.tolist() == arrays["y_train"].tolist()
    assert data.label_names[:2] == ["class0", "class1"] and len(data.label_names) == 100


@pytest.mark.parametrize("which", ["cifar-10", "cifar-100"])
def test_the_tar_gz_archive_reads_as_its_folder_does(tmp_path, which):
    folder = tmp_path / ("cifar-10-batches-bin" if which == "cifar-10" else "cifar-100-binary")
    arrays = (write_cifar10 if which == "cifar-10" else write_cifar100)(folder)
    archive = tar_gz(tmp_path / f"{which}-binary.tar.gz", folder)
    data = _load(archive, tmp_path / "cache")
    assert data.name == f"{which}-binary"
    np.testing.assert_array_equal(data.pixels_train.numpy(), arrays["x_train"])
    assert data.y_test.tolist() == arrays["y_test"].tolist()
    assert "cache hit" in _load(archive, tmp_path / "cache").description


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", r"data_batch_3.bin: 6145 bytes is not a whole number of 3073-byte records"),
        ("record-length", r"test_batch.bin: .* not a whole number of 3073-byte records"),
        ("empty", r"data_batch_1.bin: 0 bytes"),
        ("label", r"data_batch_2.bin: record 1 has label 10, not one of the 10 classes"),
        ("missing", r"data_batch_4.bin: cannot read \(No such file"),
    ],
)
def test_a_damaged_cifar10_batch_is_refused_naming_it_and_leaves_no_cache(tmp_path, damage, message):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder, per_batch=2)
    if damage == "truncated":
        (folder / "data_batch_3.bin").write_bytes((folder / "data_batch_3.bin").read_bytes()[:-1])
    elif damage == "record-length":  # CIFAR-100's 3074-byte records in a CIFAR-10 folder
        images = np.zeros((3, 3, 32, 32), np.uint8)
        labels = np.zeros(3, np.uint8)
        (folder / "test_batch.bin").write_bytes(cifar_records(images, labels, coarse=labels))
    elif damage == "empty":
        (folder / "data_batch_1.bin").write_bytes(b"")
    elif damage == "label":
        raw = bytearray((folder / "data_batch_2.bin").read_bytes())
        raw[3073] = 10
        (folder / "data_batch_2.bin").write_bytes(bytes(raw))
    else:
        (folder / "data_batch_4.bin").unlink()  # still a CIFAR folder: its first and test batches are there
    with pytest.raises(VaelabError, match=message):
        _load(folder, tmp_path / "cache")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))  # not even a temporary


def test_the_pickled_python_version_is_refused_without_unpickling(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "unpickled"
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_NAMES)}))
    with pytest.raises(VaelabError, match="pickled python version, which vaelab never unpickles.*binary version"):
        _load(folder, tmp_path / "cache")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(VaelabError, match="pickled python version"):
        _load(archive, tmp_path / "cache")
    assert not marker.exists()


def test_an_archive_missing_a_batch_names_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    write_cifar10(folder)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(VaelabError, match="batch file test_batch.bin is missing"):
        _load(tar_gz(tmp_path / "cifar-10-binary.tar.gz", folder), tmp_path / "cache")


@pytest.mark.parametrize("content", [b"not a gzip stream at all", b"\x1f\x8b\x08\x00" + bytes(20)])
def test_a_tar_gz_that_is_not_a_cifar_archive_is_refused(tmp_path, content):
    archive = tmp_path / "broken.tar.gz"
    archive.write_bytes(content)
    with pytest.raises(VaelabError, match="cannot read the archive"):
        _load(archive, tmp_path / "cache")


def test_cifar_refuses_resizing_and_another_test_split(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-bin")
    with pytest.raises(VaelabError, match="--image-size and --channels apply to image folders and shapes only"):
        load_data(str(tmp_path / "cifar-10-batches-bin"), cache_dir=str(tmp_path), image_size="16")
    with pytest.raises(VaelabError, match="has its own test split; drop --test-split"):
        load_data(str(tmp_path / "cifar-10-batches-bin"), cache_dir=str(tmp_path), test_split=0.5)
