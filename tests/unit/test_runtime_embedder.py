"""The exported embedder, run by the serving runtime, against sentence-transformers on SciFact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twostage.server.runtime import EmbedderRuntime, load_runtime


@pytest.fixture(scope="module")
def fp32(embedder_bundle: Path) -> EmbedderRuntime:
    runtime = load_runtime(embedder_bundle, precision="fp32", intra_op_threads=2)
    assert isinstance(runtime, EmbedderRuntime)
    return runtime


@pytest.fixture(scope="module")
def int8(embedder_bundle: Path) -> EmbedderRuntime:
    runtime = load_runtime(embedder_bundle, intra_op_threads=2)
    assert isinstance(runtime, EmbedderRuntime) and runtime.precision == "int8"
    return runtime


@pytest.fixture(scope="module")
def sbert(minilm_path: Path):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(2)
    return SentenceTransformer(str(minilm_path), device="cpu")


@pytest.fixture(scope="module")
def reference(sbert, scifact_passages: list[str]) -> np.ndarray:
    """sentence-transformers fp32 vectors of 200 SciFact abstracts (cut at 256 tokens)."""
    assert sbert.max_seq_length == 256
    return sbert.encode(scifact_passages, batch_size=32, convert_to_numpy=True)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_fp32_matches_sentence_transformers(fp32, scifact_passages, reference) -> None:
    got = fp32.embed(scifact_passages)
    assert got.shape == (200, 384) and got.dtype == np.float32
    cos = _cos(got, reference)
    assert cos.min() >= 0.9999, cos.min()
    # pooling and normalisation happen inside the graph
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_matches_sentence_transformers(int8, scifact_passages, reference) -> None:
    cos = _cos(int8.embed(scifact_passages), reference)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97, (cos.mean(), cos.min())


def test_batch_of_one_equals_batch_of_64(fp32, scifact_passages) -> None:
    texts = scifact_passages[:64]
    together = fp32.embed(texts, batch_size=64)
    alone = np.concatenate([fp32.embed([t], batch_size=1) for t in texts])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_truncation_is_at_the_bundle_max_length_not_128(fp32, sbert, scifact_passages) -> None:
    # the shipped tokenizer.json pads and truncates at 128; the runtime must reset both
    long_text = " ".join(scifact_passages[:4])
    (encoded,) = fp32.tokenize([long_text])
    assert fp32.max_length == 256 and len(encoded) == 256
    (short,) = fp32.tokenize(["tumour growth"])
    assert len(short) < 10  # no padding to a fixed 128
    vec = fp32.embed([long_text])
    # anything past token 256 is ignored...
    np.testing.assert_allclose(fp32.embed([long_text + " " + scifact_passages[5]]), vec, atol=1e-6)
    # ...and tokens 129..256 count: the same as sentence-transformers at 256
    ref = sbert.encode([long_text], convert_to_numpy=True)
    assert _cos(vec, ref)[0] >= 0.9999
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(fp32.bundle.path / "tokenizer.json"))
    at_128 = tok.decode(encoded.ids.tolist()[1:127])  # what a 128-token cut would keep
    assert _cos(fp32.embed([at_128]), vec)[0] < 0.999


def test_empty_and_very_long_texts(fp32, int8, sbert) -> None:
    very_long = "cells divide and differentiate " * 20_000  # 100k words
    for runtime in (fp32, int8):
        out = runtime.embed(["", very_long, "x"])
        assert out.shape == (3, 384) and np.isfinite(out).all()
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    ref = sbert.encode(["", very_long], convert_to_numpy=True)
    assert _cos(fp32.embed(["", very_long]), ref).min() >= 0.9999
    assert fp32.embed([]).shape == (0, 384)
