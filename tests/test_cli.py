"""The `vaelab` command end to end on digits, as a user runs it."""

import json

import matplotlib.image as mpimg


def test_train_evaluate_sample_reconstruct_end_to_end(tmp_path, cli):
    run = tmp_path / "vae"
    done = cli("train", "--model", "vae", "--data", "digits", "--epochs", "2", "--z-dim", "4", "--hidden", "32",
               "--beta", "1", "--seed", "0", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "trained for 2 epochs" in done.stdout
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["epoch"] == 2

    done = cli("evaluate", str(run), "--skip-iwae", "--skip-samples", "--skip-latent")
    if done.returncode == 2 and "unrecognized arguments" in done.stderr:  # before the evaluation flags exist
        done = cli("evaluate", str(run))
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["data"] == "digits"

    for command, name in (("sample", "s.png"), ("reconstruct", "r.png")):
        done = cli(command, str(run), "-o", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        image = mpimg.imread(tmp_path / name)
        assert image.ndim == 3 and image.shape[0] > 16 and image.std() > 0.01


def test_config_file_keys_equal_flags_and_flags_override_it(tmp_path, cli):
    toml = tmp_path / "run.toml"
    toml.write_text('model = "ae"\ndata = "digits"\nz-dim = 3\nhidden = [16, 8]\nepochs = 1\nlr = 0.002\n')
    run = tmp_path / "ae"
    done = cli("train", "--config", str(toml), "--z-dim", "5", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    saved = json.loads((run / "config.json").read_text())
    assert (saved["model"], saved["z_dim"], saved["hidden"], saved["lr"]) == ("ae", 5, [16, 8], 0.002)


def test_resume_takes_the_saved_config_and_more_epochs(tmp_path, cli):
    run = tmp_path / "r"
    assert cli("train", "--data", "digits", "--epochs", "1", "--z-dim", "3", "--hidden", "16", "--out", str(run),
               "--quiet").returncode == 0
    done = cli("train", "--resume", "--epochs", "2", "--out", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    saved = json.loads((run / "config.json").read_text())
    assert (saved["z_dim"], saved["epochs"]) == (3, 2)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_help_lists_every_subcommand(cli):
    done = cli("--help")
    assert done.returncode == 0
    for command in ("train", "evaluate", "sample", "reconstruct"):
        assert command in done.stdout
