"""The one exception type the CLI turns into a single clear sentence and a non-zero exit."""


class CollbenchError(Exception):
    """A user-facing error: the message says what is wrong and what to do about it.

    *shared* marks an error that every rank of an MPI job raised alike (rank 0 decided and
    told the others), so that only rank 0 prints it."""

    def __init__(self, message: str, shared: bool = False) -> None:
        super().__init__(message)
        self.shared = shared


class ResultsError(CollbenchError):
    """A results folder or file is missing, unreadable or malformed; the message names it."""
