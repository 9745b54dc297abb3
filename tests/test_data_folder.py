"""vaelab.data.folder: a folder of image files as a data set, its options, and the refusal of bad folders."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_files import write_class_folders, write_image
from vaelab.data import folder as folder_module
from vaelab.data import load_data
from vaelab.errors import VaelabError


def _load(root: Path, cache: Path, **options):
    return load_data(str(root), cache_dir=str(cache), **options)


def _rows(pixels: torch.Tensor) -> list[bytes]:
    """Each image as bytes, sorted: compares two image sets as multisets."""
    return sorted(row.tobytes() for row in pixels.reshape(len(pixels), -1).numpy())


def _all_images(data) -> torch.Tensor:
    return torch.cat([data.pixels_train, data.pixels_test])


def _chw(pixels: np.ndarray) -> np.ndarray:
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def test_class_sub_folders_give_the_sorted_folder_names_as_labels(tmp_path):
    written = write_class_folders(tmp_path / "pets", {"dog": 6, "cat": 5, "ant": 4})
    data = _load(tmp_path / "pets", tmp_path / "cache")
    assert data.name == "pets" and data.label_names == ["ant", "cat", "dog"]
    assert data.image_shape == (3, 12, 10) and data.pixels_train.dtype == torch.uint8 and data.max_value == 255
    label_of = {_chw(p).tobytes(): data.label_names.index(name) for name, images in written.items() for p in images}
    stored = _all_images(data).numpy()
    labels = torch.cat([data.y_train, data.y_test]).tolist()
    assert sorted(label_of) == sorted(image.tobytes() for image in stored)  # every image once, pixels exact
    assert [label_of[image.tobytes()] for image in stored] == labels


def test_a_flat_folder_has_no_labels(tmp_path):
    for i in range(5):
        write_image(tmp_path / "flat" / f"{i}.png", np.full((4, 4), i * 50, np.uint8))
    data = _load(tmp_path / "flat", tmp_path / "cache")
    assert data.y_train is None and data.y_test is None and data.label_names is None
    assert data.image_shape == (1, 4, 4) and len(data.pixels_train) + len(data.pixels_test) == 5
    assert "no labels" in data.description


def test_hidden_and_non_image_entries_are_skipped_and_counted_in_the_description(tmp_path):
    write_class_folders(tmp_path / "pets", {"cat": 3, "dog": 3})
    (tmp_path / "pets" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(tmp_path / "pets" / ".thumbnails" / "x.png", np.zeros((12, 10, 3), np.uint8))
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("good dogs\n")
    (tmp_path / "pets" / "LICENSE").write_text("CC-BY\n")
    write_image(tmp_path / "pets" / "dog" / "deeper" / "puppy.png", np.zeros((12, 10, 3), np.uint8))  # searched
    data = _load(tmp_path / "pets", tmp_path / "cache")
    assert data.label_names == ["cat", "dog"] and len(data.pixels_train) + len(data.pixels_test) == 7
    assert "skipped 2 hidden and 2 non-image entries" in data.description


def test_png_jpeg_bmp_webp_and_the_first_frame_of_a_gif_are_read(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (6, 6, 3), np.uint8)
    lossless = {
        "a.png": write_image(tmp_path / "f" / "a.png", colour),
        "b.bmp": write_image(tmp_path / "f" / "b.bmp", colour[::-1].copy()),
        "c.webp": write_image(tmp_path / "f" / "c.webp", colour[:, ::-1].copy(), lossless=True),
    }
    first, second = (np.full((6, 6), v, np.uint8) for v in (200, 30))
    Image.fromarray(first).save(tmp_path / "f" / "d.gif", save_all=True, append_images=[Image.fromarray(second)])
    smooth = np.broadcast_to(np.linspace(0, 255, 6, dtype=np.uint8)[None, :, None], (6, 6, 3)).copy()
    write_image(tmp_path / "f" / "e.jpg", smooth, quality=95)
    stored = _all_images(_load(tmp_path / "f", tmp_path / "cache")).numpy()  # (5, 3, 6, 6)
    stored_rows = {image.tobytes() for image in stored}
    assert {_chw(p).tobytes() for p in lossless.values()} <= stored_rows
    assert np.repeat(first[None], 3, 0).tobytes() in stored_rows  # the GIF's first frame, grey made RGB
    jpeg = [image for image in stored if image.tobytes() not in {*map(lambda p: _chw(p).tobytes(), lossless.values())}]
    assert any(np.abs(image.astype(int) - _chw(smooth)).mean() < 4 for image in jpeg)  # lossy, but close


def test_channels_are_3_when_any_image_has_colour_else_1_unless_asked(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 15
    for i in range(4):
        write_image(tmp_path / "grey" / f"{i}.png", grey + i)
    assert _load(tmp_path / "grey", tmp_path / "cache").image_shape == (1, 4, 4)
    as_rgb = _load(tmp_path / "grey", tmp_path / "cache", channels=3)
    assert as_rgb.image_shape == (3, 4, 4)
    assert torch.equal(as_rgb.pixels_train[:, 0], as_rgb.pixels_train[:, 2])
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    write_image(tmp_path / "grey" / "red.png", red)
    mixed = _load(tmp_path / "grey", tmp_path / "cache")
    assert mixed.image_shape == (3, 4, 4)
    as_grey = _load(tmp_path / "grey", tmp_path / "cache", channels=1)
    luma = np.asarray(Image.fromarray(red).convert("L"))  # Pillow's ITU-R 601 luma, the reference
    assert luma.tobytes() in set(_rows(_all_images(as_grey)))


def test_image_size_scales_the_shorter_side_and_crops_the_centre(tmp_path):
    # 20x40 (HxW): a centre 20x20 square of one grey between side bands of another, which the crop removes.
    image = np.full((20, 40), 50, np.uint8)
    image[:, 10:30] = 200
    write_image(tmp_path / "wide" / "a.png", image)
    write_image(tmp_path / "wide" / "b.png", np.full((30, 30), 90, np.uint8))  # another size: resized as well
    data = _load(tmp_path / "wide", tmp_path / "cache", image_size="10")
    assert data.image_shape == (1, 10, 10)
    wide = next(x for x in _all_images(data)[:, 0].numpy() if x[5, 5] != 90)
    # torchvision's Resize(10) then CenterCrop(10): the whole image to 10x20, then its middle 10 columns.
    reference = np.asarray(Image.fromarray(image).resize((20, 10), Image.Resampling.BICUBIC))[:, 5:15]
    assert np.abs(wide.astype(int) - reference).max() <= 1
    assert (wide[:, 2:8] == 200).all()  # the centre kept; only the edge columns blend with the bands
    assert (_all_images(data)[:, 0].numpy() == 90).all(axis=(1, 2)).sum() == 1
    tall = _load(tmp_path / "wide", tmp_path / "cache", image_size="4x8")
    assert tall.image_shape == (1, 4, 8)  # height x width


def test_images_of_mixed_sizes_without_image_size_name_two_sizes_and_the_flag(tmp_path):
    write_image(tmp_path / "m" / "a.png", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "m" / "b.png", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "m" / "c.png", np.zeros((6, 9), np.uint8))
    with pytest.raises(VaelabError, match=r"a\.png is 8x8, c\.png is 6x9.*--image-size"):
        _load(tmp_path / "m", tmp_path / "cache")


@pytest.mark.parametrize("content", ["nothing", "only-skipped"])
def test_a_folder_without_images_is_refused(tmp_path, content):
    (tmp_path / "empty").mkdir()
    if content == "only-skipped":
        (tmp_path / "empty" / "readme.txt").write_text("x")
        (tmp_path / "empty" / ".hidden.png").write_bytes(b"")
    with pytest.raises(VaelabError, match=r"empty: no image files \(.png, .jpg.*skipped"):
        _load(tmp_path / "empty", tmp_path / "cache")


def test_class_folders_beside_loose_images_or_without_images_are_refused(tmp_path):
    write_class_folders(tmp_path / "pets", {"cat": 2, "dog": 2})
    write_image(tmp_path / "pets" / "stray.png", np.zeros((12, 10, 3), np.uint8))
    with pytest.raises(VaelabError, match="class sub-folders and also loose images .stray.png"):
        _load(tmp_path / "pets", tmp_path / "cache")
    (tmp_path / "pets" / "stray.png").unlink()
    (tmp_path / "pets" / "eel").mkdir()
    with pytest.raises(VaelabError, match="eel: class folder holds no images"):
        _load(tmp_path / "pets", tmp_path / "cache")


def _damage(path: Path, how: str) -> None:
    if how == "not-an-image":
        path.write_bytes(b"<html>a web page saved as .png</html>")
    else:  # a PNG cut in half: its header reads, its pixels do not
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("how", ["not-an-image", "truncated"])
def test_an_unreadable_image_is_named_and_leaves_no_cache_behind(tmp_path, how):
    rng = np.random.default_rng(1)
    for i in range(40):  # several chunks: the damage is found by a worker process
        write_image(tmp_path / "f" / f"{i:02d}.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
    _damage(tmp_path / "f" / "17.png", how)
    with pytest.raises(VaelabError, match=r"17\.png: cannot read this image .*--skip-bad-images"):
        _load(tmp_path / "f", tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no cache, no temporary


def test_skip_bad_images_skips_and_counts_them(tmp_path):
    write_class_folders(tmp_path / "pets", {"cat": 10, "dog": 10})
    _damage(tmp_path / "pets" / "cat" / "003.png", "not-an-image")
    _damage(tmp_path / "pets" / "dog" / "007.png", "truncated")
    data = _load(tmp_path / "pets", tmp_path / "cache", skip_bad_images=True)
    assert len(data.pixels_train) + len(data.pixels_test) == 18
    assert "skipped 2 unreadable image files" in data.description
    assert (
        "skipped 2 unreadable image files"
        in _load(tmp_path / "pets", tmp_path / "cache", skip_bad_images=True).description
    )


def test_the_test_split_is_a_seeded_stratified_fraction(tmp_path):
    write_class_folders(tmp_path / "abc", {"a": 8, "b": 8, "c": 8})
    data = _load(tmp_path / "abc", tmp_path / "cache", test_split=0.25)
    assert len(data.pixels_test) == 6 and torch.bincount(data.y_test).tolist() == [2, 2, 2]
    again = _load(tmp_path / "abc", tmp_path / "elsewhere", test_split=0.25)  # decoded afresh
    assert torch.equal(again.pixels_test, data.pixels_test) and torch.equal(again.y_train, data.y_train)
    assert len(_load(tmp_path / "abc", tmp_path / "cache").pixels_test) == 5  # default 0.2, its own cache


def test_decoding_in_worker_processes_gives_the_bytes_of_one_process(tmp_path, monkeypatch):
    write_class_folders(tmp_path / "pets", {"cat": 30, "dog": 30}, size=(9, 7))
    assert len(folder_module._chunks(list(range(60)))) > 1  # so the default decodes in several processes
    pooled = _load(tmp_path / "pets", tmp_path / "pooled")
    monkeypatch.setattr(folder_module, "CHUNK_SIZE", (1000, 1000))
    single = _load(tmp_path / "pets", tmp_path / "single")
    assert torch.equal(pooled.pixels_train, single.pixels_train) and torch.equal(pooled.y_test, single.y_test)


def test_train_on_a_folder_of_pngs_prints_what_it_read_and_later_commands_read_it_alike(tmp_path, cli):
    write_class_folders(tmp_path / "pets", {"cat": 12, "dog": 12}, size=(12, 10))
    write_image(tmp_path / "pets" / "dog" / "big.png", np.zeros((24, 20, 3), np.uint8))  # needs --image-size
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ("--data", str(tmp_path / "pets"), "--data-cache", str(cache))
    result = cli(
        "train", *common, "--image-size", "6x5", "--epochs", "1", "--hidden", "16", "--z-dim", "2", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "data pets: 20 train + 5 test images, 3x6x5, 2 classes" in result.stdout
    assert "cache written" in result.stdout
    shown = cli("reconstruct", str(out), "-o", str(tmp_path / "recon.png"))  # the run's --image-size again
    assert shown.returncode == 0, shown.stderr
    quiet = cli(
        "train",
        *common,
        "--image-size",
        "6x5",
        "--epochs",
        "1",
        "--hidden",
        "16",
        "--out",
        str(tmp_path / "q"),
        "--quiet",
    )
    assert quiet.returncode == 0 and "data pets" not in quiet.stdout


def test_a_bad_image_ends_train_with_one_line_naming_it_and_no_run_or_cache(tmp_path, cli):
    write_class_folders(tmp_path / "pets", {"cat": 4, "dog": 4})
    _damage(tmp_path / "pets" / "dog" / "002.png", "truncated")
    result = cli(
        "train",
        "--data",
        str(tmp_path / "pets"),
        "--data-cache",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("vaelab: error: "), result.stderr  # after the progress bars
    assert "002.png: cannot read this image" in result.stderr
    quiet = cli(*result.args[3:], "--quiet")
    assert quiet.returncode == 2 and quiet.stderr.count("\n") == 1, quiet.stderr  # no bar: the one line alone
    assert not (tmp_path / "run").exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--image-size", "0", "image_size must be S or HxW"),
        ("--image-size", "64x", "image_size must be S or HxW"),
        ("--channels", "2", r"channels must be 0 \(automatic\), 1 or 3"),
        ("--test-split", "1.5", "test_split must be a fraction between 0 and 1"),
    ],
)
def test_bad_image_options_are_refused_by_name_before_reading_anything(tmp_path, cli, flag, value, message):
    result = cli("train", "--data", str(tmp_path / "absent"), flag, value, "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and re.search(message, result.stderr), result.stderr


def test_options_that_do_not_apply_to_a_source_are_refused_not_ignored(tmp_path):
    with pytest.raises(VaelabError, match="--image-size and --channels apply to image folders and shapes only"):
        load_data("digits", image_size="16")
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 3, 3)), x_test=np.zeros((2, 3, 3)))
    with pytest.raises(VaelabError, match="has its own test split; drop --test-split"):
        load_data(str(tmp_path / "x.npz"), test_split=0.3)
