"""Token-budget dynamic batcher: one per model, shared by every concurrent request.

Callers :meth:`DynamicBatcher.submit` a list of items (token id arrays, pairs, ...) with their
lengths; each item enters the queue on its own, so concurrent requests share batches and a rerank
of 100 pairs fans out into 100 items. One worker task cuts batches, ``prepare`` pads them in a
thread, ``run`` executes the model in a dedicated single-thread executor (ONNX Runtime releases the
GIL, so the event loop keeps serving), and the results are scattered back to the callers in their
items' order.

Packing (fairness first, then least padding) is the queue's, in
:mod:`~twostage.server.batching.queue`. With a backlog, batches are near-uniform (SciFact abstract
and query lengths, 1,500 queued: padding ratio 1.03, against 1.49 packed in arrival order). With
few items queued (64 closed-loop clients) a batch mixes lengths: 1.25 uncapped; that costs little
where a run's fixed cost dominates (GPU), and ``max_padding_ratio=1.1`` brings it to 1.06 with
smaller batches where compute is per token (CPU).

When to cut. A batch is cut at once when the queue holds a full batch (``max_batch_tokens`` real
tokens or ``max_batch_size`` items) or the batcher is draining. Otherwise, while the model is
busy the worker waits for it (items keep accumulating into a bigger next batch), and while it is
idle the worker waits at most ``max_wait_ms`` after the oldest item arrived. The worker overlaps
by exactly one batch: it cuts and prepares batch k+1 while batch k runs, and dispatches k+1 when k
is done. Items are re-checked just before dispatch: an item whose caller is gone (its future was
cancelled, or a sibling item's failure already answered it) or whose deadline passed is dropped,
never computed for nobody (the batch is re-prepared without it), and counted in
``twostage_dropped_items{reason}``.

Every item gets exactly one answer: its value, or the exception of its batch (a ``TwostageError``
as is, anything else as ``InternalError`` with the traceback logged), or ``DeadlineExceeded``, or
``Unavailable`` when the batcher stops or its worker dies. The worker task is supervised: if it
dies, ``healthy`` turns False, ``on_failure`` is called, and every pending and later ``submit``
fails with ``Unavailable``. No polling: the worker sleeps on an ``asyncio.Event`` (with a timer
only for ``max_wait_ms``). All methods are called on the event loop that ran ``start``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twostage.server.batching.queue import PendingQueue
from twostage.server.errors import (
    DeadlineExceeded,
    InternalError,
    Overloaded,
    TwostageError,
    Unavailable,
)
from twostage.server.metrics import Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")  # one item, as submitted (e.g. an int64 token id array)
P = TypeVar("P")  # the prepared model feed of one batch (e.g. padded numpy arrays)
R = TypeVar("R")  # one item's result (e.g. an embedding row or a score)

#: Reasons of ``twostage_dropped_items``: the caller went away, its deadline passed, a sibling item
#: of the same request already failed it, the batcher stopped or died before the item ran.
DROP_REASONS = ("cancelled", "deadline", "failed", "unavailable")


@dataclass(frozen=True, slots=True)
class BatchedResult(Generic[R]):
    """What :meth:`DynamicBatcher.submit` returns: outputs in item order, and where time went.

    ``inference_ns`` is the summed wall time of the model runs (``run``) of the batches that held
    this request's items; ``queue_ns`` is everything else from ``submit`` to the answer (waiting in
    the queue, padding, waiting for batches of other requests), so ``queue_ns + inference_ns`` is
    the request's whole time in the batcher. ``batches`` counts those batches.
    """

    outputs: list[R]
    queue_ns: int
    inference_ns: int
    batches: int


class _Request:
    """One ``submit`` call: its future, its items and the slots their results go into."""

    __slots__ = (
        "batches",
        "deadline",
        "drop_reason",
        "enqueued_at",
        "future",
        "inference_ns",
        "items",
        "last_run",
        "remaining",
        "results",
        "submitted_ns",
    )

    def __init__(
        self, future: asyncio.Future[Any], n: int, deadline: float | None, enqueued_at: float
    ) -> None:
        self.future = future
        self.items: list[_Item] = []
        self.results: list[Any] = [None] * n
        self.remaining = n
        self.deadline = deadline
        self.enqueued_at = enqueued_at  # loop time, for max_wait
        self.submitted_ns = time.perf_counter_ns()
        self.inference_ns = 0
        self.batches = 0
        self.last_run: object = None  # the run future last counted into inference_ns
        self.drop_reason = "cancelled"  # why its leftover items are dropped once it is answered


class _Item:
    """One queued sequence of a request."""

    __slots__ = ("index", "length", "request", "seq", "value")

    def __init__(self, request: _Request, index: int, value: Any, length: int, seq: int) -> None:
        self.request = request
        self.index = index
        self.value = value
        self.length = length
        self.seq = seq


class _Run:
    """A batch handed to the model thread, and whether its outputs were scattered yet."""

    __slots__ = ("batch", "finished", "future")

    def __init__(self, batch: list[_Item], future: asyncio.Future[Any]) -> None:
        self.batch = batch
        self.future = future
        self.finished = False


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


class DynamicBatcher(Generic[T, P, R]):
    """Queue items of concurrent requests, run them through one model in token-budget batches.

    ``prepare(items) -> feed`` (sync, in a prepare thread) turns one batch's items into the model
    feed, e.g. pads token id arrays to the batch's longest; ``run(feed) -> results`` (sync, in the
    dedicated run thread) runs the session and returns one result per item, in item order.
    ``max_wait_ms`` is how long an idle model waits for more items after the first (0 = none);
    ``max_queue_tokens`` bounds the queue (``submit`` raises ``Overloaded`` beyond it; a request
    larger than the whole limit is admitted only into an empty queue). ``on_failure(exc)`` is
    called once if the worker dies. ``clock`` is the deadline clock (``time.monotonic`` seconds).
    """

    def __init__(
        self,
        name: str,
        *,
        prepare: Callable[[list[T]], P],
        run: Callable[[P], Sequence[R]],
        max_batch_tokens: int,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_tokens: int,
        max_padding_ratio: float | None = None,
        metrics: Metrics | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue_tokens < 1:
            raise ValueError(f"max_queue_tokens must be >= 1, got {max_queue_tokens}")
        if max_padding_ratio is not None and max_padding_ratio < 1.0:
            raise ValueError(f"max_padding_ratio must be >= 1.0 or None, got {max_padding_ratio}")
        self.name = name
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_tokens = max_queue_tokens
        self.max_padding_ratio = max_padding_ratio
        self.on_failure = on_failure
        self._prepare_fn = prepare
        self._run_fn = run
        self._clock = clock

        m = metrics if metrics is not None else Metrics()
        self._m_batches = m.batches.labels(name)
        self._m_batch_size = m.batch_size.labels(name)
        self._m_batch_tokens = m.batch_tokens.labels(name)
        self._m_items = m.batch_items.labels(name)
        self._m_computed = m.computed_tokens.labels(name)
        self._m_real = m.real_tokens.labels(name)
        self._m_depth = m.queue_depth.labels(name)
        self._m_queue_tokens = m.queue_tokens.labels(name)
        self._m_queue_latency = m.stage_latency.labels(name, "queue")
        self._m_prepare_latency = m.stage_latency.labels(name, "prepare")
        self._m_inference_latency = m.stage_latency.labels(name, "inference")
        self._m_dropped = {r: m.dropped.labels(name, r) for r in DROP_REASONS}
        self._m_rejected = m.rejected.labels(f"{name}_queue")
        self._m_failures = m.batcher_failures

        self._state = _State.NEW
        self._queue: PendingQueue[_Item] = PendingQueue()
        self._requests: set[_Request] = set()
        self._seq = itertools.count()
        self._expired = 0  # requests answered with DeadlineExceeded while queued
        self._running: _Run | None = None  # the batch in (or last in) the model thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._prepare_pool: ThreadPoolExecutor | None = None
        self._run_pool: ThreadPoolExecutor | None = None

    # ----------------------------------------------------------------- public surface

    @property
    def healthy(self) -> bool:
        """True while the worker is alive (serving or draining); False before start, after stop
        and after the worker died."""
        return self._state in (_State.RUNNING, _State.DRAINING)

    @property
    def queue_depth(self) -> int:
        """Items waiting in the queue (not yet cut into a batch)."""
        return len(self._queue)

    @property
    def queue_tokens(self) -> int:
        """Real tokens of the items waiting in the queue."""
        return self._queue.tokens

    async def start(self) -> None:
        """Start the worker and its two threads (prepare, run) on the running event loop."""
        if self._state is not _State.NEW:
            raise RuntimeError(f"batcher {self.name} was already started")
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._prepare_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-prepare")
        self._run_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-run")
        self._state = _State.RUNNING
        self._worker = asyncio.create_task(self._work(), name=f"batcher-{self.name}")
        self._worker.add_done_callback(self._on_worker_done)

    async def stop(self, grace: float) -> None:
        """Stop taking work; finish queued and in-flight items within ``grace`` seconds.

        Items still unanswered after the grace get ``Unavailable``. A model run already in its
        thread cannot be interrupted: it finishes in the background and its results are dropped.
        """
        if self._state is _State.NEW:
            self._state = _State.STOPPED
            return
        if self._state is _State.RUNNING:
            self._state = _State.DRAINING
            assert self._wakeup is not None
            self._wakeup.set()
        worker = self._worker
        if worker is not None and not worker.done():
            done, _ = await asyncio.wait({worker}, timeout=max(0.0, grace))
            if not done:
                worker.cancel()
                await asyncio.wait({worker})
        if self._state is not _State.FAILED:
            self._state = _State.STOPPED
        self._fail_all(
            lambda: Unavailable(f"model {self.name} is shutting down; retry on another replica"),
        )
        self._shutdown_pools()

    async def submit(
        self, items: Sequence[T], lengths: Sequence[int], deadline: float | None = None
    ) -> BatchedResult[R]:
        """Queue ``items`` (with their token ``lengths``) and wait for their results, in order.

        ``deadline`` is absolute, in ``time.monotonic()`` seconds: an item still queued when it
        passes is dropped and the call raises ``DeadlineExceeded``. Raises ``Overloaded`` at once
        when the queue is over ``max_queue_tokens``, ``Unavailable`` when not serving, the batch's
        error when its batch failed. Cancelling the awaiting task drops its queued items.
        """
        n = len(items)
        if len(lengths) != n:
            raise ValueError(f"got {n} items but {len(lengths)} lengths")
        if self._state is not _State.RUNNING:
            raise Unavailable(self._not_serving_message())
        if n == 0:
            return BatchedResult([], 0, 0, 0)
        lens = [int(x) for x in lengths]
        if min(lens) < 1:
            raise ValueError(f"lengths must be >= 1, got {min(lens)}")
        if deadline is not None and self._clock() >= deadline:
            self._m_dropped["deadline"].inc(n)
            raise DeadlineExceeded(f"deadline passed before model {self.name} could run")
        total = sum(lens)
        queue = self._queue
        if queue.tokens > 0 and queue.tokens + total > self.max_queue_tokens:
            self._m_rejected.inc()
            raise Overloaded(
                f"model {self.name} is overloaded: {queue.tokens} tokens queued + {total} "
                f"requested > limit {self.max_queue_tokens}; retry later"
            )
        assert self._loop is not None and self._wakeup is not None
        request = _Request(self._loop.create_future(), n, deadline, self._loop.time())
        for index, (value, length) in enumerate(zip(items, lens, strict=True)):
            item = _Item(request, index, value, length, next(self._seq))
            request.items.append(item)
            queue.push(item)
        self._requests.add(request)
        request.future.add_done_callback(functools.partial(self._on_request_done, request))
        self._update_gauges()
        self._wakeup.set()
        result: BatchedResult[R] = await request.future
        return result

    # ----------------------------------------------------------------- the worker

    async def _work(self) -> None:
        """Cut, prepare, dispatch; batch k+1 is prepared while batch k runs."""
        held: list[_Item] = []  # cut but not dispatched: dropped if the worker ends here
        try:
            while True:
                batch = await self._next_batch()
                if batch is None:
                    break
                held = batch
                prepared = await self._prepare(batch)
                if self._running is not None:
                    await self._await_run(self._running)
                if prepared is not None:
                    checked = await self._recheck(batch, prepared[0])
                    if checked is not None:
                        self._dispatch(*checked)
                held = []
            if self._running is not None:
                await self._await_run(self._running)
        finally:
            if held:
                self._m_dropped["unavailable"].inc(len(held))

    async def _next_batch(self) -> list[_Item] | None:
        """Wait until a batch should be cut and cut it; None once draining found the queue empty."""
        assert self._loop is not None
        queue = self._queue
        while True:
            if not queue:
                if self._state is not _State.RUNNING:
                    return None
                await self._sleep(None)
                continue
            full = queue.tokens >= self.max_batch_tokens or len(queue) >= self.max_batch_size
            if not full and self._state is _State.RUNNING:
                if self._running is not None and not self._running.future.done():
                    await self._sleep(None)  # woken by new items or by the run finishing
                    continue
                left = queue.oldest().request.enqueued_at + self.max_wait_s - self._loop.time()
                if left > 0:
                    await self._sleep(left)
                    continue
            batch = self._pack()
            if batch:
                return batch

    async def _sleep(self, timeout: float | None) -> None:
        """Wait for the next wake-up (new items, run done, stop), or at most ``timeout`` s."""
        assert self._wakeup is not None
        self._wakeup.clear()
        if timeout is None:
            await self._wakeup.wait()
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    def _pack(self) -> list[_Item]:
        now = self._clock()
        expired = self._expired
        batch = self._queue.pack(
            self.max_batch_tokens,
            self.max_batch_size,
            self.max_padding_ratio,
            lambda item: self._alive(item, now),
        )
        if self._expired != expired:
            # A deadline found while packing answered its whole request: drop the siblings
            # taken before it.
            batch = [item for item in batch if self._alive(item, now)]
        self._update_gauges()
        return batch

    def _alive(self, item: _Item, now: float) -> bool:
        """Whether ``item`` (already out of the queue) still has a caller; counts it if not."""
        request = item.request
        if request.future.done():
            reason = "cancelled" if request.future.cancelled() else request.drop_reason
            self._m_dropped[reason].inc()
            return False
        if request.deadline is not None and now >= request.deadline:
            self._expired += 1
            self._fail(
                request,
                DeadlineExceeded(f"deadline passed while queued for model {self.name}"),
                "deadline",
            )
            self._m_dropped["deadline"].inc()
            return False
        return True

    async def _prepare(self, batch: list[_Item]) -> tuple[P] | None:
        """Build the feed in the prepare thread: ``(feed,)``, or None once a failure answered
        the batch."""
        assert self._loop is not None
        values = [item.value for item in batch]
        start = time.perf_counter_ns()
        try:
            feed = await self._loop.run_in_executor(self._prepare_pool, self._prepare_fn, values)
        except Exception as exc:
            self._fail_batch(batch, exc, "prepare")
            return None
        self._m_prepare_latency.observe((time.perf_counter_ns() - start) / 1e9)
        return (feed,)

    async def _recheck(self, batch: list[_Item], feed: P) -> tuple[list[_Item], P] | None:
        """Drop items whose caller left while the batch waited; re-prepare the rest if needed.

        None when nothing is left to run (every item dropped, or the re-prepare failed).
        """
        while True:
            now = self._clock()
            live = [item for item in batch if self._alive(item, now)]
            if len(live) == len(batch):
                return batch, feed
            if not live:
                return None
            batch = live
            prepared = await self._prepare(batch)
            if prepared is None:
                return None
            feed = prepared[0]

    def _dispatch(self, batch: list[_Item], feed: P) -> None:
        assert self._loop is not None
        n = len(batch)
        padded = max(item.length for item in batch) * n
        self._m_batches.inc()
        self._m_batch_size.observe(n)
        self._m_batch_tokens.observe(padded)
        self._m_items.inc(n)
        self._m_computed.inc(padded)
        self._m_real.inc(sum(item.length for item in batch))
        run = _Run(batch, self._loop.run_in_executor(self._run_pool, self._timed_run, feed))
        run.future.add_done_callback(lambda _: self._finish_run(run))
        self._running = run

    def _timed_run(self, feed: P) -> tuple[Sequence[R], int]:
        start = time.perf_counter_ns()
        outputs = self._run_fn(feed)
        return outputs, time.perf_counter_ns() - start

    async def _await_run(self, run: _Run) -> None:
        """Wait for the model thread to be free, with the finished batch answered.

        The run's done-callback may still be queued when the worker gets here, so the worker
        answers the batch itself if needed: the next batch is re-checked against those answers.
        """
        await asyncio.wait([run.future])
        self._finish_run(run)

    def _finish_run(self, run: _Run) -> None:
        """Scatter one batch's outputs (or its error) to the waiting requests, exactly once."""
        assert self._wakeup is not None
        if run.finished:
            return
        run.finished = True
        self._wakeup.set()
        batch, running = run.batch, run.future
        if running.cancelled():
            return
        exc = running.exception()
        if exc is not None:
            if isinstance(exc, Exception):
                self._fail_batch(batch, exc, "run")
            else:  # not a batch error: the model thread is in an unknown state
                self._die(exc)
            return
        outputs, elapsed_ns = running.result()
        if len(outputs) != len(batch):
            self._fail_batch(
                batch,
                RuntimeError(f"run returned {len(outputs)} results for {len(batch)} items"),
                "run",
            )
            return
        self._m_inference_latency.observe(elapsed_ns / 1e9)
        for item, output in zip(batch, outputs, strict=True):
            request = item.request
            if request.future.done():
                continue
            request.results[item.index] = output
            if request.last_run is not running:
                request.last_run = running
                request.inference_ns += elapsed_ns
                request.batches += 1
            request.remaining -= 1
            if request.remaining == 0:
                total_ns = time.perf_counter_ns() - request.submitted_ns
                queue_ns = max(0, total_ns - request.inference_ns)
                self._m_queue_latency.observe(queue_ns / 1e9)
                request.future.set_result(
                    BatchedResult(request.results, queue_ns, request.inference_ns, request.batches)
                )

    # ----------------------------------------------------------------- answers and failures

    def _fail(self, request: _Request, exc: BaseException, reason: str) -> None:
        if not request.future.done():
            request.drop_reason = reason
            request.future.set_exception(exc)

    def _fail_batch(self, batch: list[_Item], exc: Exception, stage: str) -> None:
        """A batch raised: answer each of its requests with the error (domain errors as is)."""
        self._m_failures.labels(self.name, type(exc).__name__).inc()
        if isinstance(exc, TwostageError):
            logger.warning(
                "model %s: %s failed for %d items: %s", self.name, stage, len(batch), exc
            )
        else:
            logger.error(
                "model %s: %s failed for a batch of %d items",
                self.name,
                stage,
                len(batch),
                exc_info=exc,
            )
        for request in dict.fromkeys(item.request for item in batch):
            if isinstance(exc, TwostageError):
                error: TwostageError = exc
            else:
                error = InternalError(f"model {self.name} failed to {stage} a batch")
                error.__cause__ = exc
            self._fail(request, error, "failed")

    def _fail_all(self, make_error: Callable[[], TwostageError]) -> None:
        for request in list(self._requests):
            self._fail(request, make_error(), "unavailable")

    def _on_request_done(self, request: _Request, future: asyncio.Future[Any]) -> None:
        """Once a request is answered (or its caller left), its still-queued items go."""
        self._requests.discard(request)
        if not future.cancelled() and future.exception() is None:
            return
        reason = "cancelled" if future.cancelled() else request.drop_reason
        removed = sum(1 for item in request.items if self._queue.discard(item))
        if removed:
            self._m_dropped[reason].inc(removed)
            self._update_gauges()

    def _on_worker_done(self, worker: asyncio.Task[None]) -> None:
        """Supervision: a worker that ends while the batcher should be serving is a failure."""
        if worker.cancelled():
            if self._state is not _State.RUNNING:
                return  # stop() after the grace, or _die() cancelled it
            self._die(RuntimeError("batcher worker was cancelled"))
            return
        error = worker.exception()
        if error is not None:
            self._die(error)
        elif self._state is _State.RUNNING:
            self._die(RuntimeError("batcher worker exited"))

    def _die(self, exc: BaseException) -> None:
        """The worker or its model thread failed: stop serving, answer everyone, report once."""
        if self._state is _State.FAILED:
            return
        self._state = _State.FAILED
        logger.critical("model %s: batcher worker died; not serving", self.name, exc_info=exc)
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._fail_all(
            lambda: Unavailable(f"model {self.name} is not serving; retry on another replica"),
        )
        self._shutdown_pools()
        if self.on_failure is not None:
            try:
                self.on_failure(exc)
            except Exception:
                logger.exception("model %s: on_failure hook raised", self.name)

    def _shutdown_pools(self) -> None:
        for pool in (self._prepare_pool, self._run_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _update_gauges(self) -> None:
        self._m_depth.set(len(self._queue))
        self._m_queue_tokens.set(self._queue.tokens)

    def _not_serving_message(self) -> str:
        if self._state is _State.NEW:
            return f"model {self.name} is starting; retry shortly"
        if self._state is _State.FAILED:
            return f"model {self.name} is not serving; retry on another replica"
        return f"model {self.name} is shutting down; retry on another replica"
