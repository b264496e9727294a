"""A loaded bundle ready to run: tokenizer + ONNX session, split into pre / core / post.

* ``tokenize`` / ``tokenize_pairs`` (pre): text -> unpadded :class:`Encoded` sequences;
* ``collate`` (pre): pad one batch into graph feeds;
* ``forward`` (core): one session run -> raw output (embeddings, or logits ``[batch, labels]``);
* ``activate`` (post, cross-encoders): sigmoid / softmax as the manifest says.

The batcher drives these steps separately (pre off the event loop, core in its executor thread);
``embed`` / ``predict`` run them inline for offline callers (export validation, benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twostage.server.bundle import Bundle, load_bundle
from twostage.server.errors import ConfigError
from twostage.server.runtime.pooling import activate
from twostage.server.runtime.session import OnnxSession
from twostage.server.runtime.tokenizer import Encoded, TextTokenizer, pad_batch

INPUT_TYPES = ("query", "document")


def choose_precision(bundle: Bundle, device: str, precision: str | None = None) -> str:
    """The variant to run: int8 on CPU, fp16 on CUDA, fp32 as the fallback on either.

    int8 never runs on CUDA: its quantized ops would fall back to the CPU there.
    """
    available = bundle.manifest.variants
    if precision is not None:
        if precision not in available:
            raise ConfigError(
                f"bundle {bundle.path.name} has no {precision} variant "
                f"(it has {', '.join(sorted(available))})",
                field="precision",
            )
        if device == "cuda" and precision == "int8":
            raise ConfigError(
                "the int8 variant cannot run on CUDA (quantized ops fall back to the CPU); "
                "use fp16 or fp32",
                field="precision",
            )
        if device == "cpu" and precision == "fp16":
            raise ConfigError("the fp16 variant is for CUDA; use int8 or fp32 on the CPU")
        return precision
    preferred = ("fp16", "fp32") if device == "cuda" else ("int8", "fp32")
    for key in preferred:
        if key in available:
            return key
    raise ConfigError(
        f"bundle {bundle.path.name} has no variant for {device} (it has {sorted(available)})"
    )


class EncoderRuntime:
    """Tokenizer + session of one bundle on one device."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "cpu",
        precision: str | None = None,
        intra_op_threads: int | None = None,
        device_id: int = 0,
    ) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.device = device
        self.precision = choose_precision(bundle, device, precision)
        self.tokenizer = TextTokenizer.from_file(bundle.path, self.manifest.max_length)
        self.session = OnnxSession(
            bundle.variant_path(self.precision),
            device=device,
            device_id=device_id,
            intra_op_threads=intra_op_threads,
            output_name=self.manifest.output_name,
        )

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    # -- pre ---------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], input_type: str | None = None) -> list[Encoded]:
        prefix = ""
        if input_type == "query":
            prefix = self.manifest.query_prefix
        elif input_type == "document":
            prefix = self.manifest.document_prefix
        if prefix:
            texts = [prefix + t for t in texts]
        return self.tokenizer.encode(texts)

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[Encoded]:
        return self.tokenizer.encode_pairs(pairs)

    def collate(self, items: Sequence[Encoded]) -> dict[str, np.ndarray]:
        return pad_batch(items, self.tokenizer.pad_id, self.session.input_names)

    # -- core --------------------------------------------------------------------------------
    def forward(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(feeds)

    def run_encoded(self, items: Sequence[Encoded], batch_size: int = 32) -> np.ndarray:
        """Forward pre-tokenized items in length-sorted batches; rows in the input order."""
        if not items:
            width = self.manifest.dim if self.kind == "embedder" else self.manifest.num_labels
            return np.zeros((0, width or 0), dtype=np.float32)
        order = np.argsort([len(e) for e in items], kind="stable")
        chunks: list[np.ndarray] = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            chunks.append(self.forward(self.collate([items[i] for i in idx])))
        stacked = np.concatenate(chunks, axis=0)
        out = np.empty_like(stacked)
        out[order] = stacked
        return out


class EmbedderRuntime(EncoderRuntime):
    """Bi-encoder: pooling and normalisation are inside the graph; output ``[batch, dim]``."""

    def embed(
        self, texts: Sequence[str], *, input_type: str | None = None, batch_size: int = 32
    ) -> np.ndarray:
        return self.run_encoded(self.tokenize(texts, input_type), batch_size)


class CrossEncoderRuntime(EncoderRuntime):
    """Cross-encoder (reranker or classifier): output logits ``[batch, num_labels]``."""

    @property
    def activation(self) -> str:
        return self.manifest.activation or "identity"

    @property
    def label_names(self) -> tuple[str, ...]:
        names = self.manifest.label_names
        n = self.manifest.num_labels or 1
        return names if names is not None else tuple(f"LABEL_{i}" for i in range(n))

    def activate(self, logits: np.ndarray) -> np.ndarray:
        return activate(logits, self.activation)

    def logits(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        return self.run_encoded(self.tokenize_pairs(pairs), batch_size)

    def predict(self, pairs: Sequence[tuple[str, str]], *, batch_size: int = 32) -> np.ndarray:
        """Scores ``[n]`` (sigmoid, one label) or probabilities ``[n, labels]`` (softmax)."""
        return self.activate(self.logits(pairs, batch_size=batch_size))


def load_runtime(
    path: Path | str | Bundle,
    *,
    device: str = "cpu",
    precision: str | None = None,
    intra_op_threads: int | None = None,
    device_id: int = 0,
    verify: bool = True,
) -> EmbedderRuntime | CrossEncoderRuntime:
    """Load a bundle folder (verifying the hash of the variant that will run) on a device."""
    bundle = path if isinstance(path, Bundle) else load_bundle(path, verify=False)
    chosen = choose_precision(bundle, device, precision)
    if verify:
        bundle.verify([chosen])
    cls = EmbedderRuntime if bundle.kind == "embedder" else CrossEncoderRuntime
    return cls(
        bundle,
        device=device,
        precision=chosen,
        intra_op_threads=intra_op_threads,
        device_id=device_id,
    )
