"""The one error type a user is meant to read: a mistake in the input, not a bug.

UserError's message is the whole explanation: what was wrong, naming the file or value, and what
is valid. The library's own kinds derive from it (data.DataError for images and labels,
checkpoint.CheckpointError for checkpoints), so a command prints any of them as one line
(commands/cli.py: run_cli) and a program can catch them all at once. A DataWarning is the same
for what is worth a word but not an error.
"""


class UserError(Exception):
    """A mistake in the user's input; the message is the whole explanation."""


class DataWarning(UserWarning):
    """Something about the data a user should know (a colour image made grey, a constant
    image, another bit depth than the model's): the commands print it as one `warning:` line."""
