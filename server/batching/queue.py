"""The batcher's queue: waiting items by arrival and by exact length, and the batch packer.

A pure data structure (no event loop, no threads), used by
:class:`~twostage.server.batching.batcher.DynamicBatcher` on its event loop.

Packing (fairness first, then padding). The oldest live item always anchors the next batch, so no
item waits behind more than the items older than it. The batch is then filled from the queue's
length buckets with the item that adds the least padding (the nearest length below the batch's
padded length costs ``padded - len``; a longer one costs ``(len - padded) * n``), oldest first
within a length. Filling stops when the next item would make ``padded_len * n > max_tokens``,
when ``n == max_size``, or (optional) when the batch's padded/real tokens would exceed
``max_ratio``. A single item longer than the budget still makes a batch, alone. With a backlog
the queue holds many items near any length, so batches are near-uniform in length; with few
items queued a batch mixes lengths, which ``max_ratio`` bounds (see the batcher's docstring).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What the queue needs of an item: a unique arrival number and a length in tokens."""

    @property
    def seq(self) -> int: ...

    @property
    def length(self) -> int: ...


Q = TypeVar("Q", bound=Queued)


class PendingQueue(Generic[Q]):
    """Waiting items, in arrival order and bucketed by exact length (sorted), O(1) removal."""

    def __init__(self) -> None:
        self._fifo: OrderedDict[int, Q] = OrderedDict()
        self._buckets: dict[int, OrderedDict[int, Q]] = {}
        self._lengths: list[int] = []  # sorted lengths of the non-empty buckets
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._fifo)

    def push(self, item: Q) -> None:
        self._fifo[item.seq] = item
        bucket = self._buckets.get(item.length)
        if bucket is None:
            bucket = self._buckets[item.length] = OrderedDict()
            bisect.insort(self._lengths, item.length)
        bucket[item.seq] = item
        self.tokens += item.length

    def discard(self, item: Q) -> bool:
        """Remove ``item`` if it is still queued; True if it was."""
        if self._fifo.pop(item.seq, None) is None:
            return False
        bucket = self._buckets[item.length]
        del bucket[item.seq]
        if not bucket:
            del self._buckets[item.length]
            del self._lengths[bisect.bisect_left(self._lengths, item.length)]
        self.tokens -= item.length
        return True

    def oldest(self) -> Q:
        return next(iter(self._fifo.values()))

    def pack(
        self,
        max_tokens: int,
        max_size: int,
        max_ratio: float | None,
        alive: Callable[[Q], bool],
    ) -> list[Q]:
        """Take one batch out of the queue: the oldest live item, then least-padding neighbours.

        ``alive`` is asked about each item taken; a dead item is consumed and skipped.
        """
        batch: list[Q] = []
        while self._fifo and not batch:
            item = self.oldest()
            self.discard(item)
            if alive(item):
                batch.append(item)
        if not batch:
            return batch
        padded = real = batch[0].length
        lengths = self._lengths
        while len(batch) < max_size and lengths:
            n1 = len(batch) + 1
            i = bisect.bisect_right(lengths, padded)  # lengths[:i] <= padded < lengths[i:]
            best: int | None = None
            best_waste = 0
            if i > 0:
                low, cost = lengths[i - 1], padded * n1
                if cost <= max_tokens and (max_ratio is None or cost <= max_ratio * (real + low)):
                    best, best_waste = low, padded - low
            if i < len(lengths):
                high = lengths[i]
                cost, waste = high * n1, (high - padded) * (n1 - 1)
                if (
                    cost <= max_tokens
                    and (max_ratio is None or cost <= max_ratio * (real + high))
                    and (best is None or waste < best_waste)
                ):
                    best = high
            if best is None:
                break
            # Drain that bucket while it fits: it stays the cheapest choice (its waste is fixed,
            # a longer length only costs more as n grows), so no new search per item.
            bucket = self._buckets[best]
            while True:
                item = next(iter(bucket.values()))
                self.discard(item)
                if alive(item):
                    batch.append(item)
                    padded = max(padded, best)
                    real += best
                n1 = len(batch) + 1
                cost = padded * n1
                if (
                    not bucket
                    or n1 > max_size
                    or cost > max_tokens
                    or (max_ratio is not None and cost > max_ratio * (real + best))
                ):
                    break
        return batch
