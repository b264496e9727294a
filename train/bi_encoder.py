"""``twostage train bi-encoder``: fine-tune a sentence-transformers model; loss follows the data.

Binary 0/1 labels -> OnlineContrastiveLoss; float labels -> CoSENTLoss; a BEIR folder ->
MultipleNegativesRankingLoss on (query, positive) with in-batch negatives, plus mined hard
negatives when asked for.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twostage.train.beir import BeirSet, heldout_queries, load_beir
from twostage.train.evaluation import retrieval_figures, roc_auc, spearman
from twostage.train.losses import bi_encoder_batch_samplers, bi_encoder_loss
from twostage.train.models import check_base, resolve_base, save_checkpoint
from twostage.train.negatives import bm25_top_k, select_hard_negatives
from twostage.train.pairs import DataError, LabelKind, PairSet, describe, file_sha256, load_pairs
from twostage.train.recipe import Recipe, hardware, scratch_dir, seed_everything, trainer_arguments
from twostage.train.report import RunReport, say
from twostage.train.retrieval import dense_ranking, encode_corpus


@dataclass(frozen=True)
class BiEncoderJob:
    """Inputs of one bi-encoder run: pairs (train/held back/test) or a BEIR folder."""

    out: Path
    base: str
    base_name: str
    recipe: Recipe
    files: dict[str, str]
    pairs: tuple[PairSet, PairSet, PairSet | None] | None = None
    beir: BeirSet | None = None
    train_queries: tuple[str, ...] = ()
    heldout_queries: tuple[str, ...] = ()
    test_split: str | None = None
    hard_negatives: int = 0
    cache_dir: Path | None = None


def prepare_bi_encoder(
    data: str | Path,
    out: str | Path,
    *,
    base: str | None = None,
    eval_file: str | Path | None = None,
    test: str | None = None,
    heldout_fraction: float = 0.1,
    heldout_count: int = 80,
    hard_negatives: int = 0,
    cache_dir: str | Path | None = None,
    recipe: Recipe | None = None,
) -> BiEncoderJob:
    """Validate the inputs (a pair file or a BEIR folder) and print what will be trained."""
    recipe = recipe or Recipe()
    data = Path(data)
    path, name = resolve_base(base)
    check_base(path)
    if data.is_dir():
        splits = ["train"] + ([test] if test else [])
        beir = load_beir(data, splits)
        train_q, held_q = heldout_queries(beir.split_queries("train"), heldout_count, recipe.seed)
        n_pairs = sum(len(beir.positives("train")[q]) for q in train_q)
        say(
            f"{data.name}: {len(beir.corpus_ids)} docs, {len(beir.queries)} queries; "
            f"train {len(train_q)} queries ({n_pairs} positive pairs), held back {len(held_q)}"
            + (f", {test} {len(beir.split_queries(test))} queries" if test else "")
        )
        say(
            "  loss: MultipleNegativesRankingLoss (in-batch negatives"
            + (f" + {hard_negatives} mined hard negatives)" if hard_negatives else ")")
        )
        return BiEncoderJob(
            Path(out),
            path,
            name,
            recipe,
            beir.data_hashes(splits),
            beir=beir,
            train_queries=tuple(train_q),
            heldout_queries=tuple(held_q),
            test_split=test,
            hard_negatives=hard_negatives,
            cache_dir=Path(cache_dir) if cache_dir else None,
        )
    pairs = load_pairs(data, task="bi-encoder")
    files = {data.name: file_sha256(data)}
    if eval_file:
        train, held = pairs, load_pairs(eval_file, task="bi-encoder")
        files[Path(eval_file).name] = file_sha256(Path(eval_file))
    else:
        train, held = pairs.split(heldout_fraction, recipe.seed)
    test_pairs = load_pairs(test, task="bi-encoder") if test else None
    if test:
        files[Path(test).name] = file_sha256(Path(test))
    for part in (held, test_pairs):
        if part is not None and part.kind is not pairs.kind:
            raise DataError(
                f"{part.path}: labels are {part.kind.value} but {data.name} has {pairs.kind.value}"
            )
    say(describe(pairs))
    say(
        f"  train {len(train)} pairs, held back {len(held)}"
        + (f", test {len(test_pairs)}" if test_pairs else "")
    )
    say(
        "  loss: "
        + ("CoSENTLoss" if pairs.kind is LabelKind.SIMILARITY else "OnlineContrastiveLoss")
    )
    return BiEncoderJob(Path(out), path, name, recipe, files, pairs=(train, held, test_pairs))


def _evaluate_pairs(model: Any, pairs: PairSet) -> dict[str, float]:
    """Spearman of cosine vs float labels, or ROC AUC of cosine for binary labels."""
    import numpy as np

    a = model.encode(
        pairs.sentence1, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=True
    )
    b = model.encode(
        pairs.sentence2, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=True
    )
    cos = np.sum(a * b, axis=1).tolist()
    if pairs.kind is LabelKind.SIMILARITY:
        return {"spearman": spearman(cos, [float(v) for v in pairs.labels])}
    auc = roc_auc(cos, [int(v) for v in pairs.labels])
    return {"roc_auc": None if math.isnan(auc) else auc}  # None: one class only


def _evaluate_retrieval(model: Any, job: BiEncoderJob) -> tuple[dict[str, Any], Any]:
    """Dense nDCG@10/R@100 on the held-back (and test) queries, and the corpus embeddings."""
    assert job.beir is not None
    emb = encode_corpus(model, job.beir, cache_dir=job.cache_dir)
    out = {}
    sets = {"heldout": (list(job.heldout_queries), "train")}
    if job.test_split:
        sets["test"] = (job.beir.split_queries(job.test_split), job.test_split)
    for name, (queries, split) in sets.items():
        if queries:
            ranking = dense_ranking(model, job.beir, queries, emb, 100)
            out[name] = retrieval_figures(job.beir.qrels[split], ranking.run(job.beir, 100))
    return out, emb


def _beir_dataset(
    model: Any, job: BiEncoderJob, emb: Any
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """(query, positive[, negative_i]) columns, one row per judged positive of a training query."""
    beir = job.beir
    assert beir is not None
    positives = beir.positives("train")
    queries = list(job.train_queries)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    negatives: dict[str, list[str]] = {}
    info: dict[str, Any] = {"positive_pairs": 0}
    if job.hard_negatives:
        dense = dense_ranking(model, beir, queries, emb, 100)
        lexical = bm25_top_k(beir.corpus_texts, [beir.queries[q] for q in queries], 100)
        rng = random.Random(job.recipe.seed)
        for row, q in enumerate(queries):
            rankings = [dense.doc_ids(beir, row)]
            if lexical is not None:
                rankings.append([beir.corpus_ids[i] for i in lexical[row]])
            negatives[q] = select_hard_negatives(
                rankings, positives[q], skip_top=3, depth=100, count=job.hard_negatives, rng=rng
            )
        info["negative_sources"] = ["dense"] + (["bm25"] if lexical is not None else [])
        for i in range(job.hard_negatives):
            columns[f"negative_{i + 1}"] = []
    doc_text = dict(zip(beir.corpus_ids, beir.corpus_texts, strict=True))
    for q in queries:
        for doc_id in sorted(positives[q]):
            if job.hard_negatives and len(negatives[q]) < job.hard_negatives:
                continue
            columns["anchor"].append(beir.queries[q])
            columns["positive"].append(doc_text[doc_id])
            for i in range(job.hard_negatives):
                columns[f"negative_{i + 1}"].append(doc_text[negatives[q][i]])
            info["positive_pairs"] += 1
    return columns, info


def run_bi_encoder(job: BiEncoderJob) -> RunReport:
    """Train, evaluate before/after, save the checkpoint and ``training_report.json``."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer

    report = RunReport(command="bi-encoder", base=job.base_name, recipe=job.recipe.as_dict())
    report.data = {"files_sha256": job.files}
    with report.timed("load"):
        seed_everything(job.recipe.seed)
        model = SentenceTransformer(job.base, local_files_only=Path(job.base).exists())
    serving_max_length = int(model.max_seq_length)
    evaluation: dict[str, Any] = {}
    if job.beir is not None:
        kind = "retrieval"
        report.data.update(
            train_queries=len(job.train_queries), heldout_queries=len(job.heldout_queries)
        )
        with report.timed("eval_before"):
            say("evaluating the base model (dense retrieval)")
            before, base_emb = _evaluate_retrieval(model, job)
        with report.timed("mine"):
            columns, info = _beir_dataset(model, job, base_emb)
        report.data.update(info)
    else:
        assert job.pairs is not None
        train, held, test = job.pairs
        kind = train.kind.value
        report.data.update(
            train_pairs=len(train),
            heldout_pairs=len(held),
            test_pairs=len(test) if test else 0,
            labels=train.label_distribution(),
        )
        with report.timed("eval_before"):
            before = {"heldout": _evaluate_pairs(model, held)}
            if test:
                before["test"] = _evaluate_pairs(model, test)
        columns = {
            "sentence1": train.sentence1,
            "sentence2": train.sentence2,
            "label": list(train.labels),
        }
    say(f"  before: {before}")
    model.max_seq_length = min(job.recipe.max_length, serving_max_length)
    loss = bi_encoder_loss(model, kind)
    report.model = {"loss": type(loss).__name__, "serving_max_length": serving_max_length}
    with report.timed("train"), scratch_dir() as scratch:
        from sentence_transformers import SentenceTransformerTrainingArguments

        # a bi-encoder has no new head: one learning rate for all
        recipe = dataclasses.replace(job.recipe, head_learning_rate=None)
        args = trainer_arguments(recipe, SentenceTransformerTrainingArguments, scratch)
        if kind == "retrieval":
            args.batch_sampler = bi_encoder_batch_samplers().NO_DUPLICATES
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss
        )
        result = trainer.train()
        report.model["train_loss"] = round(float(result.training_loss), 4)
        report.model["steps"] = int(result.global_step)
    model.max_seq_length = serving_max_length
    with report.timed("eval_after"):
        if job.beir is not None:
            after, _ = _evaluate_retrieval(model, job)
        else:
            assert job.pairs is not None
            after = {"heldout": _evaluate_pairs(model, job.pairs[1])}
            if job.pairs[2]:
                after["test"] = _evaluate_pairs(model, job.pairs[2])
    say(f"  after: {after}")
    for split in before:
        evaluation[split] = {"before": before[split], "after": after.get(split)}
    report.evaluation = evaluation
    with report.timed("save"):
        save_checkpoint(model, job.out, serving_max_length)
    report.environment = hardware()
    report.write(job.out)
    say(f"saved {job.out} ({report.durations_s['total']:.0f} s)")
    return report
