"""The one exception type the CLI turns into a single clear sentence and a non-zero exit."""


class CollbenchError(Exception):
    """A user-facing error: the message says what is wrong and what to do about it."""


class ResultsError(CollbenchError):
    """A results folder or file is missing, unreadable or malformed; the message names it."""
