"""The decode cache: images decoded (or drawn) once into one uint8 file, memory-mapped on every later load.

A cache file holds the pixels (N, C, H, W) uint8 from byte 0, so the memory map needs no offset and a set larger
than memory is read only where it is indexed; then a JSON description (shape, the split, labels, factors, notes);
then a fixed trailer: the description's length, a BLAKE2b digest of the description and the pixels, and MAGIC.
Its name carries a hash of everything its content depends on (each source file's path, size and modification
time, and the settings), so a changed or added file gives another name and is decoded afresh; the older file of
the same source and settings is then removed. A file is written to a unique temporary and renamed (vaelab.atomic),
so a cache is never seen half-written, and one found altered is reported and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from vaelab.atomic import atomic_file
from vaelab.data.images import ImageData
from vaelab.errors import VaelabError

CACHE_FORMAT = 1  # part of every key: a new layout never reads an old file
MAGIC = b"VAELABu8"
TRAILER = struct.Struct("<Q32s8s")  # description length (uint64), BLAKE2b-256 digest, MAGIC
SUFFIX = ".u8"
# Up to 64 MiB the digest covers every pixel (~0.1 s); beyond, 512 blocks of 64 KiB spread over the file, so a
# hit stays well under a second for any size (a full check would read a 100 GB set whole on every load). The
# sampled check still catches truncation, appended bytes and any change to the description.
FULL_CHECK_BYTES = 64 << 20
SAMPLE_BLOCKS = 512
SAMPLE_BYTES = 64 << 10


class DamagedCache(Exception):
    """A cache file whose bytes do not add up; the message says how."""


def cache_key(*parts) -> str:
    """SHA-256 (hex) of the JSON of everything a cache's content depends on."""
    return hashlib.sha256(json.dumps([CACHE_FORMAT, *parts], separators=(",", ":")).encode()).hexdigest()


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns) of a source file, which a cache key includes."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise VaelabError(f"{path}: cannot read ({exc.strerror})") from None
    return stat.st_size, stat.st_mtime_ns


@dataclass
class Cached:
    pixels: torch.Tensor  # (N, C, H, W) uint8, memory-mapped copy-on-write: the file itself is never changed
    meta: dict  # n_train, labels, label_names, factors, notes: see CacheWriter.finish
    hit: bool  # read from an existing file (True) or decoded now (False)
    note: str  # where the pixels came from, for the data's description


class CacheWriter:
    """Streams uint8 images (n, C, H, W) into an open temporary, then seals it with its description."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.count = 0
        self.image_shape: tuple[int, ...] | None = None

    def write(self, images: np.ndarray) -> None:
        if self.image_shape is None:
            self.image_shape = tuple(images.shape[1:])
        if images.dtype != np.uint8 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"cache chunk {images.dtype} {images.shape} after images of {self.image_shape}")
        self._f.write(memoryview(np.ascontiguousarray(images)).cast("B"))
        self.count += len(images)

    def finish(
        self,
        n_train: int,
        labels: list[int] | None = None,
        label_names: list[str] | None = None,
        factors: dict[str, list[float]] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        """Write the description (labels and factors in stored order, train first) and the trailer."""
        if not 0 < n_train < self.count:
            raise VaelabError(f"{self.count} images cannot be split into {n_train} train and the rest test images")
        meta = {
            "shape": [self.count, *self.image_shape],
            "n_train": n_train,
            "labels": labels,
            "label_names": label_names,
            "factors": factors,
            "notes": notes or [],
        }
        meta_raw = json.dumps(meta).encode()
        n_bytes = self.count * math.prod(self.image_shape)
        self._f.flush()
        pixels = np.memmap(self._f, dtype=np.uint8, mode="r", shape=(n_bytes,))
        digest = _digest(meta_raw, pixels)
        del pixels
        self._f.seek(n_bytes)
        self._f.write(meta_raw + TRAILER.pack(len(meta_raw), digest, MAGIC))


def cached_images(directory: Path, stem: str, key: str, build: Callable[[CacheWriter], None]) -> Cached:
    """The images of `directory`/`stem`-`key`: memory-mapped when that file exists and is whole, else built by
    `build` (which writes every image and calls finish) into a temporary renamed into place."""
    path = directory / f"{stem}-{key[:24]}{SUFFIX}"
    damage = ""
    try:
        found = _open(path)
    except DamagedCache as exc:
        found, damage = None, f"cache {path} was altered or damaged ({exc}), so it was rebuilt; "
    if found is not None:
        return Cached(*found, hit=True, note=f"cache hit: {path}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaelabError(f"{directory}: cannot create the cache folder ({exc.strerror}); set --data-cache") from None
    started = time.perf_counter()
    with atomic_file(path) as f:
        build(CacheWriter(f))
    seconds = time.perf_counter() - started
    _remove_older(directory, stem, path)
    try:
        pixels, meta = _open(path)
    except DamagedCache as exc:  # written and sealed a moment ago: the disk or another process changed it
        raise VaelabError(f"{path}: the cache just written does not read back ({exc})") from None
    return Cached(pixels, meta, hit=False, note=f"{damage}cache written: {path} ({seconds:.1f} s)")


def _remove_older(directory: Path, stem: str, keep: Path) -> None:
    """Drop the caches of the same source and settings made from older files: they can never be hit again."""
    for old in directory.iterdir():
        if old.name.startswith(f"{stem}-") and old.name.endswith(SUFFIX) and old != keep:
            with contextlib.suppress(OSError):
                old.unlink()


def _open(path: Path) -> tuple[torch.Tensor, dict] | None:
    """(pixels memory-mapped, description) of a whole cache file; None when there is none; DamagedCache else."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < TRAILER.size:
                raise DamagedCache(f"{size} bytes, shorter than its trailer")
            f.seek(size - TRAILER.size)
            meta_len, digest, magic = TRAILER.unpack(f.read(TRAILER.size))
            if magic != MAGIC or meta_len > size - TRAILER.size:
                raise DamagedCache("its trailer is not a vaelab cache trailer")
            n_bytes = size - TRAILER.size - meta_len
            f.seek(n_bytes)
            meta_raw = f.read(meta_len)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VaelabError(f"{path}: cannot read the cache ({exc.strerror})") from None
    meta = _check_meta(meta_raw, n_bytes)
    pixels = np.memmap(path, dtype=np.uint8, mode="c", shape=tuple(meta["shape"]))
    if _digest(meta_raw, pixels.reshape(-1)) != digest:
        raise DamagedCache("its checksum does not match its bytes")
    return torch.from_numpy(pixels), meta


def _check_meta(meta_raw: bytes, n_bytes: int) -> dict:
    """The description, refused unless its fields have the types and lengths the pixels imply."""
    try:
        meta = json.loads(meta_raw)
        shape, n_train = [int(v) for v in meta["shape"]], int(meta["n_train"])
        lengths = [len(meta["labels"] or [])] + [len(v) for v in (meta["factors"] or {}).values()]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DamagedCache("its description is not readable") from None
    if len(shape) != 4 or min(shape) < 1 or math.prod(shape) != n_bytes:
        raise DamagedCache(f"its description says {shape} but it holds {n_bytes} bytes of pixels")
    if not 0 < n_train < shape[0] or any(n not in (0, shape[0]) for n in lengths):
        raise DamagedCache("its split or labels do not match its images")
    return meta


def _digest(meta_raw: bytes, pixels: np.ndarray) -> bytes:
    """BLAKE2b-256 of the description and of the pixels (flat uint8): all of them up to FULL_CHECK_BYTES, else
    SAMPLE_BLOCKS blocks of SAMPLE_BYTES spread evenly from the first byte to the last."""
    digest = hashlib.blake2b(meta_raw, digest_size=32)
    if len(pixels) <= FULL_CHECK_BYTES:
        digest.update(pixels)
    else:
        for start in np.linspace(0, len(pixels) - SAMPLE_BYTES, SAMPLE_BLOCKS).astype(np.int64):
            digest.update(pixels[start : start + SAMPLE_BYTES])
    return digest.digest()


def image_data(name: str, cached: Cached, max_value: float = 255, notes: list[str] | None = None) -> ImageData:
    """ImageData over a cache's memory-mapped pixels: the first n_train images train, the rest test."""
    meta, n_train = cached.meta, cached.meta["n_train"]
    labels = None if meta["labels"] is None else torch.tensor(meta["labels"], dtype=torch.int64)
    factors = {k: np.asarray(v) for k, v in (meta["factors"] or {}).items()} or None
    return ImageData(
        name,
        cached.pixels[:n_train],
        None if labels is None else labels[:n_train],
        cached.pixels[n_train:],
        None if labels is None else labels[n_train:],
        max_value=max_value,
        label_names=meta["label_names"],
        factors_train=None if factors is None else {k: v[:n_train] for k, v in factors.items()},
        factors_test=None if factors is None else {k: v[n_train:] for k, v in factors.items()},
        notes=[*(notes or []), *meta["notes"], cached.note],
    )
