"""Every Prometheus metric of the server, in one module (``twostage_`` prefix, unit suffixes).

Metrics live in a dedicated registry so several servers can run in one process (tests) without
colliding in the global default registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass
class Metrics:
    """The metric families; one instance per server (pass ``registry`` to share one)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "twostage_requests",
            "RPCs handled, by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            "twostage_request_latency_seconds",
            "RPC latency by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "twostage_stage_latency_seconds",
            "Per-stage latency (tokenize, queue, inference, index) by model",
            ["model", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "twostage_batch_size",
            "Sequences per model batch",
            ["model"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "twostage_batch_tokens",
            "Padded tokens per model batch",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "twostage_batches",
            "Model batches run (session runs)",
            ["model"],
            registry=r,
        )
        self.batch_items = Counter(
            "twostage_batch_items",
            "Sequences that went through the model",
            ["model"],
            registry=r,
        )
        self.computed_tokens = Counter(
            "twostage_computed_tokens",
            "Tokens computed including padding",
            ["model"],
            registry=r,
        )
        self.real_tokens = Counter(
            "twostage_real_tokens",
            "Tokens of the real sequences (no padding)",
            ["model"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "twostage_queue_depth",
            "Sequences waiting in the batcher queue",
            ["model"],
            registry=r,
        )
        self.queue_tokens = Gauge(
            "twostage_queue_tokens",
            "Tokens waiting in the batcher queue",
            ["model"],
            registry=r,
        )
        self.dropped = Counter(
            "twostage_dropped_items",
            "Queued sequences dropped before compute, by reason",
            ["model", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "twostage_rejected",
            "Requests refused by admission (RESOURCE_EXHAUSTED)",
            ["where"],
            registry=r,
        )
        self.batcher_failures = Counter(
            "twostage_batch_errors",
            "Batches that raised",
            ["model", "err"],
            registry=r,
        )
        self.index_size = Gauge(
            "twostage_index_documents",
            "Live documents per collection",
            ["collection"],
            registry=r,
        )
        self.inflight = Gauge("twostage_inflight_requests", "RPCs in flight", registry=r)

    def padding_ratio(self, model: str) -> float:
        """Computed tokens / real tokens since start (1.0 = no padding waste)."""
        real = self.registry.get_sample_value("twostage_real_tokens_total", {"model": model})
        computed = self.registry.get_sample_value(
            "twostage_computed_tokens_total", {"model": model}
        )
        return float(computed or 0.0) / real if real else 1.0
