"""twostage: two-stage retrieval inference server (bi-encoder + ANN, then cross-encoder rerank)."""

from __future__ import annotations

__version__ = "0.1.0"
