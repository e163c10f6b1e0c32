"""Reuse distance: the cache model that follows each schedule's own data (``cache_model =
"reuse"``), where the node-wide knee (``"node"``) sees only the node's buffer total.

A node's cache of C bytes keeps, roughly, what its ranks touched last. A byte touched again
after d bytes of other traffic misses it with probability ``max(0, 1 - C / d)``: the
proportional form of the node-wide knee, applied to each range's own history. So naive's
root, which reduces P - 1 whole messages gathered into one scratch area, misses sooner than
the ring, which reduces each chunk it has just received.

Each rank's buffer is cut into at most :data:`BLOCKS` equal blocks, each stamped with its
node's count of bytes touched when the block was last touched. What touches what:

* a copy of m bytes (a message) touches 2m (read and written): it reads the sender's range,
  whose distance prices the copy, and writes the receiver's (a plain receive) or a scratch
  area (a reducing receive, stamped with the count at that time);
* a reduction of m bytes touches 3m: it reads and writes the receiver's range (2m, whose
  distance is taken first) and reads the scratch the message landed in (m, its distance
  taken after the receiver's); it misses by the mean of the two. (Taking the scratch's
  distance first and counting 2m in all is as defensible; with the waiting share it
  predicts the same, see docs/simulator.md.)

Touches are recorded when the executor posts the op or matches the message, not when the
bytes move: a step's ops are posted together, so the order within a step is approximate.

The run starts as the executor's out-of-place all-reduce does: every rank has just copied its
send buffer into its receive buffer, the node's ranks side by side.
"""

from __future__ import annotations

import numpy as np

BLOCKS = 256
"""Blocks per rank's buffer: enough to follow every chunk of the small rank counts this model
is fitted at, few enough that a touch costs microseconds."""


def missed(distance: np.ndarray | float, cache: float) -> np.ndarray | float:
    """The fraction missed of bytes touched again after *distance* bytes, with *cache* bytes."""
    return np.clip(1.0 - cache / np.maximum(distance, 1.0), 0.0, None)


class ReuseTracker:
    """Every rank's block stamps and every node's count of bytes touched."""

    def __init__(self, node_of: list[int], count: int, itemsize: int, cache_size: float) -> None:
        self.cache = cache_size
        self.node_of = node_of
        self.itemsize = itemsize
        self.block = max(1, -(-count // BLOCKS))
        blocks = -(-count // self.block) if count else 0
        population = np.bincount(node_of)
        copied = 2.0 * self.block * itemsize  # bytes the out-of-place copy touches per block
        self.stamps = [np.arange(1, blocks + 1) * copied * population[n] for n in node_of]
        """Per rank: each block's node count when it was last touched (block i of every rank
        of a node is copied after i blocks of each)."""
        self.count = [blocks * copied * k for k in population.tolist()]
        """Per node: bytes touched so far."""

    def distance_missed(self, rank: int, first: int, stop: int) -> float:
        """The fraction of *rank*'s elements [first, stop) that a touch now would miss."""
        stamps = self.stamps[rank][first // self.block:-(-stop // self.block)]
        distance = self.count[self.node_of[rank]] - stamps + (stop - first) * self.itemsize
        return float(np.mean(missed(distance, self.cache)))

    def touch(self, rank: int, first: int, stop: int, nbytes: float) -> float:
        """Touch *rank*'s elements [first, stop), *nbytes* bytes in all with what else the
        operation touches; return the fraction of the range that missed."""
        if stop <= first:
            return 0.0
        miss = self.distance_missed(rank, first, stop)
        node = self.node_of[rank]
        self.count[node] += nbytes
        self.stamps[rank][first // self.block:-(-stop // self.block)] = self.count[node]
        return miss

    def reduce(self, rank: int, first: int, stop: int, written: float) -> float:
        """Reduce into *rank*'s elements [first, stop) the scratch a message wrote when the
        node's count was *written*; return the fraction of both operands that missed."""
        if stop <= first:
            return 0.0
        nbytes = (stop - first) * self.itemsize
        node = self.node_of[rank]
        acc = self.touch(rank, first, stop, 2 * nbytes)
        scratch = float(missed(self.count[node] - written + nbytes, self.cache))
        self.count[node] += nbytes
        return 0.5 * (scratch + acc)
