"""Hard negatives for retrieval training: candidates a first stage ranks high that are not positive.

The very top ranks are skipped (they are often relevant but unjudged), positives are never
returned, and the sample is seeded. Rankings come from the bi-encoder and, when ``bm25s`` is
installed, from BM25, so the cross-encoder also sees lexical near misses.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)


def select_hard_negatives(
    rankings: Sequence[Sequence[str]],
    positives: set[str],
    *,
    skip_top: int,
    depth: int,
    count: int,
    rng: random.Random,
) -> list[str]:
    """Sample ``count`` doc ids from ranks [skip_top, depth) of the rankings, never a positive
    and never a doc that any ranking puts in its top ``skip_top``.

    The pool is the union of those slices in ranking order (deterministic), so the same ``rng``
    state gives the same negatives. Returns fewer than ``count`` when the pool is smaller.
    """
    if not 0 <= skip_top < depth:
        raise ValueError(f"need 0 <= skip_top < depth, got skip_top={skip_top} depth={depth}")
    # a doc in the top ranks of any ranking is skipped, even where another ranks it lower
    excluded = set(positives).union(*(ranking[:skip_top] for ranking in rankings))
    pool: list[str] = []
    for ranking in rankings:
        for doc_id in ranking[skip_top:depth]:
            if doc_id not in excluded:
                excluded.add(doc_id)
                pool.append(doc_id)
    if len(pool) <= count:
        return pool
    return rng.sample(pool, count)


def dense_top_k(
    query_embeddings: np.ndarray, corpus_embeddings: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine on unit vectors): (indices, scores), best first."""
    k = min(k, corpus_embeddings.shape[0])
    scores = query_embeddings @ corpus_embeddings.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    # stable tie-break on the doc index, so two runs rank identically
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    return top, np.take_along_axis(scores, top, axis=1)


def bm25_top_k(corpus_texts: list[str], query_texts: list[str], k: int) -> list[list[int]] | None:
    """BM25 top-k corpus indices per query with ``bm25s``, or None when it is not installed."""
    try:
        import bm25s
    except ModuleNotFoundError:
        log.warning("bm25s is not installed: hard negatives come from the bi-encoder only")
        return None
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs index building at DEBUG
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(corpus_texts, stopwords="en", show_progress=False), show_progress=False
    )
    k = min(k, len(corpus_texts))
    results, _scores = retriever.retrieve(
        bm25s.tokenize(query_texts, stopwords="en", show_progress=False), k=k, show_progress=False
    )
    return [list(map(int, row)) for row in results]
