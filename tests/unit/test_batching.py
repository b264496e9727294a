"""DynamicBatcher driven by a fake runtime: batching, packing, drops, failures, drain, overlap.

The fake runtime is a real (tiny) model stand-in: ``prepare`` pads int lists into an int64 array,
``run`` returns the row sums and records what it ran. An item is ``[v] * length`` with a unique
``v``, so its answer ``v * length`` proves it came back to the right caller, and ``v`` in the
recorded rows proves whether it was computed. Runs can be held on a ``threading.Event`` gate;
the tests wait on conditions, never on sleeps.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from twostage.server.batching import BatchedResult, DynamicBatcher
from twostage.server.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    Overloaded,
    Unavailable,
)
from twostage.server.metrics import Metrics

pytestmark = pytest.mark.timeout(60)  # a lost answer shows up as a hang: fail it instead

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"
WAIT_S = 10.0  # upper bound for a thread-side condition; never reached when the code is right


class Crash(BaseException):
    """Not an Exception: what a dying worker looks like (it escapes the batch error handling)."""


class FakeRuntime:
    """Model stand-in: pads int lists, returns row sums, records batches; runs can be gated."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self._cond = threading.Condition()
        self.prepared: list[list[int]] = []  # first value of each prepared row, per prepare call
        self.shapes: list[tuple[int, int]] = []  # (rows, padded_len) of each completed run
        self.ran: list[int] = []  # first value of every row that went through run
        self.runs_started = 0
        self.fail_on: dict[int, BaseException] = {}  # run raises this if the value is in a batch
        self.fail_prepare_on: dict[int, BaseException] = {}  # the same for prepare

    def prepare(self, items: list[list[int]]) -> np.ndarray:
        for x in items:
            if x[0] in self.fail_prepare_on:
                raise self.fail_prepare_on[x[0]]
        width = max(len(x) for x in items)
        feed = np.zeros((len(items), width), dtype=np.int64)
        for row, x in enumerate(items):
            feed[row, : len(x)] = x
        with self._cond:
            self.prepared.append([x[0] for x in items])
            self._cond.notify_all()
        return feed

    def run(self, feed: np.ndarray) -> np.ndarray:
        with self._cond:
            self.runs_started += 1
            self._cond.notify_all()
        assert self.gate.wait(WAIT_S), "test gate never opened"
        values = [int(v) for v in feed[:, 0]]
        for v in values:
            if v in self.fail_on:
                raise self.fail_on[v]
        with self._cond:
            self.shapes.append(feed.shape)
            self.ran.extend(values)
        return feed.sum(axis=1)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait (off the event loop) until ``predicate`` holds for the runtime's records."""

        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(predicate, WAIT_S)

        assert await asyncio.to_thread(wait), "condition not reached"

    def was_prepared(self, value: int) -> bool:
        return any(value in batch for batch in self.prepared)


_values = itertools.count(1)


def item(length: int) -> tuple[list[int], int]:
    """A fresh item of ``length`` tokens and its expected answer."""
    v = next(_values)
    return [v] * length, v * length


async def settle() -> None:
    """Let every ready callback and task of the event loop run (no waiting on time)."""
    for _ in range(10):
        await asyncio.sleep(0)


Factory = Callable[..., tuple[DynamicBatcher[list[int], np.ndarray, int], FakeRuntime, Metrics]]


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    """Build started batchers over fresh fake runtimes; open gates and stop them afterwards."""
    made: list[tuple[DynamicBatcher[Any, Any, Any], FakeRuntime]] = []

    async def factory(
        **overrides: Any,
    ) -> tuple[DynamicBatcher[Any, Any, Any], FakeRuntime, Metrics]:
        runtime = overrides.pop("runtime", None) or FakeRuntime()
        metrics = Metrics()
        config: dict[str, Any] = {
            "max_batch_tokens": 1024,
            "max_batch_size": 32,
            "max_wait_ms": 0,
            "max_queue_tokens": 1 << 20,
        }
        config.update(overrides)
        batcher: DynamicBatcher[Any, Any, Any] = DynamicBatcher(
            "fake", prepare=runtime.prepare, run=runtime.run, metrics=metrics, **config
        )
        await batcher.start()
        made.append((batcher, runtime))
        return batcher, runtime, metrics

    yield factory
    for batcher, runtime in made:
        runtime.gate.set()
        await batcher.stop(grace=WAIT_S)


async def hold_model(batcher: DynamicBatcher[Any, Any, Any], runtime: FakeRuntime) -> asyncio.Task:
    """Close the gate and occupy the model with one blocker item; returns the blocker's task."""
    runtime.gate.clear()
    x, _ = item(1)
    task = asyncio.create_task(batcher.submit([x], [1]))
    await runtime.until(lambda: runtime.runs_started >= 1)
    return task


def value(metric: Any, *labels: str) -> float:
    return metric.labels(*labels)._value.get()


# ------------------------------------------------------------------------------- batching


async def test_concurrent_single_item_submits_share_batches(make: Any) -> None:
    batcher, runtime, metrics = await make()
    rng = random.Random(1)
    calls = [item(rng.randint(1, 40)) for _ in range(64)]
    results = await asyncio.gather(*(batcher.submit([x], [len(x)]) for x, _ in calls))
    assert [r.outputs for r in results] == [[expected] for _, expected in calls]
    assert len(runtime.shapes) < 64
    assert value(metrics.batch_items, "fake") == 64
    assert value(metrics.batches, "fake") == len(runtime.shapes)


async def test_request_fans_out_and_comes_back_in_order(make: Any) -> None:
    batcher, runtime, metrics = await make(max_batch_tokens=64, max_batch_size=8)
    rng = random.Random(2)
    calls = [item(rng.randint(1, 16)) for _ in range(100)]
    result = await batcher.submit([x for x, _ in calls], [len(x) for x, _ in calls])
    assert isinstance(result, BatchedResult)
    assert result.outputs == [expected for _, expected in calls]
    assert result.batches == len(runtime.shapes) > 1
    assert result.inference_ns > 0 and result.queue_ns >= 0
    count = "twostage_stage_latency_seconds_count"
    sample = metrics.registry.get_sample_value
    assert sample(count, {"model": "fake", "stage": "inference"}) == result.batches
    assert sample(count, {"model": "fake", "stage": "queue"}) == 1  # one request
    assert sample("twostage_batch_size_count", {"model": "fake"}) == result.batches


async def test_batches_respect_token_budget_and_size(make: Any) -> None:
    batcher, runtime, _ = await make(max_batch_tokens=100, max_batch_size=6)
    blocker = await hold_model(batcher, runtime)
    rng = random.Random(3)
    calls = [item(rng.randint(1, 30)) for _ in range(120)]
    huge, huge_answer = item(250)  # longer than the whole budget: runs, alone
    tasks = [asyncio.create_task(batcher.submit([x], [len(x)])) for x, _ in calls]
    tasks.append(asyncio.create_task(batcher.submit([huge], [250])))
    await settle()
    runtime.gate.set()
    results = await asyncio.gather(*tasks)
    await blocker
    assert [r.outputs[0] for r in results] == [e for _, e in calls] + [huge_answer]
    for rows, width in runtime.shapes:
        assert rows <= 6
        assert rows * width <= 100 or rows == 1
    assert (1, 250) in runtime.shapes
    full = [s for s in runtime.shapes if s[0] == 6 or s[0] * s[1] > 100 - s[1]]
    assert len(full) >= len(runtime.shapes) // 2  # the backlog was packed, not run one by one


async def test_waits_for_more_items_until_the_batch_is_full(make: Any) -> None:
    # max_wait is far longer than the test: the batch must be cut because it is full.
    batcher, runtime, _ = await make(max_wait_ms=600_000, max_batch_size=4)
    tasks = []
    for _ in range(4):
        x, _ = item(3)
        tasks.append(asyncio.create_task(batcher.submit([x], [3])))
        await settle()
    await asyncio.gather(*tasks)
    assert runtime.shapes == [(4, 3)]


async def test_a_lone_item_runs_once_max_wait_has_passed(make: Any) -> None:
    batcher, runtime, _ = await make(max_wait_ms=5)
    x, expected = item(3)
    assert (await batcher.submit([x], [3])).outputs == [expected]
    assert runtime.shapes == [(1, 3)]


async def test_draining_does_not_wait_out_max_wait(make: Any) -> None:
    batcher, runtime, _ = await make(max_wait_ms=600_000)
    x, expected = item(3)
    task = asyncio.create_task(batcher.submit([x], [3]))
    await settle()
    assert runtime.prepared == []  # waiting for company
    await batcher.stop(grace=WAIT_S)
    assert (await task).outputs == [expected]


# ------------------------------------------------------------------------------- packing


@functools.cache
def scifact_lengths() -> tuple[int, ...]:
    """Whitespace token counts (+2 special tokens, cut at 256) of SciFact abstracts and queries."""
    lengths = []
    for name, keys in (("corpus.jsonl", ("title", "text")), ("queries.jsonl", ("text",))):
        with open(SCIFACT / name, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                lengths.append(min(256, len(" ".join(row[k] for k in keys).split()) + 2))
    return tuple(lengths)


def fifo_padding_ratio(lengths: Iterable[int], max_tokens: int, max_size: int) -> float:
    """Padding ratio of packing in arrival order under the same limits (the control)."""
    computed = real = 0
    batch: list[int] = []
    for n in [*lengths, None]:
        if (
            n is None
            or (batch and max(*batch, n) * (len(batch) + 1) > max_tokens)
            or len(batch) == max_size
        ):
            computed += max(batch) * len(batch)
            real += sum(batch)
            batch = []
        if n is not None:
            batch.append(n)
    return computed / real


async def test_length_sorted_packing_keeps_padding_low_under_load(make: Any) -> None:
    batcher, runtime, metrics = await make(max_batch_tokens=4096, max_batch_size=64)
    rng = random.Random(4)
    lengths = rng.sample(list(scifact_lengths()), 1500)
    blocker = await hold_model(batcher, runtime)  # the model is busy: a backlog builds up
    calls = [item(n) for n in lengths]
    tasks = [asyncio.create_task(batcher.submit([x], [len(x)])) for x, _ in calls]
    await settle()
    runtime.gate.set()
    results = await asyncio.gather(*tasks)
    await blocker
    assert [r.outputs[0] for r in results] == [e for _, e in calls]
    ratio = metrics.padding_ratio("fake")
    control = fifo_padding_ratio(lengths, 4096, 64)
    assert control > 1.3, control  # the distribution is wide enough to make the point
    assert ratio <= 1.1, ratio


async def test_padding_cap_bounds_every_batch_with_closed_loop_clients(make: Any) -> None:
    batcher, runtime, metrics = await make(
        max_batch_tokens=4096, max_batch_size=64, max_padding_ratio=1.1
    )
    lengths = scifact_lengths()
    rng = random.Random(5)

    async def client() -> None:
        for _ in range(10):
            x, expected = item(rng.choice(lengths))
            assert (await batcher.submit([x], [len(x)])).outputs == [expected]

    await asyncio.gather(*(client() for _ in range(64)))
    assert metrics.padding_ratio("fake") <= 1.1
    assert any(rows > 1 for rows, _ in runtime.shapes)


# ------------------------------------------------------------------------------- overload


async def test_overload_is_refused_at_once_and_the_queue_stays_bounded(make: Any) -> None:
    batcher, runtime, metrics = await make(max_queue_tokens=200)
    blocker = await hold_model(batcher, runtime)
    accepted, refused = [], 0
    for _ in range(50):
        x, expected = item(30)
        task = asyncio.create_task(batcher.submit([x], [30]))
        await settle()
        if task.done():  # answered while the model is held: it can only be a refusal
            with pytest.raises(Overloaded, match="limit 200"):
                task.result()
            refused += 1
        else:
            accepted.append((task, expected))
        assert batcher.queue_tokens <= 200
    assert len(accepted) == 200 // 30 and refused == 50 - len(accepted)
    assert value(metrics.rejected, "fake_queue") == refused
    assert value(metrics.queue_tokens, "fake") == batcher.queue_tokens
    runtime.gate.set()
    for task, expected in accepted:
        assert (await task).outputs == [expected]
    await blocker


async def test_a_request_larger_than_the_queue_limit_runs_when_the_queue_is_empty(
    make: Any,
) -> None:
    batcher, _, _ = await make(max_queue_tokens=50)
    x, expected = item(80)
    assert (await batcher.submit([x], [80])).outputs == [expected]


# ------------------------------------------------------------------------------- drops


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("max_batch_size", [1, 8], ids=["prepared-batch", "queued"])
async def test_deadline_passed_is_answered_and_not_computed(make: Any, max_batch_size: int) -> None:
    clock = FakeClock()
    batcher, runtime, metrics = await make(max_batch_size=max_batch_size, clock=clock)
    blocker = await hold_model(batcher, runtime)
    late, _ = item(5)
    on_time, on_time_answer = item(5)
    late_task = asyncio.create_task(batcher.submit([late], [5], deadline=clock.now + 1))
    on_time_task = asyncio.create_task(batcher.submit([on_time], [5], deadline=clock.now + 100))
    await settle()
    if max_batch_size == 1:  # the next batch (late) is prepared while the model is held
        await runtime.until(lambda: runtime.was_prepared(late[0]))
    clock.now += 2
    runtime.gate.set()
    with pytest.raises(DeadlineExceeded):
        await late_task
    assert (await on_time_task).outputs == [on_time_answer]
    await blocker
    assert late[0] not in runtime.ran
    assert value(metrics.dropped, "fake", "deadline") == 1


async def test_deadline_already_passed_at_submit(make: Any) -> None:
    clock = FakeClock()
    batcher, runtime, _ = await make(clock=clock)
    x, _ = item(3)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit([x], [3], deadline=clock.now)
    assert runtime.prepared == []


@pytest.mark.parametrize("max_batch_size", [1, 8], ids=["prepared-batch", "queued"])
async def test_cancelled_caller_is_not_computed(make: Any, max_batch_size: int) -> None:
    batcher, runtime, metrics = await make(max_batch_size=max_batch_size)
    blocker = await hold_model(batcher, runtime)
    gone = [item(4)[0] for _ in range(3)]
    stays, stays_answer = item(4)
    gone_task = asyncio.create_task(batcher.submit(gone, [4] * 3))
    stays_task = asyncio.create_task(batcher.submit([stays], [4]))
    await settle()
    if max_batch_size == 1:
        await runtime.until(lambda: runtime.was_prepared(gone[0][0]))
    gone_task.cancel()
    await settle()
    assert batcher.queue_depth == 1  # only `stays` waits
    runtime.gate.set()
    assert (await stays_task).outputs == [stays_answer]
    await blocker
    assert not {x[0] for x in gone} & set(runtime.ran)
    assert value(metrics.dropped, "fake", "cancelled") == 3
    assert gone_task.cancelled()


# ------------------------------------------------------------------------------- failures


async def test_a_failing_batch_fails_only_its_own_items(make: Any, caplog: Any) -> None:
    batcher, runtime, metrics = await make(max_batch_size=1)
    blocker = await hold_model(batcher, runtime)
    poison, _ = item(2)
    refused, _ = item(2)
    runtime.fail_on[poison[0]] = ValueError("boom")
    runtime.fail_on[refused[0]] = InvalidArgument("text too odd", field="texts")
    good = [item(2) for _ in range(3)]
    tasks = [asyncio.create_task(batcher.submit([x], [2])) for x in (poison, refused)]
    good_tasks = [asyncio.create_task(batcher.submit([x], [2])) for x, _ in good]
    await settle()
    runtime.gate.set()
    with pytest.raises(InternalError) as internal:
        await tasks[0]
    assert "boom" not in str(internal.value)  # the client never sees the raw exception text
    assert isinstance(internal.value.__cause__, ValueError)
    with pytest.raises(InvalidArgument) as domain:
        await tasks[1]
    assert domain.value.field == "texts"
    assert [(await t).outputs for t in good_tasks] == [[e] for _, e in good]
    await blocker
    assert batcher.healthy
    assert "boom" in caplog.text  # the traceback went to the log
    assert value(metrics.batcher_failures, "fake", "ValueError") == 1


async def test_a_failing_prepare_fails_only_its_batch(make: Any) -> None:
    batcher, runtime, _ = await make(max_batch_size=1)
    bad, _ = item(2)
    runtime.fail_prepare_on[bad[0]] = ValueError("cannot pad")
    good, good_answer = item(2)
    with pytest.raises(InternalError, match="failed to prepare"):
        await batcher.submit([bad], [2])
    assert (await batcher.submit([good], [2])).outputs == [good_answer]
    assert batcher.healthy


async def test_a_failed_item_answers_its_request_and_drops_its_siblings(make: Any) -> None:
    batcher, runtime, metrics = await make(max_batch_size=1)
    blocker = await hold_model(batcher, runtime)
    first, _ = item(2)
    siblings = [item(2)[0] for _ in range(4)]
    runtime.fail_on[first[0]] = ValueError("boom")
    task = asyncio.create_task(batcher.submit([first, *siblings], [2] * 5))
    await settle()
    runtime.gate.set()
    with pytest.raises(InternalError):
        await task
    await blocker
    probe, probe_answer = item(2)  # answered only after every older item was run or dropped
    assert (await batcher.submit([probe], [2])).outputs == [probe_answer]
    assert not {x[0] for x in siblings} & set(runtime.ran)
    assert batcher.queue_depth == 0
    assert value(metrics.dropped, "fake", "failed") == 4


@pytest.mark.parametrize("stage", ["run", "prepare"])
async def test_worker_death_fails_pending_calls_and_reports(make: Any, stage: str) -> None:
    failures: list[BaseException] = []
    batcher, runtime, _ = await make()
    batcher.on_failure = failures.append
    blocker = await hold_model(batcher, runtime)
    crash, _ = item(1)
    (runtime.fail_on if stage == "run" else runtime.fail_prepare_on)[crash[0]] = Crash()
    crash_task = asyncio.create_task(batcher.submit([crash], [1]))
    await settle()
    pending = [asyncio.create_task(batcher.submit([item(3)[0]], [3])) for _ in range(5)]
    await settle()
    runtime.gate.set()
    await blocker
    for task in [crash_task, *pending]:
        with pytest.raises(Unavailable):
            await task
    assert not batcher.healthy
    assert len(failures) == 1 and isinstance(failures[0], Crash)
    with pytest.raises(Unavailable):
        await batcher.submit([item(3)[0]], [3])


# ------------------------------------------------------------------------------- lifecycle


async def test_stop_drains_queued_and_in_flight_work(make: Any) -> None:
    batcher, runtime, _ = await make(max_batch_size=2)
    blocker = await hold_model(batcher, runtime)
    calls = [item(3) for _ in range(7)]
    tasks = [asyncio.create_task(batcher.submit([x], [3])) for x, _ in calls]
    await settle()
    stopping = asyncio.create_task(batcher.stop(grace=WAIT_S))
    await settle()
    with pytest.raises(Unavailable, match="shutting down"):
        await batcher.submit([item(1)[0]], [1])
    assert not stopping.done()
    runtime.gate.set()
    await stopping
    assert [(await t).outputs for t in tasks] == [[e] for _, e in calls]
    await blocker
    assert not batcher.healthy


async def test_stop_after_the_grace_fails_the_leftovers(make: Any) -> None:
    batcher, runtime, metrics = await make()
    blocker = await hold_model(batcher, runtime)
    queued = [asyncio.create_task(batcher.submit([item(3)[0]], [3])) for _ in range(3)]
    await settle()
    await batcher.stop(grace=0)
    for task in [blocker, *queued]:
        with pytest.raises(Unavailable):
            await task
    await settle()
    assert batcher.queue_depth == 0
    assert value(metrics.dropped, "fake", "unavailable") == 3
    runtime.gate.set()


async def test_submit_before_start_is_unavailable() -> None:
    runtime = FakeRuntime()
    batcher = DynamicBatcher(
        "fake",
        prepare=runtime.prepare,
        run=runtime.run,
        max_batch_tokens=64,
        max_batch_size=4,
        max_wait_ms=0,
        max_queue_tokens=64,
    )
    with pytest.raises(Unavailable, match="starting"):
        await batcher.submit([[1]], [1])
    assert not batcher.healthy


async def test_empty_and_malformed_submits(make: Any) -> None:
    batcher, runtime, _ = await make()
    assert (await batcher.submit([], [])).outputs == []
    with pytest.raises(ValueError, match="2 items but 1 lengths"):
        await batcher.submit([[1], [2]], [1])
    assert runtime.prepared == []


# ------------------------------------------------------------------------------- overlap


async def test_next_batch_is_prepared_while_the_current_one_runs(make: Any) -> None:
    batcher, runtime, _ = await make(max_batch_size=2)
    runtime.gate.clear()
    first = [item(2) for _ in range(2)]
    second = [item(2) for _ in range(2)]
    third = [item(2) for _ in range(2)]
    tasks = [asyncio.create_task(batcher.submit([x for x, _ in first], [2, 2]))]
    await runtime.until(lambda: runtime.runs_started == 1)
    tasks.append(asyncio.create_task(batcher.submit([x for x, _ in second], [2, 2])))
    # Batch 2 is padded while batch 1 is still inside run (the gate is closed).
    await runtime.until(lambda: runtime.was_prepared(second[0][0][0]))
    assert runtime.runs_started == 1 and runtime.shapes == []
    # Exactly one batch ahead: batch 3 waits in the queue until batch 1 is done.
    tasks.append(asyncio.create_task(batcher.submit([x for x, _ in third], [2, 2])))
    await settle()
    assert batcher.queue_depth == 2 and len(runtime.prepared) == 2
    runtime.gate.set()
    outputs = [(await task).outputs for task in tasks]
    assert outputs == [[e for _, e in calls] for calls in (first, second, third)]
    assert runtime.shapes == [(2, 2)] * 3
