"""Algorithms by name, so the CLI, the harness and the simulator agree on the spelling."""

from collections.abc import Callable

from collbench.algorithms.naive import naive
from collbench.algorithms.rabenseifner import rabenseifner
from collbench.algorithms.ring import ring
from collbench.algorithms.schedule import Schedule

ALGORITHMS: dict[str, Callable[..., Schedule]] = {
    "naive": naive,
    "ring": ring,
    "rabenseifner": rabenseifner,
}
"""Schedule generators by name. ``native`` (the library's own all-reduce) is not a schedule
and lives in the transports."""


def build(name: str, nranks: int, count: int, **options) -> Schedule:
    """Build the schedule of algorithm *name*; raises KeyError naming the known ones."""
    try:
        generator = ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}") from None
    return generator(nranks, count, **options)
