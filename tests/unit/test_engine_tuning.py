"""The tuner's own measures agree with ir-measures (trec_eval) and its test is a real test."""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import R, nDCG

from twostage.server.engine.tuning import ndcg_at, paired_p_value, recall_at


def test_ndcg_and_recall_match_ir_measures() -> None:
    rng = np.random.default_rng(3)
    docs = [f"d{i}" for i in range(200)]
    qrels, run, ours_ndcg, ours_recall = {}, {}, {}, {}
    for q in range(40):
        relevant = {d: int(rng.integers(1, 3)) for d in rng.choice(docs, 5, replace=False)}
        ranked = list(rng.permutation(docs)[:100])
        qrels[f"q{q}"] = relevant
        run[f"q{q}"] = {d: float(100 - i) for i, d in enumerate(ranked)}
        ours_ndcg[f"q{q}"] = ndcg_at(ranked, relevant)
        ours_recall[f"q{q}"] = recall_at(ranked, relevant)
    for m in ir_measures.iter_calc([nDCG @ 10, R @ 100], qrels, run):
        ours = ours_ndcg if str(m.measure) == "nDCG@10" else ours_recall
        assert ours[m.query_id] == pytest.approx(m.value, abs=1e-9), (m.query_id, m.measure)


def test_paired_randomisation_test() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 300)
    assert paired_p_value(base, base) == 1.0
    better = np.clip(base + 0.05 + rng.normal(0, 0.05, 300), 0, 1)
    assert paired_p_value(better, base) < 0.001
    noise = base + rng.normal(0, 0.05, 300)
    assert paired_p_value(noise, base) > 0.05
