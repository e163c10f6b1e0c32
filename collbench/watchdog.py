"""Abort the job when a rank stops making progress, naming what it was waiting for, or when
a rank fails on its own (:func:`abort_on_failure`).

A rank that dies or leaves early would otherwise leave its peers blocked in a receive for
ever. The watchdog is a daemon thread that looks at the rank's :class:`Progress` every
fraction of the timeout; if nothing moved for *timeout* seconds it prints one sentence naming
the algorithm, step and peers, then aborts the whole MPI job (MPI_Abort ends every rank).
mpi4py releases the GIL inside blocking MPI calls, so the thread runs while the main one waits.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from collbench.errors import CollbenchError
from collbench.transports.base import Progress

TIMEOUT_EXIT = 3
"""Exit status of a job aborted by the watchdog."""

FAILURE_EXIT = 2
"""Exit status of a job aborted because one rank failed (the CLI's status for an error)."""

FORWARD_GRACE_S = 1.0
"""Pause between printing the message and aborting: MPI_Abort makes the launcher kill every
process at once, and Hydra drops output its proxies have not yet forwarded (seen under load:
exit status 3 and an empty stderr), so the message would be lost without it."""


class Watchdog:
    """Watch *progress*; after *timeout* seconds without a tick call *abort* with a message."""

    def __init__(self, progress: Progress, timeout: float, rank: int,
                 abort: Callable[[int], None], context: Callable[[], str] = lambda: "") -> None:
        self.progress, self.timeout, self.rank = progress, timeout, rank
        self._abort, self._context = abort, context
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="collbench-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def message(self) -> str:
        p = self.progress
        p.settle()
        where = p.what if p.step is None else f"{p.what}, step {p.step}"
        context = self._context()
        return (f"collbench: error: rank {self.rank} made no progress for {self.timeout:g} s in "
                f"{where}{' (' + context + ')' if context else ''}, {p.peers()}; "
                "a rank has died or hangs: aborting the job (raise --timeout if it is only slow)")

    def _watch(self) -> None:
        last, since = self.progress.ticks, time.monotonic()
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            if self.progress.ticks != last:
                last, since = self.progress.ticks, time.monotonic()
            elif time.monotonic() - since > self.timeout:
                print(self.message(), file=sys.stderr, flush=True)
                time.sleep(FORWARD_GRACE_S)
                self._abort(TIMEOUT_EXIT)
                return


def failure_message(rank: int, error: BaseException) -> str:
    """One line naming the rank and the error; an unexpected exception also names its type and
    the line that raised it (the rank aborts, so there is no traceback to read)."""
    text = " ".join(str(error).split())
    if isinstance(error, CollbenchError):
        return f"collbench: error: rank {rank}: {text}"
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"collbench: error: rank {rank}: {type(error).__name__}{': ' + text if text else ''}{where}"


@contextlib.contextmanager
def abort_on_failure(rank: int, size: int, abort: Callable[[int], None]) -> Iterator[None]:
    """Turn an error raised on this rank alone into one line on stderr and MPI_Abort of the
    whole job: its peers would otherwise wait in their next receive or barrier until the
    watchdog's timeout. Errors every rank raised alike (``CollbenchError.shared``) and Ctrl-C
    (which the launcher forwards to every rank) pass through, as does anything in a job of one
    rank. The launcher may add its own lines about the abort after this one."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:
        if size == 1 or (isinstance(error, CollbenchError) and error.shared):
            raise
        print(failure_message(rank, error), file=sys.stderr, flush=True)
        time.sleep(FORWARD_GRACE_S)
        abort(FAILURE_EXIT)
        os._exit(FAILURE_EXIT)  # MPICH's MPI_Abort can return before the launcher kills the rank
