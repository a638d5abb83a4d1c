"""The one error type a user is meant to read: a mistake in the input, not a bug.

UserError's message is the whole explanation: what was wrong, naming the file or value, and what
is valid. The library's own kinds derive from it (data.DataError for images and labels,
checkpoint.CheckpointError for checkpoints), so a command prints any of them as one line
(cli.run_cli) and a program can catch them all at once.
"""


class UserError(Exception):
    """A mistake in the user's input; the message is the whole explanation."""
