"""Run the train command (examples/train_isbi.py) and send it a real SIGINT at a chosen point
(used by test_train_isbi).

    python tests/interrupt_driver.py POINT K [train_isbi arguments ...]

The process signals itself (os.kill) from inside the K-th call (1-based) of a function that runs
at POINT, so the signal arrives at exactly the same place in every run; Python then runs the
SIGINT handler there, as it would for a Ctrl-C typed at that moment. POINT is one of:

    none        no signal: the uninterrupted run to compare with
    sample      drawing a training tile (the data random state has moved on)
    loss        between a step's forward and backward pass
    optimizer   inside the optimizer's update, halfway through the parameters (the CPU
                engine's update of one parameter array, kernels/updates.py)
    validate    predicting a validation slice
    checkpoint  writing a checkpoint (the temporary file is open)
    twice       two Ctrl-C in a row between a step's forward and backward pass
    sigterm     SIGTERM (what schedulers and `timeout` send) between forward and backward
    sighup      SIGHUP (a closed terminal) there
"""
import os
import signal
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tinyunet.config as config                # noqa: E402
import tinyunet.data.samples as samples         # noqa: E402
import tinyunet.kernels.updates as updates      # noqa: E402
import tinyunet.train as train                  # noqa: E402
from tinyunet.commands.cli import run_cli                # noqa: E402
from tinyunet.commands.train import main as train_main  # noqa: E402


def sigint_on_call(owner, name, k, times=1, signum=signal.SIGINT):
    """Wrap owner.name so that its k-th call sends `signum` `times` times before it does its
    work."""
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def main():
    point, k, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    # a parent that ignores SIGINT (a background job) would leave it ignored here: restore Python's
    signal.signal(signal.SIGINT, signal.default_int_handler)
    targets = {"sample": (samples, "deform_grid"), "loss": (train, "softmax_cross_entropy"),
               "optimizer": (updates, "sgd"), "validate": (train, "predict_tiled"),
               "checkpoint": (np, "savez"), "twice": (train, "softmax_cross_entropy"),
               "sigterm": (train, "softmax_cross_entropy"),
               "sighup": (train, "softmax_cross_entropy")}
    signums = {"sigterm": signal.SIGTERM, "sighup": signal.SIGHUP}
    if point != "none":
        owner, name = targets[point]
        sigint_on_call(owner, name, k, times=2 if point == "twice" else 1,
                       signum=signums.get(point, signal.SIGINT))
    # the "tiny" preset shrunk further, so that a child runs in a few seconds
    config.PRESETS["tiny"] = dict(base_channels=4, depth=2, tile=92, lr=0.003, warmup=3,
                                  log_every=4)
    run_cli(train_main, argv)


if __name__ == "__main__":
    main()
