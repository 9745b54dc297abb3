"""Writing a file so that a reader never sees half of it and nothing outside its folder is touched.

Every file vaelab writes goes through ``atomic_write_bytes`` (or ``atomic_file``, which streams a file too large
to hold in memory): the bytes go to a temporary file with a unique name created with O_CREAT | O_EXCL in the
target's folder (``tempfile.mkstemp``), which cannot follow a symlink planted there, are flushed to disk, and the
temporary is then renamed over the target. A rename replaces a symlink at the target's name rather than writing
through it, so a link planted in a shared folder never redirects a write outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vaelab.errors import VaelabError


def check_output_path(path: str | Path) -> Path:
    """The path of a file about to be written, refused with a clear reason when it cannot be one."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise VaelabError(f"{path}: not a file name")
    if path.is_dir():
        raise VaelabError(f"{path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise VaelabError(f"{path}: folder {path.parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A file open for writing (and reading back) at a unique temporary beside `path`, flushed to disk and renamed
    over `path` when the block ends, removed when it raises: for files too large to hold as one bytes object."""
    path = check_output_path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise VaelabError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a written file should read as any other would
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk: the target keeps its old bytes
        _remove(tmp)
        raise VaelabError(f"{path}: cannot write ({exc.strerror})") from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write `payload` to a unique temporary beside `path`, flush it to disk, then rename it over `path`."""
    with atomic_file(path) as f:
        f.write(payload)


def atomic_write_json(path: str | Path, value) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass
