"""`twostage eval` on a real SciFact subset equals the metrics computed offline from its rankings.

The subset (200 documents holding every relevant document of the first 20 test queries, as a
BEIR folder, abstracts cut at 800 characters to keep the test quick on CPU) is ingested with
`twostage ingest`, so the BEIR-folder path is covered too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from twostage.cli import main
from twostage.clients.beir import EvalSplit, load_queries
from twostage.clients.client import TwostageClient

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"
N_QUERIES = 20
N_DOCS = 200
DEPTH = 10  # candidates reranked per query, all returned
TEXT_CHARS = 800


@pytest.fixture(scope="module")
def beir_subset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scifact-subset")
    split = EvalSplit.load(SCIFACT, "test", max_queries=N_QUERIES)
    wanted = {d for docs in split.qrels.values() for d in docs}
    chosen, fill = [], []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            rec = json.loads(line)
            rec["text"] = rec["text"][:TEXT_CHARS]
            (chosen if rec["_id"] in wanted else fill).append(json.dumps(rec) + "\n")
    assert len(chosen) == len(wanted)
    chosen += fill[: N_DOCS - len(chosen)]
    (folder / "corpus.jsonl").write_text("".join(chosen))
    queries = load_queries(SCIFACT)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in split.queries)
    )
    (folder / "qrels").mkdir()
    rows = [f"{q}\t{d}\t{s}\n" for q, docs in split.qrels.items() for d, s in docs.items()]
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return folder


def offline_metrics(qrels: dict[str, dict[str, int]], run: dict[str, list]) -> dict[str, float]:
    """nDCG@10, RR@10, R@10, R@100 by their textbook formulas, binary relevance, mean over all
    judged queries: an implementation independent of the one `eval` uses."""
    sums = {"nDCG@10": 0.0, "RR@10": 0.0, "R@10": 0.0, "R@100": 0.0}
    for q, judged in qrels.items():
        relevant = {d for d, s in judged.items() if s > 0}
        ranking = [d for d, _ in run.get(q, [])]
        gains = [1.0 if d in relevant else 0.0 for d in ranking]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
        sums["nDCG@10"] += dcg / ideal
        first = next((i for i, g in enumerate(gains[:10]) if g), None)
        sums["RR@10"] += 0.0 if first is None else 1.0 / (first + 1)
        sums["R@10"] += sum(gains[:10]) / len(relevant)
        sums["R@100"] += sum(gains[:100]) / len(relevant)
    return {m: v / len(qrels) for m, v in sums.items()}


def test_eval_matches_offline_metrics(live_server, beir_subset: Path, tmp_path: Path, capsys):
    addr = ("--address", live_server.address)
    assert main(["ingest", "eval-scifact", str(beir_subset), "--no-progress", "--json", *addr]) == 0
    ingest = json.loads(capsys.readouterr().out)
    assert ingest["upserted"] == ingest["collection_count"] == N_DOCS

    out = tmp_path / "eval.json"
    code = main(
        [
            "eval",
            "eval-scifact",
            str(beir_subset),
            "--top-k",
            str(DEPTH),
            "--candidates",
            str(DEPTH),
            "--modes",
            "rerank,lexical,hybrid,default",
            "--json-out",
            str(out),
            "--json",
            "--no-progress",
            *addr,
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(out.read_text())
    assert printed["modes"] == report["modes"] and "runs" not in printed
    assert report["queries"] == N_QUERIES and report["collection_size"] == N_DOCS

    split = EvalSplit.load(beir_subset, "test")
    assert list(report["modes"]) == ["dense", "rerank", "lexical", "hybrid", "default"]
    for mode in report["modes"]:
        run = report["runs"][mode]
        assert set(run) == set(split.qrels)
        assert all(len(hits) == DEPTH for hits in run.values())
        reported = report["modes"][mode]["metrics"]
        for measure, value in offline_metrics(split.qrels, run).items():
            assert reported[measure] == pytest.approx(value, abs=1e-9), (mode, measure)
        latency = report["modes"][mode]["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]

    # The reranker reorders the same candidates: recall at the candidate depth is shared.
    dense, rerank = report["modes"]["dense"]["metrics"], report["modes"]["rerank"]["metrics"]
    assert dense["R@100"] == pytest.approx(rerank["R@100"])
    for q in split.qrels:
        assert {d for d, _ in report["runs"]["dense"][q]} == {
            d for d, _ in report["runs"]["rerank"][q]
        }
    # all-MiniLM-L6-v2 reaches 0.645 on the full 5k corpus; a 200-doc subset is easier.
    assert dense["nDCG@10"] > 0.6, dense

    # The saved runs are the server's rankings.
    with TwostageClient(live_server.address) as client:
        for q in list(split.queries)[:3]:
            hits = client.search(
                "eval-scifact", split.queries[q], DEPTH, DEPTH, rerank=False, retrieval="dense"
            )
            assert [h.id for h in hits] == [d for d, _ in report["runs"]["dense"][q]]
    # every mode carries its paired test against dense; dense's own is the identity
    assert report["modes"]["dense"]["p_vs_dense"] == 1.0
    assert report["modes"]["dense"]["delta_ndcg10_vs_dense"] == 0.0
    assert report["modes"]["hybrid"]["ranking"].startswith("hybrid:")
    hybrid = report["modes"]["hybrid"]["ranking"]
    assert report["modes"]["default"]["ranking"] == hybrid + "+rerank:off(untuned collection)"
    assert report["runs"]["default"] == report["runs"]["hybrid"]
