"""Load generator: closed loop (N workers back to back) and open loop (Poisson arrivals).

Open loop measures each request's latency from its *scheduled* send time, not from when the client
got round to sending it, so a server (or client) that falls behind shows up in the percentiles
instead of silently lowering the offered rate (coordinated omission). Latencies go into an
HdrHistogram (microseconds, 3 significant digits). Retries are off: every error is counted by its
status code, RESOURCE_EXHAUSTED included.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from twostage.clients.client import NO_RETRY, AsyncTwostageClient
from twostage.clients.errors import TwostageError

RPCS = ("search", "embed", "rerank")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_HIST_MAX_US = 3_600_000_000  # one hour


def load_texts(path: Path) -> list[str]:
    """Texts from a file: JSONL (``text``, or ``query``; BEIR ``title`` + ``text``) or plain
    lines."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    texts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
                text = rec.get("text") or rec.get("query")
                if not isinstance(text, str) or not text:
                    raise ValueError(f"{path}:{number}: needs a string 'text' or 'query'")
                title = rec.get("title")
                texts.append(f"{title} {text}" if isinstance(title, str) and title else text)
            else:
                texts.append(line)
    if not texts:
        raise ValueError(f"{path}: no texts")
    return texts


@dataclass(frozen=True)
class LoadConfig:
    """What to send and how. Exactly one of ``concurrency`` (closed loop) and ``rate`` (open)."""

    rpc: str
    queries: Sequence[str]
    duration_s: float = 10.0
    concurrency: int | None = None
    rate: float | None = None
    max_requests: int | None = None
    collection: str = ""
    documents: Sequence[str] = ()
    batch: int = 0  # texts per Embed, documents per Rerank; 0 = 1 / 20
    top_k: int = 10
    candidates: int = 100
    rerank: bool | None = None
    timeout_s: float = 30.0
    # After the duration, calls still in flight get this long; then their deadline cuts them
    # (counted as DEADLINE_EXCEEDED), so a run ends near its duration even against a deep queue.
    drain_s: float = 5.0
    max_inflight: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rpc not in RPCS:
            raise ValueError(f"--rpc must be one of {', '.join(RPCS)}, got {self.rpc!r}")
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError(
                "give exactly one of --concurrency (closed loop) or --rate (open loop)"
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0, got {self.duration_s}")
        if self.drain_s < 0 or not self.timeout_s > 0:
            raise ValueError("--drain must be >= 0 and --timeout > 0")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError(f"--requests must be >= 1, got {self.max_requests}")
        if self.rpc == "search" and not self.collection:
            raise ValueError("--rpc search needs --collection")
        if not self.queries:
            raise ValueError("no queries to send")

    @property
    def mode(self) -> str:
        return "closed" if self.concurrency is not None else "open"

    @property
    def texts_per_request(self) -> int:
        return self.batch or (1 if self.rpc == "embed" else 20)


@dataclass
class LoadReport:
    """What a run measured. Latency percentiles cover successful requests only."""

    config: LoadConfig
    elapsed_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    histogram: HdrHistogram
    # (seconds since start of the scheduled send, latency seconds, status name) per request
    samples: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Successful requests per second over the whole run."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentiles_ms(self) -> dict[str, float]:
        h = self.histogram
        if h.get_total_count() == 0:
            return {}
        out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000.0 for p in PERCENTILES}
        out["max"] = h.get_max_value() / 1000.0
        out["mean"] = h.get_mean_value() / 1000.0
        return out

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "rpc": c.rpc,
            "mode": c.mode,
            "concurrency": c.concurrency,
            "rate": c.rate,
            "duration_s": c.duration_s,
            "max_requests": c.max_requests,
            "collection": c.collection or None,
            "texts_per_request": c.texts_per_request if c.rpc != "search" else None,
            "top_k": c.top_k if c.rpc == "search" else None,
            "candidates": c.candidates if c.rpc == "search" else None,
            "rerank": c.rerank if c.rpc == "search" else None,
            "elapsed_s": self.elapsed_s,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "throughput_rps": self.throughput,
            "offered_rps": self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "latency_ms": self.percentiles_ms(),
        }

    def table(self) -> str:
        c = self.config
        how = (
            f"closed loop, {c.concurrency} workers"
            if c.mode == "closed"
            else f"open loop, Poisson arrivals at {c.rate:g} req/s"
        )
        lines = [
            f"load {c.rpc}: {how}, {self.elapsed_s:.1f} s",
            f"sent {self.sent}  ok {self.ok}  errors {sum(self.errors.values())}  "
            f"throughput {self.throughput:.1f} req/s",
        ]
        pct = self.percentiles_ms()
        if pct:
            lines.append(
                "latency ms  " + "  ".join(f"{k} {v:.1f}" for k, v in pct.items() if k != "mean")
            )
        for code, n in sorted(self.errors.items()):
            lines.append(f"  {code}: {n}")
        return "\n".join(lines)


class _Requests:
    """Builds one request of the configured kind as a coroutine factory."""

    def __init__(self, client: AsyncTwostageClient, config: LoadConfig, stop_at: float) -> None:
        self.client = client
        self.c = config
        self.rng = random.Random(config.seed)
        self.docs = list(config.documents) or list(config.queries)
        self.stop_at = stop_at

    def timeout(self) -> float:
        """The call's timeout, cut so that no call outlives the duration plus the drain."""
        return max(0.001, min(self.c.timeout_s, self.stop_at - time.perf_counter()))

    def next(self) -> Callable[[], Awaitable[object]]:
        c, rng, client = self.c, self.rng, self.client
        query = rng.choice(c.queries)
        if c.rpc == "search":
            return lambda: client.search_detailed(
                c.collection, query, c.top_k, c.candidates, c.rerank, timeout=self.timeout()
            )
        if c.rpc == "embed":
            texts = [query] + [rng.choice(c.queries) for _ in range(c.texts_per_request - 1)]
            return lambda: client.encode(
                texts, input_type="query", batch_size=len(texts), timeout=self.timeout()
            )
        docs = [rng.choice(self.docs) for _ in range(c.texts_per_request)]
        return lambda: client.rank(query, docs, batch_size=len(docs), timeout=self.timeout())


class _Recorder:
    def __init__(self, start: float) -> None:
        self.start = start
        self.hist = HdrHistogram(1, _HIST_MAX_US, 3)
        self.errors: Counter[str] = Counter()
        self.samples: list[tuple[float, float, str]] = []
        self.sent = 0
        self.ok = 0
        self.last_done = start

    async def send(self, call: Callable[[], Awaitable[object]], scheduled: float) -> None:
        """Run one call; its latency counts from ``scheduled`` (the intended send time)."""
        self.sent += 1
        status = "OK"
        try:
            await call()
        except TwostageError as e:
            status = e.code_name
        except (ValueError, TypeError) as e:  # a reply the client could not read
            status = f"CLIENT_{type(e).__name__}"
        done = time.perf_counter()
        self.last_done = max(self.last_done, done)
        latency = done - scheduled
        self.samples.append((scheduled - self.start, latency, status))
        if status == "OK":
            self.ok += 1
            self.hist.record_value(max(1, min(_HIST_MAX_US, round(latency * 1e6))))
        else:
            self.errors[status] += 1


async def _closed_loop(config: LoadConfig, requests: _Requests, rec: _Recorder, end: float) -> None:
    budget = config.max_requests

    async def worker() -> None:
        nonlocal budget
        while time.perf_counter() < end:
            if budget is not None:
                if budget <= 0:
                    return
                budget -= 1
            call = requests.next()
            await rec.send(call, time.perf_counter())

    await asyncio.gather(*(worker() for _ in range(config.concurrency or 1)))


async def _open_loop(config: LoadConfig, requests: _Requests, rec: _Recorder, end: float) -> None:
    rate = config.rate or 1.0
    arrivals = random.Random(config.seed + 1)
    slots = asyncio.Semaphore(config.max_inflight)
    tasks: set[asyncio.Task[None]] = set()

    async def fire(call: Callable[[], Awaitable[object]], scheduled: float) -> None:
        try:
            await rec.send(call, scheduled)
        finally:
            slots.release()

    scheduled = rec.start
    count = 0
    while True:
        scheduled += arrivals.expovariate(rate)
        if scheduled >= end or (config.max_requests is not None and count >= config.max_requests):
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # A full in-flight window delays the send, and that delay counts in the latency.
        await slots.acquire()
        task = asyncio.create_task(fire(requests.next(), scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        count += 1
    if tasks:
        await asyncio.gather(*tasks)


async def run_load(address: str, config: LoadConfig, **client_kwargs: Any) -> LoadReport:
    """Drive the server at ``address`` as configured; returns when the run and its calls end."""
    async with AsyncTwostageClient(address, retry=NO_RETRY, **client_kwargs) as client:
        start = time.perf_counter()
        end = start + config.duration_s
        requests = _Requests(client, config, end + config.drain_s)
        rec = _Recorder(start)
        if config.mode == "closed":
            await _closed_loop(config, requests, rec, end)
        else:
            await _open_loop(config, requests, rec, end)
        elapsed = (rec.last_done if rec.sent else time.perf_counter()) - start
    return LoadReport(config, elapsed, rec.sent, rec.ok, dict(rec.errors), rec.hist, rec.samples)


def plot(report: LoadReport, path: Path) -> None:
    """Write a PNG: latency over time (errors marked) and the latency percentile spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ok = [(t, lat * 1000) for t, lat, s in report.samples if s == "OK"]
    bad = [(t, lat * 1000) for t, lat, s in report.samples if s != "OK"]
    if ok:
        left.scatter(*zip(*ok, strict=True), s=4, label="ok", alpha=0.6)
    if bad:
        left.scatter(*zip(*bad, strict=True), s=6, c="red", marker="x", label="error")
    left.set_xlabel("scheduled send time (s)")
    left.set_ylabel("latency (ms)")
    left.set_title(report.table().splitlines()[0])
    left.legend(loc="upper left")
    h = report.histogram
    if h.get_total_count():
        ps = [0, 50, 90, 99, 99.9, 99.99]
        xs = [1.0 / (1.0 - p / 100.0) for p in ps]
        ys = [h.get_value_at_percentile(p) / 1000.0 for p in ps]
        right.plot(xs, ys, marker="o")
        right.set_xscale("log")
        right.set_xticks(xs, [f"{p:g}%" for p in ps])
        right.set_ylabel("latency (ms)")
        right.set_title("latency by percentile (successful requests)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
