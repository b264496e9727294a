"""The one fusion module: hand-computed examples of every method."""

from __future__ import annotations

import numpy as np
import pytest

from twostage.server.fusion import (
    ChannelStats,
    FirstStageFusion,
    GapRatio,
    channel_gap,
    fuse,
    rrf,
    weighted_sum,
    zscore,
)


def test_rrf_matches_a_hand_computed_example() -> None:
    # three candidates; dense ranks (1, 2, absent), lexical ranks (absent, 1, 2), k = 60
    dense_ranks = np.array([1, 2, 0])
    lexical_ranks = np.array([0, 1, 2])
    got = rrf([dense_ranks, lexical_ranks], k=60)
    expected = [1 / 61, 1 / 62 + 1 / 61, 1 / 62]
    assert np.allclose(got, expected)
    assert list(np.argsort(-got)) == [1, 0, 2]
    with pytest.raises(ValueError):
        rrf([dense_ranks], k=0)


def test_weighted_zscore_matches_a_hand_computed_example() -> None:
    dense = np.array([0.9, 0.5, 0.1])  # mean 0.5, population std sqrt(0.32/3)
    bm25 = np.array([0.0, 6.0, 3.0])  # mean 3, std sqrt(6)
    zd = (dense - 0.5) / np.sqrt(0.32 / 3)
    zl = (bm25 - 3.0) / np.sqrt(6.0)
    got = fuse(dense, bm25, 0.7)
    assert np.allclose(got, 0.7 * zd + 0.3 * zl)
    assert np.allclose(got, weighted_sum([dense, bm25], [0.7, 0.3]))
    # by hand: zd = (1.2247, 0, -1.2247), zl = (-1.2247, 1.2247, 0)
    assert np.allclose(
        got, [0.7 * 1.22474487 - 0.3 * 1.22474487, 0.3 * 1.22474487, -0.7 * 1.22474487]
    )
    assert np.all(zscore([2.0, 2.0]) == 0)
    assert np.allclose(fuse(dense, bm25, 1.0), zd)


def test_channel_gap_by_hand() -> None:
    # (4 - 2) / std([4, 2, 1, 1]) = 2 / sqrt(1.5)
    assert channel_gap([4.0, 2.0, 1.0, 1.0]) == pytest.approx(2 / np.sqrt(1.5))
    assert channel_gap([3.0]) == 0.0 and channel_gap([2.0, 2.0]) == 0.0
    assert channel_gap(np.r_[10.0, np.zeros(150)]) == channel_gap(np.r_[10.0, np.zeros(99)])


def _stats(ratio: float, n: int, noise: float = 0.3, seed: int = 0) -> ChannelStats:
    rng = np.random.default_rng(seed)
    stats = ChannelStats()
    for d in rng.normal(5.0, noise, n):
        stats.add(ratio * d + rng.normal(0, noise), d)
    return stats


def test_gap_ratio_weight_moves_off_dense_only_on_clear_evidence() -> None:
    rule = GapRatio()
    assert rule.weight(None) == 1.0
    assert rule.weight(_stats(1.25, rule.min_queries - 1)) == 1.0  # too few queries yet
    assert rule.weight(_stats(1.25, 300)) == 0.5  # lexical gaps clearly larger: half weight
    assert rule.weight(_stats(1.10, 300)) == 1.0  # the paraphrase-like sets: dense alone
    # noisy evidence is discounted: same mean ratio, wide spread -> the lower bound stays low
    noisy, tight = _stats(1.25, 40, noise=3.0), _stats(1.25, 40, noise=0.3)
    margin = noisy.ratio() - noisy.ratio_lower_bound(1.645)
    assert margin > 5 * (tight.ratio() - tight.ratio_lower_bound(1.645))
    mid = rule.weight(_stats(1.17, 5000, noise=0.1))
    assert 0.5 < mid < 1.0
    stats = _stats(1.2, 50)
    assert ChannelStats.from_json(stats.to_json()) == stats
    # the lower bound sits below the ratio and approaches it with more queries
    assert stats.ratio_lower_bound(1.645) < stats.ratio()
    big = _stats(1.2, 2000)
    assert big.ratio() - big.ratio_lower_bound(1.645) < stats.ratio() - stats.ratio_lower_bound(
        1.645
    )


def test_adaptive_fusion_applies_the_collection_weight() -> None:
    dense = np.array([0.9, 0.5, 0.1])
    bm25 = np.array([0.0, 6.0, 3.0])
    ranks = np.array([1, 2, 3])
    adaptive = FirstStageFusion(method="adaptive")
    assert np.allclose(adaptive.scores(dense, bm25, ranks, ranks, None), zscore(dense))
    clear = _stats(1.3, 300)
    assert np.allclose(adaptive.scores(dense, bm25, ranks, ranks, clear), fuse(dense, bm25, 0.5))


def test_first_stage_fusion_roundtrip_and_validation() -> None:
    f = FirstStageFusion(method="zscore", dense_weight=0.3)
    assert FirstStageFusion.from_json(f.to_json()) == f
    assert f.name() == "zscore(dense_weight=0.3)"
    assert FirstStageFusion(method="rrf").name() == "rrf(k=60)"
    with pytest.raises(ValueError):
        FirstStageFusion(method="max")
    with pytest.raises(ValueError):
        FirstStageFusion(method="zscore", dense_weight=1.5)
