"""Search: a first stage over the dense and lexical channels, fused, then the rerank stage where it
earns its cost, cut to top_k.

First stage. ``dense`` embeds the query and asks the vector index; ``lexical`` asks the
collection's BM25 (FTS5) table; ``hybrid`` runs both (the lexical query starts while the query is
being embedded) and takes the union of their candidates (:func:`union`). Every union member then
gets both channels' scores (exact similarity from its stored embedding; its BM25 from the same
FTS5 read that ranked the lexical channel), and the union is ranked by the fusion of
:mod:`twostage.server.fusion` and cut to ``candidates``.

Rerank. The cross-encoder scores the best ``depth`` candidates; their final order is
``w * z(logit) + (1 - w) * z(first-stage score)`` with ``w`` and ``depth`` from the collection's
tuning (``twostage tune``) or, when a request asks for rerank explicitly, from the reranker
bundle's held-back fit. An untuned collection does not rerank by default: a cross-encoder fitted
on one domain was measured to lose to dense-only on others, so it runs only where labels showed
it helps, or where a request asks for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from twostage.server.bundle import Fusion
from twostage.server.engine.models import CrossEncoder, Embedder, Timings
from twostage.server.engine.registry import ModelRegistry
from twostage.server.errors import FailedPrecondition, InvalidArgument
from twostage.server.fusion import DEFAULT_FIRST_STAGE, GAP_DEPTH, FirstStageFusion, fuse
from twostage.server.store.collections import Collection, CollectionManager, LexicalChannel
from twostage.server.store.collections import SearchHit as StoreHit

RETRIEVALS = ("dense", "lexical", "hybrid")


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
    lexical_score: float = 0.0
    lexical_rank: int = 0


@dataclass
class SearchOutcome:
    hits: list[SearchHit]
    reranked: bool
    ranking: str
    timings: Timings = field(default_factory=Timings)


@dataclass
class Candidates:
    """One query's first-stage candidates with every channel's evidence, in first-stage order
    once :meth:`order_by` ran. Ranks are 1-based within a channel's own results, 0 = absent."""

    ids: list[str]
    texts: list[str]
    metadata: list[Mapping[str, str]]
    dense: np.ndarray
    lexical: np.ndarray
    dense_ranks: np.ndarray
    lexical_ranks: np.ndarray
    score: np.ndarray  # the first-stage score the order follows

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, order: np.ndarray) -> Candidates:
        return Candidates(
            [self.ids[i] for i in order],
            [self.texts[i] for i in order],
            [self.metadata[i] for i in order],
            self.dense[order],
            self.lexical[order],
            self.dense_ranks[order],
            self.lexical_ranks[order],
            self.score[order],
        )

    def order_by(self, score: np.ndarray, limit: int) -> Candidates:
        """A copy scored by ``score`` and sorted by it (best first; ties keep the current
        order), cut to ``limit``."""
        scored = replace(self, score=np.asarray(score, dtype=np.float64))
        return scored.take(np.lexsort((np.arange(len(self.ids)), -scored.score))[:limit])


@dataclass(frozen=True)
class RerankPlan:
    """Whether and how the rerank stage runs for one request."""

    run: bool
    weight: float = 1.0  # of z(cross-encoder logit); the first stage gets 1 - weight
    depth: int = 0
    why: str = ""  # when it does not run

    def name(self) -> str:
        if not self.run:
            return f"rerank:off({self.why})" if self.why else ""
        if self.weight >= 1.0:
            return f"rerank(depth={self.depth})"
        return f"rerank:fused(weight={self.weight:g},depth={self.depth})"


def served_fusion(reranker: CrossEncoder) -> Fusion | None:
    """The fitted fusion of this reranker's bundle; ``None``: the cross-encoder alone."""
    fusion = reranker.runtime.manifest.fusion
    return fusion if fusion is not None and fusion.dense_weight > 0 else None


def ranking_name(reranker: CrossEncoder | None) -> str:
    """How an explicit rerank with this reranker ranks (``Info``'s per-model figure)."""
    if reranker is None:
        return "dense"
    fusion = served_fusion(reranker)
    if fusion is not None:
        fitted = f",fitted_candidates={fusion.candidates}" if fusion.candidates else ""
        return f"fusion:{fusion.method}(dense_weight={fusion.dense_weight:g}{fitted})"
    return "rerank"


def default_retrieval(collection: Collection) -> str:
    tuned = collection.config.tuning.get("retrieval")
    if tuned in RETRIEVALS and (tuned == "dense" or collection.has_lexical):
        return str(tuned)
    return "hybrid" if collection.has_lexical else "dense"


def default_fusion(collection: Collection) -> FirstStageFusion:
    tuned = collection.config.tuning.get("fusion")
    return FirstStageFusion.from_json(tuned) if tuned else DEFAULT_FIRST_STAGE


def first_stage_name(retrieval: str, fusion: FirstStageFusion) -> str:
    return f"hybrid:{fusion.name()}" if retrieval == "hybrid" else retrieval


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

    def default_ranking(self, collection: Collection) -> str:
        """What a default Search request on ``collection`` applies (CollectionInfo.ranking)."""
        retrieval = default_retrieval(collection)
        name = first_stage_name(retrieval, default_fusion(collection))
        plan = self._rerank_plan(collection, None, "", 0, 100)
        return name + ("+" + plan.name() if plan.name() else "")

    # -- the first stage ------------------------------------------------------------------------

    async def candidates(
        self,
        collection: Collection,
        query: str,
        *,
        retrieval: str,
        dense_k: int,
        lexical_k: int,
        ef: int = 0,
        filter: Mapping[str, str] | None = None,
        deadline: float | None = None,
        timings: Timings,
    ) -> Candidates:
        """Both channels' candidates (union) with both scores filled; unordered."""
        if retrieval not in RETRIEVALS:
            raise InvalidArgument(
                f"retrieval must be one of {', '.join(RETRIEVALS)}", field="retrieval"
            )
        if retrieval != "dense" and not collection.has_lexical:
            raise FailedPrecondition(
                f"collection {collection.name!r} has no lexical channel (analyzer 'none'); "
                "use retrieval DENSE",
                field="retrieval",
            )
        lexical_task: asyncio.Task[tuple[LexicalChannel, int]] | None = None
        if retrieval != "dense":
            lexical_task = asyncio.create_task(
                _timed(asyncio.to_thread(collection.lexical_channel, query, lexical_k, filter))
            )
        dense_hits: list[StoreHit] = []
        vector: np.ndarray | None = None
        try:
            if retrieval != "lexical":
                embedder = self.embedder_for(collection)
                vectors = await embedder.embed(
                    [query], input_type="query", deadline=deadline, timings=timings
                )
                vector = vectors[0]
                start = time.perf_counter_ns()
                dense_hits = await asyncio.to_thread(
                    collection.search, vector, dense_k, ef or None, filter
                )
                timings.index_ns += time.perf_counter_ns() - start
        finally:
            channel: LexicalChannel | None = None
            if lexical_task is not None:
                channel, elapsed = await lexical_task
                timings.lexical_ns += elapsed
        if retrieval != "hybrid":
            return union(collection, vector, dense_hits, channel, fill=False)
        if dense_k >= GAP_DEPTH and lexical_k >= GAP_DEPTH and channel is not None:
            collection.record_channel_gaps(
                [h.score for h in channel.hits], [h.score for h in dense_hits]
            )
        start = time.perf_counter_ns()
        found = await asyncio.to_thread(union, collection, vector, dense_hits, channel)
        timings.index_ns += time.perf_counter_ns() - start
        return found

    # -- the rerank stage -------------------------------------------------------------------------

    def _rerank_plan(
        self,
        collection: Collection,
        rerank: bool | None,
        reranker_name: str,
        depth: int,
        candidates: int,
    ) -> RerankPlan:
        tuned = collection.config.tuning.get("rerank") or {}
        if rerank is None:
            if not tuned:
                return RerankPlan(False, why="untuned collection")
            if not tuned.get("enabled"):
                return RerankPlan(False, why="tuned: no gain")
            if not self.registry.has_reranker and not reranker_name:
                return RerankPlan(False, why="no reranker loaded")
            rerank = True
        if not rerank:
            return RerankPlan(False)
        if tuned.get("enabled") and not reranker_name:
            weight = float(tuned.get("weight", 1.0))
            depth = depth or int(tuned.get("depth", 0))
        else:
            fusion = self.registry.reranker(reranker_name).runtime.manifest.fusion
            weight = 1.0 if fusion is None or fusion.dense_weight <= 0 else 1 - fusion.dense_weight
            depth = depth or (fusion.candidates if fusion is not None else 0)
        return RerankPlan(True, weight=weight, depth=min(depth or candidates, candidates))

    # -- Search -----------------------------------------------------------------------------------

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
        retrieval: str | None = None,
        dense_candidates: int = 0,
        lexical_candidates: int = 0,
        fusion: FirstStageFusion | None = None,
        rerank_depth: int = 0,
    ) -> SearchOutcome:
        collection = self.collections.get(collection_name)
        retrieval = retrieval or default_retrieval(collection)
        fusion = fusion or default_fusion(collection)
        plan = self._rerank_plan(collection, rerank, reranker_name, rerank_depth, candidates)
        reranker = self.registry.reranker(reranker_name) if plan.run else None
        timings = Timings()
        found = await self.candidates(
            collection,
            query,
            retrieval=retrieval,
            dense_k=dense_candidates or candidates,
            lexical_k=lexical_candidates or candidates,
            ef=ef,
            filter=filter,
            deadline=deadline,
            timings=timings,
        )
        if retrieval == "dense":
            first = found.dense
        elif retrieval == "lexical":
            first = found.lexical
        else:
            first = fusion.scores(
                found.dense,
                found.lexical,
                found.dense_ranks,
                found.lexical_ranks,
                collection.channel_stats,
            )
        found = found.order_by(first, candidates)
        ranking = first_stage_name(retrieval, fusion)
        if plan.name():
            ranking += "+" + plan.name()
        if reranker is None or not len(found):
            return SearchOutcome(_hits(found, found.score, None, top_k), False, ranking, timings)
        head = found.take(np.arange(min(plan.depth, len(found))))
        logits = await reranker.logits(
            [(query, t) for t in head.texts], deadline=deadline, timings=timings
        )
        final = fuse(head.score, logits[:, 0], 1.0 - plan.weight)
        order = np.lexsort((np.arange(len(head)), -final))
        ce = np.asarray(reranker.activate(logits)).reshape(len(head), -1)[:, 0]
        hits = _hits(head.take(order), final[order], ce[order], top_k)
        if len(hits) < top_k and len(found) > len(head):
            tail = found.take(np.arange(len(head), len(found)))
            more = _hits(tail, tail.score, None, top_k - len(hits), first_rank=len(hits) + 1)
            hits += more
        return SearchOutcome(hits, True, ranking, timings)


def union(
    collection: Collection,
    vector: np.ndarray | None,
    dense_hits: Sequence[StoreHit],
    channel: LexicalChannel | None,
    *,
    fill: bool = True,
) -> Candidates:
    """Both channels' candidates, each once, with each channel's rank (0: it did not return
    the candidate). With ``fill``, every candidate also gets the score its channel did not
    return: exact similarity from its stored embedding, its BM25 from ``channel`` (0: no term
    matches). Blocking (reads stored embeddings); unordered."""
    lexical_hits = channel.hits if channel is not None else []
    by_label: dict[int, StoreHit] = {}
    dense: dict[int, float] = {}
    lexical: dict[int, float] = {}
    d_rank: dict[int, int] = {}
    l_rank: dict[int, int] = {}
    for hits, scores, ranks in ((dense_hits, dense, d_rank), (lexical_hits, lexical, l_rank)):
        for rank, h in enumerate(hits, start=1):
            scores[h.label] = h.score
            ranks[h.label] = rank
            by_label.setdefault(h.label, h)
    labels = list(by_label)
    if fill and channel is not None and dense_hits:
        lexical.update(channel.scores_of([x for x in labels if x not in lexical]))
        missing_dense = [x for x in labels if x not in dense]
        if missing_dense:
            dense.update(collection.dense_scores(vector, missing_dense))
    floor = min(dense.values(), default=0.0)  # a document gone meanwhile ranks last
    return Candidates(
        [by_label[x].id for x in labels],
        [by_label[x].text for x in labels],
        [by_label[x].metadata for x in labels],
        np.asarray([dense.get(x, floor) for x in labels], dtype=np.float64),
        np.asarray([lexical.get(x, 0.0) for x in labels], dtype=np.float64),
        np.asarray([d_rank.get(x, 0) for x in labels], dtype=np.int64),
        np.asarray([l_rank.get(x, 0) for x in labels], dtype=np.int64),
        np.zeros(len(labels), dtype=np.float64),
    )


def _hits(
    found: Candidates,
    score: np.ndarray,
    rerank: np.ndarray | None,
    limit: int,
    first_rank: int = 1,
) -> list[SearchHit]:
    return [
        SearchHit(
            id=found.ids[i],
            text=found.texts[i],
            metadata=found.metadata[i],
            dense_score=float(found.dense[i]),
            rerank_score=float(rerank[i]) if rerank is not None else 0.0,
            dense_rank=int(found.dense_ranks[i]),
            rank=first_rank + i,
            score=float(score[i]),
            lexical_score=float(found.lexical[i]),
            lexical_rank=int(found.lexical_ranks[i]),
        )
        for i in range(min(limit, len(found)))
    ]


async def _timed(work: Any) -> tuple[Any, int]:
    start = time.perf_counter_ns()
    result = await work
    return result, time.perf_counter_ns() - start
