"""The ``vaelab`` command. The only module that reads sys.argv; each subcommand is a thin call into the library.

Bad input ends with one line on stderr, ``vaelab: error: ...``, and exit status 2. Building the parser, --help,
--version and argument errors import neither torch nor numpy: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from vaelab.config import DEVICES, GROUPS, PRECISIONS, SEED_RANGE, SPEC_HELP, RunConfig
from vaelab.errors import VaelabError

# A latent unit whose mean test KL(q(z_u|x) || p(z_u)) is below this many nats carries next to no information
# about x (the 0.01 of Burda et al. 2016's activity measure, read on the KL).
INACTIVE_KL_NATS = 0.01


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"vaelab: error: {message}\n")


class _VersionAction(argparse.Action):
    """--version, looked up only when asked (importlib.metadata costs ~50 ms that every other command would pay)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"vaelab {_version()}")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("vaelab")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        import vaelab

        return getattr(vaelab, "__version__", "unknown")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text[:60]!r}") from None


def _seed(text: str) -> int:
    low, high = SEED_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text[:60]!r}")
    return value


DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]{1,3})?")


def _device(text: str) -> str:
    if DEVICE_NAME.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"expected {DEVICES}, got {text[:60]!r}")
    return text


def _flag_type(default):
    if isinstance(default, list):
        return _int_list
    return type(default)


def _flag_help(f: dataclasses.Field, default) -> str:
    """The field's help text and its default, e.g. 'latent dimensions (default 20)'."""
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, list):
        shown = ",".join(map(str, default))
    else:
        shown = str(default)
    return f"{f.metadata['help']} (default {shown})".replace("%", "%%")


def _add_config_flags(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """One flag per RunConfig field (z_dim -> --z-dim) in its group; default None marks 'not given on the command
    line', so a --config file or a resumed run's config.json can supply the value instead."""
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        group = groups[f.metadata["group"]]
        if isinstance(default, bool):
            group.add_argument(flag, action="store_true", default=None, help=_flag_help(f, default))
        elif f.metadata["choices"]:
            group.add_argument(flag, choices=f.metadata["choices"], default=None, help=_flag_help(f, default))
        else:
            metavar = {list: "W[,W...]", int: "N", float: "X"}.get(type(default), f.name.upper())
            group.add_argument(
                flag, type=_flag_type(default), default=None, metavar=metavar, help=_flag_help(f, default)
            )


def _read_toml(path: str) -> dict:
    """A --config file's keys (written as the flags are, z-dim, or as the fields are, z_dim) as field names."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except FileNotFoundError:
        raise VaelabError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise VaelabError(f"{path}: is a folder, not a TOML config file") from None
    except UnicodeDecodeError:
        raise VaelabError(f"{path}: not a TOML config file (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise VaelabError(f"{path}: invalid TOML ({exc})") from None
    except RecursionError:  # arrays nested 100,000 deep
        raise VaelabError(f"{path}: cannot read config file (nested too deeply)") from None
    except (OSError, ValueError) as exc:  # unreadable; an integer of 5000 digits
        raise VaelabError(f"{path}: cannot read config file ({str(exc).split(';')[0][:160]})") from None
    fields: dict[str, str] = {}
    for key in values:
        name = key.replace("-", "_")
        if name in fields:
            raise VaelabError(f"{path}: {fields[name]!r} and {key!r} set the same setting; keep one")
        fields[name] = key
    return {name: values[key] for name, key in fields.items()}


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """Defaults < the run folder's config.json (on --resume) or the --config TOML < explicit flags."""
    if args.resume:
        from vaelab.runs import read_config

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


def _check_out_folder(out: str) -> None:
    """Refuse an --out that can never be a run folder (it, or a folder above it, is a file) before any work."""
    for path in (Path(out), *Path(out).parents):
        if path.exists():
            if not path.is_dir():
                raise VaelabError(f"--out {out}: {path} is a file, not a folder; choose another --out")
            return


def collapse_warning(kl_per_dim: list[float] | None) -> str | None:
    """A warning when more than half the latent units are inactive (posterior collapse), else None.

    A unit u is inactive when its mean test KL(q(z_u|x) || p(z_u)) < INACTIVE_KL_NATS: q ignores x there and the
    decoder learned to do without it (Bowman et al. 2016). None when the KL per unit is unknown: an AutoEncoder, or
    a prior that is no product over units (the VampPrior's mixture), whose KL does not split by unit.
    """
    if not kl_per_dim:
        return None
    inactive = sum(kl < INACTIVE_KL_NATS for kl in kl_per_dim)
    if 2 * inactive <= len(kl_per_dim):
        return None
    return (
        f"{inactive} of {len(kl_per_dim)} latent units are inactive (test KL < {INACTIVE_KL_NATS} nats each): "
        "the posterior collapsed onto the prior; try --kl-warmup 10 (beta rises over 10 epochs) or "
        "--free-bits 0.1 (nats per unit the KL may keep)"
    )


def _train_epilogue(out: Path, seconds: float) -> str:
    """The files a training run wrote and the commands a user runs next, ready to copy."""
    weights = sorted(p.name for p in out.glob("checkpoint-*.safetensors"))[-1:]
    files = ", ".join(["config.json", "checkpoint.json", *weights, "metrics.jsonl"])
    quoted = shlex.quote(str(out))
    return (
        f"done in {seconds:.1f} s; wrote {out}/: {files}\n"
        f"next: vaelab evaluate {quoted}    # test-set metrics -> {out / 'eval.json'}\n"
        f"      vaelab report {quoted} -o report.html    # every figure in one HTML page"
    )


def _add_compute_flags(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--device",
        type=_device,
        default="auto",
        metavar="DEVICE",
        help=f"where to compute: {DEVICES}; auto takes CUDA, then MPS, then the CPU (default %(default)s)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="the networks' precision: fp32, or autocast to bf16 or fp16 (CUDA only, with a gradient scaler); "
        "likelihoods, KL and sums stay fp32 (default %(default)s)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (the README says when it pays)")


def _compute(args: argparse.Namespace):
    """The device, precision and compilation of a command that runs in one process, chosen once, here."""
    from vaelab.devices import choose_compute
    from vaelab.distributed import PeerError, launched

    launch = launched()
    if launch is not None and launch.world > 1:
        message = f"vaelab {args.command} runs in one process; of the commands only train runs under torchrun"
        raise (VaelabError if launch.rank == 0 else PeerError)(message)
    return choose_compute(args.device, args.precision, args.compile)


def cmd_train(args: argparse.Namespace) -> int:
    _check_out_folder(args.out)
    config = resolve_config(args)
    from vaelab.devices import choose_compute
    from vaelab.distributed import joined, launched
    from vaelab.train import train

    launch = launched()
    compute = choose_compute(args.device, args.precision, args.compile, launch.local_rank if launch else None)
    started = time.perf_counter()
    with joined(launch, compute.device) as processes:
        run = train(config, args.out, args.resume, progress=not args.quiet, compute=compute, processes=processes)
    if not processes.is_main:
        return 0
    seconds = time.perf_counter() - started
    last = run.history[-1]
    print(
        f"{config.model} trained for {run.epoch} epochs -> {args.out}: test loss {last['test_loss']:.2f} "
        f"(recon {last['test_recon']:.2f}, kl {last['test_kl']:.2f}) per image"
    )
    if not args.quiet:  # --quiet keeps the one summary line (and warnings): scripts parse it, logs stay short
        print(_train_epilogue(Path(args.out), seconds))
    warning = collapse_warning(last.get("test_kl_per_dim"))
    if warning:
        print(f"vaelab: warning: {warning}", file=sys.stderr)
    return 0


def _run_and_data(args: argparse.Namespace, compute):
    """The run named on the command line, on the command's device, and its data (or --data), checked to fit."""
    from vaelab.data import check_matches, load_data_for
    from vaelab.runs import load_run

    run = load_run(args.run)
    data = load_data_for(run.config, args.data)
    check_matches(data, run.model.image_shape, f"the model in {args.run}")
    compute.prepare(run.model)
    return run, data


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise VaelabError(f"{name} must be a positive integer, got {value}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vaelab.atomic import atomic_write_json, check_output_path
    from vaelab.evaluate import evaluate_run
    from vaelab.measures import summary_table

    _positive("--k", args.k)
    _positive("--n-samples", args.n_samples)
    compute = _compute(args)
    run, data = _run_and_data(args, compute)
    out = check_output_path(args.output or Path(args.run) / "eval.json")  # before minutes of work, not after
    with compute.autocast():
        result = evaluate_run(
            run,
            data,
            k=args.k,
            skip_iwae=args.skip_iwae,
            skip_samples=args.skip_samples,
            skip_latent=args.skip_latent,
            n_samples=args.n_samples,
            seed=args.seed,
            progress=not args.quiet,
        )
    atomic_write_json(out, result)
    print(
        f"{args.run} ({result['model']}, epoch {result['epoch']}) on {result['data']}, "
        f"{result['notes']['test_images']} test images; ± is the standard error over them"
    )
    print(summary_table(result))
    print(f"-> {out} (every number, and how it was computed)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vaelab.compare import compare

    _positive("--k", args.k)
    _positive("--epochs", args.epochs)
    _positive("--n-samples", args.n_samples)
    base = _read_toml(args.config) if args.config else {}
    if args.data_cache:
        base["data_cache"] = args.data_cache
    compute = _compute(args)
    with compute.autocast():
        result = compare(
            [s for s in args.models.split(",") if s],
            args.out,
            data=args.data,
            epochs=args.epochs,
            seed=args.seed,
            base=base,
            k=args.k,
            skip_iwae=args.skip_iwae,
            skip_samples=args.skip_samples,
            n_samples=args.n_samples,
            progress=not args.quiet,
            compute=compute,
        )
    print((Path(args.out) / "comparison.md").read_text())
    print(f"{len(result['models'])} models -> {Path(args.out) / 'comparison.json'}, {Path(args.out) / 'comparison.md'}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from vaelab.figures import check_n
    from vaelab.models import sample_prior
    from vaelab.plots import image_output_path, save_image_grid
    from vaelab.runs import load_run

    check_n("samples", args.n)
    out = image_output_path(args.output)
    compute = _compute(args)
    run = load_run(args.run)
    with compute.autocast():
        images = sample_prior(compute.prepare(run.model), args.n, seed=args.seed, label=args.label)
    save_image_grid(out, images, ncol=int(args.n**0.5 + 0.999))
    of_class = "" if args.label is None else f" of class {args.label}"
    print(f"{args.n} prior samples{of_class} -> {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """The `plot recon` figure of one run: test images drawn across the classes over their reconstructions."""
    from vaelab.figures import FigureOptions, check_request, make_figure, open_runs
    from vaelab.plots import image_output_path, save_figure

    options = FigureOptions(n=args.n)
    check_request("recon", options)
    out = image_output_path(args.output)
    compute = _compute(args)
    with compute.autocast():
        save_figure(make_figure("recon", open_runs([args.run], args.data, compute), options), out)
    print(f"test images of {args.run} over their reconstructions -> {out}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from vaelab.explorer import write_explorer_page

    compute = _compute(args)
    run, data = _run_and_data(args, compute)
    with compute.autocast():
        write_explorer_page(run, data, args.output)
    print(f"latent explorer of {args.run} -> {args.output} (open it in a browser; it needs no server)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vaelab.figures import FigureOptions, check_request, make_figure, open_runs
    from vaelab.plots import image_output_path, save_figure

    options = FigureOptions(args.method, args.n, args.seed)
    check_request(args.kind, options)
    out = image_output_path(args.output)
    compute = _compute(args)
    with compute.autocast():
        save_figure(make_figure(args.kind, open_runs(args.runs, args.data, compute), options), out)
    print(f"{args.kind} figure of {', '.join(args.runs)} -> {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vaelab.report import write_report

    compute = _compute(args)
    with compute.autocast():
        write_report(args.runs, args.output, args.data, explorers=args.explorers, compute=compute)
    print(f"report of {', '.join(args.runs)} -> {args.output} (one self-contained HTML file)")
    return 0


def _add_evaluation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--k", type=int, default=1000, help="importance samples per image for the IWAE bound (default %(default)s)"
    )
    p.add_argument("--skip-iwae", action="store_true", help="skip the importance-weighted bound (the slow part)")
    p.add_argument("--skip-samples", action="store_true", help="skip sample quality (and the classifier it trains)")
    p.add_argument("--n-samples", type=int, help="decoded samples per sampler (default: test images, at most 10000)")
    p.add_argument(
        "--seed", type=_seed, default=0, help="seed of every random draw of the evaluation (default %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages")


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an AutoEncoder or a VAE",
        description="Train an AutoEncoder or a VAE into a run folder, one checkpoint per epoch. "
        "Every setting below is also a key of a --config TOML file (z-dim or z_dim).",
    )
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    _add_config_flags(groups)
    run = groups["run"]
    run.add_argument(
        "--config", metavar="TOML", help="TOML file whose keys are these flags' names; flags given here override it"
    )
    run.add_argument("--out", required=True, help="run folder: config.json, checkpoints and metrics.jsonl go there")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (its config.json, overridden by the flags given)",
    )
    run.add_argument(
        "--quiet", action="store_true", help="no progress bar, epoch lines or next steps: one summary line"
    )
    _add_compute_flags(p.add_argument_group("compute"))
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaelab", description="Train, measure and look at AutoEncoders and VAEs.")
    parser.add_argument("--version", action=_VersionAction, help="print vaelab's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_parser(sub)

    p = sub.add_parser("evaluate", help="latent and generation quality of a run -> RUN/eval.json")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="evaluate on this data set instead of the run's")
    p.add_argument("-o", "--output", help="JSON file (default RUN/eval.json)")
    _add_evaluation_flags(p)
    p.add_argument("--skip-latent", action="store_true", help="skip the latent probes and interpolation")
    _add_compute_flags(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("compare", help="train and evaluate models with the same data, seed and budget, side by side")
    p.add_argument(
        "--models",
        default="ae,vae,beta-vae:4",
        help=f"comma-separated: {SPEC_HELP}, or existing run folders (default %(default)s)",
    )
    p.add_argument("--data", help="data set for training and evaluation (default mnist5k, or the first run folder's)")
    p.add_argument("--epochs", type=int, default=20, help="epochs of every model trained here (default %(default)s)")
    p.add_argument("--config", help="TOML of RunConfig fields shared by every model trained here")
    p.add_argument("--data-cache", help="where downloads and cached classifiers are kept (default ~/.cache/vaelab)")
    p.add_argument("--out", required=True, help="folder for one run per model, comparison.json and comparison.md")
    _add_evaluation_flags(p)
    _add_compute_flags(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sample", help="decode prior samples z ~ p(z) (the model's prior) into an image grid")
    p.add_argument("run", help="run folder")
    p.add_argument("-n", type=int, default=64, help="number of samples (default %(default)s)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the prior draws (default %(default)s)")
    p.add_argument("-o", "--output", default="samples.png", help="image file (default %(default)s)")
    p.add_argument(
        "--label", type=int, help="the class to sample, 0..K-1 (conditional models only, where it is needed)"
    )
    _add_compute_flags(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("reconstruct", help="test images over their reconstructions")
    p.add_argument("run", help="run folder")
    p.add_argument("-n", type=int, default=32, help="number of test images (default %(default)s)")
    p.add_argument("--data", help="use this data set's test split instead of the run's")
    p.add_argument("-o", "--output", default="recon.png", help="image file (default %(default)s)")
    _add_compute_flags(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("explore", help="an HTML page that decodes the latent point under the pointer, live")
    p.add_argument("run", help="run folder")
    p.add_argument("--data", help="plot this data set's test codes instead of the run's")
    p.add_argument("-o", "--output", default="explorer.html", help="HTML file (default %(default)s)")
    _add_compute_flags(p)
    p.set_defaults(func=cmd_explore)

    # Figure kinds and methods are checked by vaelab.figures, so that building the parser imports no matplotlib.
    p = sub.add_parser("plot", help="one of the lecture's figures as PNG, several runs side by side")
    p.add_argument(
        "kind",
        help="latent, posterior (2-D VAE), manifold (2-D), samples, classes (conditional), recon, interp, curves, "
        "kl (VAE)",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, drawn side by side")
    p.add_argument("-o", "--output", required=True, help="image file")
    p.add_argument(
        "--method", default="pca", help="projection of latents above 2-D for latent: pca or tsne (default %(default)s)"
    )
    p.add_argument(
        "-n",
        type=int,
        help="test images (latent, posterior, recon), samples, grid side "
        "(manifold) or pairs (interp) (default: the figure's own)",
    )
    p.add_argument(
        "--seed", type=_seed, default=0, help="which test images and prior draws are shown (default %(default)s)"
    )
    p.add_argument("--data", help="use this data set's test split instead of each run's")
    _add_compute_flags(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="one self-contained HTML file: configurations, comparison, every figure")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or a vaelab compare folder")
    p.add_argument("-o", "--output", default="report.html", help="HTML file (default %(default)s)")
    p.add_argument("--data", help="use this data set's test split instead of each run's")
    # The choices are vaelab.report.EXPLORERS, written out so that building the parser imports no torch.
    p.add_argument(
        "--explorers",
        choices=("auto", "all", "2d", "none"),
        default="auto",
        help="which runs get a live latent explorer: auto (default) the 2-D runs and the main VAE "
        "(the first with beta 1), all, 2d (2-D runs only) or none",
    )
    _add_compute_flags(p)
    p.set_defaults(func=cmd_report)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program stands so that it unwinds exactly as Ctrl-C does."""


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (kill, a batch scheduler, systemd) ends a command like SIGINT: checkpoints stay, one message."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _close_progress_bars() -> None:
    """Close the progress bars an error or interruption left open: each clears its own line (leave=False), so the
    message after it starts on a line of its own instead of at the end of a bar."""
    tqdm = sys.modules.get("tqdm")  # never imported here: only a command that drew bars has them
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):  # tqdm's registry of live bars
            bar.close()


def _reported_by_rank_0(exc: VaelabError) -> bool:
    """Whether the error is one of a torchrun job's that rank 0 prints (vaelab.distributed.PeerError)."""
    distributed = sys.modules.get("vaelab.distributed")  # imported by every command that can raise one
    return distributed is not None and isinstance(exc, distributed.PeerError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _sigterm_interrupts():
        try:
            return args.func(args)
        except VaelabError as exc:
            _close_progress_bars()
            if _reported_by_rank_0(exc):
                return 2
            print(f"vaelab: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            _close_progress_bars()
            print("vaelab: interrupted", file=sys.stderr)
            # The shell's convention: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
            return 128 + int(signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
