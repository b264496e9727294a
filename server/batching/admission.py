"""Bounded admission at the edge: a permit per request, or ``Overloaded`` at once.

A server that queues without bound turns a load spike into a memory spike and into latency for
every caller; one that refuses early lets clients retry elsewhere. :class:`Admission` holds a
fixed number of request permits and/or a token budget and never waits: when a request does not
fit, :meth:`Admission.try_acquire` raises :class:`~twostage.server.errors.Overloaded`
(RESOURCE_EXHAUSTED at the gRPC edge) and counts it in ``twostage_rejected{where=<name>}``.
"""

from __future__ import annotations

import threading
from types import TracebackType

from twostage.server.errors import Overloaded
from twostage.server.metrics import Metrics


class Permit:
    """One admitted request: holds one request slot and ``tokens`` tokens until released.

    Use it as a context manager (``with admission.try_acquire(n): ...``); ``release`` is
    idempotent, so an explicit release inside the block is harmless.
    """

    __slots__ = ("_admission", "_released", "tokens")

    def __init__(self, admission: Admission, tokens: int) -> None:
        self._admission = admission
        self._released = False
        self.tokens = tokens

    @property
    def released(self) -> bool:
        """True once the permit's slot and tokens went back to the admission."""
        return self._released

    def release(self) -> None:
        """Give the slot and the tokens back (idempotent)."""
        if not self._released:
            self._released = True
            self._admission._release(self.tokens)

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
    """Bounded permits for in-flight requests, by count and/or by tokens; never a queue.

    ``max_requests`` bounds concurrent requests, ``max_tokens`` the sum of their tokens (either may
    be None = unbounded). A request larger than ``max_tokens`` on its own is admitted only while
    nothing else holds tokens, so an oversized request is slow rather than impossible and still
    cannot pile up. Thread-safe: usable from the event loop and from worker threads.
    """

    def __init__(
        self,
        name: str,
        *,
        max_requests: int | None = None,
        max_tokens: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if max_requests is not None and max_requests < 1:
            raise ValueError(f"max_requests must be >= 1 or None, got {max_requests}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        self.name = name
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._requests = 0
        self._tokens = 0
        self._rejected = (metrics if metrics is not None else Metrics()).rejected.labels(name)

    @property
    def in_flight(self) -> int:
        """Requests holding a permit now."""
        return self._requests

    @property
    def in_flight_tokens(self) -> int:
        """Tokens held by the permits now."""
        return self._tokens

    def try_acquire(self, tokens: int = 0) -> Permit:
        """Take a permit for one request of ``tokens`` tokens, or raise ``Overloaded`` at once."""
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        with self._lock:
            if self.max_requests is not None and self._requests >= self.max_requests:
                reason = (
                    f"{self.name}: {self._requests} requests in flight (limit {self.max_requests})"
                )
            elif (
                self.max_tokens is not None
                and self._tokens > 0
                and self._tokens + tokens > self.max_tokens
            ):
                reason = (
                    f"{self.name}: {self._tokens} tokens in flight + {tokens} requested "
                    f"> limit {self.max_tokens}"
                )
            else:
                self._requests += 1
                self._tokens += tokens
                return Permit(self, tokens)
        self._rejected.inc()
        raise Overloaded(f"server overloaded, {reason}; retry later")

    def _release(self, tokens: int) -> None:
        with self._lock:
            self._requests -= 1
            self._tokens -= tokens
