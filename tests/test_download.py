"""vaelab.download against an HTTP server on 127.0.0.1 that serves small IDX sets written by the test."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from idx_files import write_idx_set
from vaelab import download
from vaelab.cli import main
from vaelab.data import load_data
from vaelab.errors import VaelabError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    """The tests' servers are on 127.0.0.1: a proxy set in the environment (urllib honours http_proxy) must not
    carry the requests away from them."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1")


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A mirror folder served on 127.0.0.1 for the duration of one test; VAELAB_MIRROR points at it."""
    root = tmp_path / "mirror"
    write_idx_set(root / "mnist")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}")
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def trust_mirror(mirror, monkeypatch):
    """Publish the mirror's own MD5s as the expected ones (the real files' sums cannot match test data)."""
    # In the official order, so that the tests below know which file is fetched last.
    sums = {
        name: hashlib.md5((mirror / "mnist" / name).read_bytes()).hexdigest() for name in download.SOURCES["mnist"][1]
    }
    monkeypatch.setitem(download.SOURCES, "mnist", (download.SOURCES["mnist"][0], sums))
    return mirror


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_base_url_is_the_official_server_unless_vaelab_mirror_is_set(monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    assert download.base_url("mnist") == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert download.base_url("fashion-mnist").startswith("https://raw.githubusercontent.com/zalandoresearch/")
    monkeypatch.setenv(download.MIRROR_ENV, "file:///srv/data/")
    assert download.base_url("fashion-mnist") == "file:///srv/data/fashion-mnist/"


def test_every_source_lists_the_four_standard_files_with_md5s():
    for _, sums in download.SOURCES.values():
        assert sorted(sums) == sorted(
            f"{stem}.gz"
            for stem in (
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            )
        )
        assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in sums.values())


def test_fetch_copies_the_verified_files_and_leaves_no_staging_folder(trust_mirror, tmp_path):
    cache = tmp_path / "cache"
    assert download.fetch("mnist", cache / "mnist") == cache / "mnist"
    served = _files(trust_mirror / "mnist")
    assert [p.name for p in _files(cache)] == [p.name for p in served]
    assert all((cache / "mnist" / p.name).read_bytes() == p.read_bytes() for p in served)
    assert [p.name for p in cache.iterdir()] == ["mnist"]


def test_load_data_with_download_fetches_once_then_reads_the_cache(trust_mirror, tmp_path):
    data = load_data("mnist", download=True, cache_dir=str(tmp_path))
    assert (len(data.x_train), len(data.x_test), data.image_shape) == (64, 32, (1, 28, 28))
    for p in (trust_mirror / "mnist").iterdir():
        p.unlink()  # the mirror is gone: a second load must come from the cache
    assert len(load_data("mnist", download=True, cache_dir=str(tmp_path)).x_test) == 32


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(mirror, tmp_path):
    # The mirror's files are not the published MNIST files, so the real MD5s refuse them.
    with pytest.raises(VaelabError, match=r"MD5 [0-9a-f]{32} differs from the published f68b3c2d.*nothing was saved"):
        download.fetch("mnist", tmp_path / "cache" / "mnist")
    assert _files(tmp_path / "cache") == [] and list((tmp_path / "cache").iterdir()) == []


def test_one_corrupted_file_among_good_ones_keeps_nothing(trust_mirror, tmp_path):
    last = trust_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    last.write_bytes(last.read_bytes()[:-1])  # the file fetched last no longer matches its sum
    with pytest.raises(VaelabError, match="t10k-labels-idx1-ubyte.gz: MD5"):
        download.fetch("mnist", tmp_path / "cache" / "mnist")
    assert _files(tmp_path / "cache") == []


def test_an_http_error_is_one_clear_error_and_nothing_is_kept(trust_mirror, tmp_path):
    (trust_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # fetched last: three files came before
    with pytest.raises(VaelabError, match=r"t10k-labels-idx1-ubyte.gz: HTTP 404"):
        download.fetch("mnist", tmp_path / "cache" / "mnist")
    assert _files(tmp_path / "cache") == []


def test_an_unreachable_server_is_one_clear_error_and_nothing_is_kept(tmp_path, monkeypatch):
    # A port bound but not listening refuses connections, and stays ours while bound: no other process can start
    # listening there between choosing the port and the download (as it could on a port that was merely free).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{s.getsockname()[1]}")
        with pytest.raises(VaelabError, match="cannot download http://127.0.0.1.*refused"):
            download.fetch("mnist", tmp_path / "cache" / "mnist")
    assert _files(tmp_path / "cache") == []


def test_only_known_sets_can_be_fetched(tmp_path):
    with pytest.raises(VaelabError, match="cannot download 'kmnist'"):
        download.fetch("kmnist", tmp_path / "kmnist")


def _download_and_train(cache: Path, out: Path) -> list[str]:
    """`vaelab train` of one epoch on MNIST, allowed to download it into `cache`."""
    return [
        "train",
        "--data",
        "mnist",
        "--download",
        "--data-cache",
        str(cache),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--quiet",
    ]


def test_cli_train_downloads_mnist_into_data_cache(trust_mirror, tmp_path, capsys):
    """`vaelab train --data mnist --download` (the CLI's main, in this process so the test sums apply)."""
    cache, out = tmp_path / "cache", tmp_path / "run"
    status = main([*_download_and_train(cache, out), "--hidden", "16", "--z-dim", "2"])
    assert status == 0, capsys.readouterr().err
    assert len(_files(cache / "mnist")) == 4
    assert (out / "checkpoint.json").is_file()


def test_cli_download_with_a_wrong_checksum_exits_2_with_nothing_written(mirror, tmp_path, cli):
    """The real command in a subprocess: one error line, status 2, no cache files, no run folder."""
    cache, out = tmp_path / "cache", tmp_path / "run"
    result = cli(*_download_and_train(cache, out))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("vaelab: error: ") and "MD5" in result.stderr
    assert _files(cache) == [] and not out.exists()
