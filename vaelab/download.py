"""Fetch the four standard IDX files of MNIST or Fashion-MNIST into a cache folder, verifying each file.

Each file is checked against the MD5 its publishers list (the files themselves are only published with MD5s;
the same sums are used by torchvision). A download goes into a temporary folder beside the destination and the
files are renamed into place only once all four are verified, so a failed or interrupted fetch leaves nothing
behind in the cache.

The environment variable ``VAELAB_MIRROR`` replaces the official servers by a mirror laid out as
``$VAELAB_MIRROR/<name>/<file>`` (any URL urllib opens: ``https://``, ``http://``, ``file:///``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from vaelab.errors import VaelabError

MIRROR_ENV = "VAELAB_MIRROR"
TIMEOUT_SECONDS = 60  # per network operation, not per file
# name -> (official base URL, {file name: MD5 of the .gz as published}).
SOURCES = {
    # torchvision's mirror of LeCun's files (yann.lecun.com now refuses unauthenticated downloads).
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    # Zalando's repository, over HTTPS; the sums are the ones in its README.
    "fashion-mnist": (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}


def base_url(name: str) -> str:
    """Where `name`'s files are fetched from: $VAELAB_MIRROR/<name>/ if set, else the official server."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{name}/"
    return SOURCES[name][0]


def fetch(name: str, dest: str | Path) -> Path:
    """Download `name`'s four .gz files into `dest`, all verified before any is moved there; return `dest`."""
    if name not in SOURCES:
        raise VaelabError(f"cannot download {name!r}: vaelab knows how to fetch {', '.join(SOURCES)}")
    dest = Path(dest)
    base = base_url(name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", suffix=".partial", dir=dest.parent))
    try:
        for file_name, md5 in SOURCES[name][1].items():
            _download(base + file_name, staging / file_name, md5)
        dest.mkdir(exist_ok=True)
        for path in staging.iterdir():
            os.replace(path, dest / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _download(url: str, target: Path, md5: str) -> None:
    """Stream `url` into `target`, hashing on the way; refuse it unless the MD5 matches."""
    digest = hashlib.md5(usedforsecurity=False)  # the published checksum, not a security boundary
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(target, "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
    except urllib.error.HTTPError as exc:
        raise VaelabError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; nothing was saved") from None
    # URLError: unreachable; OSError: timeouts, disk; HTTPException: a cut-off response; ValueError: a bad URL.
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VaelabError(f"cannot download {url} ({reason}); nothing was saved") from None
    if digest.hexdigest() != md5:
        raise VaelabError(
            f"{url}: MD5 {digest.hexdigest()} differs from the published {md5} "
            f"(a corrupted download or a wrong mirror); nothing was saved"
        )
