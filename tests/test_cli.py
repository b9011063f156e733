"""Every bad input gets one line and exit status 2, before any compute; every option's --help shows
its default.
(More cases sit with their scripts: test_train.py, test_sample.py, test_fid.py, test_runs.py.)

    python -m pytest -q tests/test_cli.py
"""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ae as ae_lib
import eval_ae
import train_ae
import train_diffusion

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def one_error_line(capsys, exc):
    """The SystemExit of a script's main: status 2 and exactly one `error: ...` line on stderr."""
    errors = [line for line in capsys.readouterr().err.splitlines()
              if not line.startswith("WARNING")]
    assert exc.value.code == 2 and len(errors) == 1 and errors[0].startswith("error: "), errors
    return errors[0]


@pytest.fixture
def folders(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_images" / "n01").mkdir(parents=True)
    (tmp_path / "no_images" / "n01" / "readme.txt").write_text("no images here")
    (tmp_path / "broken" / "n01").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "broken" / "n01" / f"{i}.jpg").write_bytes(b"not a jpeg" * 20)
    return tmp_path


@pytest.mark.parametrize("folder, message", [
    ("empty", "has no images with extensions"),
    ("no_images", "has no images with extensions .* in its 1 subfolders"),
    ("broken", "none of its 3 image files can be read"),
])
@pytest.mark.parametrize("script", ["train_ae", "train_diffusion"])
def test_bad_data_folders(folders, capsys, script, folder, message):
    import re
    lib = {"train_ae": train_ae, "train_diffusion": train_diffusion}[script]
    extra = ["--ae", "random:dc-ae-f8c16-tiny"] if script == "train_diffusion" else []
    with pytest.raises(SystemExit) as e:
        lib.main(lib.parse_args(["--data", str(folders / folder), "--out", str(folders / "out"),
                                 *extra]))
    assert re.search(message, one_error_line(capsys, e))
    assert not (folders / "out").exists()  # before any compute: nothing was written


@pytest.mark.parametrize("batch", ["0", "-4"])
def test_batch_size_is_checked_before_the_latent_cache(tmp_path, capsys, batch):
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args(["--ae", "random:dc-ae-f8c16-tiny",
                                                         "--batch-size", batch,
                                                         "--out", str(tmp_path / "d")]))
    assert one_error_line(capsys, e) == f"error: --batch-size must be >= 1, got {batch}"
    assert not (tmp_path / "d").exists()  # no latent was encoded
    with pytest.raises(SystemExit) as e:
        train_ae.main(train_ae.parse_args(["--batch-size", batch, "--out", str(tmp_path / "a")]))
    assert one_error_line(capsys, e) == f"error: --batch-size must be >= 1, got {batch}"


def test_eval_ae_bad_inputs(tmp_path, capsys):
    for argv, message in [(["--ae", "random:dc-ae-f8c16-tiny", "--c-primes", "0", "99"],
                           "--c-primes [0, 99] must lie in"),
                          (["--ae", str(tmp_path / "nope")], "not found"),
                          (["--ae", "random:dc-ae-f8c16-tiny", "--images", "0"], "--images 0"),
                          (["--ae", "random:dc-ae-f8c16-tiny", "--resolution", "20"],
                           "--resolution 20 is not a multiple")]:
        with pytest.raises(SystemExit) as e:
            eval_ae.main(eval_ae.parse_args(argv + ["--out", str(tmp_path / "o")]))
        assert message in one_error_line(capsys, e)


def test_toy_refuses_bad_c_primes_before_training(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "toy.py"), "--quick", "--c-primes", "0", "999",
                        "--out", str(tmp_path)],
                       cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: --c-primes [0, 999] must lie in [1, c=64] "
                                             "for dc-ae-f8c64-tiny"]
    assert not list(tmp_path.iterdir())  # nothing trained


def test_fewer_than_16_latent_channels_train_with_the_full_latent_only():
    # a c8 AE with the paper's list [16, 20, ...]
    model = ae_lib.build_ae("dc-ae-f8c16-tiny", c=8, c_prime_start=16)
    assert model.c_prime_candidates == [8]
    x_rec = model(torch.zeros(1, 3, 16, 16), ae_lib.channel_mask(8, [8])[None])
    assert x_rec.shape == (1, 3, 16, 16)


HELP = [["train_ae"], ["train_diffusion"], ["sample"], ["eval_ae"], ["fid"], ["toy"], ["data"],
        ["export"],
        *[["benchmarks.bench", sub] for sub in ("tokens", "train", "ae", "fid", "profile", "gpu")]]


def help_options(text):
    """--help text -> {option: its help text}, one entry per option (argparse indents continuation
    lines)."""
    options, current = {}, None
    for line in text.split("options:", 1)[1].splitlines():
        stripped = line.strip()
        if line.startswith("  -"):
            current, _, help_text = stripped.partition("  ")
            options[current] = help_text.strip()
        elif current and stripped:
            options[current] = (options[current] + " " + stripped).strip()
    return options


@pytest.mark.parametrize("argv", HELP, ids=" ".join)
def test_help_shows_every_default_once(argv, capsys):
    """Every option has a help line that states its default once: a value, or words where it
    depends on the model or recipe ("default: 0.0003 for tiny AEs; ..."); never "(default: None)".
    The scripts' own parse_args, in-process."""
    script = importlib.import_module(argv[0])
    with pytest.raises(SystemExit) as e:
        script.parse_args(argv[1:] + ["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "docstring" not in text
    options = {k: v for k, v in help_options(text).items() if not k.startswith("-h")}
    assert options
    for flag, text in options.items():
        assert text, f"{flag} has no help line"
        assert "default: None" not in text, f"{flag}: {text}"
        assert text.count("(default:") <= 1 and text.lower().count("default") <= 1, (
            f"{flag} states its default twice: {text}")
        assert "default" in text.lower() or text.startswith("required"), (
            f"{flag} does not say its default: {text}")
