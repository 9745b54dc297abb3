"""vaelab.data.cache: decode once, memory-map after; rebuild on a changed source; detect an altered cache file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from image_files import write_class_folders, write_image
from vaelab.data import folder as folder_module
from vaelab.data import load_data
from vaelab.data.cache import TRAILER


def _load(root: Path, cache: Path, **options):
    return load_data(str(root), cache_dir=str(cache), **options)


def _cache_files(cache: Path) -> list[Path]:
    return sorted((cache / "decoded").iterdir())


@pytest.fixture
def pets(tmp_path):
    write_class_folders(tmp_path / "pets", {"cat": 6, "dog": 6})
    return tmp_path / "pets"


def test_the_second_load_is_a_cache_hit_that_decodes_nothing(pets, tmp_path, monkeypatch):
    first = _load(pets, tmp_path / "cache")
    assert "cache written" in first.description
    [cache_file] = _cache_files(tmp_path / "cache")
    stamp = cache_file.stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded on a cache hit")

    monkeypatch.setattr(folder_module, "decode_image", no_decoding)
    monkeypatch.setattr(folder_module, "_probe", no_decoding)
    second = _load(pets, tmp_path / "cache")
    assert f"cache hit: {cache_file}" in second.description
    assert cache_file.stat().st_mtime_ns == stamp and _cache_files(tmp_path / "cache") == [cache_file]
    assert torch.equal(second.pixels_train, first.pixels_train) and torch.equal(second.y_test, first.y_test)
    assert second.label_names == ["cat", "dog"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_pixels_are_memory_mapped_from_the_cache_file(pets, tmp_path):
    data = _load(pets, tmp_path / "cache")
    [cache_file] = _cache_files(tmp_path / "cache")
    assert str(cache_file) in Path("/proc/self/maps").read_text()
    assert data.pixels_train.dtype == torch.uint8 and data.pixels_train.shape == (9, 3, 12, 10)


@pytest.mark.parametrize("change", ["touched", "rewritten", "added", "removed"])
def test_a_changed_added_or_removed_file_rebuilds_the_cache_and_drops_the_old_one(pets, tmp_path, change):
    _load(pets, tmp_path / "cache")
    [old] = _cache_files(tmp_path / "cache")
    image = pets / "dog" / "002.png"
    if change == "touched":
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 1_000_000_000))
    elif change == "rewritten":  # other pixels under the same name
        write_image(image, np.zeros((12, 10, 3), np.uint8))
    elif change == "added":
        write_image(pets / "cat" / "new.png", np.zeros((12, 10, 3), np.uint8))
    else:
        image.unlink()
    data = _load(pets, tmp_path / "cache")
    assert "cache written" in data.description
    [new] = _cache_files(tmp_path / "cache")
    assert new != old
    expected = {"touched": 12, "rewritten": 12, "added": 13, "removed": 11}[change]
    assert len(data.pixels_train) + len(data.pixels_test) == expected
    if change == "rewritten":
        assert np.zeros((3, 12, 10), np.uint8).tobytes() in {x.tobytes() for x in data.pixels_train.numpy()} | {
            x.tobytes() for x in data.pixels_test.numpy()
        }


def test_caches_of_other_settings_live_side_by_side(pets, tmp_path):
    small = _load(pets, tmp_path / "cache", image_size="6")
    grey = _load(pets, tmp_path / "cache", channels=1)
    assert small.image_shape == (3, 6, 6) and grey.image_shape == (1, 12, 10)
    assert len(_cache_files(tmp_path / "cache")) == 2
    assert "cache hit" in _load(pets, tmp_path / "cache", image_size="6").description


def _alter(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    meta_len = TRAILER.unpack(bytes(raw[-TRAILER.size :]))[0]
    if how == "pixel":
        raw[100] ^= 0x01
    elif how == "description":  # "n_train": 9 -> 8, still valid JSON of the right length
        start = len(raw) - TRAILER.size - meta_len
        text = raw[start : -TRAILER.size].decode().replace('"n_train": 9', '"n_train": 8')
        raw[start : -TRAILER.size] = text.encode()
    elif how == "truncated":
        del raw[-1]
    elif how == "appended":
        raw += b"\0"
    elif how == "trailer":
        raw[-TRAILER.size : -TRAILER.size + 8] = (2**62).to_bytes(8, "little")
    else:
        raw = bytearray(b"not a cache")
    # A new file renamed over the old one, as any editor or copy would: rewriting the bytes of a file this process
    # has memory-mapped in place would pull them from under that map (SIGBUS where it shrinks).
    path.with_suffix(".new").write_bytes(bytes(raw))
    os.replace(path.with_suffix(".new"), path)


@pytest.mark.parametrize("how", ["pixel", "description", "truncated", "appended", "trailer", "replaced"])
def test_an_altered_cache_file_is_detected_and_rebuilt(pets, tmp_path, how):
    original = _load(pets, tmp_path / "cache")
    [cache_file] = _cache_files(tmp_path / "cache")
    _alter(cache_file, how)
    data = _load(pets, tmp_path / "cache")
    assert f"cache {cache_file} was altered or damaged (" in data.description and "cache written" in data.description
    assert torch.equal(data.pixels_train, original.pixels_train) and torch.equal(data.y_train, original.y_train)
    assert "cache hit" in _load(pets, tmp_path / "cache").description


def test_shapes_use_the_same_cache(tmp_path):
    first = load_data("shapes", cache_dir=str(tmp_path), image_size="8")
    [cache_file] = _cache_files(tmp_path)
    stamp = cache_file.stat().st_mtime_ns
    second = load_data("shapes", cache_dir=str(tmp_path), image_size="8")
    assert "cache hit" in second.description and cache_file.stat().st_mtime_ns == stamp
    assert torch.equal(first.pixels_test, second.pixels_test)
    assert all(np.array_equal(first.factors_test[k], second.factors_test[k]) for k in first.factor_names)
