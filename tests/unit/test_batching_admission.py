"""Admission: bounded permits by count and tokens, refusal at once, release exactly once."""

from __future__ import annotations

import threading

import pytest

from twostage.server.batching import Admission, DeadlineAdmission
from twostage.server.errors import Overloaded
from twostage.server.metrics import Metrics


def rejected(metrics: Metrics, where: str) -> float:
    return metrics.rejected.labels(where)._value.get()


def test_request_limit_refuses_at_once_and_frees_on_exit() -> None:
    metrics = Metrics()
    admission = Admission("embed", max_requests=2, metrics=metrics)
    with admission.try_acquire(), admission.try_acquire():
        assert admission.in_flight == 2
        with pytest.raises(Overloaded, match="2 requests in flight \\(limit 2\\)"):
            admission.try_acquire()
        assert rejected(metrics, "embed") == 1
    assert admission.in_flight == 0
    with admission.try_acquire():
        assert admission.in_flight == 1


def test_release_is_idempotent_and_survives_exceptions() -> None:
    admission = Admission("embed", max_requests=1)
    with pytest.raises(RuntimeError), admission.try_acquire() as permit:
        permit.release()
        permit.release()
        raise RuntimeError("handler failed")
    assert permit.released and admission.in_flight == 0
    admission.try_acquire().release()  # the slot is free again


def test_permits_are_exact_under_threads() -> None:
    admission = Admission("embed", max_requests=3)
    admitted = 0
    peak = 0
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        nonlocal admitted, peak
        start.wait()
        for _ in range(2000):
            try:
                permit = admission.try_acquire()
            except Overloaded:
                continue
            with permit, lock:
                admitted += 1
                peak = max(peak, admission.in_flight)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted > 0 and peak <= 3
    assert admission.in_flight == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_requests"):
        Admission("x", max_requests=0)
    assert Admission("x").try_acquire()  # no limit: always admitted


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_deadline_admission_refuses_what_the_backlog_cannot_finish_in_time() -> None:
    clock = FakeClock()
    metrics = Metrics()
    gate = DeadlineAdmission(headroom=1.0, warmup=4, metrics=metrics, clock=clock)
    # Measured service: one call alone takes 10 ms, so throughput is ~100 calls/s.
    for _ in range(10):
        ticket = gate.admit("Embed", remaining=1.0)
        clock.now += 0.010
        ticket.finish(measured=True)
    assert gate.expected_wait("Embed") == pytest.approx(0.010)
    held = [gate.admit("Embed", remaining=1.0) for _ in range(98)]  # 98 in flight: ~0.99 s
    assert gate.expected_wait("Embed") == pytest.approx(0.99)
    gate.admit("Embed", remaining=None).finish(measured=False)  # no deadline: not judged here
    with pytest.raises(Overloaded, match="Embed call would wait"):
        gate.admit("Embed", remaining=0.5)
    assert metrics.rejected.labels("deadline")._value.get() == 1
    gate.admit("Search", remaining=0.001).finish(measured=False)  # another kind: its own backlog
    for ticket in held[:60]:
        ticket.finish(measured=False)  # refusals or bad requests say nothing of the service
    assert gate.expected_wait("Embed") == pytest.approx(0.39)
    gate.admit("Embed", remaining=0.5).finish(measured=True)


def test_deadline_admission_learns_the_throughput_of_a_busy_server() -> None:
    """Batching: 50 calls finish together every 100 ms, so the rate is ~500/s, not 1/latency."""
    clock = FakeClock()
    gate = DeadlineAdmission(headroom=1.0, warmup=4, clock=clock)
    waiting = [gate.admit("Search", remaining=10.0) for _ in range(50)]
    for _ in range(40):
        arrivals = [gate.admit("Search", remaining=10.0) for _ in range(50)]
        clock.now += 0.1
        for t in waiting:
            t.finish(measured=True)
        waiting = arrivals
    assert 51 / gate.expected_wait("Search") == pytest.approx(500, rel=0.05)
    with pytest.raises(ValueError):
        DeadlineAdmission(headroom=0)
