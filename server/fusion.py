"""Score fusion: the one implementation used by training, export, tuning and Search.

Two places combine rankings:

- **First stage**: the dense (bi-encoder) and lexical (BM25) channels over the union of their
  candidates. Every candidate carries both channels' scores (the engine fills the score a channel
  did not return: exact similarity from the stored embedding, BM25 0 when no term matches), so
  score-based fusion needs no imputation.
- **Rerank**: the cross-encoder logit with the first-stage score over the reranked candidates.

Methods:

- ``zscore``: ``sum_i w_i * z(s_i)``, z standardising each channel over the query's candidates
  (population std; a constant channel maps to zeros). Bruch et al. (2023, "An Analysis of Fusion
  Functions for Hybrid Retrieval") find such a convex combination of normalised scores better
  than RRF and cheap to fit with few labelled queries.
- ``rrf``: ``sum_i 1 / (k + rank_i)`` over the channels that returned the candidate (Cormack et
  al., 2009), rank being the channel's own 1-based rank; it needs no score scale at all.
- ``adaptive``: ``zscore`` with a per-query dense weight set from the two channels' agreement
  (see :func:`adaptive_dense_weight`): where the channels agree, both are evidence and the
  lexical weight rises to ``1 - w_min``; where they disagree, one of them is wrong and the
  ranking leans on the dense channel, which is the stronger one on most domains. This is the
  untuned default: it needs no labels and loses little where BM25 is weak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

METHODS = ("zscore", "rrf", "adaptive")
DEFAULT_RRF_K = 60.0


def zscore(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """(x - mean) / std over one query's candidates; all zeros when the scores are constant."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        return x
    std = x.std()
    if not np.isfinite(std) or std < 1e-12:
        return np.zeros_like(x)
    return (x - x.mean()) / std


def weighted_sum(
    channels: Sequence[Sequence[float] | np.ndarray], weights: Sequence[float]
) -> np.ndarray:
    """``sum_i weights[i] * z(channels[i])`` over one query's candidates."""
    if len(channels) != len(weights) or not channels:
        raise ValueError("one weight per channel is needed")
    arrays = [np.asarray(c, dtype=np.float64) for c in channels]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError("channels differ in length")
    out = np.zeros_like(arrays[0])
    for a, w in zip(arrays, weights, strict=True):
        if w:
            out += float(w) * zscore(a)
    return out


def fuse(
    dense: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray, dense_weight: float
) -> np.ndarray:
    """``w * z(dense) + (1 - w) * z(other)``; ``dense_weight`` in [0, 1]."""
    if not 0.0 <= dense_weight <= 1.0:
        raise ValueError(f"dense_weight must be in [0, 1], got {dense_weight}")
    return weighted_sum([dense, other], [dense_weight, 1.0 - dense_weight])


def rrf(ranks: Sequence[Sequence[int] | np.ndarray], k: float = DEFAULT_RRF_K) -> np.ndarray:
    """Reciprocal rank fusion: ``sum 1 / (k + rank)``; rank 0 means the channel did not return
    the candidate and adds nothing."""
    if k <= 0:
        raise ValueError(f"rrf k must be > 0, got {k}")
    arrays = [np.asarray(r, dtype=np.float64) for r in ranks]
    out = np.zeros_like(arrays[0])
    for r in arrays:
        out += np.where(r > 0, 1.0 / (k + np.maximum(r, 1.0)), 0.0)
    return out


def top_overlap(a_ranks: np.ndarray, b_ranks: np.ndarray, depth: int) -> float:
    """Share of the top ``depth`` of channel a also in the top ``depth`` of channel b
    (ranks 1-based, 0 = not returned)."""
    a = (a_ranks > 0) & (a_ranks <= depth)
    b = (b_ranks > 0) & (b_ranks <= depth)
    n = min(int(a.sum()), int(b.sum()))
    return float((a & b).sum()) / n if n else 0.0


@dataclass(frozen=True)
class Agreement:
    """Constants of the adaptive rule: ``w = w_max - (w_max - w_min) * overlap@depth``."""

    depth: int = 10
    w_min: float = 0.5
    w_max: float = 1.0


def adaptive_dense_weight(
    dense_ranks: np.ndarray, lexical_ranks: np.ndarray, rule: Agreement
) -> float:
    """The per-query dense weight of the ``adaptive`` method (see module doc)."""
    overlap = top_overlap(dense_ranks, lexical_ranks, rule.depth)
    return rule.w_max - (rule.w_max - rule.w_min) * overlap


@dataclass(frozen=True)
class FirstStageFusion:
    """How the first stage fuses its channels; travels in the collection config (``tuning``)
    and in a Search request."""

    method: str = "adaptive"
    dense_weight: float = 0.5  # zscore: weight of z(dense); lexical gets 1 - dense_weight
    rrf_k: float = DEFAULT_RRF_K
    agreement: Agreement = Agreement()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(METHODS)}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError(f"dense_weight must be in [0, 1], got {self.dense_weight}")
        if self.rrf_k <= 0:
            raise ValueError(f"rrf k must be > 0, got {self.rrf_k}")

    def name(self) -> str:
        if self.method == "rrf":
            return f"rrf(k={self.rrf_k:g})"
        if self.method == "zscore":
            return f"zscore(dense_weight={self.dense_weight:g})"
        a = self.agreement
        return f"adaptive(overlap@{a.depth},dense_weight={a.w_min:g}..{a.w_max:g})"

    def scores(
        self,
        dense: np.ndarray,
        lexical: np.ndarray,
        dense_ranks: np.ndarray,
        lexical_ranks: np.ndarray,
    ) -> np.ndarray:
        """Fused first-stage scores of one query's candidates (higher first)."""
        if self.method == "rrf":
            return rrf([dense_ranks, lexical_ranks], self.rrf_k)
        w = self.dense_weight
        if self.method == "adaptive":
            w = adaptive_dense_weight(dense_ranks, lexical_ranks, self.agreement)
        return fuse(dense, lexical, w)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FirstStageFusion:
        agreement = Agreement(**dict(data.get("agreement") or {}))
        return cls(
            method=str(data.get("method", "adaptive")),
            dense_weight=float(data.get("dense_weight", 0.5)),
            rrf_k=float(data.get("rrf_k", DEFAULT_RRF_K)),
            agreement=agreement,
        )


DEFAULT_FIRST_STAGE = FirstStageFusion()


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """1-based ranks by descending score (ties: first position first)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks
