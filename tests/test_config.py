"""RunConfig: the lecture's defaults, one-to-one mapping with flags, and validation."""

import dataclasses

import pytest

from vaelab.cli import build_parser
from vaelab.config import RunConfig
from vaelab.errors import VaelabError


def test_defaults_are_the_lectures():
    c = RunConfig()
    assert (c.model, c.z_dim, c.hidden, c.beta, c.lr, c.batch_size, c.likelihood, c.binarize) == (
        "vae", 20, [400], 1.0, 1e-3, 128, "bernoulli", "none")


def test_every_field_is_a_train_flag():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {opt for action in train._actions for opt in action.option_strings}
    for f in dataclasses.fields(RunConfig):
        assert "--" + f.name.replace("_", "-") in flags


@pytest.mark.parametrize("field,value,message", [
    ("z_dim", 0, "z_dim"), ("beta", -1.0, "beta"), ("batch_size", 0, "batch_size"), ("model", "gan", "model"),
    ("lr", 0.0, "lr"), ("hidden", [], "hidden"), ("beta", float("nan"), "beta"),
])
def test_out_of_range_values_are_refused_by_name(field, value, message):
    with pytest.raises(VaelabError, match=message):
        RunConfig(**{field: value}).validate()


def test_from_dict_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(VaelabError, match="unknown configuration key"):
        RunConfig.from_dict({"zdim": 3})
    with pytest.raises(VaelabError, match="z_dim"):
        RunConfig.from_dict({"z_dim": "three"})
    assert RunConfig.from_dict({"beta": 4}).beta == 4.0
