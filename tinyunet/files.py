"""Writing files safely: atomically, and only where writing can succeed.

`atomic_write` writes to a temporary file in the same folder, flushes it to disk and renames it
over the old file, so a crash never leaves a half-written file in place of a good one (the
checkpoints, the run's log). `check_writable` says before any work starts why an output folder
could not be made or written.
"""
import os
from pathlib import Path

from .errors import UserError


class WriteError(UserError, OSError):
    """A file that could not be written (a full disk, a lost mount): the message names it and
    says what is left in its place."""


def atomic_write(path, write):
    """Write a file via a temporary file in the same folder and an atomic rename; write(f)
    writes the bytes to the open file f."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_file(path, writer, kept=None):
    """atomic_write, with a failure (OSError) as a WriteError that names the file and says what
    is left: `kept`, or by default that nothing was left in its place."""
    try:
        atomic_write(path, writer)
    except OSError as e:
        raise WriteError(f"could not write {path} ({e.strerror or e}): "
                         f"{kept or 'nothing was left in its place; free some space and run again'}"
                         ) from None


def check_writable(folder):
    """A ValueError if `folder` (which need not exist yet) could not be made and written: it is
    a file, or the nearest existing folder above it is a file or not writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, which is not a writable folder")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write to {folder}: {parent} is a file, which is not a "
                         f"writable folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write to {folder}: {parent.resolve()} is not a writable "
                         f"folder")
