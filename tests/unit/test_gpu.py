"""The CUDA path: fails fast without CUDA (runs everywhere); parity on a GPU (``-m gpu``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from twostage.server.errors import ConfigError
from twostage.server.runtime import choose_precision, load_runtime
from twostage.server.runtime.session import OnnxSession, cuda_available


@pytest.mark.skipif(cuda_available(), reason="checks the machine without CUDA")
def test_cuda_requested_without_cuda_fails_at_load(embedder_bundle: Path) -> None:
    with pytest.raises(ConfigError) as err:
        OnnxSession(embedder_bundle / "model.onnx", device="cuda")
    assert "CUDAExecutionProvider" in str(err.value) and err.value.field == "device"


def test_int8_never_runs_on_cuda(embedder_bundle: Path) -> None:
    from twostage.server.bundle import load_bundle

    bundle = load_bundle(embedder_bundle, verify=False)
    with pytest.raises(ConfigError, match="int8"):
        choose_precision(bundle, "cuda", "int8")
    assert choose_precision(bundle, "cuda") in ("fp16", "fp32")
    assert choose_precision(bundle, "cpu") == "int8"


@pytest.mark.gpu
def test_fp16_on_cuda_matches_fp32_on_cpu(embedder_bundle_gpu: Path, scifact_corpus) -> None:
    texts = [f"{d['title']} {d['text']}" for d in scifact_corpus[:256]]
    gpu = load_runtime(embedder_bundle_gpu, device="cuda")
    assert gpu.precision == "fp16" and gpu.session.providers[0] == "CUDAExecutionProvider"
    cpu = load_runtime(embedder_bundle_gpu, device="cpu", precision="fp32")
    cos = np.sum(gpu.embed(texts, batch_size=128) * cpu.embed(texts), axis=1)
    assert cos.mean() > 0.999 and cos.min() > 0.995, (cos.mean(), cos.min())


@pytest.mark.gpu
def test_reranker_fp16_on_cuda_keeps_the_order(reranker_bundle_gpu: Path, scifact_corpus) -> None:
    from scipy.stats import spearmanr

    docs = [d["text"] for d in scifact_corpus[:100]]
    pairs = [("what causes cancer", d) for d in docs]
    gpu = load_runtime(reranker_bundle_gpu, device="cuda").logits(pairs)[:, 0]
    cpu = load_runtime(reranker_bundle_gpu, device="cpu", precision="fp32").logits(pairs)[:, 0]
    assert spearmanr(gpu, cpu).statistic > 0.99
