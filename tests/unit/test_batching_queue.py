"""The batcher's queue as a data structure: no event loop, no threads."""

from __future__ import annotations

import random
from dataclasses import dataclass

from twostage.server.batching.queue import PendingQueue


@dataclass(frozen=True)
class Item:
    seq: int
    length: int


def queue_of(lengths: list[int]) -> tuple[PendingQueue[Item], list[Item]]:
    q: PendingQueue[Item] = PendingQueue()
    items = [Item(i, n) for i, n in enumerate(lengths)]
    for item in items:
        q.push(item)
    return q, items


def everything(item: Item) -> bool:
    return True


def test_the_oldest_item_anchors_every_batch() -> None:
    q, items = queue_of([50, 10, 10, 10, 50, 50])
    batch = q.pack(max_tokens=100, max_size=8, max_ratio=None, alive=everything)
    assert batch[0] is items[0] and [i.length for i in batch] == [50, 50]  # 2 x 50 <= 100
    assert q.oldest() is items[1] and len(q) == 4 and q.tokens == 80


def test_least_padding_neighbours_and_the_limits() -> None:
    q, _ = queue_of([20, 5, 19, 21, 40, 20, 18])
    batch = q.pack(max_tokens=1000, max_size=4, max_ratio=None, alive=everything)
    assert [i.length for i in batch] == [20, 20, 19, 18]  # same length first, then just below
    q, _ = queue_of([10] * 10)
    assert len(q.pack(max_tokens=35, max_size=64, max_ratio=None, alive=everything)) == 3
    q, _ = queue_of([10, 4, 4, 4])
    # padded 10 x n against real tokens: a cap of 1.5 stops at 10 + 4 (20 / 14 = 1.43)
    assert len(q.pack(max_tokens=1000, max_size=64, max_ratio=1.5, alive=everything)) == 2
    q, _ = queue_of([500])
    assert len(q.pack(max_tokens=100, max_size=64, max_ratio=None, alive=everything)) == 1


def test_dead_items_are_consumed_and_skipped() -> None:
    q, items = queue_of([10, 10, 10, 10])
    dead = {items[0].seq, items[2].seq}
    batch = q.pack(max_tokens=1000, max_size=64, max_ratio=None, alive=lambda i: i.seq not in dead)
    assert batch == [items[1], items[3]] and len(q) == 0 and q.tokens == 0
    q, items = queue_of([10])
    assert q.pack(max_tokens=1000, max_size=64, max_ratio=None, alive=lambda i: False) == []


def test_discard_and_token_count_stay_consistent_under_random_use() -> None:
    rng = random.Random(0)
    q: PendingQueue[Item] = PendingQueue()
    live: dict[int, Item] = {}
    for seq in range(3000):
        roll = rng.random()
        if roll < 0.6 or not live:
            item = Item(seq, rng.randint(1, 64))
            q.push(item)
            live[seq] = item
        elif roll < 0.8:
            victim = live.pop(rng.choice(list(live)))
            assert q.discard(victim) and not q.discard(victim)
        else:
            oldest = min(live)
            batch = q.pack(max_tokens=256, max_size=16, max_ratio=None, alive=everything)
            assert batch and batch[0].seq == oldest  # fairness: the oldest goes first
            assert len(batch) <= 16 and max(i.length for i in batch) * len(batch) <= max(
                256, batch[0].length
            )
            for item in batch:
                del live[item.seq]
        assert len(q) == len(live) and q.tokens == sum(i.length for i in live.values())
        if live:
            assert q.oldest().seq == min(live)
