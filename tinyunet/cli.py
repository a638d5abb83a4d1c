"""What the command-line scripts in examples/ share: one clear line for a user's mistake.

An expected mistake (a folder that does not exist, a file that is not an image, a bad argument)
raises `UserError` with a message that says what was wrong, naming the file or value, and what is
valid. `run_cli` prints it as one line `error: ...` on stderr and exits with status 2; any other
exception is a bug and keeps its traceback. `--debug` shows the traceback of a UserError too.
`ArgumentParser` makes argparse's own errors such a line too, and `announce_compiling` says when
Numba compiles, so that the first run does not look frozen.
"""
import argparse
import sys


class UserError(Exception):
    """A mistake in the user's input; the message is the whole explanation."""


def run_cli(main, argv=None):
    """Call main(argv); a UserError becomes `error: <message>` on stderr and exit status 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
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
