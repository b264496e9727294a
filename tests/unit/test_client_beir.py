"""BEIR loading and the metric plumbing of `twostage eval`, on a worked example and real files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from twostage.clients.beir import (
    BeirFormatError,
    EvalSplit,
    compute_metrics,
    document_text,
    load_qrels,
)

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"


def test_metrics_on_a_worked_example() -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}, "q3": {"d": 1}}
    run = {"q1": [("x", 0.9), ("a", 0.8), ("y", 0.7), ("b", 0.6)], "q2": [("c", 0.5)]}
    got = compute_metrics(qrels, run)
    # q1: relevant at ranks 2 and 4 -> DCG = 1/log2(3) + 1/log2(5), ideal = 1 + 1/log2(3)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    # q3 has no hits: it counts as 0, the mean is over all three judged queries
    assert got["nDCG@10"] == pytest.approx((ndcg_q1 + 1.0 + 0.0) / 3)
    assert got["RR@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert got["R@10"] == pytest.approx(2 / 3)
    assert got["R@100"] == pytest.approx(2 / 3)


def test_metrics_keep_the_servers_order_on_tied_scores() -> None:
    # trec_eval alone would break the tie by doc id (descending) and put 'z' first.
    qrels = {"q": {"z": 1}}
    run = {"q": [("a", 0.5), ("z", 0.5)]}
    assert compute_metrics(qrels, run, ["RR@10"])["RR@10"] == pytest.approx(0.5)


def test_cutoffs_apply() -> None:
    qrels = {"q": {"rel": 1}}
    run = {"q": [(f"d{i}", 1.0 - i / 100) for i in range(10)] + [("rel", 0.0)]}
    got = compute_metrics(qrels, run)
    assert got["nDCG@10"] == 0.0 and got["RR@10"] == 0.0 and got["R@10"] == 0.0
    assert got["R@100"] == 1.0


def test_scifact_test_split_loads() -> None:
    split = EvalSplit.load(SCIFACT, "test")
    assert len(split.queries) == len(split.qrels) == 300
    assert all(any(v > 0 for v in docs.values()) for docs in split.qrels.values())
    first = EvalSplit.load(SCIFACT, "test", max_queries=5)
    assert list(first.queries) == list(split.queries)[:5]


def test_bad_files_name_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(BeirFormatError, match=r"test\.tsv:2: expected 3 tab-separated columns"):
        load_qrels(tmp_path, "test")
    with pytest.raises(BeirFormatError, match=r"dev\.tsv: no such file \(splits here: test\)"):
        load_qrels(tmp_path, "dev")
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "hi"}\n{oops\n')
    with pytest.raises(BeirFormatError, match=r"queries\.jsonl:2: not JSON"):
        EvalSplit.load(tmp_path)


def test_document_text_joins_title_and_body() -> None:
    assert document_text("Title", "Body.") == "Title Body."
    assert document_text("", "Body.") == "Body."
    assert document_text("Title", " ") == "Title"


def test_report_table_and_json_side_by_side() -> None:
    from twostage.clients.beir import EvalReport, ModeResult

    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    runs = {
        "dense": {"q1": [("x", 2.0), ("a", 1.0)], "q2": [("b", 1.0)]},
        "rerank": {"q1": [("a", 0.9), ("x", 0.1)], "q2": [("b", 0.8)]},
    }
    report = EvalReport("c", "test", 2, 2, 2, 10)
    for mode, run in runs.items():
        report.modes[mode] = ModeResult(
            run, compute_metrics(qrels, run), [0.01, 0.03], [0.005, 0.02], 0.04
        )
    lines = report.table().splitlines()
    assert lines[1].split() == ["dense", "dense+rerank"]
    assert lines[2].split() == ["nDCG@10", f"{(1 / math.log2(3) + 1) / 2:.4f}", "1.0000"]
    assert lines[3].split() == ["MRR@10", "0.7500", "1.0000"]
    data = report.to_dict()
    assert data["modes"]["rerank"]["metrics"]["RR@10"] == 1.0
    assert data["modes"]["dense"]["queries_per_s"] == pytest.approx(50.0)
    assert data["runs"]["rerank"]["q1"] == [["a", 0.9], ["x", 0.1]]
    assert "runs" not in report.to_dict(with_runs=False)
