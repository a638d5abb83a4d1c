"""A run directory's machinery, apart from the training loop (train.py): making a new run's folder,
reading an existing run, the lock that lets one process train it, the signals that stop it
cleanly, and what a failed write leaves behind.

A run lives in a folder (`new_run_dir`; train.py lists its files). Two processes never train one
run (`RunLock`); Ctrl-C, SIGTERM and SIGHUP stop it between two steps (`stop_signals`, `Stopped`);
every file of the run is written atomically, and a failed write says that the file before it is
intact (`kept`).
"""
import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

from .checkpoint import CheckpointError, checkpoint_meta
from .errors import UserError
from .files import check_writable


def new_run_dir(out, preset):
    """Make a new run directory under `out`, named by the time and the preset, never an
    existing one (two runs started in one second, in two processes, get two); returns it.
    A ValueError says why `out` cannot hold it."""
    out = Path(out)
    check_writable(out)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{preset}"
    out.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        run_dir = out / (base if k == 1 else f"{base}-{k}")
        try:
            run_dir.mkdir()                          # atomic: only one process makes it
            return run_dir
        except FileExistsError:
            continue
    raise ValueError(f"{out}: 999 run directories named {base}*: choose another folder")


def read_run(run_dir):
    """The config.json of a run directory, as a dict; a ValueError says what is missing. A run
    whose config.json could not be written after its first checkpoint (a full disk) is read
    from that checkpoint, which records the same settings: the failed write said --resume."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ValueError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        hint = (f" (did you mean {run_dir.parent}?)"
                if (run_dir.parent / "config.json").exists() else "")
        raise ValueError(f"{run_dir} is a file: a run directory is the folder with config.json "
                         f"and latest.npz{hint}")
    try:
        return json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        try:
            return checkpoint_meta(run_dir / "latest.npz")["train_config"]
        except (CheckpointError, KeyError):
            pass
        raise ValueError(f"{run_dir} is not a run directory (no config.json)") from None
    except ValueError as e:
        raise ValueError(f"{run_dir / 'config.json'} is damaged ({e})") from None


def run_minutes(run_dir):
    """A run's training time in minutes, over every process that trained it, from its
    log.jsonl (NaN where it logged none)."""
    lines = (Path(run_dir) / "log.jsonl").read_text().splitlines()
    seconds = [r["seconds"] for r in map(json.loads, lines) if "seconds" in r]
    return max(seconds, default=float("nan")) / 60


def run_step(run_dir):
    """The step of a run's latest checkpoint (CheckpointError if it is unusable)."""
    return checkpoint_meta(Path(run_dir) / "latest.npz")["step"]


# the signals that stop a run cleanly: Ctrl-C, and what schedulers, `timeout` and a closed
# terminal send before they kill a job
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal (or a KeyboardInterrupt); `signum` says which (None: not a
    signal), the message what was saved. A command exits with status 128 + signum (130 for
    Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

    def __init__(self, message, signum=None):
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def stop_signals(handler):
    """Call handler(signum, frame) on SIGINT, SIGTERM and SIGHUP inside the block, instead of
    dying (or raising KeyboardInterrupt) wherever the program happens to be."""
    if threading.current_thread() is not threading.main_thread():
        yield                                         # only the main thread receives signals
        return
    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class RunLock:
    """One process at a time trains a run: an exclusive lock (flock) on <run>/.lock, held from
    the Trainer's start to the end of its run() (or close(), or the process's end). A second
    Trainer of the run meanwhile, in any process, gets a UserError."""

    def __init__(self, run_dir):
        import fcntl
        self.path = Path(run_dir) / ".lock"
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise UserError(f"the run in {run_dir} is being trained by {holder}: two processes "
                            f"would write one run's checkpoints; wait for it to end, or stop it "
                            f"(Ctrl-C saves it)") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()                        # closing releases the lock


def kept(path):
    """What a failed write leaves: the previous file, intact (files.atomic_write)."""
    path = Path(path)
    if not path.exists():
        return "no earlier file of that name was there"
    try:
        step = f" of step {checkpoint_meta(path)['step']}" if path.suffix == ".npz" else ""
    except CheckpointError:
        step = ""
    return f"the previous {path.name}{step} is intact (free some space, then --resume)"
