"""Building, sampling and reconstructing a model of any family (vaelab.families), and the check a discretised
likelihood makes of the data.
"""

from __future__ import annotations

import torch

from vaelab.config import DISCRETISED_LIKELIHOODS, RunConfig
from vaelab.devices import model_device
from vaelab.errors import VaelabError
from vaelab.families import FAMILIES
from vaelab.families.ae import AutoEncoder
from vaelab.families.vae import VAE

__all__ = [
    "VAE",
    "AutoEncoder",
    "balanced_labels",
    "build_model",
    "check_labels",
    "check_likelihood_data",
    "decode_prior",
    "label_column",
    "reconstruct",
    "sample_prior",
]


def not_8bit_reason(max_value: int, x: torch.Tensor) -> str | None:
    """Why images are not 8-bit levels k/255 (None when they are): the data's largest raw value `max_value` must be
    255, and a sample of the float images x must lie on the levels, which catches grey levels stored as floats."""
    if max_value != 255:
        return f"this data's pixels run 0..{max_value}, not 0..255"
    sample = x[:1000] * 255
    if (sample - sample.round()).abs().max() > 1e-3:
        return "the images are not multiples of 1/255 (grey levels stored as floats?)"
    return None


def check_likelihood_data(config: RunConfig, max_value: int, x_test: torch.Tensor) -> None:
    """Refuse a discretised logistic likelihood on data that is not 8-bit: it scores the levels k/255 exactly."""
    if config.model == "ae" or config.likelihood not in DISCRETISED_LIKELIHOODS:
        return
    why = not_8bit_reason(max_value, x_test)
    if why is not None:
        raise VaelabError(
            f"--likelihood {config.likelihood} is a probability of 8-bit pixel values (256 levels), but {why}: "
            "use --likelihood bernoulli or gaussian, or 8-bit images (uint8 0..255)"
        )


def build_model(config: RunConfig, image_shape: tuple[int, int, int], classes: int | None = None) -> AutoEncoder:
    """The model a configuration describes, for images of shape (C, H, W); a conditional family also needs the
    number of classes of its labels (unconditional ones ignore it)."""
    family = FAMILIES[config.model]
    if not family.conditional:
        return family(tuple(image_shape), config)
    return family(tuple(image_shape), config, classes=classes)


def check_labels(model: AutoEncoder, labels: torch.Tensor | None, what: str = "the data") -> None:
    """Refuse labels a conditional model cannot take: none at all, or classes beyond those it was trained on."""
    if not model.conditional:
        return
    if labels is None:
        raise VaelabError(f"the {model.kind} model is conditional and {what} has no labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= model.classes):
        raise VaelabError(
            f"the {model.kind} model knows classes 0..{model.classes - 1}, but {what} has labels "
            f"{int(labels.min())}..{int(labels.max())}"
        )


def label_column(model: AutoEncoder, n: int, label: int | None) -> torch.Tensor | None:
    """The labels (n,) to decode n prior draws with: `label` for all of them (a conditional model needs one, an
    unconditional one takes none), on the host."""
    if not model.conditional:
        if label is not None:
            raise VaelabError(f"the {model.kind} model is not conditional: it takes no --label")
        return None
    if label is None:
        raise VaelabError(
            f"the {model.kind} model is conditional: say which class to sample (--label 0..{model.classes - 1})"
        )
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < model.classes:
        raise VaelabError(f"--label must be a class 0..{model.classes - 1} of this {model.kind} model, got {label!r}")
    return torch.full((n,), label, dtype=torch.long, device="cpu")


def balanced_labels(model: AutoEncoder, n: int) -> torch.Tensor | None:
    """0, 1, ..., K-1, 0, 1, ... (n,) for a conditional model's samples (every class equally often), else None."""
    return torch.arange(n, device="cpu") % model.classes if model.conditional else None


@torch.no_grad()
def sample_prior(model: AutoEncoder, n: int, seed: int = 0, label: int | None = None) -> torch.Tensor:
    """Decode n draws z ~ p(z) (model.prior): the generative model; for the AE, the lecture's 'random latent
    points' (draws of N(0, I)). A conditional family decodes them all as class `label` (required there, refused
    elsewhere: VaelabError).

    The draws come from the host's generator, so every device decodes the same z; the images come back to the host.
    """
    return decode_prior(model, n, seed, label_column(model, n, label))


@torch.no_grad()
def decode_prior(model: AutoEncoder, n: int, seed: int, labels: torch.Tensor | None) -> torch.Tensor:
    """sample_prior with one label per draw (n,) for a conditional model (None for an unconditional one)."""
    z = model.prior.sample(n, torch.Generator().manual_seed(seed), labels)  # (n, Z), on the host
    device = model_device(model)
    labels = None if labels is None else labels.to(device)
    return model.decode_mean(z.to(device), labels).cpu()  # (n, C, H, W)


@torch.no_grad()
def reconstruct(model: AutoEncoder, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """d(mu(x)): the decoded posterior mean (the AE's code), the deterministic reconstruction, on the host."""
    device = model_device(model)
    labels = None if labels is None else labels.to(device)
    mu, _ = model.encode(x.to(device), labels)
    return model.decode_mean(mu, labels).cpu()  # (B, C, H, W)
