"""The one configuration of a training run.

Every field is a command-line flag (``z_dim`` is ``--z-dim``) and a key of a ``--config`` TOML file, one to
one; the resolved configuration is saved beside every checkpoint so a run can always be rebuilt. Each field
carries its own help text, flag group, allowed values (strings) and range (integers) in its metadata, so the
flags, the TOML keys, the checks and the help cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from dataclasses import dataclass, field

from vaelab.errors import VaelabError

# The --model choices, one per family of vaelab.families (its FAMILIES dict holds their classes).
MODELS = ("ae", "vae", "iwae", "cvae", "vamp", "vqvae", "beta-tcvae")
ARCHS = ("mlp", "conv", "resnet")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned", "logistic", "logistic-mixture")
# Likelihoods that are probabilities of 8-bit pixel values (Salimans et al. 2017's discretised logistic).
DISCRETISED_LIKELIHOODS = ("logistic", "logistic-mixture")
DEFAULT_COMPONENTS = 5  # PixelCNN++ uses 10 per pixel with a far larger decoder; 5 suffice for a VAE's blur
MAX_COMPONENTS = 256  # logistic mixture components: beyond any use, and each costs 1 + 2C decoder outputs a pixel
BINARIZE = ("none", "dynamic", "static")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "elu")
# `vaelab compare`: the spec NAME:VALUE sets one setting of a family: name -> (its --model, the field VALUE sets).
SPEC_PARAMETERS = {
    "beta-vae": ("vae", "beta"),
    "iwae": ("iwae", "k_train"),
    "vamp": ("vamp", "pseudo_inputs"),
    "vqvae": ("vqvae", "codebook_size"),
    "beta-tcvae": ("beta-tcvae", "beta"),
}
SPEC_HELP = "ae, vae, beta-vae:B, iwae[:K], cvae, vamp[:PSEUDO_INPUTS], vqvae[:CODEBOOK_SIZE], beta-tcvae[:B]"
# Settings that belong to one family (see RunConfig's "family" group): field -> the --model it applies to.
FAMILY_FIELDS = {
    "k_train": "iwae",
    "pseudo_inputs": "vamp",
    "codebook_size": "vqvae",
    "commitment": "vqvae",
    "codebook_ema": "vqvae",
    "code_dim": "vqvae",
    "prior_epochs": "vqvae",
}
# The flag groups of `vaelab train --help`, in the order they are shown.
GROUPS = ("data", "model", "objective", "family", "optimisation", "run")

# Widest layer (hidden width or z_dim). A 784 -> 65536 layer already holds 51M weights, 0.8 GB with its gradient
# and Adam's two moments; anything wider is a typo, and `--hidden 1000000000` would otherwise ask the allocator
# for terabytes (or crash it) instead of getting a clear error.
MAX_WIDTH = 65536
MAX_CHANNELS = 4096  # widest conv stage: a 4096 -> 4096 4x4 convolution alone holds 268M weights
# Widths of the conv and resnet stride-2 stages: 28x28 gets three (32, 64, 128; 3x3 maps), 64x64 all four.
CONV_CHANNELS = (32, 64, 128, 256)
MAX_LAYERS = 64  # hidden layers: far deeper than a plain MLP trains; a bound keeps a typo from building for ages
MAX_COUNT = 2**31 - 1  # epochs, batch size, warm-up: beyond any real run, and refuses 5000-digit integers
SEED_RANGE = (0, 2**32 - 1)  # numpy and torch both take 32-bit seeds
# Largest --image-size side: 4096x4096 RGB is 50 MB a uint8 image already; larger is a typo, not a data set.
MAX_IMAGE_SIDE = 4096


def parse_image_size(text: str) -> tuple[int, int] | None:
    """--image-size: '' -> None (keep the images' size), 'S' -> (S, S), 'HxW' -> (H, W), sides 1..MAX_IMAGE_SIDE."""
    if text == "":
        return None
    match = re.fullmatch(r"(\d{1,5})(?:x(\d{1,5}))?", text.strip().lower(), re.ASCII)
    if match:
        height = int(match[1])
        width = int(match[2] or height)
        if 1 <= min(height, width) and max(height, width) <= MAX_IMAGE_SIDE:
            return height, width
    raise VaelabError(
        f"image_size must be S or HxW with sides from 1 to {MAX_IMAGE_SIDE} (e.g. 64 or 48x64), got {_short(text)}"
    )


# How a command computes (vaelab.devices), not what a run is: flags of every computing command, never saved in
# config.json, so a run trained on one device resumes, evaluates and plots on another. Each epoch's row of
# metrics.jsonl records what was used.
DEVICES = "auto, cpu, cuda, cuda:N or mps"
PRECISIONS = ("fp32", "bf16", "fp16")


def _setting(
    default, help: str, group: str, choices: tuple[str, ...] | None = None, bounds: tuple[int, int] | None = None
):
    """A RunConfig field whose help text, flag group, allowed strings or integer bounds live beside its default."""
    metadata = {"help": help, "group": group, "choices": choices, "bounds": bounds}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class RunConfig:
    model: str = _setting(
        "vae",
        "ae: deterministic, squared-error loss; vae: the negative ELBO (a beta-VAE with --beta); iwae: the "
        "importance-weighted bound; cvae: conditioned on the label; vamp: VampPrior; vqvae: discrete codes; "
        "beta-tcvae: the KL split, total correlation weighted by --beta",
        "model",
        MODELS,
    )
    data: str = _setting(
        "mnist5k",
        "mnist5k, digits, shapes, mnist, fashion-mnist, a folder of images (one sub-folder per class, or flat), "
        "of IDX files or of CIFAR-10/100 binary batches, a CIFAR binary .tar.gz, an .npz or an .npy file",
        "data",
    )
    download: bool = _setting(False, "allow fetching mnist/fashion-mnist into --data-cache", "data")
    data_cache: str = _setting(
        "~/.cache/vaelab",
        "where downloaded IDX files and decoded images (image folders, CIFAR, shapes) are kept",
        "data",
    )
    image_size: str = _setting(
        "",
        "S or HxW: resize the images of a folder (shorter side to fit, then centre-crop) or draw shapes at that size; "
        "empty keeps a folder's one size",
        "data",
    )
    channels: int = _setting(
        0,
        "1 (grey) or 3 (RGB) for image folders and shapes; 0 = 3 when any image has colour, else 1",
        "data",
        bounds=(0, 3),
    )
    test_split: float = _setting(
        0.2, "fraction held out for testing (seeded, stratified by label) where the data has no test split", "data"
    )
    skip_bad_images: bool = _setting(
        False, "skip (and count) unreadable or truncated files of an image folder instead of stopping", "data"
    )
    arch: str = _setting(
        "mlp",
        "network: the lecture's MLP; conv (stride-2 convolutions, any image from 8x8); resnet (conv with a "
        "residual block at every stage, as VQ-VAE)",
        "model",
        ARCHS,
    )
    hidden: list[int] = _setting([400], "hidden layer widths, encoder order, comma-separated", "model")
    conv_channels: list[int] = _setting(
        list(CONV_CHANNELS),
        "conv/resnet: widths of the stride-2 stages, which halve the image until it is at most 4x4; "
        "an image needing more stages repeats the last width, fewer use the first ones",
        "model",
    )
    enc_activation: str = _setting(
        "leaky_relu", "encoder activation (the lecture's: LeakyReLU(0.2))", "model", ACTIVATIONS
    )
    dec_activation: str = _setting("relu", "decoder activation (the lecture's: ReLU)", "model", ACTIVATIONS)
    z_dim: int = _setting(20, "latent dimensions (vqvae: positions of the code grid)", "model", bounds=(1, MAX_WIDTH))
    beta: float = _setting(
        1.0,
        "weight of the KL term; beta > 1 is a beta-VAE; beta-tcvae: the weight of the total correlation",
        "objective",
    )
    likelihood: str = _setting(
        "bernoulli",
        "p(x|z): bernoulli (BCE, the lecture's), gaussian (fixed std), gaussian-learned, or for 8-bit images "
        "logistic or logistic-mixture (discretised, a probability of the 256 levels)",
        "objective",
        LIKELIHOODS,
    )
    mixture_components: int = _setting(
        DEFAULT_COMPONENTS, "components K of the logistic-mixture likelihood", "objective", bounds=(1, MAX_COMPONENTS)
    )
    gaussian_std: float = _setting(0.1, "fixed pixel std of the gaussian likelihood", "objective")
    k_train: int = _setting(5, "iwae: importance samples K of the training bound L_K", "family", bounds=(1, 5000))
    pseudo_inputs: int = _setting(
        500, "vamp: learned pseudo-inputs whose posteriors mix into the prior", "family", bounds=(1, 100000)
    )
    codebook_size: int = _setting(512, "vqvae: vectors in the codebook", "family", bounds=(2, MAX_WIDTH))
    commitment: float = _setting(0.25, "vqvae: weight of the commitment loss", "family")
    code_dim: int = _setting(
        8,
        "vqvae: numbers per code vector; the encoder gives z_dim positions of code_dim each",
        "family",
        bounds=(1, MAX_WIDTH),
    )
    codebook_ema: bool = _setting(
        False, "vqvae: update the codebook by exponential moving averages instead of its loss", "family"
    )
    prior_epochs: int = _setting(
        10,
        "vqvae: epochs of the autoregressive prior over codes, trained after the autoencoder",
        "family",
        bounds=(1, MAX_COUNT),
    )
    binarize: str = _setting(
        "none",
        "bernoulli targets: grey levels (none), redrawn each batch (dynamic) or drawn once (static)",
        "data",
        BINARIZE,
    )
    epochs: int = _setting(
        10, "passes over the training set, in all (also on --resume)", "optimisation", bounds=(1, MAX_COUNT)
    )
    batch_size: int = _setting(128, "images per step", "optimisation", bounds=(1, MAX_COUNT))
    lr: float = _setting(1e-3, "Adam's learning rate (the lecture's optimiser)", "optimisation")
    kl_warmup: int = _setting(
        0, "epochs over which beta rises linearly from 0; 0 = off", "objective", bounds=(0, MAX_COUNT)
    )
    free_bits: float = _setting(
        0.0, "nats per latent dimension below which the KL is not pushed down; 0 = off", "objective"
    )
    clip_grad: float = _setting(0.0, "max gradient norm; 0 = off", "optimisation")
    seed: int = _setting(0, "seed of the weights, batches and noise", "run", bounds=SEED_RANGE)
    tensorboard: str = _setting(
        "",
        "also write TensorBoard event files (every metric, sample and reconstruction "
        "grids per epoch) into this folder; needs pip install 'vaelab[tensorboard]'",
        "run",
    )

    def validate(self) -> RunConfig:
        """Raise VaelabError naming the first field that is out of range."""
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        _check_widths("hidden", self.hidden, MAX_WIDTH)
        _check_widths("conv_channels", self.conv_channels, MAX_CHANNELS)
        for name in ("beta", "lr", "free_bits", "clip_grad", "gaussian_std", "commitment"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise VaelabError(f"{name} must be a finite number >= 0, got {value}")
        if self.lr == 0 or self.gaussian_std == 0:
            raise VaelabError("lr and gaussian_std must be > 0")
        if self.binarize != "none" and self.likelihood in DISCRETISED_LIKELIHOODS:
            raise VaelabError(
                f"likelihood {self.likelihood} scores the 256 levels of 8-bit images, and binarize makes them "
                "0 or 1: use --binarize none, or --likelihood bernoulli for binarised images"
            )
        if self.channels not in (0, 1, 3):
            raise VaelabError(f"channels must be 0 (automatic), 1 or 3, got {_short(self.channels)}")
        if not (math.isfinite(self.test_split) and 0 < self.test_split < 1):
            raise VaelabError(f"test_split must be a fraction between 0 and 1 (exclusive), got {self.test_split}")
        parse_image_size(self.image_size)
        if self.binarize != "none" and self.likelihood != "bernoulli":
            raise VaelabError("binarize applies to the bernoulli likelihood only")
        if self.mixture_components != DEFAULT_COMPONENTS and self.likelihood != "logistic-mixture":
            raise VaelabError("mixture_components applies to the logistic-mixture likelihood only")
        self._check_family_fields()
        self._check_bound_objective()
        if self.model == "vqvae" and self.z_dim * self.code_dim > MAX_WIDTH:
            raise VaelabError(f"z_dim * code_dim (the vqvae decoder's input) must be at most {MAX_WIDTH}")
        return self

    def _check_bound_objective(self) -> None:
        """IWAE trains on the bound L_K, which has no KL term apart: beta, free bits and KL warm-up would be saved
        in config.json and silently do nothing."""
        if self.model != "iwae":
            return
        defaults = RunConfig()
        changed = [
            name for name in ("beta", "free_bits", "kl_warmup") if getattr(self, name) != getattr(defaults, name)
        ]
        if changed:
            settings = ", ".join(f"{name}={getattr(self, name):g}" for name in changed)
            raise VaelabError(
                f"--model iwae trains on the importance-weighted bound L_K, which has no separate KL term to weight, "
                f"floor or warm up: beta, free_bits and kl_warmup do not apply (got {settings})"
            )

    def _check_family_fields(self) -> None:
        """A family's own setting, changed from its default, is an error with any other --model: it would be
        saved in config.json and silently do nothing."""
        for f in dataclasses.fields(self):
            owner = FAMILY_FIELDS.get(f.name)
            if owner is not None and owner != self.model and getattr(self, f.name) != f.default:
                raise VaelabError(f"{f.name} applies to --model {owner} only (this run is --model {self.model})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """Build from a dict (a TOML file or a saved config.json); unknown keys are an error, not ignored."""
        if not isinstance(values, dict):
            raise VaelabError(f"a configuration must be a table of keys and values, got {_short(values)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise VaelabError(f"unknown configuration key(s): {_short(', '.join(map(str, unknown)))}")
        typed = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                typed[f.name] = _coerce(f.name, values[f.name], getattr(cls(), f.name))
        return cls(**typed)


def _short(value) -> str:
    """repr() cut to a readable length: a hostile value (a 4000-digit integer, a deep list) stays one short line."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = shortener.maxlong = 60
    return shortener.repr(value)


def _check_field(f: dataclasses.Field, value) -> None:
    if f.metadata["choices"] is not None and value not in f.metadata["choices"]:
        raise VaelabError(f"{f.name} must be one of {', '.join(f.metadata['choices'])}; got {_short(value)}")
    if f.metadata["bounds"] is not None:
        _check_int(f.name, value, f.metadata["bounds"])


def _check_widths(name: str, widths: list[int], high: int) -> None:
    if not widths or len(widths) > MAX_LAYERS:
        raise VaelabError(f"{name} must be a list of 1 to {MAX_LAYERS} positive widths, got {_short(widths)}")
    for width in widths:
        _check_int(f"each {name} width", width, (1, high))


def _check_int(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise VaelabError(f"{name} must be {kind} and at most {high}, got {_short(value)}")


_KINDS = {bool: "true or false", int: "an integer", float: "a number", list: "a list of integers", str: "a string"}


def _coerce(name: str, value, default):
    """Check a config-file value against the field's type; TOML ints are accepted for float fields."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            value = float(value) if ok else value
        except OverflowError:  # an integer beyond any float, e.g. 5000 digits
            value = math.inf
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise VaelabError(f"configuration key {name!r} must be {_KINDS[type(default)]}, got {_short(value)}")
    return value
