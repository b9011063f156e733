"""Fig. 3's protocol (its caption: "The decoder is fine-tuned for all settings"): a decoder
fine-tuned for one c' on a frozen encoder (train_ae.py --finetune-decoder K), and eval_ae.py
decoding each c' with its own decoder (--decoders), checked and reported as such; eval_ae.py's own
promises (each c' measured once, one line and nothing written on a signal, --out checked first)
and the columns of train_ae.py's grids.

    python -m pytest -q tests/test_decoders.py
"""
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import ae as ae_lib
import eval_ae
import train_ae
from conftest import checkpoints

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
AE = "dc-ae-f8c16-tiny"  # c = 16, f = 8: 4x4x16 latents of 32 px images
TRAIN = ["--model", AE, "--batch-size", "8", "--toy-size", "64", "--num-workers", "0",
         "--grid-every", "0", "--log-every", "5", "--no-bf16"]
EVAL = ["--images", "32", "--batch-size", "16", "--num-workers", "0", "--no-rfid", "--no-lpips"]
FILES = ["eval.json", "fig2a_latent_mean.png", "fig3_partial_channels.png"]


def train(*argv):
    train_ae.main(train_ae.parse_args([*TRAIN, *map(str, argv)]))


def evaluate(out, *argv):
    """eval_ae.py in this process -> (its rows, eval.json)."""
    rows = eval_ae.main(eval_ae.parse_args([*EVAL, "--out", str(out), *map(str, argv)]))
    with open(os.path.join(out, "eval.json")) as fh:
        return rows, json.load(fh)


def one_error_line(capsys, exc, code=2):
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.strip() and not line.startswith("WARNING")]
    assert exc.value.code == code and len(errors) == 1 and errors[0].startswith("error: "), \
        (exc.value.code, errors)
    return errors[0]


def newest(folder):
    return checkpoints(folder)[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An unstructured tiny AE (trained at c' = c only, like DC-AE), a decoder fine-tuned on it for
    c' = 4, and one fine-tuned for c' = 4 on another encoder (random weights)."""
    root = tmp_path_factory.mktemp("decoders")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors (conftest.one_thread)
    train("--no-structured", "--steps", 150, "--out", root / "base")
    train("--init", root / "base", "--finetune-decoder", 4, "--steps", 60, "--out", root / "tuned")
    train("--init", f"random:{AE}", "--finetune-decoder", 4, "--steps", 1, "--out", root / "other")
    torch.set_num_threads(threads)
    return SimpleNamespace(base=root / "base", tuned=root / "tuned", other=root / "other")


# ------------------------------------------------------------------------------------------------
# train_ae.py --finetune-decoder K
# ------------------------------------------------------------------------------------------------

def test_finetuning_keeps_the_encoder_bit_for_bit_and_trains_only_the_decoder(
        runs, tmp_path, one_thread):
    """The encoder of --init, in the model and in its EMA, bit for bit (a -0.0 planted in it
    included: an EMA step of a frozen weight would make it +0.0); every decoder tensor moves, in
    the model and in the EMA; AdamW holds state for the decoder alone; the checkpoint records the
    c' and the encoder it belongs to."""
    base = torch.load(newest(runs.base), map_location="cpu", weights_only=False)
    base["ema"]["encoder.conv_out.bias"][0] = -0.0
    torch.save(base, tmp_path / "planted.pt")
    init = base["ema"]
    train("--init", tmp_path / "planted.pt", "--finetune-decoder", 4, "--steps", 3,
          "--ema-warmup", 0, "--out", tmp_path / "ft")
    ckpt = torch.load(newest(tmp_path / "ft"), map_location="cpu", weights_only=False)
    encoder = [k for k in init if k.startswith("encoder.")]
    decoder = [k for k in init if k.startswith("decoder.")]
    for weights in ("model", "ema"):
        assert encoder and decoder and set(encoder + decoder) == set(ckpt[weights])
        for k in encoder:  # bit for bit: the bytes, not the values (-0.0 == +0.0)
            assert torch.equal(ckpt[weights][k].view(torch.int32), init[k].view(torch.int32)), k
        assert all(not torch.equal(ckpt[weights][k], init[k]) for k in decoder), weights
    assert len(ckpt["opt"]["state"]) == len(decoder)  # the optimizer never saw the encoder
    assert ckpt["finetuned_decoder"] == {"c_prime": 4, "encoder": str(tmp_path / "planted.pt")}
    assert ckpt["c_prime_candidates"] == [4] and ckpt["args"]["finetune_decoder"] == 4


def test_a_finetuned_decoder_beats_the_shared_one_at_its_c_prime(runs, tmp_path, one_thread):
    """The mechanism, not the paper: the unstructured AE's decoder never saw 4 of 16 channels;
    60 steps of fine-tuning at c' = 4 reconstruct the held-out images better there."""
    shared, _ = evaluate(tmp_path / "shared", "--ae", runs.base, "--c-primes", 4)
    tuned, _ = evaluate(tmp_path / "tuned", "--ae", runs.base, "--c-primes", 4,
                        "--decoders", f"4={runs.tuned}")
    assert tuned[0]["psnr"] > shared[0]["psnr"] + 1.0, (shared, tuned)


def test_finetuning_resumes_with_its_record(runs, tmp_path, one_thread):
    argv = ["--init", runs.base, "--finetune-decoder", 8, "--out", tmp_path / "ft"]
    train(*argv, "--steps", 2)
    train(*argv, "--steps", 4)  # the same command, longer: resumes from step 2
    ckpt = torch.load(newest(tmp_path / "ft"), map_location="cpu", weights_only=False)
    assert ckpt["step"] == 4
    assert ckpt["finetuned_decoder"] == {"c_prime": 8, "encoder": newest(runs.base)}


@pytest.mark.parametrize("argv, message", [
    (["--finetune-decoder", "4"],
     "--finetune-decoder 4 fine-tunes the decoder of a trained AE: pass its encoder"),
    (["--finetune-decoder", "17", "--init", f"random:{AE}"],
     "--finetune-decoder 17 must lie in [1, c=16]"),
    (["--finetune-decoder", "4", "--init", f"random:{AE}", "--num-c-primes", "2", "--structured"],
     "--finetune-decoder 4 trains the decoder at that one c'; --structured / --no-structured, "
     "--num-c-primes do not apply to it"),
])
def test_finetuning_refuses_bad_input_in_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        train_ae.main(train_ae.parse_args([*TRAIN, *argv, "--out", str(tmp_path / "ft")]))
    assert one_error_line(capsys, e).startswith(f"error: {message}")
    assert not (tmp_path / "ft").exists()


# ------------------------------------------------------------------------------------------------
# eval_ae.py --decoders c'=RUN
# ------------------------------------------------------------------------------------------------

def test_eval_says_which_decoder_each_column_used(runs, tmp_path, capsys, one_thread):
    _, report = evaluate(tmp_path / "shared", "--ae", runs.base, "--c-primes", 4, 16)
    table = capsys.readouterr().out
    assert report["decoders"] == "shared decoder (not the paper's protocol)"
    assert "decoders: shared decoder (not the paper's protocol)" in table
    assert "| 4 | shared |" in table and "| 16 | shared |" in table
    assert [(r["c_prime"], r["decoder"]) for r in report["results"]] == [(4, "shared"),
                                                                         (16, "shared")]
    _, report = evaluate(tmp_path / "tuned", "--ae", runs.base, "--c-primes", 16, 4,
                         "--decoders", f"4={runs.tuned}")
    table = capsys.readouterr().out
    assert [(r["c_prime"], r["decoder"], r["decoder_source"]) for r in report["results"]] == [
        (4, "fine-tuned", newest(runs.tuned)), (16, "shared", newest(runs.base))]
    assert report["decoders"] == \
        "Fig. 3's protocol: a decoder fine-tuned for each c' < c, the AE's own at c' = c"
    assert "| 4 | fine-tuned for c'=4 |" in table and "| 16 | shared |" in table
    _, report = evaluate(tmp_path / "mixed", "--ae", runs.base, "--c-primes", 4, 8, 16,
                         "--decoders", f"4={runs.tuned}")
    assert report["decoders"] == "shared decoder (not the paper's protocol) at c' = [8]; " \
                                 "fine-tuned at c' = [4]"
    # The picture: 32 px images enlarged to 128 px, so that its labels fit above the columns.
    assert Image.open(tmp_path / "tuned/fig3_partial_channels.png").height >= 8 * 128
    assert Image.open(tmp_path / "tuned/fig2a_latent_mean.png").width == 2 * (128 + 2) + 2


def test_eval_checks_each_decoder_in_one_line(runs, tmp_path, capsys):
    tuned, other = runs.tuned, runs.other
    for decoders, message in [
        ([f"8={tuned}"], f"--decoders 8={tuned}: {newest(tuned)} was fine-tuned for c' = 4, "
                         f"not c' = 8"),
        ([f"4={other}"], f"--decoders 4={other}: {newest(other)} was fine-tuned on another "
                         f"encoder (random:{AE}), not the one of --ae {runs.base}"),
        ([f"4={runs.base}"], f"--decoders 4={runs.base}: {newest(runs.base)} is not a decoder "
                             f"fine-tuned with train_ae.py --finetune-decoder (it records no c')"),
        ([f"4={tuned}", f"4={other}"], f"--decoders: c' = 4 is given twice ({tuned} and {other})"),
        (["4:somewhere"], "--decoders 4:somewhere: expected c'=RUN"),
        ([f"12={tuned}"], "--decoders for c' = [12], which are not evaluated (c' = [4, 8, 16]): "
                          "add them to --c-primes"),
    ]:
        with pytest.raises(SystemExit) as e:
            eval_ae.main(eval_ae.parse_args([*EVAL, "--ae", str(runs.base), "--c-primes", "4", "8",
                                             "16", "--out", str(tmp_path / "e"),
                                             "--decoders", *decoders]))
        line = one_error_line(capsys, e)
        assert line.startswith(f"error: {message}"), line
    assert not (tmp_path / "e").exists()


def test_eval_refuses_a_repeated_c_prime_and_no_metric_depends_on_the_list(runs, tmp_path, capsys,
                                                                          one_thread):
    with pytest.raises(SystemExit) as e:
        eval_ae.main(eval_ae.parse_args([*EVAL, "--ae", str(runs.base), "--c-primes", "16", "4",
                                         "4", "8", "--out", str(tmp_path / "e")]))
    assert one_error_line(capsys, e) == "error: --c-primes 16 4 4 8: c' = [4] given more than once"
    _, one = evaluate(tmp_path / "a", "--ae", runs.base, "--c-primes", 4, 8, 16)
    _, other = evaluate(tmp_path / "b", "--ae", runs.base, "--c-primes", 16, 4, 8)
    _, alone = evaluate(tmp_path / "c", "--ae", runs.base, "--c-primes", 8)
    assert one["results"] == other["results"]  # bit for bit, in increasing c'
    assert [r for r in one["results"] if r["c_prime"] == 8] == alone["results"]


def test_eval_checks_out_before_any_image_and_makes_a_missing_parent(runs, tmp_path, capsys,
                                                                    one_thread):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        eval_ae.main(eval_ae.parse_args([*EVAL, "--ae", str(runs.base),
                                         "--out", str(tmp_path / "file/eval")]))
    assert one_error_line(capsys, e) == \
        f"error: --out {tmp_path / 'file/eval'}: {tmp_path / 'file'} is a file, not a folder"
    evaluate(tmp_path / "new/parent/eval", "--ae", runs.base, "--c-primes", 16)
    assert sorted(os.listdir(tmp_path / "new/parent/eval")) == FILES


# ------------------------------------------------------------------------------------------------
# Signals: one line, exit status 128 + the signal, the folder as it was
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_group_stops_eval_with_one_line_and_writes_nothing(tmp_path, sig):
    """SIGTERM (scancel, timeout) or Ctrl-C (SIGINT to the terminal's process group, the
    DataLoader workers included) while the images are evaluated: one line, exit status
    128 + the signal, the previous eval.json untouched, no temp file."""
    out = tmp_path / "eval"
    out.mkdir()
    (out / "eval.json").write_text("the previous evaluation")
    proc = subprocess.Popen([sys.executable, str(REPO / "eval_ae.py"), "--ae", f"random:{AE}",
                             "--images", "100000", "--batch-size", "8", "--num-workers", "2",
                             "--no-rfid", "--no-lpips", "--out", str(out)],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline, line = time.time() + 240, ""
    while not line.startswith("evaluating"):  # printed just before the first batch is read
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
    time.sleep(1.0)  # inside the loop over the images, the workers running
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip() and not x.startswith("WARNING")]
    assert proc.returncode == 128 + sig and lines == [
        f"stopped by {signal.Signals(sig).name}: nothing was written; run the same command "
        f"again (an evaluation starts over)"], err[-3000:]
    assert os.listdir(out) == ["eval.json"]
    assert (out / "eval.json").read_text() == "the previous evaluation"


def test_a_signal_waits_for_the_batch_being_received():
    """Leaving halfway through a batch's hand-over from a DataLoader worker makes the worker
    print a traceback (its shared-memory handshake is cut): the signal waits for the batch, then
    stops."""
    received = []

    class Loader:  # its __next__ is interrupted by a real SIGTERM, as a worker's hand-over can be
        def __iter__(self):
            return self

        def __next__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            received.append("the rest of the hand-over")
            return "batch"
    stop = eval_ae.Stop()
    try:
        with pytest.raises(SystemExit) as e:
            next(eval_ae.batches(Loader(), stop))
    finally:
        stop.restore()
    assert e.value.code == 143 and received == ["the rest of the hand-over"]


def test_a_signal_while_the_results_are_written(tmp_path, monkeypatch):
    """A real SIGTERM to this process while the figures are drawn: nothing is written; while the
    finished files are renamed into place: the whole set is written first, then it stops (exit
    status 143)."""
    def draw(paths):
        for path in paths.values():
            Image.new("RGB", (4, 4)).save(path)

    def draw_then_signal(paths):
        draw(paths)
        os.kill(os.getpid(), signal.SIGTERM)

    replace = os.replace

    def replace_then_signal(src, dst):
        replace(src, dst)
        if dst.endswith("eval.json"):  # the first of the three
            os.kill(os.getpid(), signal.SIGTERM)

    (tmp_path / "eval.json").write_text("old")
    for writer, renaming in [(draw_then_signal, False), (draw, True)]:
        if renaming:
            monkeypatch.setattr(os, "replace", replace_then_signal)
        stop = eval_ae.Stop()
        try:
            with pytest.raises(SystemExit) as e:
                eval_ae.write_outputs(str(tmp_path), {"new": 1}, writer, stop)
        finally:
            stop.restore()
        assert e.value.code == 143 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        if not renaming:  # stopped while drawing: the old file, and no temp file
            assert os.listdir(tmp_path) == ["eval.json"]
            assert (tmp_path / "eval.json").read_text() == "old"
        else:  # stopped while renaming: the new set, whole
            assert stop.wrote and sorted(os.listdir(tmp_path)) == FILES
            assert json.loads((tmp_path / "eval.json").read_text()) == {"new": 1}


# ------------------------------------------------------------------------------------------------
# train_ae.py's grids
# ------------------------------------------------------------------------------------------------

def test_train_ae_grid_shows_each_c_prime_once(tmp_path):
    toy = [8, 16, 24, 32, 40, 48, 56, 64]  # the toy AE's list: 8 // 6 = 1, every one
    assert train_ae.grid_c_primes(toy) == toy
    shown = train_ae.grid_c_primes(ae_lib.channel_candidates(128))  # the paper's 16, 20, ..., 128
    assert shown == [16, 32, 48, 64, 80, 96, 112, 128]
    path = tmp_path / "grid.png"
    train_ae.save_grid(ae_lib.build_ae(AE), torch.zeros(2, 3, 32, 32), [4, 8, 12, 16], False,
                       str(path), rank=0)
    assert Image.open(path).width == (1 + 4) * (32 + 2) + 2  # input, c' = 4, 8, 12, 16, each once


@pytest.mark.filterwarnings("ignore:fid.py. Inception has RANDOM weights", "ignore:only 4 images")
def test_eval_rfid_per_c_prime_does_not_depend_on_the_list(runs, tmp_path, one_thread):
    """rFID's statistics are kept per c' (random Inception weights, the same in both runs: the
    numbers mean nothing, their bookkeeping is what is checked)."""
    def evaluate_with_rfid(out, *c_primes):
        torch.manual_seed(0)  # the random Inception's weights
        eval_ae.main(eval_ae.parse_args([
            "--ae", str(runs.base), "--images", "4", "--num-workers", "0", "--no-lpips",
            "--inception-weights", "random", "--decoders", f"4={runs.tuned}", "--out", str(out),
            "--c-primes", *map(str, c_primes)]))
        return json.loads((out / "eval.json").read_text())
    both = evaluate_with_rfid(tmp_path / "a", 16, 4)
    alone = evaluate_with_rfid(tmp_path / "b", 4)
    assert [r["c_prime"] for r in both["results"]] == [4, 16]
    assert all(r["rfid"] >= 0 for r in both["results"])
    assert both["results"][0]["rfid"] == pytest.approx(alone["results"][0]["rfid"], rel=1e-9)
