"""vaelab.data.shapes: a deterministic colour set whose factors can be read back from its pixels."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import load_data
from vaelab.data.shapes import (
    FACTOR_NAMES,
    MAX_RADIUS,
    SHAPES,
    SHAPES_COUNT,
    STAR_INNER_RADIUS,
    draw_factors,
    render_shapes,
)

# Area of each shape at circumradius 1: square (side sqrt 2), unit circle, equilateral triangle, and a five-pointed
# star as ten triangles of sides 1 and STAR_INNER_RADIUS meeting at the centre at pi/5.
UNIT_AREAS = {
    "square": 2.0,
    "circle": math.pi,
    "triangle": 3 * math.sqrt(3) / 4,
    "star": 10 * 0.5 * STAR_INNER_RADIUS * math.sin(math.pi / 5),
}


@pytest.fixture(scope="module")
def drawn():
    factors = draw_factors(400, seed=5)
    return factors, render_shapes(factors, 64, 64)


def test_drawing_is_deterministic_and_has_the_asked_size(drawn):
    factors, images = drawn
    assert images.shape == (400, 3, 64, 64) and images.dtype == np.uint8
    again = draw_factors(400, seed=5)
    assert all(np.array_equal(again[name], factors[name]) for name in FACTOR_NAMES)
    assert np.array_equal(render_shapes(again, 64, 64), images)
    assert not np.array_equal(render_shapes(draw_factors(400, seed=6), 64, 64), images)
    assert render_shapes(factors, 20, 30).shape == (400, 3, 20, 30)


def test_the_centroid_of_the_drawn_pixels_is_x_and_y(drawn):
    factors, images = drawn
    mask = images.max(axis=1) > 0  # (N, H, W)
    rows, cols = np.mgrid[0:64, 0:64] + 0.5
    area = mask.sum(axis=(1, 2))
    x = (mask * cols).sum(axis=(1, 2)) / area / 64
    y = (mask * rows).sum(axis=(1, 2)) / area / 64
    assert np.abs(x - factors["x"]).max() * 64 < 0.75  # pixels
    assert np.abs(y - factors["y"]).max() * 64 < 0.75


def test_one_solid_colour_whose_hue_is_the_hue_factor(drawn):
    factors, images = drawn
    for image, hue in zip(images, factors["hue"]):
        drawn_pixels = image.reshape(3, -1)[:, image.max(axis=0).reshape(-1) > 0]  # (3, P)
        assert (drawn_pixels == drawn_pixels[:, :1]).all()  # one colour, on black
        r, g, b = drawn_pixels[:, 0] / 255
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        assert min(abs(h - hue), 1 - abs(h - hue)) < 0.005 and s == 1 and v == 1


def test_the_area_is_the_shapes_own_times_the_squared_scale(drawn):
    factors, images = drawn
    radius = factors["scale"] * MAX_RADIUS * 64  # pixels
    relative = (images.max(axis=1) > 0).sum(axis=(1, 2)) / radius**2
    for index, name in enumerate(SHAPES):
        chosen = relative[factors["shape"] == index]
        assert len(chosen) > 50
        assert abs(chosen.mean() / UNIT_AREAS[name] - 1) < 0.02, name
        assert np.abs(chosen / UNIT_AREAS[name] - 1).max() < 0.12, name  # edge pixels of the smallest shapes


def test_rotation_shows_up_to_each_shapes_symmetry():
    base = {name: np.repeat(value, 4) for name, value in draw_factors(1, seed=1).items()}
    base["shape"] = np.arange(4)
    base["scale"][:] = 1.0
    turned = {**base, "rotation": base["rotation"] + np.array([np.pi / 2, 0.7, 2 * np.pi / 3, 2 * np.pi / 5])}
    same = (render_shapes(base, 64, 64) == render_shapes(turned, 64, 64)).all(axis=1).mean(axis=(1, 2))
    assert same[0] > 0.995 and same[2] > 0.995 and same[3] > 0.995  # a quarter, a third, a fifth of a turn
    assert same[1] > 0.995  # a circle shows no rotation at all
    skewed = {**base, "rotation": base["rotation"] + np.pi / 5}  # half a symmetry step of the star
    assert (render_shapes(base, 64, 64) != render_shapes(skewed, 64, 64)).any(axis=1).sum(axis=(1, 2))[3] > 40


def test_load_shapes_labels_by_shape_keeps_every_factor_and_splits_stratified(tmp_path):
    data = load_data("shapes", cache_dir=str(tmp_path), image_size="12x10")
    assert data.name == "shapes" and data.image_shape == (3, 12, 10) and data.max_value == 255
    assert (len(data.pixels_train), len(data.pixels_test)) == (SHAPES_COUNT * 4 // 5, SHAPES_COUNT // 5)
    assert data.label_names == list(SHAPES) and data.factor_names == FACTOR_NAMES
    for labels, factors in ((data.y_train, data.factors_train), (data.y_test, data.factors_test)):
        assert all(len(values) == len(labels) for values in factors.values())
        assert labels.tolist() == factors["shape"].tolist()
    counts = torch.bincount(data.y_test).numpy() / len(data.y_test)
    assert np.abs(counts - torch.bincount(data.y_train).numpy() / len(data.y_train)).max() < 0.002
    drawn_again = render_shapes({name: values[:50] for name, values in data.factors_test.items()}, 12, 10)
    assert np.array_equal(drawn_again, data.pixels_test[:50].numpy())  # the factors are those of the stored images


def test_grey_shapes_are_pillows_luma_of_the_colour_ones(tmp_path):
    colour = load_data("shapes", cache_dir=str(tmp_path), image_size="8")
    grey = load_data("shapes", cache_dir=str(tmp_path), image_size="8", channels=1)
    assert grey.image_shape == (1, 8, 8)
    for rgb, luma in zip(colour.pixels_test[:20].numpy(), grey.pixels_test[:20].numpy()):
        reference = np.asarray(Image.fromarray(rgb.transpose(1, 2, 0)).convert("L"))
        assert np.array_equal(luma[0], reference)


def test_train_on_shapes_runs_from_the_command_line(tmp_path, cli):
    common = ("--data", "shapes", "--image-size", "16", "--data-cache", str(tmp_path / "cache"))
    result = cli("train", *common, "--epochs", "1", "--hidden", "64", "--z-dim", "4", "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "data shapes: 16,000 train + 4,000 test images, 3x16x16, 4 classes" in result.stdout
    assert "epoch 1/1" in result.stdout
