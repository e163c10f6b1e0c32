"""What each op of a rank must wait for, derived from the schedule as it is: the rule that lets
an executor run a schedule as a dataflow instead of step by step.

Steps order a rank's ops; inside a step :func:`~collbench.algorithms.schedule.validate` already
guarantees that only reducing receives may overlap, and those commute (they are applied in
order of arrival today). So only ops of *different* steps whose element ranges overlap are
ordered, and only when one of them writes:

- a **send** of R waits for every earlier receive into a range overlapping R (it must ship the
  reduced or copied data, read-after-write);
- a **receive** into R waits for the earlier sends of an overlapping range to be done with the
  buffer (write-after-read) and for the earlier receives into an overlapping range (so
  reductions and copies land in the schedule's order, write-after-write).

Two sends never wait for each other. :func:`dependencies` keeps only the *direct* waits: the
last writers of each element and the readers since, which implies every other wait of the
rule by transitivity (a test checks this against the pairwise rule). For a receive the wait
is on *applying* it (reducing or copying into place): an executor may post a reducing
receive into private scratch earlier, and must post a copying receive, which lands in place,
only once its waits are done.

Ops are numbered per rank in schedule order (step by step, in the order listed): the
numbering of :func:`flat_ops`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence

from collbench.algorithms.schedule import Kind, Op, Step


def flat_ops(steps: Sequence[Step]) -> list[tuple[int, Op]]:
    """``(step index, op)`` of every op of a rank's *steps*, in schedule order: op ``i`` of the
    rank is item ``i``."""
    return [(index, op) for index, step in enumerate(steps) for op in step]


def message_keys(steps: Sequence[Step], rank: int) -> list[tuple[int, int, int, int]]:
    """For each op of *rank*'s *steps* (numbered as by :func:`flat_ops`), the message it sends
    or receives as ``(src, dst, step, k)``: the schedule's matching rule, the k-th send from
    src to dst in a step meets the k-th receive at dst from src."""
    keys, seen = [], defaultdict(int)
    for index, op in flat_ops(steps):
        sending = op.kind is Kind.SEND
        src, dst = (rank, op.peer) if sending else (op.peer, rank)
        k = seen[(index, sending, op.peer)]
        seen[(index, sending, op.peer)] += 1
        keys.append((src, dst, index, k))
    return keys


def dependencies(steps: Sequence[Step]) -> list[tuple[int, ...]]:
    """For each op of a rank's *steps* (numbered as by :func:`flat_ops`), the ops it must wait
    for directly, in increasing order. O(ops x elementary ranges they cover): the ranges are
    cut at every op's bounds, so the ring's ops each cover one, the naive root's one."""
    ops = flat_ops(steps)
    cuts = sorted({b for _, op in ops for b in (op.start, op.stop)})
    pieces = max(len(cuts) - 1, 0)
    # Per elementary range: the ops that last wrote it (all of one step) and those that read
    # it since.
    writers: list[tuple[int, ...]] = [()] * pieces
    readers: list[list[int]] = [[] for _ in range(pieces)]
    result: list[tuple[int, ...]] = [()] * len(ops)
    i = 0
    for step in steps:
        first = i
        for op in step:  # the waits of one step, all against the state before it
            lo, hi = bisect_left(cuts, op.start), bisect_left(cuts, op.stop)
            waits: set[int] = set()
            for piece in range(lo, hi):
                waits.update(writers[piece])
                if op.kind is not Kind.SEND:
                    waits.update(readers[piece])
            result[i] = tuple(sorted(waits))
            i += 1
        new_writers: dict[int, list[int]] = {}
        for j, op in enumerate(step, first):  # then the step's own reads and writes
            lo, hi = bisect_left(cuts, op.start), bisect_left(cuts, op.stop)
            for piece in range(lo, hi):
                if op.kind is Kind.SEND:
                    readers[piece].append(j)
                else:
                    new_writers.setdefault(piece, []).append(j)
        for piece, js in new_writers.items():
            writers[piece] = tuple(js)
            readers[piece] = []
    return result


def waits_by_rule(steps: Sequence[Step]) -> list[set[int]]:
    """The rule of the module docstring applied to every pair of ops, O(ops²): the
    specification :func:`dependencies` is checked against, and not for executors."""
    ops = flat_ops(steps)
    result: list[set[int]] = [set() for _ in ops]
    for j, (sj, b) in enumerate(ops):
        for i, (si, a) in enumerate(ops[:j]):
            if si < sj and a.start < b.stop and b.start < a.stop and not (
                    a.kind is Kind.SEND and b.kind is Kind.SEND):
                result[j].add(i)
    return result


def successors(waits: Sequence[Sequence[int]]) -> list[list[int]]:
    """The inverse of *waits*: for each op, the ops that wait for it."""
    result: list[list[int]] = [[] for _ in waits]
    for j, before in enumerate(waits):
        for i in before:
            result[i].append(j)
    return result

