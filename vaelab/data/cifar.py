"""CIFAR-10 and CIFAR-100 in their binary format (Krizhevsky 2009), a folder or the .tar.gz, read into the cache.

A binary batch is a run of records: the label byte(s), then 3,072 pixels, the 32x32 red plane, then green, then
blue. CIFAR-10 (``cifar-10-batches-bin``): one label byte, five training batches and a test batch. CIFAR-100
(``cifar-100-binary``): a coarse and a fine label byte (the fine one, 100 classes, is the label), train.bin and
test.bin. The "python version" of either is pickled, and vaelab never unpickles: it is refused with a pointer to
the binary version.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from vaelab.data.cache import CacheWriter, cache_key, cached_images, file_stamp, image_data
from vaelab.data.images import ImageData, LoadOptions
from vaelab.errors import VaelabError

PIXELS = 3 * 32 * 32
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
PICKLED_HINT = (
    "is CIFAR's pickled python version, which vaelab never unpickles: download the binary version "
    "(cifar-10-binary.tar.gz or cifar-100-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)"
)


@dataclass(frozen=True)
class CifarLayout:
    name: str
    folder: str  # the folder its archive unpacks into
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_bytes: int  # the label is the last of these bytes (CIFAR-100's fine label)
    classes: int
    names_file: str  # class names, one a line
    pickled: tuple[str, ...]  # the python version's folder and a file only it has

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + PIXELS


CIFAR10 = CifarLayout(
    "CIFAR-10",
    "cifar-10-batches-bin",
    tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    ("test_batch.bin",),
    1,
    10,
    "batches.meta.txt",
    ("cifar-10-batches-py", "data_batch_1"),
)
CIFAR100 = CifarLayout(
    "CIFAR-100",
    "cifar-100-binary",
    ("train.bin",),
    ("test.bin",),
    2,
    100,
    "fine_label_names.txt",
    ("cifar-100-python", "meta"),
)
LAYOUTS = (CIFAR10, CIFAR100)


def is_cifar(path: Path) -> bool:
    """Whether `path` is a CIFAR folder or archive (binary or pickled), which load_cifar then reads or refuses."""
    if path.is_file():
        return path.name.endswith(ARCHIVE_SUFFIXES)
    return any(_found_in(path, layout) for layout in LAYOUTS) or _pickled_folder(path)


def _found_in(folder: Path, layout: CifarLayout) -> Path | None:
    """The folder holding `layout`'s batches: `folder` itself or its sub-folder of the archive's name."""
    for candidate in (folder, folder / layout.folder):
        if (candidate / layout.train[0]).is_file() and (candidate / layout.test[0]).is_file():
            return candidate
    return None


def _pickled_folder(folder: Path) -> bool:
    return any(
        folder.name == layout.pickled[0]
        or (folder / layout.pickled[0]).is_dir()
        or (folder / layout.pickled[1]).is_file()
        for layout in LAYOUTS
    )


def load_cifar(path: Path, cache_dir: Path, options: LoadOptions, progress: bool) -> ImageData:
    """CIFAR-10/100 from a binary folder or archive, copied into the cache once (an archive is never unpacked)."""
    options.refuse_resizing(str(path))
    options.refuse_test_split(str(path))
    if path.is_file():
        name = path.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz")
        stamps = [(path.name, *file_stamp(path))]
        build = partial(_build_from_archive, path)
    else:
        layout, folder = _layout_of(path)
        name = layout.name.lower()
        stamps = [(file, *file_stamp(folder / file)) for file in (*layout.train, *layout.test)]
        build = partial(_build_cache, layout, partial(_read_file, folder))
    where = str(path.resolve())
    cached = cached_images(cache_dir, f"{name}-{cache_key(where)[:12]}", cache_key(where, stamps), build)
    return image_data(name, cached, notes=[f"CIFAR binary batches in {path}"])


def _layout_of(path: Path) -> tuple[CifarLayout, Path]:
    for layout in LAYOUTS:
        folder = _found_in(path, layout)
        if folder is not None:
            return layout, folder
    raise VaelabError(f"{path} {PICKLED_HINT}")


def _read_file(folder: Path, name: str) -> bytes | None:
    try:
        return (folder / name).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VaelabError(f"{folder / name}: cannot read ({exc.strerror})") from None


def _build_from_archive(path: Path, writer: CacheWriter) -> None:
    """The batches of a CIFAR .tar.gz, read in one pass through the stream (never extracted to disk)."""
    members: dict[str, dict[str, bytes]] = {}  # top folder -> file name -> bytes
    try:
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                folder, _, name = member.name.removeprefix("./").partition("/")
                if any(folder == layout.pickled[0] for layout in LAYOUTS):
                    raise VaelabError(f"{path} {PICKLED_HINT}")
                if member.isfile() and any(folder == layout.folder for layout in LAYOUTS):
                    members.setdefault(folder, {})[name] = archive.extractfile(member).read()
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        raise VaelabError(f"{path}: cannot read the archive ({exc})") from None
    for layout in LAYOUTS:
        if layout.folder in members:
            return _build_cache(layout, members[layout.folder].get, writer)
    raise VaelabError(
        f"{path}: not a CIFAR-10 or CIFAR-100 binary archive (no {CIFAR10.folder}/ or {CIFAR100.folder}/)"
    )


def _build_cache(layout: CifarLayout, read: Callable[[str], bytes | None], writer: CacheWriter) -> None:
    """Every training batch, then the test batch(es), into the cache in file order."""
    labels, n_train = [], 0
    for name in (*layout.train, *layout.test):
        raw = read(name)
        if raw is None:
            raise VaelabError(f"{layout.name}: batch file {name} is missing")
        images, batch_labels = read_batch(raw, layout, name)
        writer.write(images)
        labels += batch_labels.tolist()
        n_train += len(images) if name in layout.train else 0
    names = read(layout.names_file)
    class_names = None if names is None else [line.strip() for line in names.decode(errors="replace").splitlines()]
    class_names = [n for n in class_names or [] if n]
    writer.finish(n_train, labels, class_names if len(class_names) == layout.classes else None)


def read_batch(raw: bytes, layout: CifarLayout, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch -> (uint8 images (n, 3, 32, 32), labels (n,)), refused unless it is whole records of
    valid labels."""
    record = layout.record_bytes
    if not raw or len(raw) % record:
        raise VaelabError(
            f"{layout.name} {name}: {len(raw)} bytes is not a whole number of {record}-byte records "
            f"({layout.label_bytes} label byte(s) and {PIXELS} pixels): a truncated or wrong file"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)  # (n, label bytes + 3072)
    labels = records[:, layout.label_bytes - 1]
    if labels.max() >= layout.classes:
        raise VaelabError(
            f"{layout.name} {name}: record {int(np.argmax(labels >= layout.classes))} has label {labels.max()}, "
            f"not one of the {layout.classes} classes: not a {layout.name} batch"
        )
    return records[:, layout.label_bytes :].reshape(-1, 3, 32, 32), labels
