"""Standard output that may be a pipe whose reader goes away (``collbench ... | head``).

A command keeps working when its reader closes early: the measurement or simulation goes on,
every point is stored, and the output is dropped from then on instead of ending the process
with a BrokenPipeError (or, under mpiexec, ending one rank of a job that the others then
wait for). The exit status is the command's own, as if the reader had read everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


class QuietOnClosedPipe:
    """A text stream proxy: writes and flushes that meet a closed pipe point the stream's
    file descriptor at /dev/null (so the interpreter's final flush succeeds too) and are
    dropped; everything else is the wrapped stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if self.reader_gone:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop_output()
            return len(text)

    def flush(self) -> None:
        if self.reader_gone:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop_output()

    def _drop_output(self) -> None:
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_on_closed_pipe() -> Iterator[QuietOnClosedPipe]:
    """Make ``sys.stdout`` a :class:`QuietOnClosedPipe` for the duration."""
    original = sys.stdout
    sys.stdout = QuietOnClosedPipe(original)
    try:
        yield sys.stdout
    finally:
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()
        sys.stdout = original
