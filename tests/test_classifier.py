"""The data set's CNN classifier: accurate on digits, cached by data hash, never trusting other data's cache."""

from __future__ import annotations

import json

import pytest
import torch

from vaelab.classifier import FEATURE_DIM, data_key, get_classifier
from vaelab.data import ImageData
from vaelab.errors import VaelabError


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


def test_cache_key_changes_with_the_data(digits):
    altered = digits.x_train.clone()
    altered[0, 0, 0, 0] = 1 - altered[0, 0, 0, 0]
    other = ImageData(digits.name, altered, digits.y_train, digits.x_test, digits.y_test)
    assert data_key(other) != data_key(digits)
    assert data_key(digits).startswith("digits-")


def test_unlabelled_data_is_refused(digits, tmp_path):
    unlabelled = ImageData("nolabels", digits.x_train, None, digits.x_test, None)
    with pytest.raises(VaelabError, match="no labels"):
        get_classifier(unlabelled, tmp_path)
