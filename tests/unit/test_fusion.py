"""The one fusion module: hand-computed examples of every method."""

from __future__ import annotations

import numpy as np
import pytest

from twostage.server.fusion import (
    Agreement,
    FirstStageFusion,
    adaptive_dense_weight,
    fuse,
    rrf,
    top_overlap,
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


def test_adaptive_weight_follows_the_channels_agreement() -> None:
    rule = Agreement(depth=2, w_min=0.5, w_max=1.0)
    same = np.array([1, 2, 3, 0])
    assert top_overlap(same, same, 2) == 1.0
    assert adaptive_dense_weight(same, same, rule) == 0.5
    disjoint = np.array([0, 0, 1, 2])
    assert adaptive_dense_weight(same, disjoint, rule) == 1.0
    half = np.array([1, 0, 0, 2])
    assert adaptive_dense_weight(same, half, rule) == 0.75


def test_first_stage_fusion_roundtrip_and_validation() -> None:
    f = FirstStageFusion(method="zscore", dense_weight=0.3)
    assert FirstStageFusion.from_json(f.to_json()) == f
    assert f.name() == "zscore(dense_weight=0.3)"
    assert FirstStageFusion(method="rrf").name() == "rrf(k=60)"
    with pytest.raises(ValueError):
        FirstStageFusion(method="max")
    with pytest.raises(ValueError):
        FirstStageFusion(method="zscore", dense_weight=1.5)
