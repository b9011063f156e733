"""FID during training (train_diffusion.py --eval-every) equals the offline protocol (sample.py +
fid.py) on the same checkpoint; evaluations survive signals and resumes, per-c' curves, the curves
command and TensorBoard.

    python -m pytest -q tests/test_convergence.py
"""
import os
import signal

import numpy as np
import pytest
import torch

import curves
import evaluation
import sample
import train_diffusion
from conftest import checkpoints, records

# A tiny run: random AE (c = 16, 4x4 latents of 32 px images), USiT-tiny, evaluations of 12 samples
# against a reference batch of 16 random images, a random (seeded) Inception.
EVAL = ["--eval-samples", "12", "--inception-weights", "random"]


def tiny_run(out, ref, *extra):
    argv = ["--ae", "random:dc-ae-f8c16-tiny", "--out", str(out), "--toy-size", "16",
            "--batch-size", "8", "--num-workers", "0", "--grid-every", "0", "--log-every", "1",
            "--fid", str(ref), *EVAL, *extra]
    return train_diffusion.main(train_diffusion.parse_args(argv))


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    np.savez(path, np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    return path


def evaluations(out):
    return [r for r in records(out) if "fid" in r]


def test_online_fid_equals_sample_py_on_the_checkpoint_of_that_step(tmp_path, ref, one_thread):
    out = tmp_path / "run"
    tiny_run(out, ref, "--steps", "5", "--save-every", "1", "--eval-every", "2",
             "--eval-c-primes", "8", "c")
    online = evaluations(out)
    assert [r["step"] for r in online] == [2, 4]
    # the evaluated ones, and the newest two
    kept = ["ckpt_0000002.pt", "ckpt_0000004.pt", "ckpt_0000005.pt"]
    assert [os.path.basename(p) for p in checkpoints(out)] == kept
    first = online[0]
    assert first["images_seen"] == 16 and first["device_hours"] > 0 and first["elapsed_s"] > 0
    offline = sample.main(sample.parse_args(["--ckpt", checkpoints(out)[0],
                                             "--out", str(tmp_path / "s"),
                                             "--num-samples", "12", "--fid", str(ref),
                                             *EVAL[2:]]))["metrics"]
    for key in ("fid", "sfid", "is_mean", "precision", "recall"):
        if offline[key] is not None:
            assert first[key] == pytest.approx(offline[key], rel=1e-4, abs=1e-4), key
    partial = sample.main(sample.parse_args(["--ckpt", checkpoints(out)[0],
                                             "--out", str(tmp_path / "c8"),
                                             "--num-samples", "12", "--fid", str(ref),
                                             "--c-prime", "8", *EVAL[2:]]))["metrics"]
    assert first["fid_c8"] == pytest.approx(partial["fid"], rel=1e-4) and "fid_c16" not in first


def test_a_signal_during_an_evaluation_resumes_there_and_logs_each_point_once(tmp_path, ref,
                                                                              monkeypatch,
                                                                              one_thread):
    out = tmp_path / "run"
    real = evaluation.generate
    calls = []

    def sigterm_in_the_second_evaluation(*a, **k):
        calls.append(1)
        # one chunk per evaluation: the second evaluation is the one of step 4
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    monkeypatch.setattr(evaluation, "generate", sigterm_in_the_second_evaluation)
    with pytest.raises(SystemExit) as e:
        tiny_run(out, ref, "--steps", "6", "--eval-every", "2")
    assert e.value.code == 128 + signal.SIGTERM
    assert ([r["step"] for r in evaluations(out)] == [2]
            and os.path.basename(checkpoints(out)[-1]) == "ckpt_0000004.pt")
    monkeypatch.setattr(evaluation, "generate", real)
    # the same command: step 4 first, then on
    tiny_run(out, ref, "--steps", "6", "--eval-every", "2")
    assert [r["step"] for r in evaluations(out)] == [2, 4, 6]
    tiny_run(out, ref, "--steps", "6", "--eval-every", "2")  # finished: nothing evaluated twice
    assert [r["step"] for r in evaluations(out)] == [2, 4, 6]


def test_curves_draws_a_metric_of_several_runs_against_three_axes(tmp_path, ref, one_thread):
    for seed in (0, 1):
        tiny_run(tmp_path / f"s{seed}", ref, "--steps", "4", "--eval-every", "2",
                 "--seed", str(seed))
    xs, mean, std = curves.group_curve([str(tmp_path / "s0"), str(tmp_path / "s1")], "fid",
                                       "step")
    a, b = (evaluations(tmp_path / f"s{seed}") for seed in (0, 1))
    assert xs.tolist() == [2, 4] and mean[0] == pytest.approx((a[0]["fid"] + b[0]["fid"]) / 2)
    assert std[1] == pytest.approx(np.std([a[1]["fid"], b[1]["fid"]], ddof=1))
    png = tmp_path / "curves.png"
    curves.main(curves.parse_args([f"seeds={tmp_path / 's0'},{tmp_path / 's1'}",
                                   str(tmp_path / "s0"), "--out", str(png),
                                   "--paper", "table5-usit"]))
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit) as e:
        curves.main(curves.parse_args([str(tmp_path / "s0"), "--metric", "fd_toy"]))
    assert e.value.code == 2


def test_tensorboard_gets_the_records_of_metrics_jsonl(tmp_path, ref, one_thread):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    tiny_run(out, ref, "--steps", "4", "--eval-every", "2", "--tensorboard", "--grid-every", "2")
    events = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    logged = [r for r in records(out) if "loss" in r]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([r["loss"] for r in logged])
    assert [e.step for e in events.Scalars("fid")] == [2, 4]
    assert [e.step for e in events.Images("samples")] == [2, 4]


def test_eval_arguments_are_checked_before_any_compute(tmp_path, ref, capsys):
    cases = [(["--eval-every", "2", "--fid", str(tmp_path / "none.npz")],
              "--eval-every needs --fid REF"),
             (["--eval-every", "2", "--eval-c-primes", "17"],
              "--eval-c-primes [17] must lie in [1, c=16]"),
             (["--eval-samples", "1"], "--eval-samples 1"),
             (["--inception-weights", str(tmp_path / "x.pth")], "--inception-weights not found")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            tiny_run(tmp_path / "bad", ref, "--steps", "2", *extra)
        errors = [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith("error: ")]
        assert e.value.code == 2 and len(errors) == 1 and message in errors[0], (message, errors)
    assert not os.path.exists(tmp_path / "bad" / "metrics.jsonl")


def test_ae_evaluation_during_training_equals_eval_ae_on_the_checkpoint(tmp_path, one_thread):
    """train_ae.py --eval-every: PSNR and rFID per c' of the EMA on the held-out toy images, equal
    to eval_ae.py on the checkpoint of that step (the same images, decoders and Inception)."""
    import eval_ae
    import train_ae
    out = tmp_path / "ae"
    train_ae.main(train_ae.parse_args([
        "--model", "dc-ae-f8c16-tiny", "--steps", "4", "--batch-size", "4", "--toy-size", "16",
        "--num-workers", "0", "--grid-every", "0", "--log-every", "2", "--eval-every", "2",
        "--eval-images", "8", "--save-every", "100",
        "--inception-weights", "random", "--out", str(out)]))
    online = [r for r in records(out) if "psnr_c4" in r]
    assert ([r["step"] for r in online] == [2, 4]
            and {"psnr_c16", "rfid_c16", "device_hours"} <= set(online[0]))
    rows = eval_ae.main(eval_ae.parse_args(["--ae", checkpoints(out)[0], "--images", "8",
                                            "--c-primes", "4", "8", "12", "16", "--no-lpips",
                                            "--inception-weights", "random",
                                            "--out", str(tmp_path / "eval"),
                                            "--num-workers", "0"]))
    for row in rows:
        assert online[0][f"psnr_c{row['c_prime']}"] == pytest.approx(row["psnr"], rel=1e-5)
        assert online[0][f"rfid_c{row['c_prime']}"] == pytest.approx(row["rfid"], rel=1e-4)
