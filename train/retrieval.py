"""Dense retrieval over a BEIR corpus with a bi-encoder: exact search, for mining and evaluation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twostage.train.beir import BeirSet
from twostage.train.negatives import dense_top_k
from twostage.train.report import say


@dataclass(frozen=True)
class DenseRanking:
    """Top-k corpus indices and cosine scores for a list of queries, best first."""

    query_ids: list[str]
    indices: np.ndarray  # (n_queries, k) int
    scores: np.ndarray  # (n_queries, k) float

    def doc_ids(self, beir: BeirSet, row: int, depth: int | None = None) -> list[str]:
        return [beir.corpus_ids[i] for i in self.indices[row, :depth]]

    def run(self, beir: BeirSet, depth: int) -> dict[str, dict[str, float]]:
        """The ranking as an ir-measures run, cut at ``depth``."""
        return {
            q: {
                beir.corpus_ids[i]: float(s)
                for i, s in zip(self.indices[r, :depth], self.scores[r, :depth], strict=True)
            }
            for r, q in enumerate(self.query_ids)
        }


def _model_fingerprint(model: Any) -> str:
    """A cheap fingerprint of the model weights (for the embedding cache key)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[: min(64, flat.numel())].float().cpu().numpy().tobytes())
        digest.update(str(float(flat.float().sum())).encode())
    return digest.hexdigest()[:16]


def encode_corpus(
    model: Any, beir: BeirSet, *, batch_size: int = 32, cache_dir: Path | None = None
) -> np.ndarray:
    """Normalised embeddings of every corpus text; cached on disk when ``cache_dir`` is given."""
    cache: Path | None = None
    if cache_dir is not None:
        key = hashlib.sha256(
            "\n".join(
                [
                    _model_fingerprint(model),
                    str(model.max_seq_length),
                    beir.data_hashes([])["corpus.jsonl"],
                ]
            ).encode()
        ).hexdigest()[:20]
        cache = cache_dir / f"corpus-{key}.npy"
        if cache.is_file():
            say(f"corpus embeddings from cache {cache.name}")
            return np.load(cache)
    say(f"embedding {len(beir.corpus_texts)} corpus texts (max {model.max_seq_length} tokens)")
    emb = model.encode(
        beir.corpus_texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=True,
    ).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, emb)
        tmp.replace(cache)
    return emb


def dense_ranking(
    model: Any, beir: BeirSet, query_ids: list[str], corpus_embeddings: np.ndarray, k: int
) -> DenseRanking:
    """Exact top-k corpus documents for ``query_ids`` by cosine similarity."""
    if not query_ids:
        return DenseRanking(
            [], np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        )
    q = model.encode(
        [beir.queries[x] for x in query_ids],
        batch_size=64,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    ).astype(np.float32)
    indices, scores = dense_top_k(q, corpus_embeddings, k)
    return DenseRanking(list(query_ids), indices, scores)
