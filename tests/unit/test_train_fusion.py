"""Pure parts of `twostage train`: fusion math and its fit, hard-negative selection, metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest

from twostage.train.evaluation import (
    accuracy_macro_f1,
    per_query_ndcg10,
    retrieval_figures,
    roc_auc,
)
from twostage.train.fusion import fit_dense_weight, fuse, zscore
from twostage.train.negatives import dense_top_k, select_hard_negatives


def test_zscore_and_constant_scores() -> None:
    z = zscore([1.0, 2.0, 3.0])
    np.testing.assert_allclose(z, [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(zscore([5.0, 5.0, 5.0]), [0.0, 0.0, 0.0])
    assert zscore([]).size == 0


def test_fuse_weights_the_two_zscores() -> None:
    dense = [0.9, 0.8, 0.7, 0.1]
    logits = [-3.0, 4.0, 0.0, 1.0]
    np.testing.assert_allclose(fuse(dense, logits, 1.0), zscore(dense))
    np.testing.assert_allclose(fuse(dense, logits, 0.0), zscore(logits))
    np.testing.assert_allclose(
        fuse(dense, logits, 0.65), 0.65 * zscore(dense) + 0.35 * zscore(logits)
    )
    # invariant to a shift and a positive scale of either score (only z matters)
    np.testing.assert_allclose(
        fuse(dense, logits, 0.4), fuse(np.asarray(dense) * 7 + 1, np.asarray(logits) / 3 - 2, 0.4)
    )
    with pytest.raises(ValueError, match="dense_weight"):
        fuse(dense, logits, 1.5)


def test_fit_picks_dense_when_fusion_does_not_help() -> None:
    dense = np.array([0.6, 0.7, 0.5, 0.8])
    fit = fit_dense_weight(lambda w: dense * w)  # fusion only loses
    assert fit.dense_weight == 1.0
    assert fit.fused_ndcg10 == pytest.approx(fit.dense_ndcg10)


def test_fit_moves_toward_dense_within_one_standard_error() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.8, size=200)
    noise = rng.normal(0, 0.05, size=200)

    def per_query(w: float) -> np.ndarray:
        # peak at w = 0.5, +0.05 over dense; flat within noise near the peak
        return base + 0.05 * (1 - ((w - 0.5) / 0.5) ** 2) + noise * (w != 1.0)

    fit = fit_dense_weight(per_query)
    assert fit.best_weight == 0.5
    assert 0.5 <= fit.dense_weight < 1.0
    assert fit.fused_ndcg10 > fit.dense_ndcg10
    assert fit.n_queries == 200
    assert fit.as_json(30)["fitted_on"] == "200 held-back train queries"


def test_hard_negatives_never_positive_skip_top_and_seeded() -> None:
    dense = [f"d{i}" for i in range(100)]
    lexical = [f"d{i}" for i in range(50, 150)]
    positives = {"d0", "d5", "d7", "d60", "d120"}
    pools = []
    for _ in range(2):
        rng = random.Random(3)
        pools.append(
            [
                select_hard_negatives(
                    [dense, lexical], positives, skip_top=3, depth=100, count=20, rng=rng
                )
                for _ in range(50)
            ]
        )
    assert pools[0] == pools[1]
    top = set(dense[:3]) | set(lexical[:3])
    for negs in pools[0]:
        assert len(negs) == len(set(negs)) == 20
        assert not set(negs) & positives
        assert not set(negs) & top
    used = {d for negs in pools[0] for d in negs}
    assert "d100" in used or any(int(d[1:]) >= 100 for d in used)  # the lexical ranking contributes
    few = select_hard_negatives(
        [dense[:6]], {"d4"}, skip_top=3, depth=100, count=5, rng=random.Random(0)
    )
    assert few == ["d3", "d5"]


def test_dense_top_k_is_exact_and_ordered() -> None:
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    idx, scores = dense_top_k(queries, corpus, 5)
    full = queries @ corpus.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_retrieval_figures_with_ir_measures() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q1": {"a": 0.9, "x": 0.5}, "q2": {"x": 0.9, "b": 0.8, "y": 0.1}}
    per = per_query_ndcg10(qrels, run)
    assert per["q1"] == pytest.approx(1.0)
    # q2: b at rank 2 -> 1/log2(3); ideal has b, c at ranks 1, 2
    assert per["q2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    figs = retrieval_figures(qrels, run)
    assert figs["ndcg10"] == pytest.approx(round((per["q1"] + per["q2"]) / 2, 4))
    assert figs["recall100"] == pytest.approx(0.75)


def test_accuracy_macro_f1_and_auc() -> None:
    figs = accuracy_macro_f1([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0], 3)
    assert figs["accuracy"] == pytest.approx(4 / 6, abs=1e-4)
    # per-class F1: c0 = 2/3, c1 = 2/3, c2 = 2/3
    assert figs["macro_f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
