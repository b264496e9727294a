"""BEIR folders and retrieval evaluation through a running server.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id  corpus-id  score``). :func:`evaluate` sends every
judged query of a split through Search once per mode (dense, lexical, hybrid, hybrid + rerank, the
served default, ...), scores every run with ``ir-measures`` (trec_eval's definitions) and tests
each mode's per-query nDCG@10 against dense-only (paired t-test).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twostage.clients.client import TwostageClient

MEASURES = ("nDCG@10", "RR@10", "R@10", "R@100")
# Display names: MRR@10 is trec_eval's reciprocal rank cut at 10, averaged.
MEASURE_LABELS = {
    "nDCG@10": "nDCG@10",
    "RR@10": "MRR@10",
    "R@10": "Recall@10",
    "R@100": "Recall@100",
}
# mode name -> the Search options it sets; "default" sets none (what a plain request gets)
MODES: dict[str, dict[str, Any]] = {
    "dense": {"retrieval": "dense", "rerank": False},
    "lexical": {"retrieval": "lexical", "rerank": False},
    "hybrid": {"retrieval": "hybrid", "rerank": False},
    "hybrid+rerank": {"retrieval": "hybrid", "rerank": True},
    "rerank": {"retrieval": "dense", "rerank": True},
    "default": {},
}
MODE_LABELS = {m: m for m in MODES} | {"rerank": "dense+rerank"}
DEFAULT_MODES = ("dense", "lexical", "hybrid", "hybrid+rerank", "default")


class BeirFormatError(ValueError):
    """A BEIR file is missing or malformed; the message names the file and the line."""


def document_text(title: str, text: str) -> str:
    """The text that is embedded for a BEIR document: title and body, as BEIR evaluations do."""
    title, text = title.strip(), text.strip()
    return f"{title} {text}" if title and text else title or text


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise BeirFormatError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise BeirFormatError(f"{path}:{number}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise BeirFormatError(f"{path}:{number}: expected a JSON object")
            yield number, record


def corpus_path(folder: Path) -> Path:
    return Path(folder) / "corpus.jsonl"


def load_queries(folder: Path) -> dict[str, str]:
    """Query id -> text from ``queries.jsonl``."""
    path = Path(folder) / "queries.jsonl"
    out: dict[str, str] = {}
    for number, rec in _records(path):
        if "_id" not in rec or not isinstance(rec.get("text"), str):
            raise BeirFormatError(f"{path}:{number}: needs '_id' and a string 'text'")
        out[str(rec["_id"])] = rec["text"]
    return out


def load_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    """Query id -> {doc id: relevance} from ``qrels/<split>.tsv`` (header line optional)."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))
        raise BeirFormatError(f"{path}: no such file (splits here: {', '.join(splits) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip() or (number == 1 and parts[0] == "query-id"):
                continue
            if len(parts) != 3:
                raise BeirFormatError(f"{path}:{number}: expected 3 tab-separated columns")
            try:
                score = int(parts[2])
            except ValueError:
                raise BeirFormatError(
                    f"{path}:{number}: score {parts[2]!r} is not an int"
                ) from None
            qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


@dataclass(frozen=True)
class EvalSplit:
    """The judged queries of one split: id -> text, and id -> {doc id: relevance}."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    @classmethod
    def load(cls, folder: Path, split: str = "test", max_queries: int | None = None) -> EvalSplit:
        """Queries of ``split`` with at least one relevant document, in qrels order."""
        all_queries = load_queries(folder)
        qrels = {
            q: d for q, d in load_qrels(folder, split).items() if any(v > 0 for v in d.values())
        }
        missing = [q for q in qrels if q not in all_queries]
        if missing:
            raise BeirFormatError(
                f"{Path(folder) / 'queries.jsonl'}: {len(missing)} judged queries have no text "
                f"(e.g. {missing[0]!r})"
            )
        ids = list(qrels)[:max_queries] if max_queries else list(qrels)
        return cls({q: all_queries[q] for q in ids}, {q: qrels[q] for q in ids})


Run = dict[str, list[tuple[str, float]]]  # query id -> [(doc id, score)], best first


def compute_metrics(
    qrels: dict[str, dict[str, int]], run: Run, measures: Sequence[str] = MEASURES
) -> dict[str, float]:
    """Mean of each measure over every judged query (a query with no hits scores 0).

    The run is scored in the order given: each document's score for trec_eval is derived from its
    position, so ties in the server's scores cannot reorder it.
    """
    import ir_measures

    parsed = [ir_measures.parse_measure(m) for m in measures]
    trec_run = {
        q: {doc: float(len(docs) - i) for i, (doc, _) in enumerate(docs)}
        for q, docs in run.items()
        if q in qrels and docs
    }
    sums = dict.fromkeys(measures, 0.0)
    names = {str(p): m for p, m in zip(parsed, measures, strict=True)}
    for metric in ir_measures.iter_calc(parsed, qrels, trec_run):
        sums[names[str(metric.measure)]] += metric.value
    n = len(qrels)
    return {m: (sums[m] / n if n else 0.0) for m in measures}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds."""
    if not seconds:
        return {}
    ms = np.asarray(seconds) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
    }


@dataclass
class ModeResult:
    """One mode's run, metrics and latencies."""

    run: Run
    metrics: dict[str, float]
    latency_s: list[float]
    server_latency_s: list[float]
    wall_s: float
    ranking: str = ""
    # paired t-test of per-query nDCG@10 against dense-only: mean difference and p-value
    delta_vs_dense: float = 0.0
    p_vs_dense: float = 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "ranking": self.ranking,
            "delta_ndcg10_vs_dense": self.delta_vs_dense,
            "p_vs_dense": self.p_vs_dense,
            "metrics": self.metrics,
            "latency_ms": latency_summary(self.latency_s),
            "server_latency_ms": latency_summary(self.server_latency_s),
            "queries_per_s": len(self.latency_s) / self.wall_s if self.wall_s > 0 else 0.0,
        }


@dataclass
class EvalReport:
    """Both modes of one evaluation, ready for a table or JSON."""

    collection: str
    split: str
    queries: int
    top_k: int
    candidates: int
    collection_size: int
    modes: dict[str, ModeResult] = field(default_factory=dict)

    def to_dict(self, with_runs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "collection": self.collection,
            "split": self.split,
            "queries": self.queries,
            "top_k": self.top_k,
            "candidates": self.candidates,
            "collection_size": self.collection_size,
            "measures": {m: MEASURE_LABELS[m] for m in MEASURES},
            "modes": {name: r.summary() for name, r in self.modes.items()},
        }
        if with_runs:
            out["runs"] = {
                name: {q: [[d, s] for d, s in docs] for q, docs in r.run.items()}
                for name, r in self.modes.items()
            }
        return out

    def table(self) -> str:
        names = list(self.modes)
        head = f"{'':<16}" + "".join(f"{MODE_LABELS[n]:>15}" for n in names)
        lines = [
            f"eval '{self.collection}' ({self.collection_size} docs) on {self.split}: "
            f"{self.queries} queries, top {self.top_k} of {self.candidates} candidates",
            head,
        ]
        for m in MEASURES:
            vals = "".join(f"{self.modes[n].metrics[m]:>15.4f}" for n in names)
            lines.append(f"{MEASURE_LABELS[m]:<16}{vals}")
        vals = "".join(f"{self.modes[n].delta_vs_dense:>+15.4f}" for n in names)
        lines.append(f"{'nDCG@10 - dense':<16}{vals}")
        vals = "".join(f"{self.modes[n].p_vs_dense:>15.3g}" for n in names)
        lines.append(f"{'p vs dense':<16}{vals}")
        for p in ("p50", "p90", "p99"):
            vals = "".join(
                f"{latency_summary(self.modes[n].latency_s).get(p, 0.0):>15.1f}" for n in names
            )
            lines.append(f"{'latency ' + p + ' ms':<16}{vals}")
        lines.append("rankings:")
        lines += [f"  {MODE_LABELS[n]}: {self.modes[n].ranking}" for n in names]
        return "\n".join(lines)


def evaluate(
    client: TwostageClient,
    collection: str,
    split: EvalSplit,
    *,
    split_name: str = "test",
    top_k: int = 100,
    candidates: int = 100,
    modes: Sequence[str] = DEFAULT_MODES,
    concurrency: int = 1,
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Search every query of ``split`` in each mode and score the rankings.

    ``top_k`` hits are kept per query (Recall@100 needs 100); the reranker reorders the same
    ``candidates`` the dense run returns, so the recall at the candidate depth is shared.
    """
    if top_k > candidates:
        raise ValueError(f"top_k ({top_k}) must be <= candidates ({candidates})")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    size = client.describe_collection(collection).count
    if size == 0:
        raise ValueError(f"collection '{collection}' is empty: run `twostage ingest` first")
    report = EvalReport(collection, split_name, len(split.queries), top_k, candidates, size)
    items = list(split.queries.items())

    for mode in modes:

        def one(
            item: tuple[str, str], options: dict[str, Any] = MODES[mode]
        ) -> tuple[str, Any, float]:
            start = time.perf_counter()
            result = client.search_detailed(
                collection, item[1], top_k=top_k, candidates=candidates, **options
            )
            return item[0], result, time.perf_counter() - start

        run: Run = {}
        rankings: set[str] = set()
        latency, server_latency = [], []
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            for qid, result, seconds in pool.map(one, items):
                run[qid] = [(h.id, h.score) for h in result.hits]
                rankings.add(result.ranking)
                latency.append(seconds)
                server_latency.append(result.timings.total_ns / 1e9)
                if progress is not None:
                    progress(1)
        wall = time.perf_counter() - start
        metrics = compute_metrics(split.qrels, run)
        report.modes[mode] = ModeResult(
            run, metrics, latency, server_latency, wall, ranking=" | ".join(sorted(rankings))
        )
    if "dense" in report.modes:
        base = per_query_ndcg10(split.qrels, report.modes["dense"].run)
        for result in report.modes.values():
            result.delta_vs_dense, result.p_vs_dense = paired_test(
                per_query_ndcg10(split.qrels, result.run), base
            )
    return report


def per_query_ndcg10(qrels: dict[str, dict[str, int]], run: Run) -> np.ndarray:
    """nDCG@10 of every judged query, in qrels order (no hits: 0)."""
    import ir_measures

    trec_run = {
        q: {doc: float(len(docs) - i) for i, (doc, _) in enumerate(docs)}
        for q, docs in run.items()
        if q in qrels and docs
    }
    values = dict.fromkeys(qrels, 0.0)
    for metric in ir_measures.iter_calc([ir_measures.parse_measure("nDCG@10")], qrels, trec_run):
        values[metric.query_id] = float(metric.value)
    return np.asarray([values[q] for q in qrels])


def paired_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of ``a - b`` and the two-sided paired t-test p-value (1.0 when identical)."""
    diff = a - b
    if not np.any(diff):
        return 0.0, 1.0
    from scipy.stats import ttest_rel

    return float(diff.mean()), float(ttest_rel(a, b).pvalue)
