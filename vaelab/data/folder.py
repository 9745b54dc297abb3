"""A folder of image files (PNG, JPEG, BMP, WebP, GIF's first frame), read with Pillow, decoded once into the cache.

One sub-folder per class gives labels, the sorted folder names (torchvision's ImageFolder convention); a flat
folder has no labels. Hidden entries and files of other kinds are skipped and counted. The first load reads
every header (sizes, colour), splits the images, and decodes them in that order with several processes into
one uint8 cache file (vaelab.data.cache); later loads memory-map it.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vaelab.data.cache import CacheWriter, cache_key, cached_images, file_stamp, image_data
from vaelab.data.images import ImageData, LoadOptions
from vaelab.data.split import split_indices
from vaelab.errors import VaelabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
GREY_MODES = ("1", "L", "LA", "I", "F")  # and every 16-bit "I;16*" mode
MAX_WORKERS = 16
CHUNK_SIZE = (16, 256)  # images a worker decodes at a time: from, to (a few chunks per worker balance the load)


@dataclass
class Listing:
    """The image files of a folder, class by class, with what was skipped."""

    root: Path
    files: list[Path] = field(default_factory=list)
    labels: list[int] | None = None
    class_names: list[str] | None = None
    hidden: int = 0  # entries whose name starts with "."
    other: int = 0  # files without an image suffix

    def stats(self) -> list[tuple[str, int, int]]:
        """(path, size, modification time in ns) of every image: what a cache of them is keyed by."""
        return [(str(path.relative_to(self.root)), *file_stamp(path)) for path in self.files]

    def note(self) -> str:
        where = f"images of {self.root}" + (" (one sub-folder per class)" if self.class_names else " (no labels)")
        if self.hidden or self.other:
            where += f"; skipped {self.hidden} hidden and {self.other} non-image entries"
        return where


def scan_folder(root: Path) -> Listing:
    """The images of `root`: in class sub-folders (searched through) when it has sub-folders, else at its top."""
    listing = Listing(root)
    top = _entries(root)
    classes = [e for e in top if e.is_dir() and not e.name.startswith(".")]
    if not classes:
        listing.files = _images_of(top, listing)
    else:
        loose = [e.name for e in top if e.is_file() and _is_image(e.name) and not e.name.startswith(".")]
        if loose:
            raise VaelabError(
                f"{root}: holds class sub-folders and also loose images ({loose[0]}, ...): put every image in its "
                "class's folder, or use a flat folder without sub-folders"
            )
        listing.other = sum(1 for e in top if e.is_file() and not e.name.startswith("."))
        listing.hidden = sum(1 for e in top if e.name.startswith("."))
        listing.labels, listing.class_names = [], [e.name for e in classes]
        for label, folder in enumerate(classes):
            images = _walk_images(Path(folder.path), listing)
            if not images:
                raise VaelabError(f"{folder.path}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            listing.files += images
            listing.labels += [label] * len(images)
    if not listing.files:
        raise VaelabError(
            f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder; "
            f"skipped {listing.hidden} hidden and {listing.other} other entries"
        )
    return listing


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise VaelabError(f"{folder}: cannot list this folder ({exc.strerror})") from None


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _images_of(entries: list[os.DirEntry], listing: Listing) -> list[Path]:
    """The image files among a folder's entries, counting the hidden and other ones into `listing`."""
    images = []
    for entry in entries:
        if entry.name.startswith("."):
            listing.hidden += 1
        elif entry.is_file() and _is_image(entry.name):
            images.append(Path(entry.path))
        elif not entry.is_dir():
            listing.other += 1
    return images


def _walk_images(folder: Path, listing: Listing) -> list[Path]:
    """The images of a class folder and its sub-folders (not hidden ones), in sorted path order."""
    entries = _entries(folder)
    images = _images_of(entries, listing)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            images += _walk_images(Path(entry.path), listing)
    return images


def load_folder(root: Path, cache_dir: Path, options: LoadOptions, progress: bool) -> ImageData:
    """The images of a folder, decoded into the cache on the first load (see the module docstring)."""
    listing = scan_folder(root)
    where = str(root.resolve())
    settings = [options.size, options.channels, options.test_split, options.skip_bad_images]
    name = root.resolve().name or "images"
    stem = f"folder-{_safe(name)}-{cache_key(where, settings)[:12]}"
    build = partial(_build_cache, listing, options, progress)
    cached = cached_images(cache_dir, stem, cache_key(where, settings, listing.stats()), build)
    return image_data(name, cached, notes=[listing.note()])


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40]


def _build_cache(listing: Listing, options: LoadOptions, progress: bool, writer: CacheWriter) -> None:
    """Read every header, split, then decode the images in split order (train first) into `writer`."""
    headers = [
        h for part in _in_parallel(_probe_chunk, _chunks(listing.files), "reading headers", progress) for h in part
    ]
    unreadable = _refuse_bad([(path, h) for path, h in zip(listing.files, headers) if isinstance(h, str)], options)
    good = [i for i, h in enumerate(headers) if not isinstance(h, str)]
    if not good:
        raise VaelabError(f"{listing.root}: none of its {len(headers)} image files can be read")
    size = options.size or _one_size(listing, [(listing.files[i], headers[i][:2]) for i in good])
    channels = options.channels or (3 if any(headers[i][2] for i in good) else 1)
    labels = None if listing.labels is None else np.array(listing.labels)[good]
    train, test = split_indices(str(listing.root), len(good), labels, options.test_split)
    order = np.array(good)[np.concatenate([train, test])]  # file positions, train first
    chunks = _chunks(order.tolist())
    paths = [[listing.files[i] for i in chunk] for chunk in chunks]
    decode = partial(_decode_chunk, size=size, channels=channels)
    kept = []
    for chunk, (images, failures) in zip(chunks, _in_parallel(decode, paths, "decoding images", progress)):
        unreadable += _refuse_bad([(listing.files[chunk[k]], reason) for k, reason in failures], options)
        failed = {k for k, _ in failures}
        kept += [position for k, position in enumerate(chunk) if k not in failed]
        writer.write(images)
    train_positions = set(order[: len(train)].tolist())
    writer.finish(
        sum(position in train_positions for position in kept),
        labels=None if listing.labels is None else [listing.labels[i] for i in kept],
        label_names=listing.class_names,
        notes=[f"skipped {unreadable} unreadable image files"] if unreadable else [],
    )


def _refuse_bad(bad: list[tuple[Path, str]], options: LoadOptions) -> int:
    """The number of unreadable files, which --skip-bad-images skips; without it, an error naming the first."""
    if bad and not options.skip_bad_images:
        path, reason = bad[0]
        raise VaelabError(f"{path}: cannot read this image ({reason}); fix or remove it, or pass --skip-bad-images")
    return len(bad)


def _one_size(listing: Listing, sizes: list[tuple[Path, tuple[int, int]]]) -> tuple[int, int]:
    """The one (H, W) of all images, or an error naming two that differ and the flag that resizes them."""
    first_path, first = sizes[0]
    for path, size in sizes:
        if size != first:
            raise VaelabError(
                f"{listing.root}: images differ in size ({first_path.name} is {first[0]}x{first[1]}, {path.name} is "
                f"{size[0]}x{size[1]}, height x width); pass --image-size S or HxW to resize them to one size"
            )
    return first


def _chunks(items: list) -> list[list]:
    """Consecutive chunks of about a quarter of the items per worker, bounded by CHUNK_SIZE."""
    low, high = CHUNK_SIZE
    size = max(low, min(high, -(-len(items) // (4 * _workers()))))
    return [items[start : start + size] for start in range(0, len(items), size)]


def _workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _in_parallel(function: Callable[[list], object], chunks: list[list], what: str, progress: bool) -> Iterator:
    """function(chunk) of every chunk, in order, in worker processes (in this one for a single chunk), with a
    progress bar counting items. An error in the caller cancels the chunks not yet started."""
    bar = tqdm(total=sum(map(len, chunks)), desc=what, unit="img", disable=not progress, leave=False)
    pool = None
    try:
        if len(chunks) > 1:
            pool = ProcessPoolExecutor(min(len(chunks), _workers()), mp_context=_fork_context())
        results = pool.map(function, chunks) if pool else map(function, chunks)
        for chunk, result in zip(chunks, results):
            bar.update(len(chunk))
            yield result
    except BrokenProcessPool:
        raise VaelabError(f"a process {what} died (out of memory?); nothing was cached") from None
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _fork_context():
    """Workers forked from this process where the platform can: they start at once, while spawned ones would each
    import torch again (through this package) before decoding an image. They only run Pillow and numpy."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork") if "fork" in methods else None


def _probe_chunk(paths: list[Path]) -> list[tuple[int, int, bool] | str]:
    """Per file: (height, width, has colour) from its header, or why it cannot be read."""
    return [_probe(path) for path in paths]


def _probe(path: Path) -> tuple[int, int, bool] | str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width, _has_colour(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return _reason(exc)


def _has_colour(image) -> bool:
    """Colour by the file's mode; a palette image has colour when an entry of its palette is not grey."""
    if image.mode in ("P", "PA"):
        palette = np.array(image.getpalette() or [0, 0, 0]).reshape(-1, 3)  # (entries, RGB)
        return bool((palette != palette[:, :1]).any())
    return not (image.mode in GREY_MODES or image.mode.startswith("I;16"))


def _reason(exc: BaseException) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image file Pillow can read"
    return str(exc) or type(exc).__name__


def _decode_chunk(paths: list[Path], size: tuple[int, int], channels: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The images of `paths` that decode, as uint8 (n, C, H, W), and (index, reason) of those that do not."""
    images, failures = [], []
    for index, path in enumerate(paths):
        try:
            images.append(decode_image(path, size, channels))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            failures.append((index, _reason(exc)))
    return np.stack(images) if images else np.zeros((0, channels, *size), np.uint8), failures


def decode_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 (C, H, W): GIF's first frame, converted to grey (ITU-R 601 luma, Pillow's "L") or
    RGB, and brought to (H, W) = size by scaling its shorter side to fit and cropping the centre."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = _eight_bit(image).convert("L" if channels == 1 else "RGB")
        if (image.height, image.width) != tuple(size):
            image = ImageOps.fit(image, (size[1], size[0]), method=Image.Resampling.BICUBIC)
        pixels = np.asarray(image)  # (H, W) or (H, W, 3)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _eight_bit(image):
    """16-bit grey images (PNG's I;16, "I") scaled to 8 bits, where Pillow's convert("L") would clip them."""
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8), "L")
    return image
