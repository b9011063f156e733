"""Shared test fixtures and helpers: one thread for tiny tensors, random parameters and norm
statistics, the run folder as the trainers leave it (metrics.jsonl, ckpt_*.pt), and the processes
of the run tests (a lock held by another process, a process's children, torchrun's environment in
this process)."""
import glob
import json
import os

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation, and on a busy 2-core
    machine its spin-waits made the model and diffusion tests 20x slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def randomize_(model, std=0.1, seed=0):
    """DiT starts with a zero output (adaLN-Zero); give every parameter a value so outputs depend
    on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def randomize_norms(model):
    """Give norms non-trivial affine parameters and statistics, so that round trips are a real
    check."""
    import ae as ae_lib
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (ae_lib.RMSNorm2d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def records(out):
    """The records of a run folder's metrics.jsonl, in order."""
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def checkpoints(out):
    """A run folder's ckpt_*.pt paths, oldest first."""
    return sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))


# Processes of the subprocess tests and their fast in-process twins: a run folder's lock held by
# another process, the children of a process, whether a process still runs.

HANG = 600  # seconds a subprocess test waits: only a hang takes this long, even on 2 busy cores

LOCK_HOLDER = """import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture
def lock_holder():
    """hold(folder) -> a process (no torch: it starts in milliseconds) holding folder/.lock as a
    live run does (run.lock_run), until the test kills it or ends."""
    import subprocess
    import sys
    procs = []

    def hold(folder):
        os.makedirs(folder, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, os.path.join(folder, ".lock")],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc
    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def children(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def torchrun_env(monkeypatch):
    """The environment torchrun gives its one worker (rank 0 of 1): fsdp.setup then makes a gloo
    process group in this process, and the trainers shard with FSDP2 as under torchrun;
    runlog.finish takes the group down."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(k, v)
