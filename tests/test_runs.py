"""Checkpoints: safetensors + JSON, hashed, committed atomically, loadable without unpickling."""

import json

import pytest
import torch
from safetensors import safe_open

from vaelab import load_run
from vaelab.errors import VaelabError


def test_checkpoint_is_safetensors_plus_json_with_a_matching_hash(vae_run):
    pointer = json.loads((vae_run.path / "checkpoint.json").read_text())
    assert pointer["kind"] == "vae" and pointer["epoch"] == vae_run.config.epochs
    with safe_open(str(vae_run.path / pointer["file"]), "pt") as f:
        keys = set(f.keys())
    assert any(k.startswith("model.encoder") for k in keys) and any(k.startswith("optim.") for k in keys)
    assert sorted(p.name for p in vae_run.path.glob("checkpoint-*")) == [pointer["file"]]


def test_load_run_restores_the_trained_weights(vae_run):
    loaded = load_run(vae_run.path)
    for (name, a), b in zip(vae_run.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not loaded.model.training and loaded.history == vae_run.history


def test_altered_checkpoint_is_refused(vae_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(vae_run.path, copy)
    weights = next(copy.glob("checkpoint-*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VaelabError, match="altered"):
        load_run(copy)


def test_expect_kind_refuses_the_other_model(ae_run):
    with pytest.raises(VaelabError, match="kind 'ae'"):
        load_run(ae_run.path, expect_kind="vae")
