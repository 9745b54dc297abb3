"""Run folders: their format, their lock, and every read and write of them. Nothing is ever unpickled.

A run folder holds
- ``config.json``: the resolved RunConfig;
- ``checkpoint-NNNN.safetensors``: model weights (``model.*``) and Adam state (``optim.*``) after epoch NNNN;
- ``checkpoint.json``: which checkpoint file is current, its SHA-256, the model kind, image shape (and a
  conditional model's number of classes) and the per-epoch history. Replacing this file (a unique temporary, then
  a rename) is the one commit point, so a run killed at any instant leaves a consistent pair behind;
- ``metrics.jsonl``: one JSON line per committed epoch, rewritten with each checkpoint.

Run folders get shared, so everything read from one is checked before it is used: names must be plain
checkpoint file names inside the folder, every field has its type and range, every tensor its name, shape and
dtype. A command that writes a run folder holds an exclusive lock on it (``RunFolder``) and writes nothing
before its first checkpoint is ready, so a failed command leaves an existing run byte for byte as it was.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaelab.atomic import atomic_write_bytes
from vaelab.config import MODELS, RunConfig
from vaelab.data import MAX_CLASSES
from vaelab.errors import VaelabError
from vaelab.families import FAMILIES
from vaelab.models import AutoEncoder, build_model

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = re.compile(r"checkpoint-[0-9]{4,9}\.safetensors")  # a plain name: no folder, no traversal
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_JSON_BYTES = 64 << 20  # checkpoint.json holds the history: ~1 kB an epoch
MAX_CHANNELS = 4  # grey, grey + alpha, RGB, RGBA
MAX_IMAGE_SIDE = 8192
# What every history row holds as a number (the curves, the report's times and the summaries read them).
HISTORY_NUMBERS = ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl", "seconds")
ADAM_STATE = {"step": "scalar", "exp_avg": "param", "exp_avg_sq": "param"}  # what Adam keeps per parameter


@dataclass
class Run:
    """A trained (or partly trained) model with everything needed to use or continue it."""

    path: Path
    config: RunConfig
    model: AutoEncoder
    epoch: int  # epochs completed
    history: list[dict] = field(default_factory=list)
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)
    checkpoint_file: str = ""  # the current checkpoint-NNNN.safetensors


def read_json(path: Path):
    """A JSON file from a run folder, any defect (size, encoding, syntax, depth, huge numbers) one VaelabError."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise VaelabError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MB, not a vaelab file")
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: bad UTF-8, bad JSON, an integer of thousands of digits
        raise VaelabError(f"{path}: unreadable ({exc})") from None
    except RecursionError:
        raise VaelabError(f"{path}: unreadable (nested too deeply)") from None


def _require(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise VaelabError(f"{path}: not a valid vaelab checkpoint pointer ({what})")


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_pointer(pointer, path: Path) -> dict:
    """Every field of checkpoint.json, checked for type and range before anything uses it."""
    _require(isinstance(pointer, dict), path, "not a JSON object")
    _require(pointer.get("format") == CHECKPOINT_FORMAT, path, f"format must be {CHECKPOINT_FORMAT}")
    _require(pointer.get("kind") in MODELS, path, f"kind must be one of {', '.join(MODELS)}")
    shape = pointer.get("image_shape")
    _require(
        isinstance(shape, list)
        and len(shape) == 3
        and _is_int(shape[0], 1, MAX_CHANNELS)
        and all(_is_int(side, 1, MAX_IMAGE_SIDE) for side in shape[1:]),
        path,
        f"image_shape must be [channels 1..{MAX_CHANNELS}, height, width], sides 1..{MAX_IMAGE_SIDE}",
    )
    conditional = FAMILIES[pointer["kind"]].conditional
    _require(
        _is_int(pointer.get("classes"), 1, MAX_CLASSES) if conditional else "classes" not in pointer,
        path,
        f"classes must be the number of classes 1..{MAX_CLASSES} for a conditional model, and absent otherwise",
    )
    _require(_is_int(pointer.get("epoch"), 1, 10**9), path, "epoch must be a positive integer")
    name = pointer.get("file")
    _require(
        isinstance(name, str) and CHECKPOINT_NAME.fullmatch(name) is not None,
        path,
        "file must be a plain name checkpoint-NNNN.safetensors inside the run folder",
    )
    _require(
        isinstance(pointer.get("sha256"), str) and SHA256_HEX.fullmatch(pointer["sha256"]) is not None,
        path,
        "sha256 must be 64 hexadecimal digits",
    )
    history = pointer.get("history")
    _require(
        isinstance(history, list) and len(history) == pointer["epoch"] and all(map(_is_metrics_row, history)),
        path,
        "history must hold one metrics row per epoch",
    )
    return pointer


def read_pointer(run_dir: Path) -> dict:
    path = run_dir / "checkpoint.json"
    try:
        return _check_pointer(read_json(path), path)
    except FileNotFoundError:
        raise VaelabError(f"{run_dir}: not a vaelab run (no checkpoint.json)") from None


def read_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    try:
        values = read_json(path)
    except FileNotFoundError:
        raise VaelabError(f"{run_dir}: not a vaelab run (no config.json)") from None
    if not isinstance(values, dict):
        raise VaelabError(f"{path}: not a JSON object")
    try:
        return RunConfig.from_dict(values).validate()
    except VaelabError as exc:
        raise VaelabError(f"{path}: {exc}") from None


def read_history(run: Run) -> list[dict]:
    """The per-epoch rows of the run's metrics.jsonl (the committed history if that file is missing)."""
    path = run.path / "metrics.jsonl"
    if not path.is_file():
        return run.history
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise VaelabError(f"{path}, line {number}: unreadable ({exc})") from None
        if not _is_metrics_row(row):
            raise VaelabError(
                f"{path}, line {number}: not a metrics row (an object with an integer epoch and numbers as values)"
            )
        rows.append(row)
    return rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_metrics_row(row) -> bool:
    """One line of metrics.jsonl: an integer epoch, the HISTORY_NUMBERS as numbers, and every other value a number,
    a flag, text (the scaling statement, the device), a list of numbers (the per-dimension KL) or null (that KL,
    for a family whose KL does not split by dimension), as the training loop writes them."""
    return (
        isinstance(row, dict)
        and _is_int(row.get("epoch"), 1, 10**9)
        and all(_is_number(row.get(key)) for key in HISTORY_NUMBERS)
        and all(
            v is None or isinstance(v, (int, float, str)) or (isinstance(v, list) and all(map(_is_number, v)))
            for v in row.values()
        )
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checkpoint_tensors(run_dir: Path, pointer: dict) -> dict[str, torch.Tensor]:
    """The current checkpoint's tensors, after checking it is a regular file whose SHA-256 matches."""
    weights = run_dir / pointer["file"]
    if weights.is_symlink() or not weights.is_file():
        raise VaelabError(f"{weights}: checkpoint file is missing (or not a regular file)")
    if _sha256(weights) != pointer["sha256"]:
        raise VaelabError(f"{weights}: checkpoint was altered or corrupted (SHA-256 differs from checkpoint.json)")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise VaelabError(f"{weights}: unreadable safetensors ({exc})") from None


def _describe(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def check_model_tensors(tensors: dict[str, torch.Tensor], model: torch.nn.Module, where: Path) -> None:
    """Refuse weights whose names, shapes or dtypes differ from the model's, naming each tensor that differs."""
    expected = model.state_dict()
    problems = [f"{name} missing" for name in expected if name not in tensors]
    problems += [f"{name} unexpected" for name in tensors if name not in expected]
    problems += [
        f"{name} is {_describe(tensors[name].shape)} {tensors[name].dtype}, "
        f"the model needs {_describe(value.shape)} {value.dtype}"
        for name, value in expected.items()
        if name in tensors and (tensors[name].shape != value.shape or tensors[name].dtype != value.dtype)
    ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise VaelabError(f"{where}: weights do not fit the configured model ({shown})")


def check_optimizer_tensors(tensors: dict[str, torch.Tensor], model: torch.nn.Module, where: Path) -> None:
    """Adam's state of each parameter I must be complete or absent (a parameter no step has reached yet, as VQ-VAE's
    code prior before its phase): optim.I.step () and optim.I.exp_avg[_sq] shaped as parameter I."""
    params = list(model.parameters())
    expected = {
        f"optim.{i}.{key}": (torch.Size([]) if kind == "scalar" else p.shape)
        for i, p in enumerate(params)
        for key, kind in ADAM_STATE.items()
    }
    if not tensors:
        return
    with_state = {name.split(".")[1] for name in tensors if name.count(".") >= 2}
    problems = [f"{name} unexpected" for name in tensors if name not in expected]
    problems += [f"{name} missing" for name in expected if name not in tensors and name.split(".")[1] in with_state]
    problems += [
        f"{name} is {_describe(tensors[name].shape)} {tensors[name].dtype}, needs {_describe(shape)} float32"
        for name, shape in expected.items()
        if name in tensors and (tensors[name].shape != shape or tensors[name].dtype != torch.float32)
    ]
    if problems:
        raise VaelabError(f"{where}: optimiser state does not fit the model ({'; '.join(problems[:4])})")


def load_run(run_dir: str | Path, expect_kind: str | None = None) -> Run:
    """Load a run folder's configuration and current checkpoint, verifying the checkpoint's SHA-256.

    The model comes back in eval mode. `expect_kind` ("ae" or "vae") refuses a checkpoint of the other kind.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: no such run folder")
    config = read_config(run_dir)
    pointer = read_pointer(run_dir)
    if expect_kind is not None and pointer["kind"] != expect_kind:
        raise VaelabError(f"{run_dir}: checkpoint holds a model of kind {pointer['kind']!r}, expected {expect_kind!r}")
    if pointer["kind"] != config.model:
        raise VaelabError(
            f"{run_dir}: checkpoint kind {pointer['kind']!r} disagrees with config model {config.model!r}"
        )
    tensors = _checkpoint_tensors(run_dir, pointer)
    where = run_dir / pointer["file"]
    unknown = [name for name in tensors if not name.startswith(("model.", "optim."))]
    if unknown:
        raise VaelabError(f"{where}: unexpected tensors {', '.join(unknown[:4])}")
    with torch.device("meta"):  # shapes only: a forged image_shape cannot make us allocate a huge model
        skeleton = build_model(config, tuple(pointer["image_shape"]), pointer.get("classes"))
    model_tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    check_model_tensors(model_tensors, skeleton, where)
    optimizer_state = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    check_optimizer_tensors(optimizer_state, skeleton, where)
    with torch.device("cpu"):  # on the host, as the checkpoint is: the command moves it where it computes
        model = build_model(config, tuple(pointer["image_shape"]), pointer.get("classes"))
    model.load_state_dict(model_tensors)
    model.eval()
    return Run(run_dir, config, model, pointer["epoch"], pointer["history"], optimizer_state, pointer["file"])


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state (step, exp_avg, exp_avg_sq) as flat named tensors."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{index}.{key}"] = torch.as_tensor(value, device="cpu").detach().clone().contiguous()
    return out


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put the state saved by RunFolder.save_checkpoint (checked by load_run) back into a fresh optimiser."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


class RunFolder:
    """A run folder held by one training command, from start to end (use as a context manager).

    It takes an exclusive lock (flock on the folder itself, so no lock file is left behind): a second command
    writing the same folder stops with one line. A new run needs an absent or empty folder; a resumed one, a
    vaelab run. Nothing is written before the first checkpoint, and a new run that fails before it leaves no
    folder behind.
    """

    def __init__(self, path: str | Path, resume: bool):
        self.path = Path(path)
        self.resume = resume
        self.created = False
        self.current_file = ""  # the committed checkpoint file, once there is one
        self.committed_epoch = 0
        self._written: list[str] = []
        self._fd: int | None = None

    def __enter__(self) -> RunFolder:
        self._create_or_check_exists()
        self._lock()
        if not self.resume:
            self._check_empty()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None and not self.resume and not self.current_file:
            for name in self._written:  # a new run that never committed: take back what it wrote
                (self.path / name).unlink(missing_ok=True)
            if self.created:
                try:
                    self.path.rmdir()
                except OSError:  # not empty: someone else's files arrived; leave them
                    pass
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def _create_or_check_exists(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise VaelabError(f"{self.path}: exists and is not a folder; choose another --out")
        if self.path.is_dir():
            return
        if self.resume:
            raise VaelabError(f"{self.path}: no such run folder to resume")
        try:
            self.path.mkdir(parents=True)
            self.created = True
        except FileExistsError:  # another command created it a moment ago: the lock decides
            pass
        except OSError as exc:
            raise VaelabError(f"{self.path}: cannot create the run folder ({exc.strerror})") from None

    def _lock(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise VaelabError(f"{self.path}: cannot open the run folder ({exc.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            self.created = False  # the folder is the other command's now
            raise VaelabError(
                f"{self.path}: in use by another vaelab command; wait for it or choose another --out"
            ) from None

    def _check_empty(self) -> None:
        entries = os.listdir(self.path)
        if "checkpoint.json" in entries:
            raise VaelabError(f"{self.path}: already holds a run; pass --resume to continue it or choose another --out")
        if entries:
            raise VaelabError(
                f"{self.path}: is not empty and is not a vaelab run (holds {', '.join(sorted(entries)[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); choose a new or empty folder"
            )

    def load(self, expect_kind: str) -> Run:
        run = load_run(self.path, expect_kind=expect_kind)
        self.current_file, self.committed_epoch = run.checkpoint_file, run.epoch
        return run

    def _write(self, name: str, payload: bytes) -> None:
        atomic_write_bytes(self.path / name, payload)
        self._written.append(name)

    def save_checkpoint(
        self, model: AutoEncoder, optimizer: torch.optim.Optimizer, config: RunConfig, history: list[dict]
    ) -> None:
        """Write the weights and optimiser state after len(history) epochs, then commit them (checkpoint.json)."""
        epoch = len(history)
        # On the host: a checkpoint names no device and loads onto any.
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors.update(_optimizer_tensors(optimizer))
        name = f"checkpoint-{epoch:04d}.safetensors"
        payload = save(tensors)
        self._write(name, payload)
        if "config.json" not in self._written:  # the command's configuration, with its first checkpoint
            self._write("config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        self._write("metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history).encode())
        pointer = {
            "format": CHECKPOINT_FORMAT,
            "kind": model.kind,
            "image_shape": list(model.image_shape),
            **({"classes": model.classes} if model.conditional else {}),
            "epoch": epoch,
            "file": name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "history": history,
        }
        self._write("checkpoint.json", (json.dumps(pointer, indent=2) + "\n").encode())
        previous, self.current_file, self.committed_epoch = self.current_file, name, epoch
        if previous and previous != name:  # a name read_pointer checked: a plain file name in this folder
            (self.path / previous).unlink(missing_ok=True)

    def state_sentence(self) -> str:
        """What a failure leaves behind, said truthfully."""
        if self.current_file:
            return f"the last good checkpoint (epoch {self.committed_epoch}) in {self.path} is intact"
        if self.resume:
            return f"{self.path} is left as it was"
        return f"no checkpoint was written and nothing is kept in {self.path}"
