"""What the commands share: argument types, the device argument, and one clear line for a user's
mistake.

An expected mistake (a folder that does not exist, a file that is not an image, a bad argument)
raises a UserError (errors.py; data.DataError and checkpoint.CheckpointError are ones) with a
message that says what was wrong, naming the file or value, and what is valid. `run_cli` prints
it as one line `error: ...` on stderr and exits with status 2; any other exception is a bug and
keeps its traceback. `--debug` shows the traceback of a UserError too. `ArgumentParser` makes
argparse's own errors such a line too, and `announce_compiling` says when Numba compiles, so
that the first run does not look frozen.
"""
import argparse
import math
import os
import re
import sys
import warnings

from ..errors import DataWarning, UserError


def run_cli(main, argv=None):
    """Call main(argv); a UserError becomes `error: <message>` on stderr and exit status 2, a
    DataWarning a line `warning: <message>`."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def show(message, category, *args, **kwargs):
        print(f"warning: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = show
            return main(argv)
    except UserError as e:
        if "--debug" in argv:
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad argument is a UserError: one `error:` line like the rest."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


# ---- argument types (argparse calls them; an ArgumentTypeError becomes one `error:` line) ----
def at_least(low):
    """A whole number >= low."""
    def whole_number(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return whole_number


def number(valid, ok):
    """A finite number for which ok(value) holds; `valid` says which."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be a number {valid}, got {text!r}")
        return value
    return parse


positive_float = number("> 0", lambda v: v > 0)
non_negative_float = number(">= 0", lambda v: v >= 0)
fraction = number("in [0, 1)", lambda v: 0 <= v < 1)
probability = number("in (0, 1)", lambda v: 0 < v < 1)

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_size(text):
    """'512M', '2G', '1.5G' or a number of bytes -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive size such as 512M or 2G, "
                                         f"got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def block_shape(text):
    """'512' -> (1, 512, 512); 'z,y,x' -> (z, y, x), all positive."""
    try:
        parts = [int(p) for p in str(text).split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [1, parts[0], parts[0]]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"must be Z,Y,X voxels per block (e.g. 1,1024,1024) or "
                                         f"one size for Y and X, all positive, got {text!r}")
    return tuple(parts)


def device(name):
    """"cpu" or "gpu" for --device `name` (None: $TINYUNET_DEVICE, else the CPU); a UserError
    names the argument and what to do instead."""
    from .. import backend
    try:
        return backend.resolve_device(name)
    except (ValueError, RuntimeError) as e:
        given = f"--device {name}" if name else f"TINYUNET_DEVICE={os.environ['TINYUNET_DEVICE']}"
        raise UserError(f"{given}: " + str(e).replace("device='cpu'", "--device cpu")) from None


def announce_compiling(message="compiling the Numba kernels: the first run only, about 15-20 s "
                               "(they are cached on disk for later runs)"):
    """Print `message` on stderr once, when Numba starts compiling a kernel in this process.

    The kernels compile on their first call and are cached on disk; only a real compilation
    (a cache miss) says so, so a warm run stays silent and a cold one does not look frozen.
    """
    from numba.core import event

    class _Once(event.Listener):
        said = False

        def on_start(self, ev):
            if not self.said:
                self.said = True
                from tqdm import tqdm
                tqdm.write(message, file=sys.stderr)       # above a progress bar, if any

        def on_end(self, ev):
            pass

    listener = _Once()
    event.register("numba:compile", listener)
    return listener
