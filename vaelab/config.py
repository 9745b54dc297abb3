"""The one configuration of a training run.

Every field is a command-line flag (``z_dim`` is ``--z-dim``) and a key of a ``--config`` TOML file, one to
one; the resolved configuration is saved beside every checkpoint so a run can always be rebuilt.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from vaelab.errors import VaelabError

MODELS = ("ae", "vae")
ARCHS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned")
BINARIZE = ("none", "dynamic", "static")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "elu")


@dataclass
class RunConfig:
    model: str = "vae"  # "ae" (deterministic, squared-error loss) or "vae" (negative ELBO)
    data: str = "mnist5k"  # bundled name, IDX directory, or .npz file (see vaelab.data)
    download: bool = False  # allow fetching "mnist"/"fashion-mnist" into data_cache
    data_cache: str = "~/.cache/vaelab"  # where downloaded IDX files are kept
    arch: str = "mlp"  # "mlp" (the lecture's) or "conv" (28x28 and 32x32 images)
    hidden: list[int] = field(default_factory=lambda: [400])  # hidden widths, encoder order
    enc_activation: str = "leaky_relu"  # the lecture's encoder uses LeakyReLU(0.2)
    dec_activation: str = "relu"  # the lecture's decoder uses ReLU
    z_dim: int = 20
    beta: float = 1.0  # weight of the KL term; beta > 1 is a beta-VAE
    likelihood: str = "bernoulli"  # p(x|z): "bernoulli" (BCE, the lecture's), "gaussian", "gaussian-learned"
    gaussian_std: float = 0.1  # fixed pixel std for likelihood="gaussian"
    binarize: str = "none"  # "none" (grey levels as BCE targets), "dynamic", "static"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3  # Adam, as in the lecture
    kl_warmup: int = 0  # epochs over which beta rises linearly from 0 (0 = off)
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not pushed down
    clip_grad: float = 0.0  # max gradient norm (0 = off)
    seed: int = 0

    def validate(self) -> "RunConfig":
        """Raise VaelabError naming the first field that is out of range."""
        _choice("model", self.model, MODELS)
        _choice("arch", self.arch, ARCHS)
        _choice("likelihood", self.likelihood, LIKELIHOODS)
        _choice("binarize", self.binarize, BINARIZE)
        _choice("enc_activation", self.enc_activation, ACTIVATIONS)
        _choice("dec_activation", self.dec_activation, ACTIVATIONS)
        if self.z_dim <= 0:
            raise VaelabError(f"z_dim must be a positive integer, got {self.z_dim}")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise VaelabError(f"hidden must be a list of positive widths, got {self.hidden}")
        for name in ("beta", "lr", "free_bits", "clip_grad", "gaussian_std"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise VaelabError(f"{name} must be a finite number >= 0, got {value}")
        if self.lr == 0 or self.gaussian_std == 0:
            raise VaelabError("lr and gaussian_std must be > 0")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise VaelabError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise VaelabError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        if self.kl_warmup < 0:
            raise VaelabError(f"kl_warmup must be >= 0, got {self.kl_warmup}")
        if self.binarize != "none" and self.likelihood != "bernoulli":
            raise VaelabError("binarize applies to the bernoulli likelihood only")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a dict (a TOML file or a saved config.json); unknown keys are an error, not ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise VaelabError(f"unknown configuration key(s): {', '.join(unknown)}")
        typed = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                typed[f.name] = _coerce(f.name, values[f.name], getattr(cls(), f.name))
        return cls(**typed)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise VaelabError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _coerce(name: str, value, default):
    """Check a config-file value against the field's type; TOML ints are accepted for float fields."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise VaelabError(f"configuration key {name!r} must be of type {type(default).__name__}, got {value!r}")
    return value
