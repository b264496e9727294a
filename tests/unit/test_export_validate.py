"""Validation figures, gates and validation text sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twostage.export import fallback_texts, validate
from twostage.export.config import Thresholds
from twostage.export.errors import ExportError
from twostage.export.validate import (
    VariantReport,
    failures,
    figures,
    format_table,
    read_texts,
    spearman,
    validation_sets,
)


def test_spearman_matches_scipy_with_ties() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.integers(0, 5, size=12).astype(float)  # many ties
        b = a + rng.normal(0, 1.5, size=12)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(np.ones(4), np.ones(4)) == 1.0


def test_figures_per_kind() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    got = np.array([[1.0, 0.1], [0.0, 1.0]], dtype=np.float32)
    emb = figures("embedder", ref, got)
    assert emb["cosine_min"] == pytest.approx(1 / np.sqrt(1.01))
    assert emb["cosine_mean"] == pytest.approx((1 + 1 / np.sqrt(1.01)) / 2)
    scores = np.array([[0.1], [0.2], [0.3], [0.5], [0.4], [0.6]], dtype=np.float32)
    swapped = scores[[0, 1, 2, 4, 3, 5]]
    rr = figures("reranker", scores, swapped, [0, 0, 0, 1, 1, 1])
    assert rr["rank_agreement"] == pytest.approx((1.0 + 0.5) / 2)
    assert rr["max_abs_error"] == pytest.approx(0.1)
    cls = figures("classifier", np.eye(3), np.eye(3)[[0, 2, 2]])
    assert cls["class_agreement"] == pytest.approx(2 / 3)
    assert figures("embedder", ref, ref * np.nan) == {"non_finite": 4.0}
    with pytest.raises(ExportError, match="shape"):
        figures("embedder", ref, ref[:1])


def test_gates_and_margin() -> None:
    gates = Thresholds().for_variant("embedder", "int8")
    assert gates == {"cosine_mean": 0.99, "cosine_min": 0.97}
    ok = {"cosine_mean": 0.992, "cosine_min": 0.975}
    assert failures(ok, gates) == []
    # a margin of 0.25 holds back a quarter of the distance to a perfect score
    assert failures(ok, gates, margin=0.25) == [
        "cosine_mean 0.9920 < 0.9925",
        "cosine_min 0.9750 < 0.9775",
    ]
    assert failures({"max_abs_error": 2e-3}, {"max_abs_error": 1e-3}) == [
        "max_abs_error 0.002 > 0.001"
    ]
    assert failures({"non_finite": 3.0}, gates) == ["3 non-finite outputs"]
    assert Thresholds(min_rank_agreement=0.9).for_variant("reranker", "int8") == {
        "rank_agreement": 0.9
    }


def test_scifact_is_the_default_and_sets_are_disjoint(data_dir: Path) -> None:
    val, search = validation_sets(count=50, search_count=20)
    assert val.source.startswith("scifact corpus") and len(val) == 50 and len(search) == 20
    assert not set(val.texts) & set(search.texts)
    corpus = [json.loads(x) for x in (data_dir / "scifact" / "corpus.jsonl").open()][:1]
    assert val.texts[0] == f"{corpus[0]['title']} {corpus[0]['text']}"
    assert len(val.pairs) == 50 and set(val.groups) == set(range(5))
    assert not {q for q, _ in val.pairs} & {q for q, _ in search.pairs}


def test_without_shared_data_the_built_in_passages_are_used(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(validate, "default_scifact_dir", lambda: tmp_path / "missing")
    val, _ = validation_sets(count=200, search_count=32)
    assert val.source.startswith("built-in passages")
    assert val.texts == fallback_texts.PASSAGES[:200]
    assert {q for q, _ in val.pairs} <= set(fallback_texts.QUERIES)


def test_text_files_in_three_formats(tmp_path: Path) -> None:
    beir = tmp_path / "corpus.jsonl"
    beir.write_text('{"_id": "1", "title": "T", "text": "body"}\n\n{"text": "only"}\n')
    assert read_texts(beir) == ["T body", "only"]
    lines = tmp_path / "texts.txt"
    lines.write_text("first line\n\nsecond line\n")
    assert read_texts(lines) == ["first line", "second line"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(ExportError, match=r"bad\.jsonl line 2"):
        read_texts(bad)


def test_the_table_names_variants_figures_and_gates() -> None:
    reports = [
        VariantReport(
            "fp32",
            {"cosine_mean": 1.0, "cosine_min": 1.0},
            {"cosine_min": 0.999},
            seconds=1.5,
            size_bytes=90_000_000,
        ),
        VariantReport(
            "int8",
            {"cosine_mean": 0.98, "cosine_min": 0.95},
            {"cosine_min": 0.97},
            failures=["cosine_min 0.9500 < 0.9700"],
            size_bytes=58_000_000,
        ),
        VariantReport("fp16", note="not validated: no CUDA", size_bytes=45_000_000),
    ]
    table = format_table(reports, "test texts")
    lines = table.splitlines()
    assert lines[0].startswith("validation on test texts")
    assert "0.9500 (>=0.97)" in lines[4] and lines[4].rstrip().endswith("FAIL")
    assert "not validated: no CUDA" in lines[5]
