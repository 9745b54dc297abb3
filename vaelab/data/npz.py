"""numpy arrays: an .npz of ``x`` (and ``y``, ``x_test``, ``y_test``) or a single .npy array of images.

Every array's header is checked against the bytes actually present before anything is allocated, and object
arrays are refused, never unpickled (np.load would allocate what a header claims, and can run pickled code).
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from vaelab.data.images import QUANTISED_NOTE, ImageData, LoadOptions, check_labels, images_uint8
from vaelab.data.split import split_in_memory
from vaelab.errors import VaelabError

NPY_MAGIC = b"\x93NUMPY"
NPZ_KEYS = ("x", "y", "x_test", "y_test")  # the members vaelab reads; others are never decompressed
# zipfile raises NotImplementedError for unknown compression, RuntimeError for encrypted members.
READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def load_npz(path: Path, options: LoadOptions) -> ImageData:
    """An .npz with ``x`` (N,H,W), (N,C,H,W) or (N,H,W,C), optional ``y``; split by options.test_split unless it
    has ``x_test``."""
    options.refuse_resizing(str(path))
    arrays = read_npz(path)
    x, rounded = images_uint8(arrays["x"], f"{path}: x")
    y = check_labels(arrays.get("y"), len(x), f"{path}: y")
    if "x_test" not in arrays:
        return split_in_memory(path.stem, x, y, options.test_split, notes=_notes(path, rounded))
    options.refuse_test_split(str(path))
    x_test, rounded_test = images_uint8(arrays["x_test"], f"{path}: x_test")
    if x_test.shape[1:] != x.shape[1:]:
        raise VaelabError(f"{path}: x_test images are {tuple(x_test.shape[1:])}, x are {tuple(x.shape[1:])}")
    y_test = check_labels(arrays.get("y_test"), len(x_test), f"{path}: y_test")
    pixels_train, pixels_test = torch.from_numpy(x), torch.from_numpy(x_test)
    return ImageData(path.stem, pixels_train, y, pixels_test, y_test, notes=_notes(path, rounded or rounded_test))


def load_npy(path: Path, options: LoadOptions) -> ImageData:
    """A single .npy array of images (N,H,W), (N,C,H,W) or (N,H,W,C), without labels, split by test_split."""
    options.refuse_resizing(str(path))
    try:
        with open(path, "rb") as f:
            array = _read_npy(f, path.stat().st_size, path)
    except FileNotFoundError:
        raise VaelabError(f"{path}: no such file") from None
    except READ_ERRORS as exc:
        raise VaelabError(f"{path}: cannot read .npy ({exc})") from None
    x, rounded = images_uint8(array, str(path))
    return split_in_memory(path.stem, x, None, options.test_split, notes=_notes(path, rounded))


def _notes(path: Path, rounded: bool) -> list[str]:
    return [f"arrays of {path}"] + ([QUANTISED_NOTE] if rounded else [])


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of NPZ_KEYS in an npz, each member's size checked against its header before anything is
    allocated; object arrays are refused, never unpickled."""
    if not path.is_file():
        raise VaelabError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) == NPY_MAGIC:
                raise VaelabError(f"{path}: not an npz archive (a single array; save it with np.savez(path, x=...))")
        if not zipfile.is_zipfile(path):
            raise VaelabError(
                f"{path}: not an npz (zip) file, or a truncated one; write one with np.savez(path, x=...)"
            )
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if "x" not in members:
                raise VaelabError(f"{path}: npz has no array named 'x' (found: {', '.join(members) or 'nothing'})")
            return {key: _read_member(archive, members[key], path) for key in NPZ_KEYS if key in members}
    except READ_ERRORS as exc:
        raise VaelabError(f"{path}: cannot read npz ({exc})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    with archive.open(info) as f:
        return _read_npy(f, info.file_size, path, info.filename)


def _read_npy(f: BinaryIO, size: int, path: Path, member: str | None = None) -> np.ndarray:
    """One .npy stream of `size` bytes, a file or an npz's member (numpy's format: magic, version, header dict, raw
    items), read only once its header's claimed byte count equals the bytes present."""
    where = f"{path}: {member}" if member else str(path)
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version not in ((1, 0), (2, 0)):  # 3.0 only adds UTF-8 field names of structured dtypes
        raise VaelabError(f"{where} is .npy version {version}; save it with numpy's default")
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran_order, dtype = read_header(f)
    if dtype.hasobject:  # a ValueError: the caller's "cannot read" line names the file
        raise ValueError(f"{member or path.name} holds Python objects; vaelab never unpickles")
    claimed = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    present = size - f.tell()
    if claimed != present:
        raise VaelabError(f"{where} claims shape {shape} of {dtype} ({claimed} bytes) but holds {present} bytes")
    raw = f.read(claimed)  # stops at the stream's end; a damaged zip member raises BadZipFile or zlib.error
    if len(raw) != claimed:
        raise VaelabError(f"{where} is truncated ({len(raw)} of {claimed} bytes)")
    # ValueError (caught by the callers) for sizes numpy refuses: negative, or a zero beside 2**62s.
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
