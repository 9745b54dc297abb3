"""The data set's CNN feature net: accurate on digits, any image size and channel count, a self-supervised
rotation (or flip) predictor for data without labels, cached by task, shape and data hash."""

from __future__ import annotations

import json

import pytest
import torch

from vaelab.classifier import (
    FEATURE_DIM,
    SMALL_MAP,
    ImageClassifier,
    data_key,
    get_classifier,
    pretext_batch,
    pretext_transform,
    stride_stages,
)
from vaelab.data import ImageData


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # One directory per test session, shared with test_compare/test_evaluate so digits is trained once.
    return tmp_path_factory.getbasetemp() / "vaelab-cache"


def test_classifier_is_accurate_on_digits_and_reports_it(digits, cache_dir):
    classifier = get_classifier(digits, cache_dir)
    assert classifier.test_accuracy > 0.9  # chance is 0.1
    meta = json.loads(classifier.path.with_suffix(".json").read_text())
    assert meta["test_accuracy"] == classifier.test_accuracy and meta["data"] == "digits"
    features, probs = classifier.features_and_probs(digits.x_test[:7])
    assert features.shape == (7, FEATURE_DIM) and probs.shape == (7, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(7))


def test_cached_classifier_is_loaded_not_retrained(digits, cache_dir):
    first = get_classifier(digits, cache_dir)
    stamp = first.path.stat().st_mtime_ns
    second = get_classifier(digits, cache_dir)
    assert second.path.stat().st_mtime_ns == stamp
    torch.testing.assert_close(first.features_and_probs(digits.x_test)[0], second.features_and_probs(digits.x_test)[0])


def test_cache_key_changes_with_the_data_and_names_task_and_shape(digits):
    altered = digits.x_train.clone()
    altered[0, 0, 0, 0] = 1 - altered[0, 0, 0, 0]
    other = ImageData(digits.name, altered, digits.y_train, digits.x_test, digits.y_test)
    assert data_key(other) != data_key(digits)
    assert data_key(digits).startswith("digits-labels-1x8x8-")
    unlabelled = ImageData(digits.name, digits.x_train, None, digits.x_test, None)
    assert data_key(unlabelled).startswith("digits-rotation-1x8x8-")


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 50, 70), (4, 9, 13)])
def test_the_net_takes_any_image_size_and_channel_count(shape):
    net = ImageClassifier(shape, n_outputs=5)
    x = torch.rand(2, *shape)
    assert net(x).shape == (2, 5) and net.features(x).shape == (2, FEATURE_DIM)
    sides = []  # the shorter side of the map entering each stride-2 stage, and of the last map
    for layer in net.features:
        if isinstance(layer, torch.nn.Conv2d) and layer.stride == (2, 2):
            sides.append(min(x.shape[-2:]))
        if isinstance(layer, torch.nn.AdaptiveAvgPool2d):
            sides.append(min(x.shape[-2:]))
            break
        x = layer(x)
    assert sides[-1] <= SMALL_MAP and all(side > SMALL_MAP for side in sides[:-1])  # strided until small
    assert len(sides) - 1 == stride_stages(*shape[1:])


def _bars(n: int, shape: tuple[int, int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of noise with a bright horizontal (label 0) or vertical (label 1) bar at a random place."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = shape
    x, y = 0.3 * torch.rand(n, c, h, w, generator=g), torch.randint(2, (n,), generator=g)
    for i in range(n):
        if y[i] == 0:
            row = int(torch.randint(h - 2, (1,), generator=g))
            x[i, :, row : row + 2, :] = 1.0
        else:
            col = int(torch.randint(w - 2, (1,), generator=g))
            x[i, :, :, col : col + 2] = 1.0
    return x, y


@pytest.mark.parametrize("shape", [(3, 50, 70), (1, 8, 8)])
def test_classifier_learns_images_of_any_shape(shape, tmp_path):
    x, y = _bars(96, shape)  # one batch an epoch: 20 steps, seconds even for 50x70 colour
    data = ImageData("bars", x[:64], y[:64], x[64:], y[64:])
    classifier = get_classifier(data, tmp_path)
    assert classifier.task == "labels" and classifier.test_accuracy > 0.9  # chance is 0.5
    features, probs = classifier.features_and_probs(data.x_test)
    assert features.shape == (32, FEATURE_DIM) and probs.shape == (32, 2)
    meta = json.loads(classifier.path.with_suffix(".json").read_text())
    assert meta["image_shape"] == list(shape) and meta["task"] == "labels"


def test_unlabelled_square_data_gets_a_rotation_predictor_that_learns_which_way_up_digits_are(digits, cache_dir):
    unlabelled = ImageData("nolabels", digits.x_train, None, digits.x_test, None)
    net = get_classifier(unlabelled, cache_dir)
    assert net.task == "rotation" and net.n_classes == 4
    assert net.test_accuracy > 0.6  # chance is 0.25
    assert net.name == "rotation-prediction net trained on the data (no labels)"
    assert "Gidaris et al. 2018" in net.description and "chance 0.25" in net.description
    features, probs = net.features_and_probs(digits.x_test[:5])
    assert features.shape == (5, FEATURE_DIM) and probs.shape == (5, 4)
    assert get_classifier(unlabelled, cache_dir).path == net.path  # cached beside the labelled classifier


def test_unlabelled_non_square_data_gets_a_flip_predictor(tmp_path):
    x, _ = _bars(120, (3, 12, 20))
    net = get_classifier(ImageData("flat", x[:100], None, x[100:], None), tmp_path)
    assert net.task == "flips" and net.name.startswith("flip-prediction net") and 0 <= net.test_accuracy <= 1
    assert json.loads(net.path.with_suffix(".json").read_text())["task"] == "flips"


def test_pretext_transforms_are_the_rotations_or_the_four_shape_keeping_flips():
    square, wide = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 4, 7)
    for k in range(4):
        torch.testing.assert_close(pretext_transform(square, k, True), torch.rot90(square, k, dims=(2, 3)))
    flips = [pretext_transform(wide, k, False) for k in range(4)]
    assert all(f.shape == wide.shape for f in flips)
    torch.testing.assert_close(flips[0], wide)
    torch.testing.assert_close(flips[3], torch.rot90(wide, 2, dims=(2, 3)))  # both flips: 180 degrees
    assert all(not torch.equal(flips[i], flips[j]) for i in range(4) for j in range(i))


@pytest.mark.parametrize("square", [True, False])
def test_pretext_batch_labels_each_image_with_the_transform_applied_to_it(square):
    x = torch.rand(64, 1, 5, 5 if square else 9)
    inputs, k = pretext_batch(x, square, torch.Generator().manual_seed(0))
    assert set(k.tolist()) == {0, 1, 2, 3}
    for i in range(len(x)):
        torch.testing.assert_close(inputs[i : i + 1], pretext_transform(x[i : i + 1], int(k[i]), square))
