"""The ``vaelab`` command. The only module that reads sys.argv; each subcommand is a thin call into the library.

Bad input ends with one line on stderr, ``vaelab: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vaelab.config import RunConfig
from vaelab.errors import VaelabError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"vaelab: error: {message}\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _flag_type(default):
    if isinstance(default, bool):
        return None
    if isinstance(default, list):
        return _int_list
    return type(default)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (z_dim -> --z-dim); default None marks 'not given on the command line'."""
    for f in dataclasses.fields(RunConfig):
        default = getattr(RunConfig(), f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=None)
        else:
            parser.add_argument(flag, type=_flag_type(default), default=None, metavar=f.name.upper())


def _read_toml(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise VaelabError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise VaelabError(f"{path}: invalid TOML ({exc})") from None
    # Keys may be written as the flags are (z-dim) or as the fields are (z_dim).
    return {k.replace("-", "_"): v for k, v in values.items()}


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < the run folder's config.json (on --resume) or the --config TOML < explicit flags."""
    from vaelab.runs import read_config

    if args.resume:
        base = read_config(Path(args.out)).to_dict()
    else:
        base = RunConfig().to_dict()
    if args.config:
        base.update(_read_toml(args.config))
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig) if getattr(args, f.name) is not None}
    if args.resume and "model" in flags and flags["model"] != base["model"]:
        raise VaelabError(f"{args.out}: holds a checkpoint of model kind {base['model']!r}, not {flags['model']!r}")
    base.update(flags)
    return RunConfig.from_dict(base).validate()


def cmd_train(args: argparse.Namespace) -> int:
    from vaelab.train import train

    config = resolve_config(args)
    run = train(config, args.out, resume=args.resume, progress=not args.quiet)
    last = run.history[-1]
    print(
        f"{config.model} trained for {run.epoch} epochs -> {args.out}: test loss {last['test_loss']:.2f} "
        f"(recon {last['test_recon']:.2f} + {config.beta:g} * kl {last['test_kl']:.2f}) per image"
    )
    return 0


def _run_and_data(args: argparse.Namespace):
    """The run named on the command line and its data (or --data), checked to fit each other."""
    from vaelab.data import check_matches, load_data
    from vaelab.runs import load_run

    run = load_run(args.run)
    data = load_data(args.data or run.config.data, run.config.download, run.config.data_cache)
    check_matches(data, run.model.image_shape, f"the model in {args.run}")
    return run, data


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise VaelabError(f"{name} must be a positive integer, got {value}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaelab.evaluate import evaluate_run
    from vaelab.atomic import atomic_write_json

    _positive("--k", args.k)
    _positive("--n-samples", args.n_samples)
    run, data = _run_and_data(args)
    result = evaluate_run(run, data, k=args.k, skip_iwae=args.skip_iwae, skip_samples=args.skip_samples,
                          skip_latent=args.skip_latent, n_samples=args.n_samples, seed=args.seed,
                          progress=not args.quiet)
    out = Path(args.output) if args.output else Path(args.run) / "eval.json"
    atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("run", "data", "generation", "latent")}, indent=2))
    print(f"-> {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vaelab.compare import compare

    _positive("--k", args.k)
    _positive("--epochs", args.epochs)
    _positive("--n-samples", args.n_samples)
    base = _read_toml(args.config) if args.config else {}
    if args.data_cache:
        base["data_cache"] = args.data_cache
    result = compare([s for s in args.models.split(",") if s], args.out, data=args.data, epochs=args.epochs,
                     seed=args.seed, base=base, k=args.k, skip_iwae=args.skip_iwae, skip_samples=args.skip_samples,
                     n_samples=args.n_samples, progress=not args.quiet)
    print((Path(args.out) / "comparison.md").read_text())
    print(f"{len(result['models'])} models -> {Path(args.out) / 'comparison.json'}, {Path(args.out) / 'comparison.md'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from vaelab.models import sample_prior
    from vaelab.plots import save_image_grid
    from vaelab.runs import load_run

    _positive("-n", args.n)
    run = load_run(args.run)
    images = sample_prior(run.model, args.n, seed=args.seed)
    save_image_grid(args.output, images, ncol=int(args.n ** 0.5 + 0.999), scale=2)
    print(f"{args.n} prior samples -> {args.output}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from vaelab.models import reconstruct
    from vaelab.plots import save_image_grid

    _positive("-n", args.n)
    run, data = _run_and_data(args)
    x = data.x_test[: args.n]
    # Rows of 8 test images, each followed by the row of their reconstructions.
    rows = [torch.cat([x[i:i + 8], reconstruct(run.model, x[i:i + 8])]) for i in range(0, len(x), 8)]
    save_image_grid(args.output, torch.cat(rows), ncol=min(8, len(x)), scale=2)
    print(f"{len(x)} test images over their reconstructions -> {args.output}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from vaelab.explorer import write_explorer_page

    run, data = _run_and_data(args)
    write_explorer_page(run, data, args.output)
    print(f"latent explorer of {args.run} -> {args.output} (open it in a browser; it needs no server)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vaelab.figures import FigureOptions, check_request, make_figure, open_runs
    from vaelab.plots import check_output_path, save_figure

    options = FigureOptions(args.method, args.n, args.seed)
    check_request(args.kind, options)
    out = check_output_path(args.output, ".png")
    save_figure(make_figure(args.kind, open_runs(args.runs, args.data), options), out)
    print(f"{args.kind} figure of {', '.join(args.runs)} -> {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaelab.report import write_report

    write_report(args.runs, args.output, args.data, explorers=args.explorers)
    print(f"report of {', '.join(args.runs)} -> {args.output} (one self-contained HTML file)")
    return 0


def _add_evaluation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=1000, help="importance samples per image for the IWAE bound (default %(default)s)")
    p.add_argument("--skip-iwae", action="store_true", help="skip the importance-weighted bound (the slow part)")
    p.add_argument("--skip-samples", action="store_true", help="skip sample quality (and the classifier it trains)")
    p.add_argument("--n-samples", type=int, help="decoded samples per sampler (default: test images, at most 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress messages")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description="Train, measure and look at AutoEncoders and VAEs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train an AutoEncoder or a VAE")
    _add_config_flags(p)
    p.add_argument("--config", help="TOML file whose keys are these flags' names")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="latent and generation quality of a run -> RUN/eval.json")
    p.add_argument("run")
    p.add_argument("--data", help="evaluate on this data set instead of the run's")
    p.add_argument("-o", "--output", help="JSON file (default RUN/eval.json)")
    _add_evaluation_flags(p)
    p.add_argument("--skip-latent", action="store_true", help="skip the latent probes and interpolation")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train and evaluate models with the same data, seed and budget, side by side")
    p.add_argument("--models", default="ae,vae,beta-vae:4",
                   help="comma-separated: ae, vae, beta-vae:B (beta B), or existing run folders (default %(default)s)")
    p.add_argument("--data", help="data set for training and evaluation (default mnist5k, or the first run folder's)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--config", help="TOML of RunConfig fields shared by every model trained here")
    p.add_argument("--data-cache", help="where downloads and cached classifiers are kept")
    p.add_argument("--out", required=True, help="folder for one run per model, comparison.json and comparison.md")
    _add_evaluation_flags(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sample", help="decode prior samples z ~ N(0, I) into an image grid")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="samples.png")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="test images over their reconstructions")
    p.add_argument("run")
    p.add_argument("-n", type=int, default=32)
    p.add_argument("--data", help="use this data set's test split instead of the run's")
    p.add_argument("-o", "--output", default="recon.png")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("explore", help="an HTML page that decodes the latent point under the pointer, live")
    p.add_argument("run")
    p.add_argument("--data", help="plot this data set's test codes instead of the run's")
    p.add_argument("-o", "--output", default="explorer.html")
    p.set_defaults(func=cmd_explore)

    # Figure kinds and methods are checked by vaelab.figures, so that building the parser imports no matplotlib.
    p = sub.add_parser("plot", help="one of the lecture's figures as PNG, several runs side by side")
    p.add_argument("kind", help="latent, posterior (2-D VAE), manifold (2-D), samples, recon, interp, curves, kl (VAE)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, drawn side by side")
    p.add_argument("-o", "--output", required=True, help="PNG file")
    p.add_argument("--method", default="pca", help="projection of latents above 2-D for latent: pca or tsne")
    p.add_argument("-n", type=int, help="test images (latent, posterior, recon), samples, grid side "
                   "(manifold) or pairs (interp)")
    p.add_argument("--seed", type=int, default=0, help="which test images and prior draws are shown")
    p.add_argument("--data", help="use this data set's test split instead of each run's")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="one self-contained HTML file: configurations, comparison, every figure")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or a vaelab compare folder")
    p.add_argument("-o", "--output", default="report.html", help="HTML file")
    p.add_argument("--data", help="use this data set's test split instead of each run's")
    # The choices are vaelab.report.EXPLORERS, written out so that building the parser imports no torch.
    p.add_argument("--explorers", choices=("auto", "all", "2d", "none"), default="auto",
                   help="which runs get a live latent explorer: auto (default) the 2-D runs and the main VAE "
                   "(the first with beta 1), all, 2d (2-D runs only) or none")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VaelabError as exc:
        print(f"vaelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
