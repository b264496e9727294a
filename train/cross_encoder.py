"""``twostage train cross-encoder``: a similarity scorer (float labels) or a classifier (classes).

Float labels in [0, 1] -> one output, BCE on the logit, sigmoid at inference (the reranker kind).
Integer class labels -> N outputs, cross-entropy, softmax at inference, names in ``id2label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twostage.train.evaluation import accuracy_macro_f1, spearman
from twostage.train.losses import cross_encoder_loss
from twostage.train.models import check_base, load_cross_encoder, resolve_base, save_checkpoint
from twostage.train.pairs import (
    LabelKind,
    PairSet,
    describe,
    file_sha256,
    load_pairs,
    read_label_names,
)
from twostage.train.recipe import Recipe, hardware, scratch_dir, seed_everything, trainer_arguments
from twostage.train.report import RunReport, say

SERVING_MAX_LENGTH = 256


@dataclass(frozen=True)
class CrossEncoderJob:
    """Inputs of one cross-encoder run (validated by :func:`prepare_cross_encoder`)."""

    train: PairSet
    heldout: PairSet
    test: PairSet | None
    base: str
    base_name: str
    out: Path
    recipe: Recipe
    files: dict[str, str]


def prepare_cross_encoder(
    data: str | Path,
    out: str | Path,
    *,
    base: str | None = None,
    labels: str | None = None,
    eval_file: str | Path | None = None,
    test_file: str | Path | None = None,
    heldout_fraction: float = 0.1,
    recipe: Recipe | None = None,
) -> CrossEncoderJob:
    """Validate every input file and print counts and label distribution; loads no model."""
    recipe = recipe or Recipe(max_length=128, head_learning_rate=1e-3)
    data = Path(data)
    names = read_label_names(data, labels)
    pairs = load_pairs(data, task="cross-encoder", label_names=names)
    files = {str(data): file_sha256(data)}
    if eval_file:
        train, heldout = pairs, load_pairs(eval_file, task="cross-encoder", label_names=names)
        files[str(eval_file)] = file_sha256(Path(eval_file))
    else:
        train, heldout = pairs.split(heldout_fraction, recipe.seed)
    test = load_pairs(test_file, task="cross-encoder", label_names=names) if test_file else None
    if test_file:
        files[str(test_file)] = file_sha256(Path(test_file))
    for part in (heldout, test):
        if part is not None and part.kind is not pairs.kind:
            raise_kind_mismatch(part, pairs)
    say(describe(pairs))
    say(
        f"  train {len(train)} pairs, held back {len(heldout)}"
        + (f", test {len(test)}" if test else "")
    )
    if pairs.kind is LabelKind.CLASSES:
        say(
            "  head: "
            + f"{len(pairs.label_names)} outputs, softmax, labels {','.join(pairs.label_names)}"
        )
    else:
        say("  head: 1 output, sigmoid (BCE on the logit)")
    path, name = resolve_base(base)
    check_base(path)
    return CrossEncoderJob(train, heldout, test, path, name, Path(out), recipe, files)


def raise_kind_mismatch(part: PairSet, pairs: PairSet) -> None:
    from twostage.train.pairs import DataError

    raise DataError(
        f"{part.path}: labels are {part.kind.value} but {pairs.path.name} has {pairs.kind.value}"
    )


def evaluate_cross_encoder(model: Any, pairs: PairSet, batch_size: int = 64) -> dict[str, float]:
    """Spearman (similarity) or accuracy and macro-F1 (classes) of ``model`` on ``pairs``."""
    import numpy as np

    inputs = list(zip(pairs.sentence1, pairs.sentence2, strict=True))
    scores = model.predict(
        inputs, batch_size=batch_size, show_progress_bar=True, convert_to_numpy=True
    )
    if pairs.kind is LabelKind.CLASSES:
        predicted = np.asarray(scores).argmax(axis=1)
        return accuracy_macro_f1(
            predicted.tolist(), [int(v) for v in pairs.labels], len(pairs.label_names)
        )
    return {
        "spearman": spearman(
            np.asarray(scores).reshape(-1).tolist(), [float(v) for v in pairs.labels]
        )
    }


def run_cross_encoder(job: CrossEncoderJob) -> RunReport:
    """Train, evaluate before/after, save the checkpoint and ``training_report.json``."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )

    report = RunReport(command="cross-encoder", base=job.base_name, recipe=job.recipe.as_dict())
    classes = job.train.kind is LabelKind.CLASSES
    report.data = {
        "files_sha256": {Path(k).name: v for k, v in job.files.items()},
        "train_pairs": len(job.train),
        "heldout_pairs": len(job.heldout),
        "test_pairs": len(job.test) if job.test else 0,
        "labels": job.train.label_distribution(),
    }
    with report.timed("load"):
        seed_everything(job.recipe.seed)
        id2label = dict(enumerate(job.train.label_names)) if classes else None
        model = load_cross_encoder(
            job.base,
            num_labels=len(job.train.label_names) if classes else 1,
            max_length=job.recipe.max_length,
            id2label=id2label,
        )
    loss = cross_encoder_loss(model, job.train.kind.value)
    report.model = {
        "num_labels": len(job.train.label_names) if classes else 1,
        "activation": "softmax" if classes else "sigmoid",
        "id2label": {str(k): v for k, v in (id2label or {}).items()},
        "loss": type(loss).__name__,
        "serving_max_length": SERVING_MAX_LENGTH,
    }
    evaluation: dict[str, Any] = {"heldout": {}, "test": {}}
    with report.timed("eval_before"):
        say("evaluating the base model on the held-back pairs")
        # the base has a fresh head: its held-back figure is the chance level; the test file
        # is scored after training only (it is the expensive one)
        evaluation["heldout"]["before"] = evaluate_cross_encoder(model, job.heldout)
    say(f"  before: {evaluation['heldout']['before']}")
    dataset = Dataset.from_dict(
        {
            "sentence1": job.train.sentence1,
            "sentence2": job.train.sentence2,
            "label": list(job.train.labels),
        }
    )
    with report.timed("train"), scratch_dir() as scratch:
        args = trainer_arguments(job.recipe, CrossEncoderTrainingArguments, scratch)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        result = trainer.train()
        report.model["train_loss"] = round(float(result.training_loss), 4)
        report.model["steps"] = int(result.global_step)
    with report.timed("eval_after"):
        evaluation["heldout"]["after"] = evaluate_cross_encoder(model, job.heldout)
    say(f"  after: {evaluation['heldout']['after']}")
    if job.test:
        with report.timed("eval_test"):
            evaluation["test"]["after"] = evaluate_cross_encoder(model, job.test)
        say(f"  test: {evaluation['test']['after']}")
    if not job.test:
        del evaluation["test"]
    report.evaluation = evaluation
    with report.timed("save"):
        save_checkpoint(model, job.out, SERVING_MAX_LENGTH)
    report.environment = hardware()
    report.write(job.out)
    say(f"saved {job.out} ({report.durations_s['total']:.0f} s)")
    return report
