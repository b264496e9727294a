"""Upsert: embed documents with the collection's embedder, store them durably, index them.

The SQLite transaction commits before the call returns, so an acknowledged document survives a
crash (the index is rebuilt from SQLite or replayed on the next start).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from twostage.server.engine.models import Timings
from twostage.server.engine.search import Searcher
from twostage.server.errors import InvalidArgument


@dataclass(frozen=True)
class NewDocument:
    id: str
    text: str
    metadata: Mapping[str, str]


class Ingestor:
    """The Upsert and Delete operations."""

    def __init__(self, searcher: Searcher, snapshot_every: int) -> None:
        self.searcher = searcher
        self.collections = searcher.collections
        self.snapshot_every = snapshot_every

    async def upsert(
        self,
        collection_name: str,
        documents: Sequence[NewDocument],
        *,
        deadline: float | None = None,
    ) -> tuple[int, int, Timings]:
        """Returns (documents written, sequence number, timings)."""
        collection = self.collections.get(collection_name)
        seen: set[str] = set()
        for i, doc in enumerate(documents):
            if doc.id in seen:
                raise InvalidArgument(
                    f"documents[{i}].id: {doc.id!r} appears twice in one request", field="documents"
                )
            seen.add(doc.id)
        embedder = self.searcher.embedder_for(collection)
        timings = Timings()
        vectors = await embedder.embed(
            [d.text for d in documents], input_type="document", deadline=deadline, timings=timings
        )
        start = time.perf_counter_ns()
        seq = await asyncio.to_thread(
            collection.upsert,
            [d.id for d in documents],
            [d.text for d in documents],
            [dict(d.metadata) for d in documents],
            vectors,
        )
        timings.index_ns += time.perf_counter_ns() - start
        # Bounded replay on restart: snapshot once enough writes piled up (off the hot path).
        await asyncio.to_thread(collection.maybe_snapshot, self.snapshot_every)
        return len(documents), int(seq), timings

    async def delete(self, collection_name: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        collection = self.collections.get(collection_name)
        result = await asyncio.to_thread(collection.delete, list(ids))
        return result.deleted, list(result.missing)
