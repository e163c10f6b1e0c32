"""All-reduce algorithms written once, as communication schedules.

Vocabulary (used the same way in every module of this package):

- *rank*: a process taking part, numbered ``0 .. nranks-1``.
- *nranks*: how many ranks take part (written ``P`` in formulas).
- *count*: the length of each rank's buffer, in elements. Bytes appear only in transports,
  bandwidth figures and the harness; a schedule knows nothing of dtypes.
- *chunk*: the ``1/nranks`` share of the buffer that one rank owns after a reduce-scatter
  (:func:`collbench.algorithms.schedule.chunk_bounds` splits ``count`` into balanced chunks, the first
  ``count % nranks`` one element longer).
- *segment*: a piece of a chunk, the unit of pipelining; its *lane* id says which pipeline it
  belongs to.
- *step*: a set of operations a rank posts together and waits for together. Ranks are not
  synchronised between steps: a rank only waits for the messages its own step needs.
- *peer*: the other rank of a send or receive.

An algorithm is a pure function ``(nranks, count) -> Schedule`` with no numpy, transport or
I/O; the schedule it returns builds each rank's steps only when asked
(:class:`~collbench.algorithms.schedule.RankSteps`), so a rank of a real job builds its own steps alone.
Three executors run the same :class:`~collbench.algorithms.schedule.Schedule`: the numpy oracle in
:mod:`collbench.algorithms.reference`, the real transports in ``collbench``, and the SimPy model in ``sim``.
"""

from collbench.algorithms.naive import naive
from collbench.algorithms.rabenseifner import rabenseifner
from collbench.algorithms.registry import ALGORITHMS, build
from collbench.algorithms.ring import ring
from collbench.algorithms.schedule import (
    Kind,
    Op,
    RankSteps,
    Schedule,
    ScheduleError,
    chunk_bounds,
    validate,
    validate_rank,
)

__all__ = [
    "ALGORITHMS",
    "Kind",
    "Op",
    "RankSteps",
    "Schedule",
    "ScheduleError",
    "build",
    "chunk_bounds",
    "naive",
    "rabenseifner",
    "ring",
    "validate",
    "validate_rank",
]
