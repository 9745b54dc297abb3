"""``shapes``: colour images of simple shapes drawn from known factors, in the spirit of dSprites (Matthey et al.
2017) and 3D Shapes (Burgess & Kim 2018), generated from a fixed seed and cached; no download.

Each image is one solid shape on black, drawn from six independent factors: its kind (square, circle, triangle,
star: the class label), hue (HSV hue in [0, 1) at full saturation and value), scale (circumradius as a fraction
0.5..1 of MAX_RADIUS of the shorter image side), rotation (radians about its centroid, counter-clockwise on the
screen), and x, y (its centroid as fractions of the width and height, from the left and the top). Every shape has
its area centroid at its centre, so the centroid of the drawn pixels recovers x and y. Rotation is only visible up
to each shape's symmetry (a circle has none to show). Drawing is vectorised numpy: 20,000 64x64 images take seconds.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vaelab.data.cache import CacheWriter, cache_key, cached_images, image_data
from vaelab.data.images import ImageData, LoadOptions
from vaelab.data.split import split_indices

SHAPES = ("square", "circle", "triangle", "star")
FACTOR_NAMES = ("shape", "hue", "scale", "rotation", "x", "y")
SHAPES_COUNT = 20_000
SHAPES_SIZE = (64, 64)
SHAPES_SEED = 0
SHAPES_VERSION = 1  # part of the cache key: a change to the drawing below must raise it
MAX_RADIUS = 0.25  # circumradius at scale 1, as a fraction of the shorter side; keeps every shape inside
SCALE_RANGE = (0.5, 1.0)
STAR_INNER_RADIUS = 0.4  # of the star's outer radius
RENDER_CHUNK = 1000  # images drawn at once: a few (B, H, W) float arrays of 16 MB at 64x64


def draw_factors(n: int, seed: int = SHAPES_SEED) -> dict[str, np.ndarray]:
    """n independent draws of every factor (see the module docstring), each an (n,) array."""
    rng = np.random.default_rng(seed)
    return {
        "shape": rng.integers(0, len(SHAPES), n),
        "hue": rng.random(n),
        "scale": rng.uniform(*SCALE_RANGE, n),
        "rotation": rng.uniform(0, 2 * math.pi, n),
        "x": rng.uniform(MAX_RADIUS, 1 - MAX_RADIUS, n),
        "y": rng.uniform(MAX_RADIUS, 1 - MAX_RADIUS, n),
    }


def render_shapes(factors: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """The images of the factors' B draws, uint8 RGB (B, 3, height, width)."""
    images = np.zeros((len(factors["shape"]), 3, height, width), dtype=np.uint8)
    colour = np.rint(hue_to_rgb(factors["hue"]) * 255).astype(np.uint8)  # (B, 3)
    for index, contains in enumerate(INSIDE):
        chosen = np.flatnonzero(factors["shape"] == index)
        if len(chosen):
            u, v = _shape_frame({name: values[chosen] for name, values in factors.items()}, height, width)
            images[chosen] = contains(u, v)[:, None] * colour[chosen, :, None, None]
    return images


def _shape_frame(factors: dict[str, np.ndarray], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel centre in each shape's own frame, (B, H, W) twice: centred on the shape, in circumradii, turned
    back by its rotation (rows grow downwards, so a positive angle turns the shape counter-clockwise on screen)."""
    rows, cols = (np.mgrid[0:height, 0:width] + 0.5).astype(np.float32)  # pixel centres (H, W)
    column = lambda values: values.astype(np.float32)[:, None, None]  # noqa: E731 - (B,) -> (B, 1, 1)
    radius = column(factors["scale"] * MAX_RADIUS * min(height, width))  # pixels
    dx = (cols - column(factors["x"] * width)) / radius
    dy = (rows - column(factors["y"] * height)) / radius
    cos, sin = column(np.cos(factors["rotation"])), column(np.sin(factors["rotation"]))
    return cos * dx - sin * dy, sin * dx + cos * dy


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """HSV (hue, 1, 1) -> RGB in [0, 1], (B,) -> (B, 3): the piecewise-linear hexcone of Smith (1978)."""
    six = 6 * hue[:, None]
    return np.clip(np.abs(six - [3, 2, 4]) * [1, -1, -1] + [-1, 2, 2], 0, 1)


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1 / math.sqrt(2)


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u**2 + v**2 <= 1


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Equilateral, circumradius 1, a vertex up: inside its three edges, each at the inradius 1/2 from the centre
    along the outward normals (0, 1) and (+-sqrt(3)/2, -1/2)."""
    return np.maximum(v, np.abs(u) * (math.sqrt(3) / 2) - v / 2) <= 0.5


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Five points of radius 1, inner corners at STAR_INNER_RADIUS: the angle is folded into the half-sector
    between an inner corner (angle 0) and a point (pi/5), then tested against that one edge."""
    half = np.pi / 5
    # A point straight up (angle -pi/2, rows growing downwards) folds to `half`; inner corners fold to 0.
    angle = np.abs(np.mod(np.arctan2(v, u) + np.pi / 2, 2 * half) - half)
    radius = np.hypot(u, v)
    x, y = radius * np.cos(angle), radius * np.sin(angle)
    corner_x, (tip_x, tip_y) = STAR_INNER_RADIUS, (np.cos(half), np.sin(half))
    # Inside when on the centre's side of the edge from the inner corner to the point: the 2-D cross product
    # (tip - corner) x (p - corner) has the sign it has for the centre, tip_y * corner_x > 0.
    return (tip_x - corner_x) * y - tip_y * (x - corner_x) >= 0


INSIDE = (_square, _circle, _triangle, _star)  # in the order of SHAPES


def to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (B, 3, H, W) -> grey (B, 1, H, W) with ITU-R 601 luma in Pillow's integer form (its "L" mode)."""
    weights = np.array([19595, 38470, 7471], dtype=np.uint32)[:, None, None]
    return (((images.astype(np.uint32) * weights).sum(1, keepdims=True) + 0x8000) >> 16).astype(np.uint8)


def load_shapes(cache_dir: Path, options: LoadOptions, progress: bool, n: int = SHAPES_COUNT) -> ImageData:
    """The shapes set (SHAPES_COUNT images of SHAPES_SIZE, or --image-size), drawn once into the cache."""
    height, width = options.size or SHAPES_SIZE
    settings = [n, height, width, options.channels, options.test_split, SHAPES_SEED]
    build = partial(_build_cache, n, (height, width), options, progress)
    cached = cached_images(cache_dir, f"shapes-{cache_key(settings)[:12]}", cache_key(SHAPES_VERSION, settings), build)
    notes = [f"drawn from the factors {', '.join(FACTOR_NAMES)} (seed {SHAPES_SEED}); labels are the shape"]
    return image_data("shapes", cached, notes=notes)


def _build_cache(n: int, size: tuple[int, int], options: LoadOptions, progress: bool, writer: CacheWriter) -> None:
    factors = draw_factors(n)
    train, test = split_indices("shapes", n, factors["shape"], options.test_split)
    ordered = {name: values[np.concatenate([train, test])] for name, values in factors.items()}  # train first
    with tqdm(total=n, desc="drawing shapes", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, RENDER_CHUNK):
            images = render_shapes({k: v[start : start + RENDER_CHUNK] for k, v in ordered.items()}, *size)
            writer.write(to_grey(images) if options.channels == 1 else images)
            bar.update(len(images))
    writer.finish(
        len(train),
        labels=ordered["shape"].tolist(),
        label_names=list(SHAPES),
        factors={name: values.tolist() for name, values in ordered.items()},
    )
