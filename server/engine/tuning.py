"""Per-collection tuning: fit how Search ranks a collection on the user's own labelled queries.

Each query runs the first stage once (both channels, 100 candidates each, every candidate with
both scores), so every first-stage fusion is measured on the same evidence without re-querying:
dense, lexical, RRF, z-score weights 0..1 and the adaptive default. The best mean nDCG@10 wins.
Then, where a reranker is loaded, the cross-encoder scores the chosen first stage's best 50
candidates on a bounded sample of queries, and its weight and depth are fitted the same way; it
is enabled only if it beats the first stage with a paired randomisation test at p < 0.05, since
it costs far more latency than the first stage. Every row carries its paired test against
dense-only. The result is stored in the collection config, which Search uses by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from twostage.server.engine.models import Timings
from twostage.server.engine.search import Candidates, Searcher, first_stage_name
from twostage.server.errors import FailedPrecondition, InvalidArgument
from twostage.server.fusion import DEFAULT_FIRST_STAGE, FirstStageFusion, fuse

log = logging.getLogger(__name__)

MIN_QUERIES = 20
DEPTH = 100
RERANK_DEPTHS = (10, 20, 30, 50)
RERANK_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 11))
MAX_RERANK_QUERIES = 200
PERMUTATIONS = 10_000


@dataclass(frozen=True)
class LabeledQuery:
    text: str
    relevant: Mapping[str, float]


@dataclass
class ModeResult:
    ranking: str
    ndcg10: float
    delta_vs_dense: float
    p_value: float
    recall100: float
    queries: int
    chosen: bool = False


@dataclass
class TuneReport:
    modes: list[ModeResult]
    ranking: str
    tuning: dict[str, Any]
    stored: bool
    queries: int
    per_query: dict[str, np.ndarray] = field(default_factory=dict)


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains (trec_eval's ``ndcg_cut``, as ir-measures computes it)."""
    gains = [float(relevant.get(doc, 0.0)) for doc in ranked[:k]]
    dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains) if g > 0)
    ideal = sorted((float(v) for v in relevant.values() if v > 0), reverse=True)[:k]
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, float], k: int = 100) -> float:
    wanted = {d for d, v in relevant.items() if v > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def paired_p_value(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Two-sided paired randomisation (sign-flip) test of mean(a - b) = 0."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.size == 0 or not np.any(diff):
        return 1.0
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(PERMUTATIONS, diff.size))
    means = np.abs((signs * diff).mean(axis=1))
    return float((np.sum(means >= observed - 1e-12) + 1) / (PERMUTATIONS + 1))


def _order(found: Candidates, score: np.ndarray, only: np.ndarray | None = None) -> list[str]:
    idx = np.arange(len(found)) if only is None else np.flatnonzero(only)
    order = idx[np.lexsort((idx, -score[idx]))]
    return [found.ids[i] for i in order]


class Tuner:
    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher

    async def tune(
        self,
        collection_name: str,
        queries: Sequence[LabeledQuery],
        *,
        rerank: bool | None = None,
        dry_run: bool = False,
        progress: Callable[[str], None] = log.info,
    ) -> TuneReport:
        if len(queries) < MIN_QUERIES:
            raise InvalidArgument(
                f"queries: {len(queries)} given, tuning needs at least {MIN_QUERIES}",
                field="queries",
            )
        for i, q in enumerate(queries):
            if not q.text.strip():
                raise InvalidArgument(f"queries[{i}].query must not be empty", field="queries")
            if not any(v > 0 for v in q.relevant.values()):
                raise InvalidArgument(
                    f"queries[{i}].relevant needs at least one document with relevance > 0",
                    field="queries",
                )
        collection = self.searcher.collections.get(collection_name)
        registry = self.searcher.registry
        if rerank and not registry.has_reranker:
            raise FailedPrecondition("rerank tuning needs a reranker; none is loaded", "rerank")
        hybrid = collection.has_lexical
        found: list[Candidates] = []
        for i, q in enumerate(queries):
            found.append(
                await self.searcher.candidates(
                    collection,
                    q.text,
                    retrieval="hybrid" if hybrid else "dense",
                    dense_k=DEPTH,
                    lexical_k=DEPTH,
                    timings=Timings(),
                )
            )
            if (i + 1) % 100 == 0 or i + 1 == len(queries):
                progress(f"tune {collection_name}: first stage {i + 1}/{len(queries)} queries")

        def measure(rank: Callable[[Candidates], list[str]]) -> tuple[np.ndarray, np.ndarray]:
            ndcg, recall = [], []
            for c, q in zip(found, queries, strict=True):
                ranked = rank(c)
                ndcg.append(ndcg_at(ranked, q.relevant))
                recall.append(recall_at(ranked, q.relevant))
            return np.asarray(ndcg), np.asarray(recall)

        first: dict[str, tuple[FirstStageFusion | None, str]] = {"dense": (None, "dense")}
        runs = {"dense": measure(lambda c: _order(c, c.dense, c.dense_ranks > 0))}
        if hybrid:
            runs["lexical"] = measure(lambda c: _order(c, c.lexical, c.lexical_ranks > 0))
            first["lexical"] = (None, "lexical")
            options = [
                DEFAULT_FIRST_STAGE,
                FirstStageFusion(method="rrf"),
                *(FirstStageFusion(method="zscore", dense_weight=w / 10) for w in range(11)),
            ]
            for fusion in options:
                name = first_stage_name("hybrid", fusion)

                def rank(c: Candidates, f: FirstStageFusion = fusion) -> list[str]:
                    stats = collection.channel_stats
                    s = f.scores(c.dense, c.lexical, c.dense_ranks, c.lexical_ranks, stats)
                    return _order(c, s)

                runs[name] = measure(rank)
                first[name] = (fusion, "hybrid")
        dense_ndcg = runs["dense"][0]
        best = max(runs, key=lambda name: (runs[name][0].mean(), name == "dense"))
        modes = [
            ModeResult(
                name,
                float(nd.mean()),
                float((nd - dense_ndcg).mean()),
                1.0 if name == "dense" else paired_p_value(nd, dense_ndcg),
                float(rc.mean()),
                len(queries),
                chosen=False,
            )
            for name, (nd, rc) in runs.items()
        ]
        fusion, retrieval = first[best]
        tuning: dict[str, Any] = {
            "retrieval": retrieval,
            "fusion": (fusion or DEFAULT_FIRST_STAGE).to_json(),
            "fitted_on": f"{len(queries)} labelled queries",
            "tuned_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "ndcg10": {m.ranking: round(m.ndcg10, 4) for m in modes},
        }
        ranking = best
        chosen_mode = next(m for m in modes if m.ranking == best)
        if rerank is None:
            rerank = registry.has_reranker
        if rerank:
            rerank_rows, rerank_tuning = await self._fit_rerank(
                found, queries, fusion, retrieval, dense_ndcg, progress, collection_name
            )
            modes += rerank_rows
            tuning["rerank"] = rerank_tuning
            if rerank_tuning["enabled"]:
                chosen_mode = next(m for m in rerank_rows if m.chosen)
                ranking = chosen_mode.ranking
        else:
            tuning["rerank"] = {"enabled": False, "why": "not tuned"}
        chosen_mode.chosen = True
        stored = False
        if not dry_run:
            collection.set_tuning(tuning)
            stored = True
        return TuneReport(modes, ranking, tuning, stored, len(queries))

    async def _fit_rerank(
        self,
        found: list[Candidates],
        queries: Sequence[LabeledQuery],
        fusion: FirstStageFusion | None,
        retrieval: str,
        dense_ndcg: np.ndarray,
        progress: Callable[[str], None],
        collection_name: str,
    ) -> tuple[list[ModeResult], dict[str, Any]]:
        collection = self.searcher.collections.get(collection_name)
        reranker = self.searcher.registry.reranker()
        n = min(len(queries), MAX_RERANK_QUERIES)
        step = len(queries) / n
        sample = sorted({int(i * step) for i in range(n)})
        depth = max(RERANK_DEPTHS)
        heads: list[Candidates] = []
        logits: list[np.ndarray] = []
        for j, i in enumerate(sample):
            c = found[i]
            if retrieval == "dense":
                score = c.dense
            elif retrieval == "lexical":
                score = c.lexical
            else:
                f = fusion or DEFAULT_FIRST_STAGE
                score = f.scores(
                    c.dense, c.lexical, c.dense_ranks, c.lexical_ranks, collection.channel_stats
                )
            if retrieval != "hybrid":
                present = c.dense_ranks > 0 if retrieval == "dense" else c.lexical_ranks > 0
                c = c.take(np.flatnonzero(present))
                score = score[present]
            head = c.order_by(score, DEPTH)
            heads.append(head)
            top = head.take(np.arange(min(depth, len(head))))
            out = await reranker.logits([(queries[i].text, t) for t in top.texts])
            logits.append(np.asarray(out)[:, 0].astype(np.float64))
            if (j + 1) % 25 == 0 or j + 1 == len(sample):
                progress(f"tune {collection_name}: rerank {j + 1}/{len(sample)} queries")
        labels = [queries[i].relevant for i in sample]
        base = np.asarray([ndcg_at(h.ids, r) for h, r in zip(heads, labels, strict=True)])
        dense_sub = dense_ndcg[sample]
        best: tuple[float, float, int] | None = None
        curves: dict[int, tuple[float, np.ndarray]] = {}
        for d in RERANK_DEPTHS:
            for w in RERANK_WEIGHTS:
                per = []
                for h, lg, r in zip(heads, logits, labels, strict=True):
                    k = min(d, len(lg))
                    final = fuse(h.score[:k], lg[:k], 1.0 - w)
                    order = np.lexsort((np.arange(k), -final))
                    ranked = [h.ids[i] for i in order] + h.ids[k:]
                    per.append(ndcg_at(ranked, r))
                arr = np.asarray(per)
                if d not in curves or arr.mean() > curves[d][1].mean():
                    curves[d] = (w, arr)
                if best is None or arr.mean() > best[0]:
                    best = (float(arr.mean()), w, d)
        assert best is not None
        _, weight, depth = best
        gain_p = paired_p_value(curves[depth][1], base)
        enabled = bool(curves[depth][1].mean() > base.mean() and gain_p < 0.05)
        first_name = first_stage_name(retrieval, fusion or DEFAULT_FIRST_STAGE)
        rows = [
            ModeResult(
                f"{first_name} (rerank sample)",
                float(base.mean()),
                float((base - dense_sub).mean()),
                paired_p_value(base, dense_sub),
                0.0,
                len(sample),
            )
        ]
        for d, (w, arr) in curves.items():
            rows.append(
                ModeResult(
                    f"{first_name}+rerank:fused(weight={w:g},depth={d})",
                    float(arr.mean()),
                    float((arr - dense_sub).mean()),
                    paired_p_value(arr, dense_sub),
                    0.0,
                    len(sample),
                    chosen=enabled and d == depth,
                )
            )
        tuning = {
            "enabled": enabled,
            "weight": weight,
            "depth": depth,
            "reranker": reranker.name,
            "p_value_vs_first_stage": round(gain_p, 4),
            "queries": len(sample),
        }
        if not enabled:
            tuning["why"] = "no significant gain over the first stage"
        return rows, tuning
