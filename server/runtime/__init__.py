"""L1: run a bundle — tokenizer, ONNX session, activation — on the CPU or a CUDA device."""

from twostage.server.runtime.model import (
    CrossEncoderRuntime,
    EmbedderRuntime,
    EncoderRuntime,
    choose_precision,
    load_runtime,
)
from twostage.server.runtime.tokenizer import Encoded, TextTokenizer, pad_batch

__all__ = [
    "CrossEncoderRuntime",
    "EmbedderRuntime",
    "Encoded",
    "EncoderRuntime",
    "TextTokenizer",
    "choose_precision",
    "load_runtime",
    "pad_batch",
]
