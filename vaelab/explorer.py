"""The live latent explorer: an HTML fragment that decodes latent points in the browser as the pointer moves.

The decoder's layers travel inside the page as base64 float16 (little-endian) in a JSON blob, and
``explorer.js`` widens them exactly and evaluates them in float64, so the page needs no server and no external
script. The map shows the test images' latent means (posterior means; the AutoEncoder's codes) coloured by
label: the latent itself when z_dim == 2, otherwise the plane through the codes' mean spanned by their two
principal directions (vaelab.pca, the figures' plane too), where the plane point (a, b) stands for
z = mean + a*u1 + b*u2 and one slider per dimension shows and sets the full z.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from vaelab.atomic import atomic_write_bytes
from vaelab.data import ImageData, check_matches, training_targets
from vaelab.devices import model_device
from vaelab.errors import VaelabError
from vaelab.models import check_labels
from vaelab.nets import ResBlock
from vaelab.pca import principal_plane
from vaelab.plots import CLASS_COLOURS
from vaelab.priors import StandardNormal
from vaelab.runs import Run

ENCODE_BATCH = 1000  # test images encoded at once; bounds memory on MNIST-sized test sets
PLANE_SEED = 0  # which test points are drawn when there are more than max_points
VIEW_PADDING = 0.08  # fraction of the codes' extent left free around them on the map
PRIOR_RADII = (1.0, 2.0)  # circles of the prior N(0, I) drawn on a VAE's map (1 and 2 standard deviations)
# A VAE's sliders always reach its prior's marginal quantiles at Phi(-3) and Phi(3): +-3 for N(0, I).
SLIDER_PRIOR_LEVELS = (0.0013498980316301, 0.9986501019683699)
# The largest decoder a page carries, in bytes of float16 weights (base64 makes it a third larger): a 40 MiB
# page still opens in a few seconds; the default conv decoder at 64x64 RGB is 4.5 MiB, the lecture's MLP 1.3 MiB.
MAX_DECODER_BYTES = 40 * 2**20
PRIOR_WALK = 32  # code grids a VQ-VAE's page carries, sampled from its code prior, for "walk the prior"
PRIOR_WALK_SEED = 0


class DecoderNotShowable(VaelabError):
    """This run's decoder cannot be evaluated in a page (too large, a layer the page does not know, ...).

    The report catches it and leaves that run's explorer out with the reason; `vaelab explore` reports it.
    """


def _halves_b64(t: torch.Tensor, what: str) -> str:
    """A tensor as base64 of its IEEE 754 float16 values, little-endian, in row-major (C) order.

    float16 halves the page against float32: its 11-bit significand moves a decoded pixel by far less than one
    grey level (tests/test_explorer.py checks 1/255). Values beyond float16's range (65504) are refused.
    """
    half = t.detach().cpu().contiguous().to(torch.float16)
    if not torch.isfinite(half).all():
        raise DecoderNotShowable(
            f"the explorer stores decoder weights as float16, and {what} has values beyond its range "
            "(|w| > 65504) or not finite: this decoder cannot be shown in the browser"
        )
    return base64.b64encode(half.numpy().astype("<f2").tobytes()).decode()


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


def _weights(module: nn.Module, name: str) -> dict:
    """A layer's weight, in its PyTorch layout, and its bias (zeros where it has none) as float16 base64."""
    bias = module.bias if module.bias is not None else torch.zeros(module.weight.shape[_OUT_AXIS[type(module)]])
    return {
        "weight": _halves_b64(module.weight, f"layer {name}'s weight"),
        "bias": _halves_b64(bias, f"layer {name}'s bias"),
    }


# The axis of the weight that counts output channels: Linear (out, in), Conv2d (C_out, C_in, kH, kW),
# ConvTranspose2d (C_in, C_out, kH, kW).
_OUT_AXIS = {nn.Linear: 0, nn.Conv2d: 0, nn.ConvTranspose2d: 1}


def _export_conv(module: nn.Conv2d | nn.ConvTranspose2d, name: str) -> dict:
    kind = "conv_transpose2d" if isinstance(module, nn.ConvTranspose2d) else "conv2d"
    if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise DecoderNotShowable(
            f"the explorer evaluates {type(module).__name__} with groups=1 and numeric zero padding only"
        )
    layer = {
        "type": kind,
        "in": module.in_channels,
        "out": module.out_channels,
        "kernel": _pair(module.kernel_size),
        "stride": _pair(module.stride),
        "padding": _pair(module.padding),
        "dilation": _pair(module.dilation),
        **_weights(module, name),
    }
    if kind == "conv_transpose2d":
        layer["output_padding"] = _pair(module.output_padding)
    return layer


_EXPORTERS = {
    nn.Linear: lambda m, name: {"type": "linear", "in": m.in_features, "out": m.out_features, **_weights(m, name)},
    nn.Conv2d: _export_conv,
    nn.ConvTranspose2d: _export_conv,
    nn.ReLU: lambda m, name: {"type": "relu"},
    nn.LeakyReLU: lambda m, name: {"type": "leaky_relu", "slope": m.negative_slope},
    nn.Tanh: lambda m, name: {"type": "tanh"},
    nn.ELU: lambda m, name: {"type": "elu", "alpha": m.alpha},
    nn.Unflatten: lambda m, name: {"type": "unflatten", "shape": list(m.unflattened_size)},
    # x + body(x), body evaluated like a decoder of its own
    ResBlock: lambda m, name: {"type": "residual", "layers": _export_layers(m.body, f"{name}.body.")},
}


def _export_layers(sequence: nn.Sequential, prefix: str = "") -> list[dict]:
    layers = []
    for index, module in enumerate(sequence):
        exporter = _EXPORTERS.get(type(module))
        if exporter is None:
            known = ", ".join(t.__name__ for t in _EXPORTERS)
            raise DecoderNotShowable(
                f"the explorer cannot evaluate decoder layer {type(module).__name__} in the browser (it knows {known})"
            )
        layers.append(exporter(module, f"{prefix}{index}"))
    return layers


def export_decoder(decoder: nn.Module) -> list[dict]:
    """The decoder's nn.Sequential as a list of JSON layers explorer.js evaluates; the logits come out last.

    Linear, Conv2d and ConvTranspose2d carry their weights in PyTorch's layouts (see _OUT_AXIS), a ResBlock its
    body as a nested list; anything else vaelab's nets do not build is refused rather than guessed.
    """
    if not isinstance(decoder, nn.Sequential):
        raise DecoderNotShowable(f"the explorer needs an nn.Sequential decoder, got {type(decoder).__name__}")
    size = decoder_bytes(decoder)
    if size > MAX_DECODER_BYTES:
        raise DecoderNotShowable(
            f"the decoder holds {size / 2**20:.1f} MiB of float16 weights, more than the explorer's limit of "
            f"{MAX_DECODER_BYTES / 2**20:.0f} MiB a page (the page carries every weight and evaluates it on each "
            "pointer move): train a smaller decoder (--hidden, --conv-channels) to explore it"
        )
    return _export_layers(decoder)


def decoder_bytes(decoder: nn.Module) -> int:
    """Bytes of the decoder's weights and biases as float16 (before base64, which adds a third)."""
    return 2 * sum(p.numel() for p in decoder.parameters())


@torch.no_grad()
def _check_decodes_images(model: nn.Module) -> None:
    """The page shows sigmoid(decoder(z)) as the image: refuse a decoder whose output is not one value a pixel."""
    device = model_device(model)
    label = torch.zeros(1, dtype=torch.long, device=device) if model.conditional else None
    out_shape = tuple(model.decode(torch.zeros(1, model.z_dim, device=device), label).shape[1:])
    if out_shape != tuple(model.image_shape):
        raise DecoderNotShowable(
            f"the explorer draws sigmoid(decoder(z)) as the image, one logit a pixel, but this decoder gives "
            f"{out_shape} for images {tuple(model.image_shape)} (its likelihood has several parameters a pixel)"
        )


@torch.no_grad()
def latent_codes(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The latent means mu(x) (the AutoEncoder's codes) of images x, in batches; a conditional model encodes each
    image with its label.  # (N, Z)"""
    device = model_device(model)
    return torch.cat(
        [
            model.encode(x[i : i + ENCODE_BATCH].to(device), _batch(labels, i, device))[0].cpu()
            for i in range(0, len(x), ENCODE_BATCH)
        ]
    )


def _batch(labels: torch.Tensor | None, start: int, device: torch.device) -> torch.Tensor | None:
    return None if labels is None else labels[start : start + ENCODE_BATCH].to(device)


def _classes(model: nn.Module, data: ImageData) -> dict | None:
    """A conditional model's class selector: the number of classes its decoder takes (one-hot after z) and their
    names; None for an unconditional model."""
    if not model.conditional:
        return None
    names = data.label_names or [str(k) for k in range(model.classes)]
    return {"count": model.classes, "names": names[: model.classes]}


def latent_plane(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """(mean (Z,), basis (2, Z), fraction of the codes' total variance along each plane axis).

    z_dim 2: the latent itself (mean 0, basis I). z_dim > 2: vaelab.pca.principal_plane, the plane the figures'
    PCA scatter shows too (same axes, same signs). z_dim 1: the one axis, and a second basis vector of zeros.
    """
    codes = codes.to(torch.float64)
    n, z_dim = codes.shape
    if z_dim > 2:
        plane = principal_plane(codes.numpy())
        return torch.from_numpy(plane.mean), torch.from_numpy(plane.axes), plane.variance_shares.tolist()
    centred = codes - codes.mean(0)  # (N, Z)
    variances = (centred**2).sum(0) / max(n - 1, 1)  # (Z,)
    total = float(variances.sum())
    shares = (variances / total).tolist() if total > 0 else [0.0] * z_dim
    basis = torch.eye(2, z_dim, dtype=torch.float64, device="cpu")  # (2, Z); a zero second row when Z == 1
    return torch.zeros(z_dim, dtype=torch.float64, device="cpu"), basis, (shares + [0.0])[:2]


def _view(points: torch.Tensor, prior_centre: list[float] | None) -> list[float]:
    """[a_min, a_max, b_min, b_max] of a square window holding all points (and the prior's outer circle)."""
    lo, hi = points.min(0).values, points.max(0).values  # (2,)
    if prior_centre is not None:
        centre = torch.tensor(prior_centre, dtype=points.dtype, device=points.device)
        lo, hi = torch.minimum(lo, centre - PRIOR_RADII[-1]), torch.maximum(hi, centre + PRIOR_RADII[-1])
    half = float((hi - lo).max()) / 2 * (1 + 2 * VIEW_PADDING) or 1.0  # equal scales keep circles round
    mid = (lo + hi) / 2
    return [float(mid[0]) - half, float(mid[0]) + half, float(mid[1]) - half, float(mid[1]) + half]


def _slider_ranges(codes: torch.Tensor, prior_span: torch.Tensor | None) -> list[list[float]]:
    """Per dimension, the codes' range padded, widened to prior_span (2, Z) (the prior's low and high marginal
    quantiles) when the model has a prior."""
    lo, hi = codes.min(0).values, codes.max(0).values  # (Z,)
    pad = (hi - lo) * VIEW_PADDING
    lo, hi = lo - pad, hi + pad
    if prior_span is not None:
        span = prior_span.to(codes.dtype)
        lo, hi = torch.minimum(lo, span[0]), torch.maximum(hi, span[1])
    return [[float(a), float(b)] for a, b in zip(lo, hi)]


def explorer_payload(run: Run, data: ImageData, max_points: int = 1500) -> dict:
    """Everything explorer.js needs, as JSON-ready values: decoder layers, plane, points, view, sliders."""
    model = run.model
    check_matches(data, model.image_shape, f"the model in {run.path}")
    if max_points <= 0:
        raise VaelabError(f"max_points must be a positive integer, got {max_points}")
    channels = model.image_shape[0]
    if channels not in (1, 3):
        raise DecoderNotShowable(
            f"the explorer draws grey (1-channel) or RGB (3-channel) images, not {channels} channels"
        )
    decoder = export_decoder(model.decoder)  # first: a decoder the page cannot hold fails before any encoding
    _check_decodes_images(model)
    _, x_test = training_targets(run.config, data)  # what the encoder was trained to take
    check_labels(model, data.y_test, f"the data {data.name}")
    codes = latent_codes(model, x_test, data.y_test if model.conditional else None).to(torch.float64)  # (N, Z)
    mean, basis, explained = latent_plane(codes)
    keep = torch.arange(len(codes), device="cpu")
    if len(codes) > max_points:
        order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(PLANE_SEED), device="cpu")
        keep = order[:max_points].sort().values
    points = (codes[keep] - mean) @ basis.T  # (P, 2) plane coordinates
    is_vae = model.has_bound  # a Gaussian posterior and a prior
    # The prior N(0, I) seen in plane coordinates is N(-basis @ mean, I): the basis rows are orthonormal. Other
    # priors (the VampPrior's mixture) have no circles to draw.
    prior_centre = (-(basis @ mean)).tolist() if is_vae and isinstance(model.prior, StandardNormal) else None
    prior_span = model.prior.marginal_quantiles(torch.tensor(SLIDER_PRIOR_LEVELS, device="cpu")) if is_vae else None
    z_dim = model.z_dim
    if z_dim <= 2:
        axes = ["z1", "z2" if z_dim == 2 else "(unused: z_dim is 1)"]
    else:
        axes = [f"PC{i + 1} of the codes ({100 * f:.0f}% of variance)" for i, f in enumerate(explained)]
    labels = data.y_test[keep].tolist() if data.y_test is not None else None
    return {
        "title": (
            f"Latent explorer: {run.path.name} ({model.kind.upper()}, z_dim={z_dim}, epoch {run.epoch}, {data.name})"
        ),
        "kind": model.kind,
        "z_dim": z_dim,
        "image_shape": list(model.image_shape),
        "decoder": decoder,
        "plane": {"mean": mean.tolist(), "basis": basis.tolist(), "axes": axes, "is_latent": z_dim == 2},
        "points": {"a": _rounded(points[:, 0]), "b": _rounded(points[:, 1]), "label": labels},
        "palette": list(CLASS_COLOURS),  # the static figures' colour-blind-safe colours, so the two agree
        "codes_name": "posterior means mu(x)"
        if is_vae
        else ("quantised codes z_q(x)" if model.discrete_codes else "codes e(x)"),
        "prior_centre": prior_centre,
        "prior_radii": list(PRIOR_RADII),
        "view": _view(points, prior_centre),
        "sliders": _slider_ranges(codes, prior_span) if z_dim != 2 and not model.discrete_codes else None,
        "start": codes[0].tolist(),
        "classes": _classes(model, data),
        "start_class": int(data.y_test[0]) if model.conditional else None,
        "code_grid": code_grid_payload(model) if model.discrete_codes else None,
    }


@torch.no_grad()
def code_grid_payload(model: nn.Module) -> dict:
    """A VQ-VAE's codebook (K, D) as float16 base64, its grid's shape, and PRIOR_WALK code grids drawn from its
    prior (seed PRIOR_WALK_SEED) for the page's "walk the prior" button."""
    vectors = model.codebook.vectors
    walk = model.prior.sample_codes(PRIOR_WALK, torch.Generator().manual_seed(PRIOR_WALK_SEED))
    return {
        "positions": model.positions,
        "dim": model.code_dim,
        "size": len(vectors),
        "vectors": _halves_b64(vectors, "the codebook"),
        "prior_walk": walk.tolist(),
        "prior_learned": model.prior.is_learned(),
    }


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(v, 4) for v in values.tolist()]  # map positions only: 4 decimals are far below a pixel


def _json_for_script(value) -> str:
    """JSON that cannot end its <script> element early: every '<' is written as its \\u003c escape."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def explorer_html(run: Run, data: ImageData, max_points: int = 1500) -> str:
    """A self-contained HTML fragment (one <div>, inline style and scripts) holding a run's latent explorer.

    Several fragments can sit in one page: each script mounts the <div> it sits in, and the shared code
    defines itself once. In the page, ``window.vaelabExplorers[id]`` exposes the explorer for tests.
    """
    payload = _json_for_script(explorer_payload(run, data, max_points))
    element_id = "vaelab-explorer-" + hashlib.sha256(payload.encode()).hexdigest()[:12]
    script = resources.files("vaelab").joinpath("explorer.js").read_text(encoding="utf-8")
    return (
        f'<div class="vaelab-explorer" id="{element_id}">\n'
        f"<style>{STYLE}</style>\n"
        f'<script type="application/json" class="vx-data">{payload}</script>\n'
        f"<script>{script}</script>\n"
        "<script>window.vaelabExplorer.mount(document.currentScript.parentNode);</script>\n"
        "<noscript>The latent explorer needs JavaScript.</noscript>\n"
        "</div>\n"
    )


def write_explorer_page(run: Run, data: ImageData, path: str | Path) -> None:
    """A standalone HTML page around explorer_html(run, data), written atomically."""
    title = html.escape(f"vaelab explorer: {run.path.name}")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n"
        "<style>body { margin: 16px; font-family: system-ui, 'DejaVu Sans', sans-serif; }</style>\n"
        f"</head>\n<body>\n{explorer_html(run, data)}</body>\n</html>\n"
    )
    atomic_write_bytes(Path(path), page.encode("utf-8"))


# Scoped to .vaelab-explorer so the fragment styles nothing else in a page it is pasted into.
STYLE = """
.vaelab-explorer { font: 13px/1.4 system-ui, 'DejaVu Sans', sans-serif; color: #222; margin: 12px 0;
  padding: 10px 12px; border: 1px solid #ccc; border-radius: 6px; max-width: 820px; background: #fff; }
.vaelab-explorer .vx-title { font-weight: 600; font-size: 15px; margin-bottom: 2px; }
.vaelab-explorer .vx-help { color: #555; margin-bottom: 8px; }
.vaelab-explorer .vx-body { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.vaelab-explorer .vx-side { max-width: 100%; }
.vaelab-explorer canvas { display: block; }
.vaelab-explorer .vx-map { cursor: crosshair; touch-action: none; }
.vaelab-explorer .vx-image { image-rendering: pixelated; border: 1px solid #999; }
.vaelab-explorer .vx-caption { color: #555; margin: 4px 0 2px; }
.vaelab-explorer .vx-z { font-family: 'DejaVu Sans Mono', monospace; font-size: 12px; white-space: pre; }
.vaelab-explorer .vx-legend { margin-top: 6px; white-space: pre-wrap; }
.vaelab-explorer .vx-legend span { display: inline-block; margin-right: 10px; }
.vaelab-explorer .vx-legend i { display: inline-block; width: 10px; height: 10px; border-radius: 5px;
  margin-right: 3px; vertical-align: -1px; }
.vaelab-explorer .vx-sliders { display: grid; grid-template-columns: auto 150px 4.5em; gap: 0 8px;
  justify-content: start; align-items: center; font-family: 'DejaVu Sans Mono', monospace; font-size: 12px;
  margin-top: 6px; }
.vaelab-explorer .vx-sliders input { width: 150px; margin: 1px 0; }
.vaelab-explorer .vx-codes { display: grid; grid-template-columns: repeat(8, 4.2em); gap: 2px; margin-top: 4px; }
.vaelab-explorer .vx-codes input { width: 4em; font-family: 'DejaVu Sans Mono', monospace; font-size: 12px; }
.vaelab-explorer .vx-walk { margin-top: 6px; }
"""
