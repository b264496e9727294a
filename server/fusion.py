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
- ``adaptive``: ``zscore`` with a per-collection dense weight estimated without labels from the
  queries the collection serves (:class:`GapRatio`): how far each channel's best score stands out
  of its own top list (:func:`channel_gap`), averaged over queries. Where BM25's best matches
  stand out more than dense's (a technical vocabulary, as in SciFact), the lexical channel gets
  up to half the weight; where they do not (paraphrase-like text, entity names, web questions),
  the weight stays on dense. Per-query signals (channel overlap, score gaps, spread) were
  measured and predict a query's fusion gain too weakly (correlation <= 0.18) to use, as the
  query-performance-prediction literature reports for neural retrievers; averaged over a
  collection's queries, the gap ratio separates the cases. This is the untuned default.
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


GAP_DEPTH = 100


def channel_gap(scores: Sequence[float] | np.ndarray) -> float:
    """How far a channel's best score stands out of its own top list: ``(s1 - mean) / std`` over
    its first :data:`GAP_DEPTH` results, best first (0 for fewer than two or constant scores)."""
    s = np.asarray(scores, dtype=np.float64)[:GAP_DEPTH]
    if s.size < 2:
        return 0.0
    std = s.std()
    return float((s.max() - s.mean()) / std) if std > 1e-12 else 0.0


@dataclass
class ChannelStats:
    """Running per-collection sums of both channels' :func:`channel_gap` over served queries."""

    n: int = 0
    lexical: float = 0.0
    dense: float = 0.0
    lexical_sq: float = 0.0
    dense_sq: float = 0.0
    cross: float = 0.0

    def add(self, lexical_gap: float, dense_gap: float) -> None:
        self.n += 1
        self.lexical += lexical_gap
        self.dense += dense_gap
        self.lexical_sq += lexical_gap * lexical_gap
        self.dense_sq += dense_gap * dense_gap
        self.cross += lexical_gap * dense_gap

    def ratio(self) -> float:
        """Mean lexical gap over mean dense gap (0 before any query)."""
        return self.lexical / self.dense if self.n and self.dense > 0 else 0.0

    def ratio_lower_bound(self, z: float) -> float:
        """One-sided lower confidence bound of :meth:`ratio` (delta method for a ratio of
        paired means)."""
        n = self.n
        if n < 2 or self.dense <= 0:
            return 0.0
        mb, md = self.lexical / n, self.dense / n
        r = mb / md
        var_b = (self.lexical_sq - n * mb * mb) / (n - 1)
        var_d = (self.dense_sq - n * md * md) / (n - 1)
        cov = (self.cross - n * mb * md) / (n - 1)
        var = max(var_b - 2 * r * cov + r * r * var_d, 0.0) / (n * md * md)
        return r - z * float(np.sqrt(var))

    def to_json(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChannelStats:
        kinds = {k: type(v) for k, v in asdict(cls()).items()}
        return cls(**{k: kinds[k](v) for k, v in data.items() if k in kinds})


@dataclass(frozen=True)
class GapRatio:
    """The ``adaptive`` method's per-collection dense weight (see module doc).

    ``R`` = mean lexical gap / mean dense gap over the collection's served queries, taken at its
    one-sided 95% lower bound so the weight leaves dense only once the evidence is clear; the
    weight falls linearly from ``w_max`` at ``R <= r0`` to ``w_min`` at ``R >= r1``. Before
    ``min_queries`` queries it is ``w_max`` (dense alone). Constants from SciFact train, SciFact
    with either channel degraded on purpose, and retrieval sets built from STS-B, SNLI and SICK
    (where dense beats BM25 and every fixed fusion loses): R was 1.23 on SciFact and 1.10-1.11 on
    those sets.
    """

    r0: float = 1.13
    r1: float = 1.19
    w_min: float = 0.5
    w_max: float = 1.0
    min_queries: int = 30
    z: float = 1.645

    def weight(self, stats: ChannelStats | None) -> float:
        if stats is None or stats.n < self.min_queries:
            return self.w_max
        r = stats.ratio_lower_bound(self.z)
        t = min(max((r - self.r0) / (self.r1 - self.r0), 0.0), 1.0)
        return self.w_max - (self.w_max - self.w_min) * t


@dataclass(frozen=True)
class FirstStageFusion:
    """How the first stage fuses its channels; travels in the collection config (``tuning``)
    and in a Search request."""

    method: str = "adaptive"
    dense_weight: float = 0.5  # zscore: weight of z(dense); lexical gets 1 - dense_weight
    rrf_k: float = DEFAULT_RRF_K
    gap_ratio: GapRatio = GapRatio()

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
        g = self.gap_ratio
        return f"adaptive(gap_ratio,dense_weight={g.w_min:g}..{g.w_max:g})"

    def scores(
        self,
        dense: np.ndarray,
        lexical: np.ndarray,
        dense_ranks: np.ndarray,
        lexical_ranks: np.ndarray,
        stats: ChannelStats | None = None,
    ) -> np.ndarray:
        """Fused first-stage scores of one query's candidates (higher first); ``stats`` are
        the collection's channel statistics (the ``adaptive`` method's evidence)."""
        if self.method == "rrf":
            return rrf([dense_ranks, lexical_ranks], self.rrf_k)
        return fuse(dense, lexical, self.weight(stats))

    def weight(self, stats: ChannelStats | None) -> float:
        """The dense weight this fusion applies (``zscore``/``adaptive``)."""
        return self.gap_ratio.weight(stats) if self.method == "adaptive" else self.dense_weight

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FirstStageFusion:
        gap_ratio = GapRatio(**dict(data.get("gap_ratio") or {}))
        return cls(
            method=str(data.get("method", "adaptive")),
            dense_weight=float(data.get("dense_weight", 0.5)),
            rrf_k=float(data.get("rrf_k", DEFAULT_RRF_K)),
            gap_ratio=gap_ratio,
        )


DEFAULT_FIRST_STAGE = FirstStageFusion()


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """1-based ranks by descending score (ties: first position first)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks
