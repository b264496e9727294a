"""``twostage train reranker``: the retrieval cross-encoder and the fusion weight it is served with.

Positives come from ``qrels/train``; hard negatives are mined from the corpus by the bi-encoder
(and BM25 when ``bm25s`` is installed), skipping the very top ranks, never a positive, seeded.
A cross-encoder with one output is trained with BCE on the logit. Then, on training queries held
back from training, the served first stage (dense + the server's own BM25 channel, fused by the
untuned default, :func:`hybrid_ranking`) is compared with the cross-encoder alone and with their
fusion over its top ``candidates``, and a conservative first-stage weight is fitted
(``fusion.json``; weight 1: the cross-encoder adds nothing there).
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twostage.train.beir import BeirSet, heldout_queries, load_beir
from twostage.train.evaluation import per_query_ndcg10, retrieval_figures
from twostage.train.fusion import FusionFit, fit_dense_weight, fuse
from twostage.train.losses import cross_encoder_loss
from twostage.train.models import check_base, load_cross_encoder, resolve_base, save_checkpoint
from twostage.train.negatives import bm25_top_k, select_hard_negatives
from twostage.train.recipe import Recipe, hardware, scratch_dir, seed_everything, trainer_arguments
from twostage.train.report import RunReport, say
from twostage.train.retrieval import DenseRanking, dense_ranking, encode_corpus

FUSION_NAME = "fusion.json"
RERANKER_RECIPE = Recipe(
    epochs=1.0, batch_size=16, learning_rate=2e-5, max_length=128, head_learning_rate=1e-3
)


@dataclass(frozen=True)
class RerankerOptions:
    """Mining and fitting choices of a reranker run (the trainer's are in :class:`Recipe`)."""

    negatives: int = 3  # hard negatives per training query
    skip_top: int = 3  # ranks 1..skip_top are never used as negatives (often unjudged positives)
    depth: int = 100  # negatives come from ranks skip_top+1 .. depth
    heldout_queries: int = 80  # training queries kept out of training to fit the fusion weight
    # dense candidates reranked per query when fitting the fusion: the server's default Search
    # depth, because the z-scores (and so the weight) depend on how many candidates there are
    candidates: int = 100
    serving_max_length: int = 256
    # tokens per corpus text when the bi-encoder embeds the corpus (None: the model's own, as
    # served). Shorter is faster (128: about half the time) but the fusion is then fitted on
    # slightly different dense scores than the server's.
    embed_max_length: int | None = None
    test_split: str | None = None  # also report figures on this qrels split (never used to fit)


@dataclass(frozen=True)
class RerankerJob:
    beir: BeirSet
    train_queries: list[str]
    heldout_queries: list[str]
    out: Path
    base: str
    base_name: str
    bi_encoder: str
    bi_encoder_name: str
    recipe: Recipe
    options: RerankerOptions
    cache_dir: Path | None


def prepare_reranker(
    beir_dir: str | Path,
    out: str | Path,
    *,
    base: str | None = None,
    bi_encoder: str | None = None,
    options: RerankerOptions | None = None,
    recipe: Recipe | None = None,
    cache_dir: str | Path | None = None,
) -> RerankerJob:
    """Validate the BEIR folder and the options, print what will be trained; loads no model."""
    options = options or RerankerOptions()
    recipe = recipe or RERANKER_RECIPE
    if options.candidates < 10:
        raise ValueError(f"--candidates must be at least 10 (nDCG@10), got {options.candidates}")
    if options.negatives < 1:
        raise ValueError(f"--negatives must be at least 1, got {options.negatives}")
    if not 0 <= options.skip_top < options.depth:
        raise ValueError(f"need 0 <= --skip-top < --depth, got {options.skip_top}, {options.depth}")
    splits = ["train"] + ([options.test_split] if options.test_split else [])
    beir = load_beir(beir_dir, splits)
    train_q, held_q = heldout_queries(
        beir.split_queries("train"), options.heldout_queries, recipe.seed
    )
    base_path, base_name = resolve_base(base)
    bi_path, bi_name = resolve_base(bi_encoder)
    check_base(base_path)
    check_base(bi_path)
    positives = beir.positives("train")
    n_pos = sum(len(positives[q]) for q in train_q)
    say(
        f"{Path(beir_dir).name}: {len(beir.corpus_ids)} docs, {len(beir.queries)} queries; "
        f"train {len(train_q)} queries ({n_pos} positives, ~{len(train_q) * options.negatives} "
        f"hard negatives), held back {len(held_q)} to fit the fusion"
        + (
            f"; {options.test_split} {len(beir.split_queries(options.test_split))} queries"
            if options.test_split
            else ""
        )
    )
    say("  labels: 1.0 positive / 0.0 negative -> 1 output, BCE on the logit, sigmoid at inference")
    return RerankerJob(
        beir,
        train_q,
        held_q,
        Path(out),
        base_path,
        base_name,
        bi_path,
        bi_name,
        recipe,
        options,
        Path(cache_dir) if cache_dir else None,
    )


def mine_training_pairs(
    job: RerankerJob, dense: DenseRanking, lexical: list[list[int]] | None
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """(query, document, label) rows: every judged positive and sampled hard negatives per query."""
    beir, opts = job.beir, job.options
    positives = beir.positives("train")
    doc_text = dict(zip(beir.corpus_ids, beir.corpus_texts, strict=True))
    rng = random.Random(job.recipe.seed)
    rows: dict[str, list[Any]] = {"query": [], "document": [], "label": []}
    sources: Counter[str] = Counter()
    row_of = {q: r for r, q in enumerate(dense.query_ids)}
    for i, q in enumerate(job.train_queries):
        dense_ids = dense.doc_ids(beir, row_of[q], opts.depth)
        rankings = [dense_ids]
        lexical_ids: list[str] = []
        if lexical is not None:
            lexical_ids = [beir.corpus_ids[j] for j in lexical[i][: opts.depth]]
            rankings.append(lexical_ids)
        negs = select_hard_negatives(
            rankings,
            positives[q],
            skip_top=opts.skip_top,
            depth=opts.depth,
            count=opts.negatives,
            rng=rng,
        )
        for doc_id in sorted(positives[q]):
            rows["query"].append(beir.queries[q])
            rows["document"].append(doc_text[doc_id])
            rows["label"].append(1.0)
        for doc_id in negs:
            in_dense = doc_id in dense_ids[opts.skip_top :]
            sources["dense" if in_dense else "bm25"] += 1
            rows["query"].append(beir.queries[q])
            rows["document"].append(doc_text[doc_id])
            rows["label"].append(0.0)
    n_pos = int(sum(rows["label"]))
    info = {
        "train_queries": len(job.train_queries),
        "positives": n_pos,
        "negatives": len(rows["label"]) - n_pos,
        "negatives_from": dict(sources),
        "negative_ranks": f"{opts.skip_top + 1}-{opts.depth}",
    }
    return rows, info


def score_candidates(
    model: Any, beir: BeirSet, ranking: DenseRanking, candidates: int
) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Cross-encoder logits of each query's dense top ``candidates``: q -> (ids, dense, logits)."""
    import torch

    pairs: list[tuple[str, str]] = []
    doc_text = dict(zip(beir.corpus_ids, beir.corpus_texts, strict=True))
    for row, q in enumerate(ranking.query_ids):
        for doc_id in ranking.doc_ids(beir, row, candidates):
            pairs.append((beir.queries[q], doc_text[doc_id]))
    say(f"reranking {len(ranking.query_ids)} queries x {candidates} candidates")
    logits = np.asarray(
        model.predict(
            pairs,
            batch_size=32,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
            show_progress_bar=True,
        ),
        dtype=np.float64,
    ).reshape(-1)
    out = {}
    for row, q in enumerate(ranking.query_ids):
        part = logits[row * candidates : (row + 1) * candidates]
        out[q] = (
            ranking.doc_ids(beir, row, candidates),
            ranking.scores[row, :candidates].astype(np.float64),
            part,
        )
    return out


def hybrid_ranking(
    beir: BeirSet,
    corpus_embeddings: np.ndarray,
    query_ids: list[str],
    query_embeddings: np.ndarray,
    keep: int,
    depth: int = 100,
) -> tuple[DenseRanking, str]:
    """The serving first stage for ``query_ids``: dense and lexical top ``depth`` (the server's
    own store and analyzer), every candidate with both scores, fused by the untuned default
    with its collection weight estimated from these queries. Returns the top ``keep`` by the
    fused score (as a ranking whose ``scores`` are that score) and the fusion's name."""
    from twostage.server.engine.search import union
    from twostage.server.fusion import DEFAULT_FIRST_STAGE
    from twostage.server.store.collections import CollectionManager

    n = len(beir.corpus_ids)
    index_of = {d: i for i, d in enumerate(beir.corpus_ids)}
    fusion = DEFAULT_FIRST_STAGE
    indices = np.zeros((len(query_ids), keep), dtype=np.int64)
    fused_scores = np.zeros((len(query_ids), keep), dtype=np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        manager = CollectionManager(tmp)
        try:
            c = manager.create("heldout", dim=int(corpus_embeddings.shape[1]), index="exact")
            for s in range(0, n, 2000):
                c.upsert(
                    beir.corpus_ids[s : s + 2000],
                    beir.corpus_texts[s : s + 2000],
                    None,
                    corpus_embeddings[s : s + 2000],
                )
            found = []
            for q, vector in zip(query_ids, query_embeddings, strict=True):
                dense_hits = c.search(vector, depth)
                channel = c.lexical_channel(beir.queries[q], depth)
                c.record_channel_gaps(
                    [h.score for h in channel.hits], [h.score for h in dense_hits]
                )
                found.append(union(c, vector, dense_hits, channel))
            stats = c.channel_stats
        finally:
            manager.close_all(snapshot=False)
    for row, cand in enumerate(found):
        score = fusion.scores(cand.dense, cand.lexical, cand.dense_ranks, cand.lexical_ranks, stats)
        top = cand.order_by(score, keep)
        indices[row, : len(top)] = [index_of[d] for d in top.ids]
        fused_scores[row, : len(top)] = top.score
    name = f"hybrid:{fusion.name()} at dense_weight {fusion.weight(stats):g}"
    return DenseRanking(list(query_ids), indices, fused_scores), name


def fused_run(
    scored: dict[str, tuple[list[str], np.ndarray, np.ndarray]], dense_weight: float
) -> dict[str, dict[str, float]]:
    """An ir-measures run ranked by :func:`fuse` at ``dense_weight``."""
    return {
        q: dict(zip(ids, fuse(dense, logits, dense_weight).tolist(), strict=True))
        for q, (ids, dense, logits) in scored.items()
    }


def fit_fusion(
    qrels: dict[str, dict[str, int]], scored: dict[str, tuple[list[str], np.ndarray, np.ndarray]]
) -> FusionFit:
    """:func:`fit_dense_weight` over held-back queries scored by :func:`score_candidates`."""
    queries = list(scored)

    def per_query(w: float) -> np.ndarray:
        values = per_query_ndcg10(qrels, fused_run(scored, w))
        return np.asarray([values[q] for q in queries])

    return fit_dense_weight(per_query)


def _figures(
    qrels: dict[str, dict[str, int]], scored: dict[str, Any], w: float
) -> dict[str, float]:
    return {
        "dense_ndcg10": retrieval_figures(qrels, fused_run(scored, 1.0))["ndcg10"],
        "rerank_ndcg10": retrieval_figures(qrels, fused_run(scored, 0.0))["ndcg10"],
        "fused_ndcg10": retrieval_figures(qrels, fused_run(scored, w))["ndcg10"],
        "dense_weight": w,
    }


def run_reranker(job: RerankerJob) -> RunReport:
    """Mine, train, fit the fusion on held-back queries; write checkpoint, fusion.json, report."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )

    beir, opts = job.beir, job.options
    report = RunReport(command="reranker", base=job.base_name, recipe=job.recipe.as_dict())
    report.data = {
        "files_sha256": beir.data_hashes(["train"] + ([opts.test_split] if opts.test_split else []))
    }
    report.model = {"options": asdict(opts), "bi_encoder": job.bi_encoder_name}
    test_queries = beir.split_queries(opts.test_split) if opts.test_split else []

    with report.timed("embed_corpus"):
        bi = SentenceTransformer(job.bi_encoder, local_files_only=Path(job.bi_encoder).exists())
        if opts.embed_max_length:
            bi.max_seq_length = min(opts.embed_max_length, bi.max_seq_length)
        corpus = encode_corpus(bi, beir, cache_dir=job.cache_dir)
    with report.timed("dense_search"):
        k = max(opts.depth, opts.candidates)
        dense_train = dense_ranking(bi, beir, job.train_queries, corpus, k)
        dense_test = dense_ranking(bi, beir, test_queries, corpus, k)
        held_emb = bi.encode(
            [beir.queries[q] for q in job.heldout_queries],
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
    first_stage = "dense"
    if job.heldout_queries:
        with report.timed("first_stage"):
            first_held, first_stage = hybrid_ranking(
                beir, corpus, job.heldout_queries, held_emb, opts.candidates
            )
    del bi, corpus
    with report.timed("bm25"):
        lexical = bm25_top_k(
            beir.corpus_texts, [beir.queries[q] for q in job.train_queries], opts.depth
        )
    rows, info = mine_training_pairs(job, dense_train, lexical)
    report.data.update(info)
    say(
        f"  training pairs: {info['positives']} positive, {info['negatives']} negative "
        f"(from {info['negatives_from']})"
    )

    with report.timed("load"):
        seed_everything(job.recipe.seed)
        model = load_cross_encoder(job.base, num_labels=1, max_length=job.recipe.max_length)
    pos_weight = info["negatives"] / max(1, info["positives"])
    loss = cross_encoder_loss(model, "similarity", pos_weight=pos_weight)
    report.model.update(
        num_labels=1,
        activation="sigmoid",
        loss=type(loss).__name__,
        pos_weight=round(pos_weight, 3),
        serving_max_length=opts.serving_max_length,
    )
    with report.timed("train"), scratch_dir() as scratch:
        args = trainer_arguments(job.recipe, CrossEncoderTrainingArguments, scratch)
        trainer = CrossEncoderTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss
        )
        result = trainer.train()
        report.model["train_loss"] = round(float(result.training_loss), 4)
        report.model["steps"] = int(result.global_step)
    model.max_seq_length = opts.serving_max_length
    model.tokenizer.model_max_length = opts.serving_max_length

    evaluation: dict[str, Any] = {}
    fusion_doc: dict[str, Any] = {
        "method": "zscore",
        "dense_weight": 1.0,
        "fitted_on": "no held-back queries",
        "candidates": opts.candidates,
        "first_stage": first_stage,
    }
    if job.heldout_queries:
        with report.timed("eval_heldout"):
            held_qrels = beir.qrels["train"]
            scored = score_candidates(model, beir, first_held, opts.candidates)
            fit = fit_fusion(held_qrels, scored)
            fusion_doc = fit.as_json(opts.candidates)
            fusion_doc["first_stage"] = first_stage
            evaluation["heldout"] = {
                "before": {"dense_ndcg10": round(fit.dense_ndcg10, 4)},
                "after": {
                    "rerank_ndcg10": round(fit.rerank_ndcg10, 4),
                    "fused_ndcg10": round(fit.fused_ndcg10, 4),
                    "dense_weight": fit.dense_weight,
                    "best_weight": fit.best_weight,
                },
            }
        say(
            f"  held back ({fit.n_queries} queries): first stage ({first_stage}) "
            f"{fit.dense_ndcg10:.4f}, cross-encoder "
            f"{fit.rerank_ndcg10:.4f}, fused {fit.fused_ndcg10:.4f} "
            f"at first-stage weight {fit.dense_weight} "
            f"(best {fit.best_weight})"
        )
    with report.timed("save"):
        save_checkpoint(model, job.out, opts.serving_max_length)
        (job.out / FUSION_NAME).write_text(
            json.dumps(fusion_doc, indent=2) + "\n", encoding="utf-8"
        )
    if test_queries:
        with report.timed("eval_test"):
            qrels = beir.qrels[opts.test_split or ""]
            scored_test = score_candidates(model, beir, dense_test, opts.candidates)
            w = float(fusion_doc["dense_weight"])
            figures = _figures(qrels, scored_test, w)
            figures["dense_recall100"] = retrieval_figures(qrels, dense_test.run(beir, 100))[
                "recall100"
            ]
            evaluation["test"] = {"split": opts.test_split, "queries": len(test_queries), **figures}
        say(
            f"  {opts.test_split} ({len(test_queries)} queries, {opts.candidates} candidates): "
            f"dense {figures['dense_ndcg10']:.4f}, cross-encoder {figures['rerank_ndcg10']:.4f}, "
            f"fused {figures['fused_ndcg10']:.4f}"
        )
    report.evaluation = evaluation
    report.environment = hardware()
    report.write(job.out)
    say(f"saved {job.out} ({report.durations_s['total']:.0f} s)")
    return report
