"""Evaluation figures of a training run: retrieval (ir-measures), Spearman, accuracy/macro-F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def retrieval_figures(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean nDCG@10 and Recall@100 over the queries of ``run`` (ir-measures)."""
    import ir_measures
    from ir_measures import R, nDCG

    judged = {q: dict(qrels[q]) for q in run}
    agg = ir_measures.calc_aggregate(
        [nDCG @ 10, R @ 100], judged, {q: dict(d) for q, d in run.items()}
    )
    return {"ndcg10": round(float(agg[nDCG @ 10]), 4), "recall100": round(float(agg[R @ 100]), 4)}


def per_query_ndcg10(qrels: Qrels, run: Run) -> dict[str, float]:
    """nDCG@10 of every query of ``run`` (queries without judged relevant docs score 0)."""
    import ir_measures
    from ir_measures import nDCG

    judged = {q: dict(qrels[q]) for q in run}
    values = {q: 0.0 for q in run}
    for metric in ir_measures.iter_calc([nDCG @ 10], judged, {q: dict(d) for q, d in run.items()}):
        values[metric.query_id] = float(metric.value)
    return values


def spearman(predicted: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman rank correlation (scipy), the STS figure."""
    from scipy.stats import spearmanr

    return round(float(spearmanr(predicted, gold).statistic), 4)


def accuracy_macro_f1(
    predicted: Sequence[int], gold: Sequence[int], n_classes: int
) -> dict[str, float]:
    """Accuracy and macro-F1 (unweighted mean of per-class F1; an absent class scores 0)."""
    p = np.asarray(predicted, dtype=np.int64)
    g = np.asarray(gold, dtype=np.int64)
    if p.shape != g.shape or p.size == 0:
        raise ValueError("predicted and gold must be non-empty and of the same length")
    f1s = []
    for c in range(n_classes):
        tp = float(np.sum((p == c) & (g == c)))
        fp = float(np.sum((p == c) & (g != c)))
        fn = float(np.sum((p != c) & (g == c)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": round(float(np.mean(p == g)), 4), "macro_f1": round(float(np.mean(f1s)), 4)}


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of binary labels (rank statistic, ties counted half)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return round(float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), 4)
