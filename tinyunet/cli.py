"""What the command-line scripts in examples/ share: one clear line for a user's mistake.

An expected mistake (a folder that does not exist, a file that is not an image, a bad argument)
raises `UserError` with a message that says what was wrong, naming the file or value, and what is
valid. `run_cli` prints it as one line `error: ...` on stderr and exits with status 2; any other
exception is a bug and keeps its traceback. `--debug` shows the traceback of a UserError too.
"""
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
