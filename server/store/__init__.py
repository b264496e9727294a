"""Per-collection storage: SQLite documents (the truth), the vector index, snapshots, recovery.

Layer L1: plain synchronous, thread-safe code; the engine calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

from twostage.server.store.collections import (
    Collection,
    CollectionConfig,
    CollectionManager,
    DeleteResult,
    SearchHit,
)
from twostage.server.store.documents import Change, Deleted, Document, DocumentStore, Upserted
from twostage.server.store.recovery import RecoveryReport
from twostage.server.store.vector_index import (
    CorruptIndex,
    ExactIndex,
    HnswIndex,
    IndexParams,
    VectorIndex,
)

__all__ = [
    "Change",
    "Collection",
    "CollectionConfig",
    "CollectionManager",
    "CorruptIndex",
    "DeleteResult",
    "Deleted",
    "Document",
    "DocumentStore",
    "ExactIndex",
    "HnswIndex",
    "IndexParams",
    "RecoveryReport",
    "SearchHit",
    "Upserted",
    "VectorIndex",
]
