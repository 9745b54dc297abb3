"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, nothing ever unpickled.

A run folder holds
- ``config.json``: the resolved RunConfig;
- ``checkpoint-NNNN.safetensors``: model weights (``model.*``) and Adam state (``optim.*``) after epoch NNNN;
- ``checkpoint.json``: which checkpoint file is current, its SHA-256, the model kind, image shape and the
  per-epoch history. Replacing this file (write to a temporary file, then rename) is the one commit point, so
  a run killed at any instant leaves a consistent pair behind;
- ``metrics.jsonl``: one JSON line per epoch (rebuilt from the history on resume).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaelab.atomic import atomic_write_json, atomic_write_bytes
from vaelab.config import RunConfig
from vaelab.errors import VaelabError
from vaelab.models import AutoEncoder, build_model

CHECKPOINT_FORMAT = 1


@dataclass
class Run:
    """A trained (or partly trained) model with everything needed to use or continue it."""

    path: Path
    config: RunConfig
    model: AutoEncoder
    epoch: int  # epochs completed
    history: list[dict] = field(default_factory=list)
    optimizer_state: dict[str, torch.Tensor] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    run_dir: Path,
    model: AutoEncoder,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict],
) -> None:
    """Write the weights and optimiser state after `epoch`, then commit them by replacing checkpoint.json."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(optimizer))
    name = f"checkpoint-{epoch:04d}.safetensors"
    atomic_write_bytes(run_dir / name, save(tensors))
    previous = _read_pointer(run_dir) if (run_dir / "checkpoint.json").exists() else None
    atomic_write_json(
        run_dir / "checkpoint.json",
        {
            "format": CHECKPOINT_FORMAT,
            "kind": model.kind,
            "image_shape": list(model.image_shape),
            "epoch": epoch,
            "file": name,
            "sha256": _sha256(run_dir / name),
            "history": history,
        },
    )
    if previous and previous["file"] != name:
        (run_dir / previous["file"]).unlink(missing_ok=True)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state (step, exp_avg, exp_avg_sq) as flat named tensors."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    return out


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Put the state saved by save_checkpoint back into a freshly built optimiser of the same model."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    full = optimizer.state_dict()
    full["state"] = state
    optimizer.load_state_dict(full)


def _read_pointer(run_dir: Path) -> dict:
    path = run_dir / "checkpoint.json"
    try:
        pointer = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaelabError(f"{run_dir}: not a vaelab run (no checkpoint.json)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise VaelabError(f"{path}: unreadable ({exc})") from None
    if not isinstance(pointer, dict) or pointer.get("format") != CHECKPOINT_FORMAT:
        raise VaelabError(f"{path}: not a vaelab checkpoint of format {CHECKPOINT_FORMAT}")
    return pointer


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    try:
        return RunConfig.from_dict(json.loads(path.read_text())).validate()
    except FileNotFoundError:
        raise VaelabError(f"{run_dir}: not a vaelab run (no config.json)") from None
    except json.JSONDecodeError as exc:
        raise VaelabError(f"{path}: unreadable ({exc})") from None


def load_run(run_dir: str | Path, expect_kind: str | None = None) -> Run:
    """Load a run folder's configuration and current checkpoint, verifying the checkpoint's SHA-256.

    The model comes back in eval mode. `expect_kind` ("ae" or "vae") refuses a checkpoint of the other kind.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelabError(f"{run_dir}: no such run folder")
    config = read_config(run_dir)
    pointer = _read_pointer(run_dir)
    if expect_kind is not None and pointer["kind"] != expect_kind:
        raise VaelabError(f"{run_dir}: checkpoint holds a model of kind {pointer['kind']!r}, expected {expect_kind!r}")
    if pointer["kind"] != config.model:
        raise VaelabError(f"{run_dir}: checkpoint kind {pointer['kind']!r} disagrees with config model {config.model!r}")
    weights = run_dir / pointer["file"]
    if not weights.is_file():
        raise VaelabError(f"{weights}: checkpoint file is missing")
    if _sha256(weights) != pointer["sha256"]:
        raise VaelabError(f"{weights}: checkpoint was altered or corrupted (SHA-256 differs from checkpoint.json)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise VaelabError(f"{weights}: unreadable safetensors ({exc})") from None
    model = build_model(config, tuple(pointer["image_shape"]))
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_tensors)
    except RuntimeError as exc:
        raise VaelabError(f"{weights}: weights do not fit the configured model ({str(exc).splitlines()[0]})") from None
    model.eval()
    optimizer_state = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    return Run(run_dir, config, model, pointer["epoch"], pointer["history"], optimizer_state)
