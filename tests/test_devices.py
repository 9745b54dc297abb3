"""--device, --precision and --compile: device-generic code checked on the CPU, no GPU needed.

A machine without a second device cannot run the pipeline on one, so the placement test makes every tensor created
without an explicit device land on `meta` (torch's default device) while the models and data stay on the CPU: a
tensor that does not follow the model's device, or does not say it belongs on the host, then meets a CPU tensor
and fails, as it would meet a CUDA tensor on a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

from vaelab import RunConfig, load_run, train
from vaelab.cli import build_parser
from vaelab.data import training_targets
from vaelab.devices import Compute, DeviceImages, check_precision, choose_compute, choose_device
from vaelab.distributed import Processes
from vaelab.errors import VaelabError
from vaelab.evaluate import evaluate_run
from vaelab.explorer import explorer_html
from vaelab.figures import FIGURES, FigureOptions, RunView, make_figure, why_not
from vaelab.models import build_model, sample_prior
from vaelab.noise import ImageNoise
from vaelab.train import EpochTotals, Stepper, epoch_order, make_optimizer, train_epoch

COMPUTING_COMMANDS = ("train", "evaluate", "compare", "sample", "reconstruct", "explore", "plot", "report")
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # torch then sees no CUDA device, on any machine


def test_every_tensor_follows_the_models_device_or_is_placed_on_the_host(tmp_path, digits):
    config = RunConfig(data="digits", epochs=1, hidden=[32], z_dim=2, binarize="dynamic", free_bits=0.1, clip_grad=5)
    with torch.device("meta"):  # the default device of every tensor created without one
        train(config, tmp_path / "run", data=digits, progress=False)
        run = train(dataclasses.replace(config, epochs=2), tmp_path / "run", resume=True, data=digits, progress=False)
        run = dataclasses.replace(load_run(run.path), config=dataclasses.replace(config, data_cache=str(tmp_path)))
        result = evaluate_run(run, digits, k=5, n_samples=50)
        view = RunView("run", run, digits, training_targets(config, digits)[1])
        for kind in FIGURES:
            if why_not(kind, view) is None:  # every figure a VAE run has
                make_figure(kind, [view], FigureOptions())
        explorer_html(run, digits)
        images = sample_prior(run.model, 4)
    assert images.device.type == "cpu" and math.isfinite(result["generation"]["nll_iwae_nats"])
    assert all(p.device.type == "cpu" for p in run.model.parameters())


def test_auto_takes_cuda_then_mps_then_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("mps")
    assert choose_device("auto", local_rank=0) == torch.device("cpu")  # several processes: MPS has no collectives
    with pytest.raises(VaelabError, match="no CUDA device"):
        choose_device("cuda:1")


def test_precisions_a_device_cannot_run_are_refused():
    with pytest.raises(VaelabError, match="fp16 needs a CUDA device"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(VaelabError, match="precision must be one of"):
        check_precision("fp8", torch.device("cpu"))
    check_precision("bf16", torch.device("cpu"))  # CPU autocast runs bfloat16


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--device", "cuda"], "vaelab: error: --device cuda: this machine has no CUDA device"),
        (["--device", "cpu", "--precision", "fp16"], "vaelab: error: --precision fp16 needs a CUDA device"),
        (["--device", "tpu"], "vaelab: error: argument --device: expected auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_an_impossible_device_or_precision_is_one_line_and_status_2(tmp_path, flags, message):
    argv = [sys.executable, "-m", "vaelab", "train", "--data", "digits", "--out", str(tmp_path / "run"), *flags]
    done = subprocess.run(argv, env=NO_GPU, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "run").exists()


def test_every_computing_command_takes_device_precision_and_compile():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in COMPUTING_COMMANDS:
        flags = {option for action in commands[name]._actions for option in action.option_strings}
        assert {"--device", "--precision", "--compile"} <= flags, name


def test_bf16_autocasts_the_networks_and_keeps_likelihood_kl_and_sums_in_fp32(digits):
    torch.manual_seed(0)
    model = build_model(RunConfig(hidden=[32], z_dim=4), digits.image_shape)
    network_dtypes = []
    model.decoder.register_forward_hook(lambda module, args, out: network_dtypes.append(out.dtype))
    x = digits.x_train[:64]
    noise = ImageNoise(0, 64, slice(0, 64), torch.device("cpu"))
    with Compute(precision="bf16").autocast():
        recon, kl_per_dim = model.loss_parts(x, noise=noise)[:2]
    assert network_dtypes == [torch.bfloat16]
    assert recon.dtype == kl_per_dim.dtype == torch.float32
    reference, _ = model.loss_parts(x, noise=ImageNoise(0, 64, slice(0, 64), torch.device("cpu")))[:2]
    assert recon.sum().item() == pytest.approx(reference.sum().item(), rel=0.02)  # bf16 keeps 8 bits of mantissa


def test_training_in_bf16_learns_as_fp32_does(tmp_path, digits):
    config = RunConfig(data="digits", epochs=2, hidden=[64], z_dim=8, batch_size=64)
    fp32 = train(config, tmp_path / "fp32", data=digits, progress=False)
    bf16 = train(config, tmp_path / "bf16", data=digits, progress=False, compute=choose_compute("cpu", "bf16"))
    assert bf16.history[-1]["precision"] == "bf16" and fp32.history[-1]["precision"] == "fp32"
    assert bf16.history[-1]["test_loss"] == pytest.approx(fp32.history[-1]["test_loss"], rel=0.05)
    assert all(v.dtype == torch.float32 for v in bf16.model.state_dict().values())  # fp32 master weights


def test_each_epoch_records_the_device_its_card_precision_and_processes(vae_run):
    row = vae_run.history[-1]
    assert (row["device"], row["precision"], row["compiled"], row["processes"]) == ("cpu", "fp32", False, 1)
    assert "CPU" in row["device_name"]


def test_compile_compiles_the_networks_and_keeps_the_parameter_names_checkpoints_use(digits):
    from torch._dynamo.utils import counters  # torch's own count of the graphs it compiled

    torch.manual_seed(0)
    model = build_model(RunConfig(hidden=[32], z_dim=4), digits.image_shape)
    names = list(model.state_dict())
    x = digits.x_test[:16]
    eager, _ = model.encode(x)
    graphs = counters["stats"]["unique_graphs"]
    Compute(compile=True).prepare(model)
    compiled, _ = model.encode(x)
    assert counters["stats"]["unique_graphs"] > graphs
    torch.testing.assert_close(compiled, eager)
    assert list(model.state_dict()) == names


def test_resident_and_streamed_images_give_the_same_batches_as_floats_with_their_labels():
    generator = torch.Generator().manual_seed(0)
    stored = torch.randint(0, 256, (37, 1, 4, 4), dtype=torch.uint8, generator=generator)  # 8-bit pixels
    labels = torch.randint(0, 5, (37,), generator=generator)
    order = torch.randperm(37, generator=generator)
    share = Processes(rank=1, world=2).rows
    batches = {
        resident: list(DeviceImages(stored, torch.device("cpu"), 255, resident, labels).batches(order, 10, share))
        for resident in (True, False)
    }
    assert len(batches[True]) == 4
    for (a, y_a, rows_a, size_a), (b, y_b, rows_b, size_b), start in zip(
        batches[True], batches[False], range(0, 37, 10)
    ):
        assert (rows_a, size_a) == (rows_b, size_b) == (share(size_a), min(10, 37 - start))
        index = order[start : start + size_a][rows_a]
        assert torch.equal(a, stored[index].float() / 255) and torch.equal(b, stored[index].float() / 255)
        assert torch.equal(y_a, labels[index]) and torch.equal(y_b, labels[index])


def test_images_without_labels_come_in_batches_without_labels():
    images = DeviceImages(torch.zeros(5, 1, 2, 2), torch.device("cpu"))
    assert [y for _, y, _, _ in images.batches(torch.arange(5), 2, Processes().rows)] == [None, None, None]


def test_loss_values_are_read_once_per_interval_and_a_nan_is_still_named_at_its_batch(monkeypatch, digits):
    monkeypatch.setattr("vaelab.devices.READBACK_STEPS", {})  # the CPU reads as a GPU does: every 5 steps
    monkeypatch.setattr("vaelab.devices.DEFAULT_READBACK_STEPS", 5)
    reads = []
    read = EpochTotals.read
    monkeypatch.setattr(
        EpochTotals, "read", lambda self, processes: (reads.append(len(self.pending)), read(self, processes))
    )
    config = RunConfig(hidden=[16], z_dim=2, batch_size=64, seed=3)
    torch.manual_seed(0)
    model = build_model(config, digits.image_shape)
    stepper = Stepper(model, make_optimizer(model, config.lr), config)
    steps = math.ceil(len(digits.x_train) / 64)  # 23: read after steps 5, 10, 15, 20 and 23
    train_epoch(stepper, DeviceImages(digits.x_train, torch.device("cpu")), 1, steps)
    assert reads == [5, 5, 5, 5, 3]

    poisoned = digits.x_train.clone()
    poisoned[epoch_order(config.seed, 2, len(poisoned))[2 * 64 : 3 * 64]] = float("nan")  # epoch 2's third batch
    with pytest.raises(VaelabError, match=r"non-finite loss \(nan\) at epoch 2, batch 3;"):
        train_epoch(stepper, DeviceImages(poisoned, torch.device("cpu")), 2, steps)
