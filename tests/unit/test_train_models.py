"""`twostage train` end to end on tiny real data: a few steps, real MiniLM, real checkpoints.

Each command must leave a checkpoint that sentence-transformers and Hugging Face
``from_pretrained`` load (the exporter's entry point), with the right head and loss per label type.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from twostage.export.pipeline import read_fusion
from twostage.train.beir import load_beir, sample_beir
from twostage.train.bi_encoder import prepare_bi_encoder, run_bi_encoder
from twostage.train.cross_encoder import prepare_cross_encoder, run_cross_encoder
from twostage.train.recipe import Recipe
from twostage.train.reranker import (
    RerankerOptions,
    mine_training_pairs,
    prepare_reranker,
    run_reranker,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TINY = Recipe(max_steps=2, batch_size=8, max_length=48, seed=5, head_learning_rate=1e-3)


def _sample(src: Path, dst: Path, n: int, *, skip: int = 0, transform=None) -> Path:
    with src.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][skip : skip + n]
    if transform:
        rows = [transform(r) for r in rows]
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def stsb_run(work: Path) -> Path:
    stsb = DATA / "pairs" / "stsb"
    train = _sample(stsb / "train.jsonl", work / "stsb_train.jsonl", 32)
    held = _sample(stsb / "dev.jsonl", work / "stsb_dev.jsonl", 16)
    out = work / "stsb-ce"
    run_cross_encoder(prepare_cross_encoder(train, out, eval_file=held, recipe=TINY))
    return out


def test_similarity_cross_encoder_has_one_sigmoid_output(stsb_run: Path) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    report = json.loads((stsb_run / "training_report.json").read_text())
    assert report["model"]["loss"] == "BinaryCrossEntropyLoss"
    assert report["model"]["num_labels"] == 1 and report["model"]["activation"] == "sigmoid"
    assert report["model"]["steps"] == 2
    assert set(report["evaluation"]["heldout"]) == {"before", "after"}
    assert -1 <= report["evaluation"]["heldout"]["after"]["spearman"] <= 1
    assert report["data"]["train_pairs"] == 32 and report["data"]["labels"]["kind"] == "similarity"
    assert len(report["data"]["files_sha256"]) == 2
    assert {"train", "eval_before", "eval_after"} <= set(report["durations_s"])

    model = CrossEncoder(str(stsb_run))
    assert model.num_labels == 1
    assert type(model.activation_fn).__name__ == "Sigmoid"
    scores = model.predict([("A man plays a flute.", "A man is playing a flute.")])
    assert 0.0 < float(scores[0]) < 1.0
    hf = AutoModelForSequenceClassification.from_pretrained(str(stsb_run))
    assert hf.config.num_labels == 1
    tok = json.loads((stsb_run / "tokenizer_config.json").read_text())
    assert tok["model_max_length"] == 256  # the serving length, not the training one
    fast = json.loads((stsb_run / "tokenizer.json").read_text())
    assert fast["truncation"]["max_length"] == 256
    assert fast["padding"]["strategy"] == "BatchLongest"  # not the base's fixed 128


def test_classifier_has_named_softmax_outputs(work: Path) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    sick = DATA / "pairs" / "sick"
    # beside a labels.txt: the names come from there, in index order
    (work / "sick").mkdir(exist_ok=True)
    (work / "sick" / "labels.txt").write_text("contradiction\nentailment\nneutral\n")
    train = _sample(sick / "train.jsonl", work / "sick" / "train.jsonl", 40)
    out = work / "sick-ce"
    job = prepare_cross_encoder(train, out, heldout_fraction=0.25, recipe=TINY)
    run_cross_encoder(job)
    report = json.loads((out / "training_report.json").read_text())
    assert report["model"]["loss"] == "CrossEntropyLoss"
    assert report["model"]["activation"] == "softmax"
    assert report["data"]["heldout_pairs"] == 10
    assert set(report["evaluation"]["heldout"]["after"]) == {"accuracy", "macro_f1"}
    names = {"0": "contradiction", "1": "entailment", "2": "neutral"}
    hf = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert hf.config.num_labels == 3
    assert {str(k): v for k, v in hf.config.id2label.items()} == names
    assert hf.config.label2id == {v: int(k) for k, v in names.items()}
    model = CrossEncoder(str(out))
    probs = model.predict([("A dog runs.", "An animal is running.")], apply_softmax=True)
    assert probs.shape == (1, 3)
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("kind", "loss"), [("binary", "OnlineContrastiveLoss"), ("similarity", "CoSENTLoss")]
)
def test_bi_encoder_loss_follows_labels(work: Path, kind: str, loss: str) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    def binary(row: dict) -> dict:
        return dict(row, label=int(row["label"] >= 0.5))

    src = DATA / "pairs" / "stsb" / "train.jsonl"
    transform = binary if kind == "binary" else None
    # rows 2000.. mix similar and dissimilar pairs, so the held-back quarter has both
    train = _sample(src, work / f"bi-{kind}.jsonl", 40, skip=2000, transform=transform)
    out = work / f"bi-{kind}"
    run_bi_encoder(prepare_bi_encoder(train, out, heldout_fraction=0.25, recipe=TINY))
    report = json.loads((out / "training_report.json").read_text())
    assert report["model"]["loss"] == loss
    metric = "roc_auc" if kind == "binary" else "spearman"
    after = report["evaluation"]["heldout"]["after"][metric]
    assert after is not None and -1.0 <= after <= 1.0
    model = SentenceTransformer(str(out))
    assert model.max_seq_length == 256
    assert model.encode(["a test"]).shape == (1, 384)
    AutoModel.from_pretrained(str(out))


def test_seeds_make_two_runs_identical(work: Path) -> None:
    import torch
    from safetensors.torch import load_file

    train = _sample(DATA / "pairs" / "stsb" / "train.jsonl", work / "seed.jsonl", 16)
    held = _sample(DATA / "pairs" / "stsb" / "dev.jsonl", work / "seed-dev.jsonl", 4)
    weights = []
    for name, seed in (("a", 9), ("b", 9), ("c", 10)):
        recipe = Recipe(max_steps=2, batch_size=4, max_length=32, seed=seed)
        out = work / f"seed-{name}"
        run_cross_encoder(prepare_cross_encoder(train, out, eval_file=held, recipe=recipe))
        weights.append(load_file(str(out / "model.safetensors")))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


@pytest.fixture(scope="module")
def mini_beir(work: Path) -> Path:
    return sample_beir(
        DATA / "scifact", work / "mini-scifact", split="train", queries=16, extra_docs=24, seed=2
    )


def test_reranker_writes_checkpoint_fusion_and_report(work: Path, mini_beir: Path) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoModelForSequenceClassification

    out = work / "reranker"
    options = RerankerOptions(heldout_queries=4, candidates=10, negatives=2)
    job = prepare_reranker(mini_beir, out, options=options, recipe=TINY)
    run_reranker(job)
    fusion = json.loads((out / "fusion.json").read_text())
    assert fusion["method"] == "zscore"
    assert 0.0 <= fusion["dense_weight"] <= 1.0
    assert fusion["fitted_on"] == "4 held-back train queries"
    assert fusion["candidates"] == 10
    assert set(fusion["heldout"]) >= {"dense_ndcg10", "rerank_ndcg10", "fused_ndcg10"}
    report = json.loads((out / "training_report.json").read_text())
    assert report["data"]["train_queries"] == 12
    assert report["data"]["negatives"] == 24
    assert (
        report["evaluation"]["heldout"]["before"]["dense_ndcg10"]
        == fusion["heldout"]["dense_ndcg10"]
    )
    model = CrossEncoder(str(out))
    assert model.num_labels == 1
    hf = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert hf.config.num_labels == 1
    # export reads the file the trainer wrote (its held-back curve is nested: the manifest keeps
    # the flat figures and the depth the weight was fitted at)
    served = read_fusion(out)
    assert served is not None
    assert served.dense_weight == fusion["dense_weight"]
    assert served.candidates == 10
    assert served.heldout["fused_ndcg10"] == fusion["heldout"]["fused_ndcg10"]
    assert "curve" not in served.heldout
    # the weight was fitted over the served (hybrid) first stage, and says so
    assert fusion["first_stage"].startswith("hybrid:adaptive(")
    assert served.first_stage == fusion["first_stage"]


def test_mined_negatives_are_never_positives(mini_beir: Path) -> None:
    import numpy as np

    from twostage.train.retrieval import DenseRanking

    job = prepare_reranker(
        mini_beir,
        mini_beir.parent / "unused",
        options=RerankerOptions(heldout_queries=0, negatives=5),
    )
    beir = load_beir(mini_beir, ["train"])
    # a ranking that puts each query's positives first, then everything: the worst case
    positives = beir.positives("train")
    order = []
    for q in job.train_queries:
        pos = [beir.corpus_ids.index(d) for d in sorted(positives[q])]
        order.append(pos + [i for i in range(len(beir.corpus_ids)) if i not in pos])
    ranking = DenseRanking(
        job.train_queries, np.asarray(order), np.zeros((len(order), len(order[0])))
    )
    rows, info = mine_training_pairs(job, ranking, lexical=None)
    text_of = dict(zip(beir.corpus_ids, beir.corpus_texts, strict=True))
    positive_pairs = {
        (beir.queries[q], text_of[d]) for q in job.train_queries for d in positives[q]
    }
    for query, doc, label in zip(rows["query"], rows["document"], rows["label"], strict=True):
        assert ((query, doc) in positive_pairs) == (label == 1.0)
    assert info["negatives"] == 5 * len(job.train_queries)


def test_bi_encoder_on_beir_uses_in_batch_and_hard_negatives(work: Path, mini_beir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    out = work / "bi-beir"
    job = prepare_bi_encoder(mini_beir, out, heldout_count=4, hard_negatives=1, recipe=TINY)
    run_bi_encoder(job)
    report = json.loads((out / "training_report.json").read_text())
    assert report["model"]["loss"] == "MultipleNegativesRankingLoss"
    assert report["data"]["positive_pairs"] >= 12
    assert set(report["evaluation"]["heldout"]["before"]) == {"ndcg10", "recall100"}
    SentenceTransformer(str(out))
