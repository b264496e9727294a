"""A served model: runtime + its dynamic batcher + tokenization off the event loop.

:class:`ServedModel` is what the domain operations call. Tokenization runs in a shared thread
pool (the Rust ``encode_batch`` releases the GIL), the padded batch is built in the batcher's
prepare thread, the session runs in the batcher's run thread; the event loop only routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from twostage.server.batching import DynamicBatcher
from twostage.server.errors import InternalError, InvalidArgument
from twostage.server.metrics import Metrics
from twostage.server.runtime import CrossEncoderRuntime, EmbedderRuntime, Encoded, EncoderRuntime


@dataclass
class Timings:
    """Per-stage nanoseconds of one call (summed over the models it used)."""

    tokenize_ns: int = 0
    queue_ns: int = 0
    inference_ns: int = 0
    index_ns: int = 0
    lexical_ns: int = 0
    tokens: int = 0
    models: list[str] = field(default_factory=list)
    started_ns: int = field(default_factory=time.perf_counter_ns)

    def add(self, other: Timings) -> None:
        self.tokenize_ns += other.tokenize_ns
        self.queue_ns += other.queue_ns
        self.inference_ns += other.inference_ns
        self.index_ns += other.index_ns
        self.lexical_ns += other.lexical_ns
        self.tokens += other.tokens
        for name in other.models:
            if name not in self.models:
                self.models.append(name)

    @property
    def total_ns(self) -> int:
        return time.perf_counter_ns() - self.started_ns


@dataclass(frozen=True)
class BatchingLimits:
    max_batch_tokens: int
    max_batch_size: int
    max_wait_ms: float
    max_queue_tokens: int
    max_padding_ratio: float | None = None


class ServedModel:
    """One loaded bundle behind one dynamic batcher."""

    def __init__(
        self,
        name: str,
        runtime: EncoderRuntime,
        limits: BatchingLimits,
        tokenize_pool: Executor,
        metrics: Metrics,
        on_failure: Callable[[BaseException], None] | None = None,
        is_default: bool = False,
    ) -> None:
        self.name = name
        self.runtime = runtime
        self.is_default = is_default
        self._pool = tokenize_pool
        self._tokenize_latency = metrics.stage_latency.labels(name, "tokenize")
        # queue / prepare / inference stage latencies are recorded by the batcher itself
        self.batcher: DynamicBatcher[Encoded, dict[str, np.ndarray], np.ndarray] = DynamicBatcher(
            name,
            prepare=runtime.collate,
            run=runtime.forward,
            max_batch_tokens=limits.max_batch_tokens,
            max_batch_size=limits.max_batch_size,
            max_wait_ms=limits.max_wait_ms,
            max_queue_tokens=limits.max_queue_tokens,
            max_padding_ratio=limits.max_padding_ratio,
            metrics=metrics,
            on_failure=on_failure,
        )

    @property
    def kind(self) -> str:
        return self.runtime.kind

    @property
    def healthy(self) -> bool:
        return self.batcher.healthy

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self, grace: float) -> None:
        await self.batcher.stop(grace)

    async def _tokenize(self, fn: Callable[[], list[Encoded]], timings: Timings) -> list[Encoded]:
        start = time.perf_counter_ns()
        items = await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        elapsed = time.perf_counter_ns() - start
        timings.tokenize_ns += elapsed
        self._tokenize_latency.observe(elapsed / 1e9)
        return items

    async def _run(
        self, items: list[Encoded], deadline: float | None, timings: Timings
    ) -> np.ndarray:
        lengths = [len(e) for e in items]
        result = await self.batcher.submit(items, lengths, deadline)
        timings.queue_ns += result.queue_ns
        timings.inference_ns += result.inference_ns
        timings.tokens += sum(lengths)
        if self.name not in timings.models:
            timings.models.append(self.name)
        out = np.stack(result.outputs).astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise InternalError(f"model {self.name} produced non-finite values")
        return out


class Embedder(ServedModel):
    """Bi-encoder: texts -> L2-normalised (as the bundle says) float32 vectors."""

    runtime: EmbedderRuntime

    @property
    def dim(self) -> int:
        return int(self.runtime.manifest.dim or 0)

    @property
    def source_sha256(self) -> str:
        src = self.runtime.manifest.source
        return src.weights_sha256 or src.id

    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: str | None = None,
        deadline: float | None = None,
        timings: Timings | None = None,
    ) -> np.ndarray:
        timings = timings if timings is not None else Timings()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        items = await self._tokenize(
            lambda: self.runtime.tokenize(list(texts), input_type), timings
        )
        return await self._run(items, deadline, timings)


class CrossEncoder(ServedModel):
    """Cross-encoder (reranker or classifier): pairs -> logits ``[n, labels]``."""

    runtime: CrossEncoderRuntime

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.runtime.label_names

    async def logits(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        deadline: float | None = None,
        timings: Timings | None = None,
    ) -> np.ndarray:
        timings = timings if timings is not None else Timings()
        if not pairs:
            return np.zeros((0, self.runtime.manifest.num_labels or 1), dtype=np.float32)
        items = await self._tokenize(lambda: self.runtime.tokenize_pairs(list(pairs)), timings)
        return await self._run(items, deadline, timings)

    def activate(self, logits: np.ndarray) -> np.ndarray:
        return self.runtime.activate(logits)

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int = 0,
        deadline: float | None = None,
        timings: Timings | None = None,
    ) -> list[tuple[int, float]]:
        """(document index, sigmoid score) sorted best first, ties by index."""
        if self.runtime.manifest.num_labels != 1:
            raise InvalidArgument(
                f"model {self.name} is a {self.runtime.manifest.num_labels}-class classifier, "
                "not a reranker; use ScorePairs",
                field="model",
            )
        logits = await self.logits(
            [(query, d) for d in documents], deadline=deadline, timings=timings
        )
        scores = self.activate(logits)
        order = np.lexsort((np.arange(len(scores)), -logits[:, 0]))
        if top_n:
            order = order[:top_n]
        return [(int(i), float(scores[i])) for i in order]


def make_served_model(
    name: str,
    runtime: EncoderRuntime,
    limits: BatchingLimits,
    tokenize_pool: Executor,
    metrics: Metrics,
    on_failure: Callable[[BaseException], None] | None = None,
    is_default: bool = False,
) -> ServedModel:
    cls = Embedder if isinstance(runtime, EmbedderRuntime) else CrossEncoder
    return cls(name, runtime, limits, tokenize_pool, metrics, on_failure, is_default)
