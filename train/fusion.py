"""Fusion of the dense (bi-encoder) score and the cross-encoder logit over one query's candidates.

``final = w * z(dense) + (1 - w) * z(rerank)``, z standardising over the query's candidate set
(population std; a constant score set maps to zeros). :func:`fuse` is the server's own
(:mod:`twostage.server.fusion`, the one implementation);
the weight ``w`` comes from ``fusion.json`` written by ``twostage train reranker``, fitted on
held-back training queries by :func:`fit_dense_weight`, never on test data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from twostage.server.fusion import fuse, zscore

__all__ = ["FusionFit", "fit_dense_weight", "fuse", "zscore"]

FUSION_METHOD = "zscore"
WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0


@dataclass(frozen=True)
class FusionFit:
    """The chosen weight and the held-back figures behind it."""

    dense_weight: float
    best_weight: float
    n_queries: int
    dense_ndcg10: float
    rerank_ndcg10: float
    fused_ndcg10: float  # at the chosen weight
    curve: dict[float, float]  # weight -> mean held-back nDCG@10

    def as_json(self, candidates: int) -> dict[str, object]:
        """The ``fusion.json`` document the exporter copies into the bundle manifest."""
        return {
            "method": FUSION_METHOD,
            "dense_weight": self.dense_weight,
            "fitted_on": f"{self.n_queries} held-back train queries",
            "candidates": candidates,
            "formula": "w * z(first stage) + (1 - w) * z(rerank_logit), z over the candidates",
            "heldout": {
                "dense_ndcg10": round(self.dense_ndcg10, 4),
                "rerank_ndcg10": round(self.rerank_ndcg10, 4),
                "fused_ndcg10": round(self.fused_ndcg10, 4),
                "best_weight": self.best_weight,
                "curve": {f"{w:.2f}": round(v, 4) for w, v in self.curve.items()},
            },
        }


def fit_dense_weight(
    per_query_ndcg: Callable[[float], np.ndarray], grid: Sequence[float] = WEIGHT_GRID
) -> FusionFit:
    """Pick a conservative dense weight from held-back per-query nDCG@10 at each grid weight.

    ``per_query_ndcg(w)`` returns the nDCG@10 of every held-back query ranked by ``fuse(.., w)``
    (w = 1 is dense only, w = 0 the cross-encoder only). Rule: take the best weight, then move
    toward dense (the largest weight) while the mean stays within one standard error of the
    best (the per-query difference's SE); if that weight does not beat dense on held-back data,
    return 1.0 (dense only). Ranking out of domain can only lose less that way.
    """
    grid = sorted(set(grid) | {1.0, 0.0})
    per_w = {w: np.asarray(per_query_ndcg(w), dtype=np.float64) for w in grid}
    means = {w: float(v.mean()) for w, v in per_w.items()}
    dense = per_w[1.0]
    best = max(grid, key=lambda w: (means[w], w))
    chosen = best
    for w in sorted(grid, reverse=True):  # from dense toward the cross-encoder
        if w <= best:
            break
        diff = per_w[best] - per_w[w]
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        if means[w] >= means[best] - se and means[w] > means[1.0]:
            chosen = w
            break
    if means[chosen] <= means[1.0]:
        chosen = 1.0
    return FusionFit(
        dense_weight=float(chosen),
        best_weight=float(best),
        n_queries=int(dense.size),
        dense_ndcg10=means[1.0],
        rerank_ndcg10=means[0.0],
        fused_ndcg10=means[chosen],
        curve=means,
    )
