"""Clients of a twostage server: Python API, command-line commands, BEIR evaluation, load tests.

Imports only the generated protos, grpc and numpy (plus client-side tools), so a client install
needs no onnxruntime. Names resolve lazily so ``twostage --help`` does not pay for grpc.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TwostageClient": "twostage.clients.client",
    "AsyncTwostageClient": "twostage.clients.client",
    "RetryPolicy": "twostage.clients.client",
    "Document": "twostage.clients.results",
    "Hit": "twostage.clients.results",
    "RankResult": "twostage.clients.results",
    "Classification": "twostage.clients.results",
    "CollectionInfo": "twostage.clients.results",
    "SearchResult": "twostage.clients.results",
    "ServerInfo": "twostage.clients.results",
    "TwostageError": "twostage.clients.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
