"""ImageData, a data set held as stored pixel values (uint8, one byte a pixel) and the scale that maps them to [0, 1].

A float image is made only when asked for: ``x = pixels.float() / max_value`` (max_value 255 for 8-bit data, 16
for scikit-learn's digits, whose levels stay exact k/16, 1 for binary data). A 60,000-image 3x64x64 set is 0.74 GB
as uint8 and would be 2.9 GB as float32; the training loop gathers and converts one batch at a time (Pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from vaelab.config import RunConfig, parse_image_size
from vaelab.errors import VaelabError

# Labels are class indices 0..MAX_CLASSES-1. The classifier's output layer and evaluate's per-class tables
# (up to 10,000 samples x classes, float32) are sized by the largest label: 10,000 keeps those at 400 MB while
# leaving ten times the classes of ImageNet-1k; a stray 2**62 would otherwise ask for exabytes.
MAX_CLASSES = 10_000
DEFAULT_TEST_SPLIT = RunConfig.test_split


def to_float(values: torch.Tensor, max_value: float) -> torch.Tensor:
    """Stored pixel values -> float32 images in [0, 1]: x = values / max_value."""
    x = values.float()
    return x if max_value == 1 else x / max_value


@dataclass(frozen=True)
class Pixels:
    """Stored images (N, C, H, W) with their scale, converted to float a slice or a gather at a time.

    Training and its per-epoch test loss read a split through this view, so a split is never copied whole as
    float32, and a memory-mapped split is read only where it is indexed.
    """

    values: torch.Tensor  # (N, C, H, W): uint8, or float32 already in [0, 1] with max_value 1
    max_value: float

    def __len__(self) -> int:
        return len(self.values)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def __getitem__(self, index) -> torch.Tensor:
        return to_float(self.values[index], self.max_value)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """The float images at `index` (B,), as (B, C, H, W)."""
        # index_select rather than values[index]: the same gather, without advanced indexing's overhead.
        return to_float(self.values.index_select(0, index), self.max_value)

    def floats(self) -> torch.Tensor:
        return to_float(self.values, self.max_value)


@dataclass(eq=False)
class ImageData:
    """A data set's train and test splits as stored pixels, with labels and what describes them.

    Built from float tensors in [0, 1] (as tests and callers with their own images do), the values are kept as
    they are with max_value 1.
    """

    name: str
    pixels_train: torch.Tensor  # (N, C, H, W) uint8 0..max_value (or float32 in [0, 1])
    y_train: torch.Tensor | None  # (N,) int64 class indices, or None without labels
    pixels_test: torch.Tensor
    y_test: torch.Tensor | None
    max_value: float | None = None  # None: 255 for uint8 values, 1 for float ones
    label_names: list[str] | None = None  # class folder names, CIFAR's class names; None where unnamed
    factors_train: dict[str, np.ndarray] | None = None  # shapes: factor name -> (N,) values, aligned with y_train
    factors_test: dict[str, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)  # how the data was read: skipped files, the cache, rounding

    def __post_init__(self) -> None:
        if self.max_value is None:
            self.max_value = 255 if self.pixels_train.dtype == torch.uint8 else 1
        if self.pixels_train.ndim != 4 or self.pixels_train.shape[1:] != self.pixels_test.shape[1:]:
            raise ValueError(
                f"ImageData needs (N, C, H, W) splits of one image shape, got {tuple(self.pixels_train.shape)} "
                f"and {tuple(self.pixels_test.shape)}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels_train.shape[1:])

    @property
    def train(self) -> Pixels:
        return Pixels(self.pixels_train, self.max_value)

    @property
    def test(self) -> Pixels:
        return Pixels(self.pixels_test, self.max_value)

    @property
    def x_train(self) -> torch.Tensor:
        """The training split as float32 (N, C, H, W) in [0, 1], converted whole on every call (never kept)."""
        return self.train.floats()

    @cached_property
    def x_test(self) -> torch.Tensor:
        """The test split as float32 (N, C, H, W) in [0, 1], converted once: every measure and figure reads it."""
        return self.test.floats()

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(self.factors_test or ())

    @property
    def n_classes(self) -> int:
        """The classes of the labels: the named ones, else the largest label + 1; 0 without labels."""
        return len(self.label_names) if self.label_names else _n_classes(self.y_train, self.y_test)

    @property
    def classes(self) -> int | None:
        """n_classes when both splits are labelled (what a conditional model trains and is measured on), else None."""
        labelled = self.y_train is not None and self.y_test is not None
        return (self.n_classes or None) if labelled else None

    @property
    def description(self) -> str:
        """One line: sizes, shape, labels, and how the data was read (printed by `vaelab train`)."""
        channels, height, width = self.image_shape
        n_classes = self.n_classes
        labels = f"{n_classes} classes" if n_classes else "no labels"
        line = (
            f"data {self.name}: {len(self.pixels_train):,} train + {len(self.pixels_test):,} test images, "
            f"{channels}x{height}x{width}, {labels}"
        )
        return "; ".join([line, *self.notes])


def _n_classes(*labels: torch.Tensor | None) -> int:
    present = [y for y in labels if y is not None and len(y)]
    return int(max(int(y.max()) for y in present)) + 1 if present else 0


@dataclass(frozen=True)
class LoadOptions:
    """How to read image folders and draw shapes (RunConfig's image_size, channels, test_split, skip_bad_images)."""

    size: tuple[int, int] | None = None  # (H, W), or None to keep the images' own size
    channels: int = 0  # 0: 3 when any image has colour, else 1
    test_split: float = DEFAULT_TEST_SPLIT
    skip_bad_images: bool = False

    @classmethod
    def from_config(cls, config: RunConfig) -> LoadOptions:
        """The options of a configuration, checked as RunConfig.validate checks every field."""
        config.validate()
        return cls(parse_image_size(config.image_size), config.channels, config.test_split, config.skip_bad_images)

    def refuse_resizing(self, where: str) -> None:
        """Sources of fixed-size arrays take neither --image-size nor --channels: say so rather than ignore them."""
        if self.size is not None or self.channels != 0:
            raise VaelabError(
                f"{where}: --image-size and --channels apply to image folders and shapes only; drop them for this data"
            )

    def refuse_test_split(self, where: str) -> None:
        """Sources that bring their own test split do not take another fraction."""
        if self.test_split != DEFAULT_TEST_SPLIT:
            raise VaelabError(f"{where}: has its own test split; drop --test-split")


def check_labels(y: np.ndarray | None, n: int, where: str) -> torch.Tensor | None:
    """Labels as int64, refused unless they are n integers in 0..MAX_CLASSES-1."""
    if y is None:
        return None
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise VaelabError(f"{where}: labels must be {n} integers, got shape {y.shape} of {y.dtype}")
    low, high = int(y.min()), int(y.max())  # taken in y's own dtype, before a uint64 could wrap to negative
    if low < 0 or high >= MAX_CLASSES:
        raise VaelabError(
            f"{where}: labels must lie in 0..{MAX_CLASSES - 1} (class indices); found {low if low < 0 else high}"
        )
    return torch.from_numpy(y.astype(np.int64))


def _channels_first(x: np.ndarray) -> np.ndarray:
    """(N,H,W,C) -> (N,C,H,W) when the last axis looks like colour channels (1, 3 or 4, smaller than both image
    axes), as numpy, PIL and Keras store colour; (N,C,H,W) is returned as it is."""
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and min(x.shape[1:3]) > x.shape[3]:
        return x.transpose(0, 3, 1, 2)
    return x


def images_uint8(x: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
    """(N,H,W), (N,C,H,W) or (N,H,W,C) -> (uint8 (N,C,H,W) on the 0..255 scale, whether values were rounded).

    uint8 is kept as it is; any other numbers must lie in [0, 1] and are stored as round(255 x), exact for binary
    images and for levels k/255, within 1/510 otherwise.
    """
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or 0 in x.shape:
        raise VaelabError(
            f"{where}: images must be (N,H,W), (N,C,H,W) or (N,H,W,C) with no empty axis, got shape {x.shape}"
        )
    x = _channels_first(x)
    if x.dtype == np.uint8:
        stored = np.ascontiguousarray(x)
        return (stored if stored.flags.writeable else stored.copy()), False  # torch wants its memory writable
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise VaelabError(f"{where}: images must be numeric, got dtype {x.dtype}")
    scaled = x.astype(np.float64) * 255.0
    if not np.isfinite(scaled).all():
        raise VaelabError(f"{where}: images contain NaN or infinite pixels")
    low, high = scaled.min() / 255, scaled.max() / 255
    if low < 0 or high > 1:
        raise VaelabError(f"{where}: pixel values must lie in [0, 1] (or be uint8 0..255); found {low:g}..{high:g}")
    stored = np.rint(scaled)
    return np.ascontiguousarray(stored.astype(np.uint8)), bool(np.abs(stored - scaled).max() > 1e-3)


QUANTISED_NOTE = "float pixels stored as 8-bit values round(255 x) (within 1/510 of the originals)"
