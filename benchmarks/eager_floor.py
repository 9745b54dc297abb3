"""How fast can the lecture's VAE step go on this machine? vaelab's step beside two leaner ways of writing it.

- vaelab: the library's step (modules, per-image loss parts, bounded log-variance, torch.optim's fused Adam).
- lean autograd: the same maths as ten lines of F.linear with a summed BCE; autograd and the same fused Adam.
- hand-written: no autograd graph and no optimizer wrapper: the backward pass written out (checked against
  autograd below) and Adam's fused kernel called directly. This is not how vaelab should be written (it ties
  the code to one architecture and one likelihood); it measures what eager PyTorch's machinery costs here.

Each is timed in rotating rounds of 40 steps beside the step's own GEMMs run back to back (the ceiling), and the
best round of each is kept, because these machines' speed drifts within a minute:

    python benchmarks/eager_floor.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from step_breakdown import best_of_rounds, parse_args, vaelab_step
from vaelab import RunConfig, build_model, load_data
from vaelab.train import make_optimizer

BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which vaelab's optimizer uses


def lean_loss(linears: list[nn.Linear], x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The lecture's loss, (summed BCE + KL) / B, written flat: no modules, no per-image terms.  # ()"""
    (w1, b1), (w2, b2), (w3, b3), (w4, b4) = [(m.weight, m.bias) for m in linears]
    mu, logvar = F.linear(F.leaky_relu(F.linear(x, w1, b1), 0.2), w2, b2).chunk(2, 1)
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = F.linear(F.relu(F.linear(z, w3, b3)), w4, b4)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    return (bce - 0.5 * torch.sum(1 + logvar - mu * mu - logvar.exp())) / len(x)


def _layer_grads(d: torch.Tensor, inputs: torch.Tensor, grad_w: torch.Tensor, grad_b: torch.Tensor) -> None:
    """A Linear layer's gradients from d = dL/d(output): dL/dW = d^T inputs, dL/db = d summed over the batch."""
    torch.mm(d.t(), inputs, out=grad_w)
    torch.sum(d, 0, out=grad_b)


class HandWrittenStep:
    """lean_loss's gradient written out, then one call of the fused Adam kernel torch.optim.Adam uses."""

    def __init__(self, linears: list[nn.Linear], lr: float):
        self.params = [t.detach() for m in linears for t in (m.weight, m.bias)]
        self.grads, self.exp_avgs, self.exp_avg_sqs = ([torch.zeros_like(p) for p in self.params] for _ in range(3))
        self.steps = [torch.zeros(()) for _ in self.params]
        self.lr = lr
        self.z_dim = linears[2].in_features  # the decoder's first layer takes z

    def gradients(self, x: torch.Tensor, eps: torch.Tensor) -> list[torch.Tensor]:
        w1, b1, w2, b2, w3, b3, w4, b4 = self.params
        g, n = self.grads, len(x)
        h1 = torch.addmm(b1, x, w1.t())
        a1 = F.leaky_relu(h1, 0.2)
        mu, logvar = torch.addmm(b2, a1, w2.t()).chunk(2, 1)
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps
        h3 = torch.addmm(b3, z, w3.t())
        a3 = torch.relu(h3)
        # d(summed BCE)/d logits = sigmoid(logits) - x; the loss is a mean over the batch.
        d = torch.sigmoid(torch.addmm(b4, a3, w4.t())).sub_(x).div_(n)
        _layer_grads(d, a3, g[6], g[7])
        d = torch.mm(d, w4).mul_(h3 > 0)
        _layer_grads(d, z, g[4], g[5])
        dz = torch.mm(d, w3)
        # KL = -(1 + lv - mu² - e^lv) / 2: dKL/dmu = mu, dKL/dlv = (e^lv - 1) / 2; and dz/dlv = eps * std / 2.
        d = torch.cat((dz + mu / n, dz * eps * std * 0.5 + (std * std - 1) * (0.5 / n)), 1)
        _layer_grads(d, a1, g[2], g[3])
        d = torch.mm(d, w2).mul_(torch.where(h1 > 0, 1.0, 0.2))
        _layer_grads(d, x, g[0], g[1])
        return g

    def __call__(self, x: torch.Tensor) -> None:
        self.gradients(x, torch.randn(len(x), self.z_dim))
        torch._foreach_add_(self.steps, 1)  # as torch.optim.Adam does before its fused kernel
        torch._fused_adam_(
            self.params,
            self.grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            [],
            self.steps,
            lr=self.lr,
            beta1=BETAS[0],
            beta2=BETAS[1],
            weight_decay=0.0,
            eps=ADAM_EPS,
            amsgrad=False,
            maximize=False,
        )


def main() -> None:
    args = parse_args(__doc__)
    data = load_data(args.data)
    config = RunConfig(data=args.data, seed=0)
    models = {}
    for name in ("vaelab", "lean autograd", "hand-written"):
        torch.manual_seed(0)  # one initialisation for all three
        models[name] = build_model(config, data.image_shape)
    optimizers = {name: make_optimizer(models[name], config.lr) for name in ("vaelab", "lean autograd")}
    lean_linears = [m for m in models["lean autograd"].modules() if isinstance(m, nn.Linear)]
    hand = HandWrittenStep([m for m in models["hand-written"].modules() if isinstance(m, nn.Linear)], config.lr)
    b = config.batch_size

    x = data.x_train[:b].flatten(1)
    eps = torch.randn(b, config.z_dim)
    lean_loss(lean_linears, x, eps).backward()
    autograd = [t.grad for m in lean_linears for t in (m.weight, m.bias)]
    error = max(((a - h).abs().max() / a.abs().max()).item() for a, h in zip(autograd, hand.gradients(x, eps)))
    print(f"hand-written gradients against autograd's: largest difference {error:.1e} of the largest entry")

    def lean_step(x: torch.Tensor) -> None:
        optimizers["lean autograd"].zero_grad(set_to_none=True)
        lean_loss(lean_linears, x.flatten(1), torch.randn(len(x), config.z_dim)).backward()
        optimizers["lean autograd"].step()

    steps = {
        "vaelab": lambda x: vaelab_step(models["vaelab"], optimizers["vaelab"], x),
        "lean autograd": lean_step,
        "hand-written": lambda x: hand(x.flatten(1)),
    }
    best = best_of_rounds(steps, data.x_train, b, args.rounds, args.steps)

    print(f"data {args.data}, batch {b}, {torch.get_num_threads()} threads; ms per step, best of {args.rounds} rounds")
    for name, seconds in best.items():
        print(
            f"  {name:15s} {1e3 * seconds:6.3f} ms  {b / seconds:6.0f} images/s  "
            f"{100 * best['GEMMs alone'] / seconds:4.0f}% of the ceiling"
        )


if __name__ == "__main__":
    main()
