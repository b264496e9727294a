"""Output activations of cross-encoders (pooling of embedders lives inside the ONNX graph).

Mirrors sentence-transformers' ``CrossEncoder``: sigmoid for one logit, softmax for several.
"""

from __future__ import annotations

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = np.asarray(logits, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Row-wise softmax, float32."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=axis, keepdims=True)
    ex = np.exp(shifted)
    return ex / ex.sum(axis=axis, keepdims=True)


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Apply the bundle's activation to a ``[batch, num_labels]`` logit array.

    One label returns ``[batch]`` scores; several return ``[batch, num_labels]`` probabilities.
    """
    x = np.asarray(logits, dtype=np.float32)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if activation == "sigmoid":
        return sigmoid(x)
    if activation == "softmax":
        return softmax(x, axis=-1)
    if activation == "identity":
        return x
    raise ValueError(f"unknown activation {activation!r}")
