"""Exported cross-encoders (MiniLM + fixed-seed heads) run by the runtime, against PyTorch.

The heads are untrained: these tests check mechanics (parity, activation, ordering), not quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twostage.export.validate import spearman
from twostage.server.bundle import read_manifest, sha256_file
from twostage.server.runtime import CrossEncoderRuntime, load_runtime

N_QUERIES = 8
PER_QUERY = 10


@pytest.fixture(scope="module")
def pairs(scifact_queries, scifact_passages) -> list[tuple[str, str]]:
    """Each of 8 SciFact claims against 10 abstracts (80 real pairs)."""
    out = []
    for q in range(N_QUERIES):
        for j in range(PER_QUERY):
            out.append((scifact_queries[q]["text"], scifact_passages[(q * 11 + j * 7) % 200]))
    return out


def torch_logits(checkpoint: Path, pairs: list[tuple[str, str]], max_length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    chunks = []
    with torch.inference_mode():
        for s in range(0, len(pairs), 32):
            batch = pairs[s : s + 32]
            enc = tok(
                [a for a, _ in batch],
                [b for _, b in batch],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            chunks.append(model(**enc).logits.numpy())
    return np.concatenate(chunks)


@pytest.fixture(scope="module")
def reranker_ref(reranker_bundle, reranker_checkpoint, pairs) -> np.ndarray:
    manifest = read_manifest(reranker_bundle)
    # the reference is the very checkpoint the bundle came from
    assert sha256_file(reranker_checkpoint / "model.safetensors") == manifest.source.weights_sha256
    return torch_logits(reranker_checkpoint, pairs, manifest.max_length)


@pytest.fixture(scope="module")
def classifier_ref(classifier_bundle, classifier_checkpoint, pairs) -> np.ndarray:
    manifest = read_manifest(classifier_bundle)
    assert sha256_file(classifier_checkpoint / "model.safetensors") == (
        manifest.source.weights_sha256
    )
    return torch_logits(classifier_checkpoint, pairs, manifest.max_length)


def _runtime(bundle: Path, precision: str) -> CrossEncoderRuntime:
    runtime = load_runtime(bundle, precision=precision, intra_op_threads=2)
    assert isinstance(runtime, CrossEncoderRuntime)
    return runtime


def test_reranker_fp32_logits_match_pytorch(reranker_bundle, pairs, reranker_ref) -> None:
    got = _runtime(reranker_bundle, "fp32").logits(pairs)
    assert got.shape == (len(pairs), 1)
    np.testing.assert_allclose(got, reranker_ref, atol=1e-4)


def test_reranker_scores_are_the_sigmoid_of_the_logits(reranker_bundle, pairs) -> None:
    runtime = _runtime(reranker_bundle, "fp32")
    assert runtime.activation == "sigmoid"
    logits = runtime.logits(pairs[:20])[:, 0].astype(np.float64)
    scores = runtime.predict(pairs[:20])
    assert scores.shape == (20,)
    np.testing.assert_allclose(scores, 1.0 / (1.0 + np.exp(-logits)), atol=1e-6)
    assert ((scores > 0) & (scores < 1)).all()


def test_reranker_int8_keeps_the_ranking(reranker_bundle, pairs, reranker_ref) -> None:
    got = _runtime(reranker_bundle, "int8").logits(pairs)[:, 0]
    rhos = [
        spearman(
            reranker_ref[q * PER_QUERY : (q + 1) * PER_QUERY, 0],
            got[q * PER_QUERY : (q + 1) * PER_QUERY],
        )
        for q in range(N_QUERIES)
    ]
    # an untrained head spreads a query's scores by ~0.01 logits; int8 moves them ~0.0015
    assert np.mean(rhos) >= 0.85, rhos
    assert np.abs(got - reranker_ref[:, 0]).max() < 0.05


def test_reranker_batch_of_one_equals_batch_of_many(reranker_bundle, pairs) -> None:
    runtime = _runtime(reranker_bundle, "fp32")
    together = runtime.logits(pairs[:32], batch_size=32)
    alone = np.concatenate([runtime.logits([p], batch_size=1) for p in pairs[:32]])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_classifier_softmax_matches_pytorch(classifier_bundle, pairs, classifier_ref) -> None:
    runtime = _runtime(classifier_bundle, "fp32")
    assert runtime.activation == "softmax"
    assert runtime.label_names == ("contradiction", "entailment", "neutral")
    logits = runtime.logits(pairs)
    np.testing.assert_allclose(logits, classifier_ref, atol=1e-4)
    probs = runtime.predict(pairs)
    assert probs.shape == (len(pairs), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    ref = np.exp(classifier_ref - classifier_ref.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, ref / ref.sum(axis=1, keepdims=True), atol=1e-5)


def test_classifier_int8_agrees_on_the_class(classifier_bundle, pairs, classifier_ref) -> None:
    got = _runtime(classifier_bundle, "int8").logits(pairs)
    agreement = (got.argmax(axis=1) == classifier_ref.argmax(axis=1)).mean()
    assert agreement >= 0.9, agreement


def test_long_pairs_are_cut_at_the_bundle_max_length(reranker_bundle, scifact_passages) -> None:
    runtime = _runtime(reranker_bundle, "fp32")
    long_doc = " ".join(scifact_passages[:6])
    (encoded,) = runtime.tokenize_pairs([("a short claim", long_doc)])
    assert len(encoded) == runtime.max_length
    assert encoded.type_ids.max() == 1  # the passage is segment 1
    out = runtime.logits([("a short claim", long_doc), ("", ""), ("q", "x" * 50_000)])
    assert out.shape == (3, 1) and np.isfinite(out).all()
