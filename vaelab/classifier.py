"""A small CNN classifier per data set, whose penultimate layer is the feature space of the sample-quality metrics.

Inception (FID) needs a download and sees 299x299 colour photographs; this net is trained here, in seconds to a
minute on a CPU, on the data set's own training split, and cached under ``<data_cache>/classifiers`` as
safetensors weights plus a JSON description, keyed by the data set's name and a hash of its images and labels.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn
from tqdm import tqdm

from vaelab.atomic import atomic_write_bytes, atomic_write_json
from vaelab.data import ImageData
from vaelab.devices import model_device
from vaelab.errors import VaelabError

# Bump when the architecture or the training recipe changes: cached classifiers of another version are retrained.
CLASSIFIER_VERSION = 1
FEATURE_DIM = 128
CHANNELS = (32, 64)
MIN_STEPS = 1000  # small sets get more epochs, so every classifier sees about as many updates
MAX_EPOCHS = 20
BATCH_SIZE = 128
LR = 1e-3


class ImageClassifier(nn.Module):
    """(B, C, H, W) -> two 3x3 conv + ReLU + 2x2 max-pool blocks -> dense FEATURE_DIM + ReLU -> class logits.

    Pooling twice needs sides >= 4: 8x8 digits end at 2x2, 28x28 images at 7x7.
    """

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        c, h, w = image_shape
        if h < 4 or w < 4:
            raise VaelabError(f"the classifier needs images of at least 4x4 pixels, got {h}x{w}")
        c1, c2 = CHANNELS
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c2 * (h // 4) * (w // 4), FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, n_classes) logits


@dataclass
class Classifier:
    net: ImageClassifier
    test_accuracy: float
    n_classes: int
    path: Path

    @torch.no_grad()
    def features_and_probs(self, x: torch.Tensor, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate-layer features (N, FEATURE_DIM) and class probabilities (N, n_classes) of images in [0, 1]."""
        feats, probs = [], []
        device = model_device(self.net)
        for start in range(0, len(x), batch_size):
            f = self.net.features(x[start : start + batch_size].to(device))
            feats.append(f.cpu())
            probs.append(torch.softmax(self.net.head(f), dim=1).cpu())
        return torch.cat(feats), torch.cat(probs)


def data_key(data: ImageData) -> str:
    """The cache key: the data set's name and a SHA-256 of its training and test images and labels."""
    digest = hashlib.sha256(f"v{CLASSIFIER_VERSION}".encode())
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(t.contiguous().numpy().tobytes())
    safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data.name)
    return f"{safe_name}-{digest.hexdigest()[:16]}"


def get_classifier(
    data: ImageData, cache_dir: str | Path, seed: int = 0, progress: bool = False, device: torch.device | None = None
) -> Classifier:
    """The cached classifier of this data set, trained on its training split first if there is none, on `device`
    (default the CPU)."""
    if data.y_train is None or data.y_test is None:
        raise VaelabError(f"data {data.name!r} has no labels: the classifier-based metrics need them")
    directory = Path(cache_dir).expanduser() / "classifiers"
    stem = directory / data_key(data)
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    n_classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    with torch.device("cpu"):
        net = ImageClassifier(data.image_shape, n_classes)
    net.to(device or "cpu")
    if weights.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            net.load_state_dict(load_file(str(weights)))
            net.eval()
            return Classifier(net, meta["test_accuracy"], n_classes, weights)
        except (OSError, json.JSONDecodeError, KeyError, SafetensorError, RuntimeError):
            pass  # an unreadable cache entry is retrained and overwritten, never trusted
    directory.mkdir(parents=True, exist_ok=True)
    epochs = train_classifier(net, data.x_train, data.y_train, seed, progress)
    accuracy = accuracy_of(net, data.x_test, data.y_test)
    atomic_write_bytes(weights, save({k: v.cpu().contiguous() for k, v in net.state_dict().items()}))
    atomic_write_json(
        meta_path,
        {
            "data": data.name,
            "version": CLASSIFIER_VERSION,
            "image_shape": list(data.image_shape),
            "n_classes": n_classes,
            "epochs": epochs,
            "seed": seed,
            "test_accuracy": accuracy,
            "n_train": len(data.x_train),
            "n_test": len(data.x_test),
        },
    )
    return Classifier(net, accuracy, n_classes, weights)


def train_classifier(net: ImageClassifier, x: torch.Tensor, y: torch.Tensor, seed: int, progress: bool) -> int:
    """Adam on cross-entropy for max(2, ceil(MIN_STEPS / steps per epoch)) epochs, at most MAX_EPOCHS; returns epochs.

    `progress` draws a bar with the time left on stderr.
    """
    steps_per_epoch = math.ceil(len(x) / BATCH_SIZE)
    epochs = min(MAX_EPOCHS, max(2, math.ceil(MIN_STEPS / steps_per_epoch)))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    with torch.device("cpu"):  # seeded init on the host: the same starting weights on every device
        net.load_state_dict(ImageClassifier(tuple(x.shape[1:]), net.head.out_features).state_dict())
    device = model_device(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    with tqdm(
        total=epochs * steps_per_epoch,
        desc="classifier",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    ) as bar:
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator, device="cpu")
            for start in range(0, len(x), BATCH_SIZE):
                idx = order[start : start + BATCH_SIZE]
                loss = nn.functional.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss.item():.3f}")
    net.eval()
    return epochs


@torch.no_grad()
def accuracy_of(net: ImageClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    device = model_device(net)
    correct = sum(
        (net(x[s : s + batch_size].to(device)).argmax(1).cpu() == y[s : s + batch_size]).sum().item()
        for s in range(0, len(x), batch_size)
    )
    return correct / len(x)
