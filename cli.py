"""The command line of every script (paper Sec. 4.1's runs as users type them): argparse with
one-line errors that come before any compute, number types that refuse NaN, inf and out-of-range
values, `--help` that shows every default once, and the two lines each run header prints: the
machine, and the precision policy (bf16 autocast on CUDA for training, fp32 on CPU and for
evaluation).

    python train_diffusion.py --lr nan   # error: argument --lr: nan is not a finite number (...)
    python sample.py --help              # every option with its default
"""
import argparse
import math
import os
import platform
import sys

import torch


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the scripts' --help (HelpFormatter) and one-line errors, like every other bad
    input: `error: argument --lr: ...` and exit status 2, before any compute
    (under torchrun from rank 0 only)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def real(low=-math.inf, high=math.inf, above=False):
    """An argparse type: a finite float in [low, high] (in (low, high] with above=True). NaN, inf
    and values out of a meaningful range are refused while the command line is parsed
    (`--cfg-scale nan` would sample NaNs)."""
    def number(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or value > high or (above and value == low):
            bounds = f"{'(' if above else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"{text} is not a finite number in {bounds}")
        return value
    return number


# Every seed a torch.Generator, NumPy and the chunk arithmetic take without overflow.
SEED = (0, 2 ** 63 - 1)


def integer(low, high=None):
    """An argparse type: an int in [low, high] (high None: no upper bound), e.g. `--seed` in [0,
    2^63 - 1]."""
    def number(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = "inf" if high is None else high
            raise argparse.ArgumentTypeError(f"{text} is not in [{low}, {bound}]")
        return value
    return number


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The scripts' --help: the docstring's commands kept as written, and every option with its
    default, once. An option whose help says its default in words ("default: the recipe's") keeps
    those words; otherwise its value is appended, except None, which a help line must explain
    instead (tests/test_cli.py walks every script)."""

    def _get_help_string(self, action):
        text = action.help or ""
        says_default = "%(default)" in text or "default" in text.lower()
        if says_default or action.default in (None, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def machine(device):
    """The device in words, for every time a script reports: the GPU's name, or the CPU's model,
    threads and the instruction set torch dispatches to (AVX2 CPUs emulate bf16; AVX512 / AMX ones
    may not), and the torch version."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            names = (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
            cpu = next(names, cpu)
    isa = torch.backends.cpu.get_cpu_capability()
    return f"{cpu} ({torch.get_num_threads()} threads, {isa}), torch {torch.__version__}"


# ------------------------------------------------------------------------------------------------
# Precision policy, in one place
# ------------------------------------------------------------------------------------------------

def precision(device, bf16=None, evaluation=False, flag="--bf16"):
    """-> (bf16, why): whether to run under torch.autocast(device.type, torch.bfloat16), and why,
    for the run header.

    Training: bf16 autocast by default on CUDA GPUs with bf16 support (the paper's H100s,
    Sec. 4.1), fp32 on CPU, always. A CPU without native bf16 (AVX2 only: most laptops, many
    servers) emulates it at ~15x the fp32 cost of a tiny AE step, and fp32 makes CPU results the
    same on every kind of CPU. Evaluation (the latent cache, sample.py, eval_ae.py): fp32
    everywhere by default, as DC-Gen evaluates. `bf16` True / False (the script's `flag` and its
    --no- form) overrides either default."""
    if bf16 is not None:
        mode = "bf16 autocast" if bf16 else "fp32"
        given = flag if bf16 else flag.replace("--", "--no-", 1)
        return bool(bf16), f"{mode} ({given})"
    if evaluation:
        return False, f"fp32 (the evaluation protocol; {flag} to autocast)"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return True, f"bf16 autocast (CUDA default; {flag.replace('--', '--no-', 1)} for fp32)"
    if device.type == "cuda":
        return False, f"fp32 (this GPU has no bf16; {flag} to autocast)"
    return False, f"fp32 (CPU default; {flag} to autocast)"
