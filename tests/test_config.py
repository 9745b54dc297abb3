"""RunConfig: the lecture's defaults, one-to-one mapping with flags, and validation."""

import dataclasses

import pytest

from vaelab.cli import build_parser
from vaelab.config import GROUPS, MAX_LAYERS, MAX_WIDTH, RunConfig
from vaelab.errors import VaelabError


def test_defaults_are_the_lectures():
    c = RunConfig()
    assert (c.model, c.z_dim, c.hidden, c.beta, c.lr, c.batch_size, c.likelihood, c.binarize) == (
        "vae",
        20,
        [400],
        1.0,
        1e-3,
        128,
        "bernoulli",
        "none",
    )


def test_every_field_is_a_train_flag():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {opt for action in train._actions for opt in action.option_strings}
    for f in dataclasses.fields(RunConfig):
        assert "--" + f.name.replace("_", "-") in flags


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("z_dim", 0, "z_dim"),
        ("beta", -1.0, "beta"),
        ("batch_size", 0, "batch_size"),
        ("model", "gan", "model"),
        ("lr", 0.0, "lr"),
        ("hidden", [], "hidden"),
        ("beta", float("nan"), "beta"),
    ],
)
def test_out_of_range_values_are_refused_by_name(field, value, message):
    with pytest.raises(VaelabError, match=message):
        RunConfig(**{field: value}).validate()


def test_from_dict_refuses_unknown_keys_and_wrong_types():
    with pytest.raises(VaelabError, match="unknown configuration key"):
        RunConfig.from_dict({"zdim": 3})
    with pytest.raises(VaelabError, match="z_dim"):
        RunConfig.from_dict({"z_dim": "three"})
    assert RunConfig.from_dict({"beta": 4}).beta == 4.0


# One wrong value of each kind; a field refuses every one that is not of its own type.
WRONG_KINDS = {
    "string": "400",
    "integer": 3,
    "number": 1.5,
    "boolean": True,
    "list": [16],
    "list of strings": ["a"],
    "table": {"a": 1},
    "nested list": [[16]],
}
ACCEPTS = {bool: {"boolean"}, int: {"integer"}, float: {"integer", "number"}, list: {"list"}, str: {"string"}}


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(RunConfig)])
def test_from_dict_refuses_values_of_the_wrong_kind_for_every_field(name):
    kind = type(getattr(RunConfig(), name))
    for label, value in WRONG_KINDS.items():
        if label in ACCEPTS[kind]:
            continue
        with pytest.raises(VaelabError, match=f"'{name}' must be"):
            RunConfig.from_dict({name: value})


def test_from_dict_refuses_a_list_where_the_table_of_keys_belongs():
    with pytest.raises(VaelabError, match="table of keys"):
        RunConfig.from_dict([["z_dim", 3]])


@pytest.mark.parametrize(
    "name",
    [f.name for f in dataclasses.fields(RunConfig) if type(getattr(RunConfig(), f.name)) in (int, float)] + ["hidden"],
)
def test_huge_numbers_are_refused_with_one_short_line(name):
    huge = 10**4000  # 4001 digits: below Python's 4300-digit parsing limit, so TOML and JSON hand it over
    value = [huge] if name == "hidden" else huge
    with pytest.raises(VaelabError) as caught:
        RunConfig.from_dict({name: value}).validate()
    message = str(caught.value)
    assert name in message and len(message) < 200


def test_layer_widths_are_bounded_by_max_width():
    assert RunConfig(hidden=[MAX_WIDTH], z_dim=MAX_WIDTH).validate()
    with pytest.raises(VaelabError, match=f"hidden width must be a positive integer and at most {MAX_WIDTH}"):
        RunConfig(hidden=[16, 10**9]).validate()
    with pytest.raises(VaelabError, match=f"z_dim must be a positive integer and at most {MAX_WIDTH}"):
        RunConfig(z_dim=MAX_WIDTH + 1).validate()
    with pytest.raises(VaelabError, match="hidden must be a list of 1 to"):
        RunConfig(hidden=[8] * (MAX_LAYERS + 1)).validate()


def test_every_field_carries_its_help_group_and_allowed_values():
    for f in dataclasses.fields(RunConfig):
        assert f.metadata["help"] and f.metadata["group"] in GROUPS, f.name
        if isinstance(getattr(RunConfig(), f.name), str) and f.name not in (
            "data",
            "data_cache",
            "tensorboard",
            "image_size",
        ):
            assert getattr(RunConfig(), f.name) in f.metadata["choices"], f.name


@pytest.mark.parametrize(
    "field,value", [("arch", "rnn"), ("binarize", "yes"), ("enc_activation", "gelu"), ("likelihood", "poisson")]
)
def test_strings_outside_the_fields_choices_are_refused_naming_them(field, value):
    allowed = next(f for f in dataclasses.fields(RunConfig) if f.name == field).metadata["choices"]
    with pytest.raises(VaelabError, match=f"{field} must be one of {', '.join(allowed)}"):
        RunConfig(**{field: value}).validate()
