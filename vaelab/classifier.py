"""A small CNN per data set, whose penultimate layer is the feature space of the sample-quality metrics.

Inception (FID) needs a download and sees 299x299 colour photographs; this net is trained here, in seconds to
minutes on a CPU, on the data set's own training split, and cached under ``<data_cache>/classifiers`` as
safetensors weights plus a JSON description, keyed by the data set's name, its task, its image shape and a hash
of its images and labels. It takes any image size and channel count: stride-2 stages until the map is small,
then average pooling to a fixed SMALL_MAP x SMALL_MAP grid.

Its task (TASKS) is to classify the images by their labels. Data without labels trains the same net
self-supervised instead (Gidaris et al. 2018, "RotNet"): it predicts which of four rotations, by 0, 90, 180 or
270 degrees, was applied to an image, which it can only do by recognising what the image shows and which way up
it belongs. A rotation by 90 degrees changes the shape of a non-square image, so those predict which of the
four shape-keeping transforms was applied instead: identity, horizontal flip, vertical flip, rotation by 180
degrees.

Letters in shape comments: B batch, C channels, H height, W width, F features.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
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

# Bump when the architecture or the training recipe changes: cached classifiers of another version are retrained.
CLASSIFIER_VERSION = 2
FEATURE_DIM = 128
STEM_CHANNELS = 32  # the first convolution's width; each stride-2 stage doubles it, up to MAX_CHANNELS
MAX_CHANNELS = 128
# Stride-2 stages continue until the map's shorter side is at most SMALL_MAP, then the map is average-pooled to
# SMALL_MAP x SMALL_MAP cells. Pooling to one cell (global average pooling) also takes any size but forgets where
# things are: on digits it gave 0.90 test accuracy and 0.72 rotation accuracy, against 0.96 and 0.92 here.
SMALL_MAP = 4
MIN_STEPS = 1000  # small sets get more epochs, so every classifier sees about as many updates
MAX_EPOCHS = 20
BATCH_SIZE = 128
LR = 1e-3
FEATURE_BATCH = 256  # images per forward pass when computing features: a 64x64 stem map is 0.5 MB per image
PRETEXT_TRANSFORMS = 4  # rotations by 0/90/180/270 degrees, or identity/h-flip/v-flip/180 degrees
# Flipped axes of transform k of a non-square image: identity, horizontal flip, vertical flip, both (= 180 deg).
FLIP_DIMS = ((), (3,), (2,), (2, 3))
TASKS = {  # task -> (what the feature net is, what it predicts), as eval.json's notes and the printed table say
    "labels": ("classifier trained on the labels", "the class of each image"),
    "rotation": (
        "rotation-prediction net trained on the data (no labels)",
        "which of 4 rotations by 0/90/180/270 degrees was applied to an image (Gidaris et al. 2018)",
    ),
    "flips": (
        "flip-prediction net trained on the data (no labels)",
        "which of identity, horizontal flip, vertical flip or 180-degree rotation was applied to an image "
        "(RotNet's task for non-square images, whose shape a 90-degree rotation changes)",
    ),
}


def stride_stages(height: int, width: int) -> int:
    """How many stride-2 stages take an H x W map to a shorter side of at most SMALL_MAP: each stage (3x3,
    padding 1, stride 2) maps a side s to ceil(s / 2)."""
    side, stages = min(height, width), 0
    while side > SMALL_MAP:
        side, stages = -(-side // 2), stages + 1
    return stages


class ImageClassifier(nn.Module):
    """(B, C, H, W) -> 3x3 conv stem -> stride-2 3x3 conv stages -> 3x3 conv -> average pooling to a SMALL_MAP x
    SMALL_MAP grid -> dense FEATURE_DIM + ReLU (the features) -> n_outputs logits. Any H and W: the pooling
    gives every image size the same grid."""

    def __init__(self, image_shape: tuple[int, int, int], n_outputs: int):
        super().__init__()
        c, h, w = image_shape
        width = STEM_CHANNELS
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        for _ in range(stride_stages(h, w)):
            wider = min(2 * width, MAX_CHANNELS)
            layers += [nn.Conv2d(width, wider, 3, stride=2, padding=1), nn.ReLU()]
            width = wider
        # One more convolution at the small map widens the receptive field to about the whole image.
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(SMALL_MAP), nn.Flatten()]
        self.features = nn.Sequential(*layers, nn.Linear(width * SMALL_MAP**2, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, n_outputs) logits


@dataclass
class Classifier:
    net: ImageClassifier
    test_accuracy: float  # on its task: the test labels, or the pretext transforms of the test images
    n_classes: int  # outputs of its head: the data's classes, or PRETEXT_TRANSFORMS
    path: Path
    task: str = "labels"  # a key of TASKS

    @property
    def name(self) -> str:
        """What the feature net is: "classifier trained on the labels", "rotation-prediction net ..."."""
        return TASKS[self.task][0]

    @property
    def description(self) -> str:
        """What the feature net is, what it predicts and how well, for notes and tables."""
        chance = f", chance {1 / self.n_classes:.2f}" if self.task != "labels" else ""
        return f"{self.name}, predicting {TASKS[self.task][1]}; test accuracy {self.test_accuracy:.3f}{chance}"

    @torch.no_grad()
    def features_and_probs(self, x: torch.Tensor, batch_size: int = FEATURE_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate-layer features (N, FEATURE_DIM) and output probabilities (N, n_classes) of images in [0, 1]."""
        feats, probs = [], []
        device = model_device(self.net)
        for start in range(0, len(x), batch_size):
            f = self.net.features(x[start : start + batch_size].to(device))
            feats.append(f.cpu())
            probs.append(torch.softmax(self.net.head(f), dim=1).cpu())
        return torch.cat(feats), torch.cat(probs)


def task_of(data: ImageData) -> str:
    """The task of the feature net: "labels" when both splits are labelled, else the self-supervised one."""
    if data.y_train is not None and data.y_test is not None:
        return "labels"
    _, h, w = data.image_shape
    return "rotation" if h == w else "flips"


def data_key(data: ImageData) -> str:
    """The cache key: the data set's name, task and image shape, and a SHA-256 of its images (and labels)."""
    task, shape = task_of(data), "x".join(map(str, data.image_shape))
    digest = hashlib.sha256(f"v{CLASSIFIER_VERSION}-{task}-{shape}".encode())
    tensors = (
        (data.x_train, data.y_train, data.x_test, data.y_test) if task == "labels" else (data.x_train, data.x_test)
    )
    for t in tensors:
        digest.update(t.contiguous().numpy())  # the array's own buffer: no copy of a large set
    safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in data.name)
    return f"{safe_name}-{task}-{shape}-{digest.hexdigest()[:16]}"


def get_classifier(data: ImageData, cache_dir: str | Path, seed: int = 0, progress: bool = False) -> Classifier:
    """The cached feature net of this data set (see the module docstring), trained on its training split first if
    there is none: a classifier of its labels, or a rotation (flip) predictor when it has none. It lives on the host
    whatever device the model uses (decoded samples come back to the host), so every tensor it makes is put there."""
    with torch.device("cpu"):
        return _get_classifier(data, cache_dir, seed, progress)


def _get_classifier(data: ImageData, cache_dir: str | Path, seed: int, progress: bool) -> Classifier:
    task = task_of(data)
    directory = Path(cache_dir).expanduser() / "classifiers"
    stem = directory / data_key(data)
    weights, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    n_outputs = int(max(data.y_train.max(), data.y_test.max())) + 1 if task == "labels" else PRETEXT_TRANSFORMS
    net = ImageClassifier(data.image_shape, n_outputs)
    if weights.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            net.load_state_dict(load_file(str(weights)))
            net.eval()
            return Classifier(net, meta["test_accuracy"], n_outputs, weights, task)
        except (OSError, json.JSONDecodeError, KeyError, SafetensorError, RuntimeError):
            pass  # an unreadable cache entry is retrained and overwritten, never trusted
    directory.mkdir(parents=True, exist_ok=True)
    x_train = data.x_train  # read once: the batches index it
    batches = _batches(x_train, data.y_train, task, seed)
    net, epochs = train_classifier(data.image_shape, n_outputs, batches, len(x_train), seed, progress)
    accuracy = _test_accuracy(net, data, task)
    atomic_write_bytes(weights, save({k: v.contiguous() for k, v in net.state_dict().items()}))
    meta = {"data": data.name, "version": CLASSIFIER_VERSION, "task": task, "description": TASKS[task][0]}
    meta.update(image_shape=list(data.image_shape), n_classes=n_outputs, epochs=epochs, seed=seed)
    meta.update(test_accuracy=accuracy, n_train=len(x_train), n_test=len(data.x_test))
    atomic_write_json(meta_path, meta)
    return Classifier(net, accuracy, n_outputs, weights, task)


Batches = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # training indices -> (inputs, targets)


def _batches(x: torch.Tensor, y: torch.Tensor | None, task: str, seed: int) -> Batches:
    """The training batches of a task: images and their labels, or images under random pretext transforms."""
    if task == "labels":
        return lambda idx: (x[idx], y[idx])
    generator = torch.Generator().manual_seed(seed + 1)  # its own stream: the batch order's stays as it was
    return lambda idx: pretext_batch(x[idx], task == "rotation", generator)


def pretext_transform(x: torch.Tensor, k: int, square: bool) -> torch.Tensor:
    """Transform k of the pretext (0 <= k < 4) of images (B, C, H, W): a rotation by k * 90 degrees for square
    images (Gidaris et al. 2018); for non-square ones the k-th shape-keeping flip of FLIP_DIMS."""
    return torch.rot90(x, k, dims=(2, 3)) if square else x.flip(dims=FLIP_DIMS[k])


def pretext_batch(x: torch.Tensor, square: bool, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(each image under a random pretext transform k, k) for images (B, C, H, W): the self-supervised batch."""
    k = torch.randint(PRETEXT_TRANSFORMS, (len(x),), generator=generator)  # (B,)
    out = torch.empty_like(x)
    for t in range(PRETEXT_TRANSFORMS):
        chosen = k == t
        out[chosen] = pretext_transform(x[chosen], t, square)
    return out, k


def train_classifier(
    image_shape: tuple[int, int, int], n_outputs: int, batches: Batches, n_train: int, seed: int, progress: bool
) -> tuple[ImageClassifier, int]:
    """A seeded net trained with Adam on cross-entropy for max(2, ceil(MIN_STEPS / steps per epoch)) epochs, at most
    MAX_EPOCHS, over n_train training images; returns (net, epochs). `progress` draws a bar on stderr."""
    steps_per_epoch = math.ceil(n_train / BATCH_SIZE)
    epochs = min(MAX_EPOCHS, max(2, math.ceil(MIN_STEPS / steps_per_epoch)))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # a seeded initialisation that leaves the caller's global RNG as it was
        torch.manual_seed(seed)
        net = ImageClassifier(image_shape, n_outputs)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    net.train()
    bar = tqdm(
        total=epochs * steps_per_epoch,
        desc="classifier",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with bar:
        for epoch in range(epochs):
            order = torch.randperm(n_train, generator=generator)
            for start in range(0, n_train, BATCH_SIZE):
                inputs, targets = batches(order[start : start + BATCH_SIZE])
                loss = nn.functional.cross_entropy(net(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss.item():.3f}")
    net.eval()
    return net, epochs


@torch.no_grad()
def _test_accuracy(net: ImageClassifier, data: ImageData, task: str) -> float:
    """Accuracy on the test labels, or on all PRETEXT_TRANSFORMS transforms of every test image."""
    if task == "labels":
        return accuracy_of(net, data.x_test, data.y_test)
    correct = 0
    for start in range(0, len(data.x_test), FEATURE_BATCH):
        x = data.x_test[start : start + FEATURE_BATCH]
        for k in range(PRETEXT_TRANSFORMS):
            correct += (net(pretext_transform(x, k, task == "rotation")).argmax(1) == k).sum().item()
    return correct / (PRETEXT_TRANSFORMS * len(data.x_test))


@torch.no_grad()
def accuracy_of(net: ImageClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = FEATURE_BATCH) -> float:
    device = model_device(net)
    correct = sum(
        (net(x[s : s + batch_size].to(device)).argmax(1).cpu() == y[s : s + batch_size]).sum().item()
        for s in range(0, len(x), batch_size)
    )
    return correct / len(x)
