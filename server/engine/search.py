"""Search: embed the query, take ANN candidates, rerank them with the cross-encoder, cut to top_k.

The final order is the cross-encoder's, or the fusion of dense and cross-encoder scores that the
reranker bundle declares (fitted on held-back training queries at training time); ``rerank_score``
always stays the cross-encoder's own (sigmoid) score.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from twostage.server.bundle import Fusion
from twostage.server.engine.models import CrossEncoder, Embedder, Timings
from twostage.server.engine.registry import ModelRegistry
from twostage.server.errors import FailedPrecondition
from twostage.server.store.collections import Collection, CollectionManager


@dataclass(frozen=True)
class SearchHit:
    id: str
    text: str
    metadata: Mapping[str, str]
    dense_score: float
    rerank_score: float
    dense_rank: int
    rank: int
    score: float


@dataclass
class SearchOutcome:
    hits: list[SearchHit]
    reranked: bool
    ranking: str
    timings: Timings = field(default_factory=Timings)


def zscore(values: np.ndarray) -> np.ndarray:
    """Per-query standardisation over the candidate set (all zeros when the spread is zero)."""
    v = np.asarray(values, dtype=np.float64)
    std = v.std()
    if v.size == 0 or std < 1e-12:
        return np.zeros_like(v)
    return (v - v.mean()) / std


def fuse(dense: np.ndarray, logits: np.ndarray, dense_weight: float) -> np.ndarray:
    """``w * z(dense) + (1 - w) * z(logit)``: the fusion the training run fitted ``w`` for."""
    return dense_weight * zscore(dense) + (1.0 - dense_weight) * zscore(logits)


def served_fusion(reranker: CrossEncoder) -> Fusion | None:
    """The fusion Search ranks by with this reranker; ``None``: the cross-encoder alone."""
    fusion = reranker.runtime.manifest.fusion
    return fusion if fusion is not None and fusion.dense_weight > 0 else None


def ranking_name(reranker: CrossEncoder | None) -> str:
    if reranker is None:
        return "dense"
    fusion = served_fusion(reranker)
    if fusion is not None:
        fitted = f",fitted_candidates={fusion.candidates}" if fusion.candidates else ""
        return f"fusion:{fusion.method}(dense_weight={fusion.dense_weight:g}{fitted})"
    return "rerank"


class Searcher:
    """The Search operation over the collections and loaded models."""

    def __init__(self, registry: ModelRegistry, collections: CollectionManager) -> None:
        self.registry = registry
        self.collections = collections

    def embedder_for(self, collection: Collection) -> Embedder:
        """The embedder that built the collection; refuse a query through any other."""
        info = collection.config.embedder
        name = str(info.get("name", ""))
        embedder = self.registry.embedder(name) if name else self.registry.embedder()
        source = str(info.get("source", ""))
        if source and source != embedder.source_sha256:
            raise FailedPrecondition(
                f"collection {collection.name} was built by a different embedder than the loaded "
                f"{embedder.name!r} (weights differ); load the original bundle as {name!r}",
                field="collection",
            )
        if embedder.dim != collection.dim:
            raise FailedPrecondition(
                f"collection {collection.name} has dim {collection.dim}, embedder "
                f"{embedder.name!r} gives {embedder.dim}",
                field="collection",
            )
        return embedder

    async def search(
        self,
        collection_name: str,
        query: str,
        *,
        top_k: int,
        candidates: int,
        rerank: bool | None,
        ef: int = 0,
        filter: Mapping[str, str] | None = None,
        reranker_name: str = "",
        deadline: float | None = None,
    ) -> SearchOutcome:
        collection = self.collections.get(collection_name)
        embedder = self.embedder_for(collection)
        reranker: CrossEncoder | None = None
        if rerank is None:
            rerank = self.registry.has_reranker or bool(reranker_name)
        if rerank:
            reranker = self.registry.reranker(reranker_name)
        timings = Timings()
        vectors = await embedder.embed(
            [query], input_type="query", deadline=deadline, timings=timings
        )
        start = time.perf_counter_ns()
        found = await asyncio.to_thread(
            collection.search, vectors[0], candidates, ef or None, filter
        )
        timings.index_ns += time.perf_counter_ns() - start
        if not found:
            return SearchOutcome([], reranker is not None, ranking_name(reranker), timings)
        dense = np.asarray([h.score for h in found], dtype=np.float32)
        if reranker is None:
            hits = [
                SearchHit(
                    h.id, h.text, h.metadata, float(h.score), 0.0, i + 1, i + 1, float(h.score)
                )
                for i, h in enumerate(found[:top_k])
            ]
            return SearchOutcome(hits, False, "dense", timings)
        logits = await reranker.logits(
            [(query, h.text) for h in found], deadline=deadline, timings=timings
        )
        logit = logits[:, 0]
        scores = reranker.activate(logits)
        fusion = served_fusion(reranker)
        fused = fusion is not None
        final = fuse(dense, logit, fusion.dense_weight) if fusion else logit.astype(np.float64)
        # best first; ties keep the dense order
        order = np.lexsort((np.arange(len(found)), -final))[:top_k]
        hits = [
            SearchHit(
                id=found[i].id,
                text=found[i].text,
                metadata=found[i].metadata,
                dense_score=float(dense[i]),
                rerank_score=float(scores[i]),
                dense_rank=int(i) + 1,
                rank=rank + 1,
                score=float(final[i]) if fused else float(scores[i]),
            )
            for rank, i in enumerate(order)
        ]
        return SearchOutcome(hits, True, ranking_name(reranker), timings)
