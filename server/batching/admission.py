"""Bounded admission at the edge: a permit per request, or ``Overloaded`` at once.

Two gates, both deciding at arrival: :class:`Admission` bounds the requests in flight;
:class:`DeadlineAdmission` refuses a call whose deadline the current backlog cannot meet.

A server that queues without bound turns a load spike into a memory spike and into latency for
every caller; one that refuses early lets clients retry elsewhere. :class:`Admission` holds a
fixed number of request permits and never waits: when a request does not fit,
:meth:`Admission.try_acquire` raises :class:`~twostage.server.errors.Overloaded`
(RESOURCE_EXHAUSTED at the gRPC edge) and counts it in ``twostage_rejected{where=<name>}``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

from twostage.server.errors import Overloaded
from twostage.server.metrics import Metrics


class Permit:
    """One admitted request: holds one request slot until released.

    Use it as a context manager (``with admission.try_acquire(): ...``); ``release`` is
    idempotent, so an explicit release inside the block is harmless.
    """

    __slots__ = ("_admission", "_released")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False

    @property
    def released(self) -> bool:
        """True once the permit's slot went back to the admission."""
        return self._released

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            self._admission._release()

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Admission:
    """Bounded permits for in-flight requests; never a queue.

    ``max_requests`` bounds concurrent requests (None = unbounded); tokens are bounded where they
    queue, per model, by the batcher. Thread-safe: usable from the event loop and from worker
    threads.
    """

    def __init__(
        self,
        name: str,
        *,
        max_requests: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"max_requests must be >= 1 or None, got {max_requests}")
        self.name = name
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self._requests = 0
        self._rejected = (metrics if metrics is not None else Metrics()).rejected.labels(name)

    @property
    def in_flight(self) -> int:
        """Requests holding a permit now."""
        return self._requests

    def try_acquire(self) -> Permit:
        """Take a permit for one request, or raise ``Overloaded`` at once."""
        with self._lock:
            if self.max_requests is None or self._requests < self.max_requests:
                self._requests += 1
                return Permit(self)
            reason = f"{self.name}: {self._requests} requests in flight (limit {self.max_requests})"
        self._rejected.inc()
        raise Overloaded(f"server overloaded, {reason}; retry later")

    def _release(self) -> None:
        with self._lock:
            self._requests -= 1


class _Flow:
    """One kind of call: in flight now, its smoothed latency and its recent completion rate."""

    __slots__ = ("busy", "busy_s", "done", "finished", "in_flight", "last_finish", "latency")

    def __init__(self) -> None:
        self.in_flight = 0
        self.finished = 0  # measured calls so far
        self.latency = 0.0  # seconds a call took, EWMA; 0 = nothing measured yet
        # Completions and the busy seconds they took, both decayed by busy time: their ratio is
        # the recent rate, whether calls finish one by one or a batch at a time.
        self.done = 0.0
        self.busy_s = 0.0
        self.last_finish: float | None = None
        self.busy = False  # a call was still in flight at the last completion

    def throughput(self) -> float:
        """Calls per second: completions per busy second, at least one call per latency."""
        rate = 1.0 / self.latency
        if self.busy_s > 0:
            rate = max(rate, self.done / self.busy_s)
        return rate


class Ticket:
    """One call admitted by :class:`DeadlineAdmission`; ``finish`` it exactly once."""

    __slots__ = ("_admission", "_done", "flow", "started")

    def __init__(self, admission: DeadlineAdmission, flow: _Flow) -> None:
        self._admission = admission
        self._done = False
        self.flow = flow
        self.started = admission.clock()

    def finish(self, *, measured: bool) -> None:
        """The call is over; ``measured`` = its latency says something about the service time
        (it ran, or waited out its deadline), not a refusal or a bad request answered at once."""
        if not self._done:
            self._done = True
            self._admission._finish(self, measured)


class DeadlineAdmission:
    """Refuse at arrival a call whose deadline cannot be met, instead of letting it expire queued.

    Per kind of call (an RPC method; Search with rerank apart), the wait of a new arrival is the
    work ahead of it at the rate calls of that kind complete: ``(in_flight + 1) / throughput``
    (Little's law). The throughput is measured, not configured: completions per second while
    calls were queued, over the last ``window_s`` busy seconds (batching makes it far higher than
    one call per latency), and at least one call per smoothed latency. A call whose deadline
    leaves less than ``wait / headroom`` is answered RESOURCE_EXHAUSTED at once (counted in
    ``twostage_rejected{where="deadline"}``): the backlog then holds only work that can finish in
    time, so under a burst the server spends its time on calls that succeed, and a refused
    client learns it in milliseconds.
    Calls without a deadline are not judged here (the request and token budgets still bound
    them); nothing is refused before a kind has ``warmup`` measured calls. Thread-safe and cheap.
    """

    def __init__(
        self,
        *,
        headroom: float = 0.8,
        smoothing: float = 0.05,
        warmup: int = 8,
        window_s: float = 2.0,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {headroom}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.headroom = headroom
        self.smoothing = smoothing
        self.warmup = warmup
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._flows: dict[str, _Flow] = {}
        self._rejected = (metrics if metrics is not None else Metrics()).rejected.labels("deadline")

    def expected_wait(self, kind: str) -> float:
        """Seconds a call of ``kind`` arriving now is expected to take (0 = not measured yet)."""
        with self._lock:
            flow = self._flows.get(kind)
            return self._wait(flow) if flow is not None else 0.0

    @staticmethod
    def _wait(flow: _Flow) -> float:
        if flow.latency <= 0:
            return 0.0
        return (flow.in_flight + 1.0) / flow.throughput()

    def admit(self, kind: str, remaining: float | None) -> Ticket:
        """A ticket for one call of ``kind`` with ``remaining`` seconds to its deadline, or
        ``Overloaded`` at once when the expected wait does not fit."""
        with self._lock:
            flow = self._flows.get(kind)
            if flow is None:
                flow = self._flows[kind] = _Flow()
            if remaining is not None and flow.finished >= self.warmup:
                wait = self._wait(flow)
                if wait > self.headroom * remaining:
                    self._rejected.inc()
                    raise Overloaded(
                        f"server overloaded: a {kind} call would wait ~{wait * 1000:.0f} ms "
                        f"({flow.in_flight} in flight), its deadline allows "
                        f"{remaining * 1000:.0f} ms; retry later or elsewhere"
                    )
            flow.in_flight += 1
            return Ticket(self, flow)

    def _finish(self, ticket: Ticket, measured: bool) -> None:
        now = self.clock()
        with self._lock:
            flow = ticket.flow
            flow.in_flight -= 1
            if not measured:
                return
            flow.finished += 1
            a = max(self.smoothing, 1.0 / flow.finished)  # a plain mean over the first calls
            flow.latency += a * (now - ticket.started - flow.latency)
            if flow.busy and flow.last_finish is not None:
                dt = now - flow.last_finish
                decay = math.exp(-dt / self.window_s)
                flow.busy_s = flow.busy_s * decay + dt
                flow.done = flow.done * decay + 1.0
            flow.last_finish = now
            flow.busy = flow.in_flight > 0
