"""Small helpers shared by the server integration tests (data loading, stubs, vectors)."""

from __future__ import annotations

import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from twostage.protos.twostage.v1 import twostage_pb2 as pb


def vectors(reply: pb.EmbedResponse) -> np.ndarray:
    return np.stack([np.frombuffer(e.vector, dtype="<f4") for e in reply.embeddings])


def documents(corpus: list[dict], metadata_key: str | None = None) -> list[pb.Document]:
    docs = []
    for i, d in enumerate(corpus):
        meta = {metadata_key: str(i % 3)} if metadata_key else {}
        docs.append(pb.Document(id=d["_id"], text=f"{d['title']} {d['text']}", metadata=meta))
    return docs


def upsert_all(collections_stub, name: str, docs: list[pb.Document], batch: int = 100) -> int:
    seq = 0
    for start in range(0, len(docs), batch):
        reply = collections_stub.Upsert(
            pb.UpsertRequest(collection=name, documents=docs[start : start + batch]), timeout=300
        )
        assert reply.upserted == len(docs[start : start + batch])
        seq = reply.sequence
    return seq


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of the server's Prometheus samples called ``name`` that carry ``labels``."""
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
