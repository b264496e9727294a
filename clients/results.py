"""What the client returns: frozen dataclasses, built from the protobuf replies in one place.

Callers never see protobuf messages, so the wire format can change without breaking them, and
every method has exactly one return type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from twostage.protos.twostage.v1 import twostage_pb2 as pb


@dataclass(frozen=True)
class Timings:
    """Per-stage server timings of one call (nanoseconds), from the reply's ``Metadata``."""

    tokenize_ns: int = 0
    queue_ns: int = 0
    inference_ns: int = 0
    index_ns: int = 0
    total_ns: int = 0
    tokens: int = 0
    models: tuple[str, ...] = ()
    lexical_ns: int = 0

    @classmethod
    def from_proto(cls, meta: pb.Metadata) -> Timings:
        models = tuple(m for m in meta.models.split(",") if m)
        return cls(
            meta.tokenize_ns,
            meta.queue_ns,
            meta.inference_ns,
            meta.index_ns,
            meta.total_ns,
            meta.tokens,
            models,
            meta.lexical_ns,
        )


@dataclass(frozen=True)
class Document:
    """A stored document: unique ``id``, the ``text`` that is embedded, string metadata."""

    id: str
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self) -> pb.Document:
        return pb.Document(id=self.id, text=self.text, metadata=dict(self.metadata))

    @classmethod
    def from_proto(cls, doc: pb.Document) -> Document:
        return cls(doc.id, doc.text, dict(doc.metadata))


@dataclass(frozen=True)
class RankResult:
    """One reranked document: its position in the request, its score, its text if asked for."""

    index: int
    score: float
    document: str | None = None


@dataclass(frozen=True)
class Classification:
    """A classifier's verdict on one pair: the best label, its probability, all probabilities."""

    label: str
    label_index: int
    score: float
    probabilities: Mapping[str, float]


@dataclass(frozen=True)
class Hit:
    """One search hit. ``rerank_score`` is None when the candidates were not reranked."""

    id: str
    text: str
    metadata: Mapping[str, str]
    rank: int
    score: float
    dense_score: float
    dense_rank: int
    rerank_score: float | None
    # BM25 score (0: no query term matched) and rank in the lexical channel (0: not returned)
    lexical_score: float = 0.0
    lexical_rank: int = 0


@dataclass(frozen=True)
class SearchResult:
    """A search reply in full: hits, whether they were reranked, how ``score`` was made."""

    hits: tuple[Hit, ...]
    reranked: bool
    ranking: str
    timings: Timings

    @classmethod
    def from_proto(cls, reply: pb.SearchResponse) -> SearchResult:
        hits = tuple(
            Hit(
                id=h.id,
                text=h.text,
                metadata=dict(h.metadata),
                rank=h.rank,
                score=h.score,
                dense_score=h.dense_score,
                dense_rank=h.dense_rank,
                rerank_score=h.rerank_score if reply.reranked else None,
                lexical_score=h.lexical_score,
                lexical_rank=h.lexical_rank,
            )
            for h in reply.hits
        )
        return cls(hits, reply.reranked, reply.ranking, Timings.from_proto(reply.metadata))


_SPACE_NAMES = {
    pb.SPACE_UNSPECIFIED: "cosine",
    pb.SPACE_COSINE: "cosine",
    pb.SPACE_IP: "ip",
    pb.SPACE_L2: "l2",
}
SPACES = {"cosine": pb.SPACE_COSINE, "ip": pb.SPACE_IP, "l2": pb.SPACE_L2}


@dataclass(frozen=True)
class CollectionInfo:
    """A collection's size, vector shape, HNSW parameters and the embedder that built it."""

    name: str
    count: int
    dim: int
    space: str
    m: int
    ef_construction: int
    ef: int
    embedder: str
    embedder_source: str
    created_unix: int
    analyzer: str = "english"
    # what a default Search applies, and whether `twostage tune` chose it
    ranking: str = ""
    tuned: bool = False

    @classmethod
    def from_proto(cls, c: pb.CollectionInfo) -> CollectionInfo:
        return cls(
            c.name,
            c.count,
            c.dim,
            _SPACE_NAMES.get(c.space, str(c.space)),
            c.M,
            c.ef_construction,
            c.ef,
            c.embedder,
            c.embedder_source,
            c.created_unix,
            ANALYZER_NAMES.get(c.analyzer, "english"),
            c.ranking,
            c.tuned,
        )


ANALYZERS = {"english": pb.ANALYZER_ENGLISH, "simple": pb.ANALYZER_SIMPLE, "none": pb.ANALYZER_NONE}
ANALYZER_NAMES = {v: k for k, v in ANALYZERS.items()}
RETRIEVALS = {
    "dense": pb.RETRIEVAL_DENSE,
    "lexical": pb.RETRIEVAL_LEXICAL,
    "hybrid": pb.RETRIEVAL_HYBRID,
}


def fusion_from_spec(spec: str) -> pb.Fusion:
    """``rrf``, ``rrf:K``, ``zscore``, ``zscore:DENSE_WEIGHT`` or ``adaptive`` as the proto."""
    name, _, value = spec.partition(":")
    try:
        if name == "rrf":
            return pb.Fusion(method=pb.FUSION_METHOD_RRF, rrf_k=float(value) if value else 0.0)
        if name == "zscore":
            fusion = pb.Fusion(method=pb.FUSION_METHOD_ZSCORE)
            if value:
                fusion.dense_weight = float(value)
            return fusion
        if name == "adaptive" and not value:
            return pb.Fusion(method=pb.FUSION_METHOD_ADAPTIVE)
    except ValueError:
        pass
    raise ValueError(
        f"fusion must be rrf, rrf:K, zscore, zscore:DENSE_WEIGHT or adaptive; got {spec!r}"
    )


@dataclass(frozen=True)
class TuneMode:
    """One row of a tuning report: a ranking's nDCG@10 and its paired test against dense."""

    ranking: str
    ndcg10: float
    delta_vs_dense: float
    p_value: float
    recall100: float
    chosen: bool
    queries: int


@dataclass(frozen=True)
class TuneResult:
    modes: tuple[TuneMode, ...]
    ranking: str
    stored: bool
    queries: int

    @classmethod
    def from_proto(cls, reply: pb.TuneResponse) -> TuneResult:
        modes = tuple(
            TuneMode(
                m.ranking, m.ndcg10, m.delta_vs_dense, m.p_value, m.recall100, m.chosen, m.queries
            )
            for m in reply.modes
        )
        return cls(modes, reply.ranking, reply.stored, reply.queries)


@dataclass(frozen=True)
class UpsertResult:
    """Documents written, and the sequence number of the last write (all of it durable)."""

    upserted: int
    sequence: int


@dataclass(frozen=True)
class DeleteResult:
    """Documents deleted, and the ids that were not in the collection (not an error)."""

    deleted: int
    not_found: tuple[str, ...]


@dataclass(frozen=True)
class GetResult:
    """The documents found, in request order, and the ids that were not."""

    documents: tuple[Document, ...]
    not_found: tuple[str, ...]


_KIND_NAMES = {
    pb.MODEL_KIND_EMBEDDER: "embedder",
    pb.MODEL_KIND_RERANKER: "reranker",
    pb.MODEL_KIND_CLASSIFIER: "classifier",
}


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: what it is, where it came from, how it runs, how it was validated."""

    name: str
    kind: str
    source: str
    revision: str
    weights_sha256: str
    variant: str
    provider: str
    max_length: int
    dim: int
    pooling: str
    normalize: bool
    labels: tuple[str, ...]
    activation: str
    ranking: str
    validation: Mapping[str, float]
    is_default: bool

    @classmethod
    def from_proto(cls, m: pb.ModelInfo) -> ModelInfo:
        return cls(
            m.name,
            _KIND_NAMES.get(m.kind, "unspecified"),
            m.source,
            m.revision,
            m.weights_sha256,
            m.variant,
            m.provider,
            m.max_length,
            m.dim,
            m.pooling,
            m.normalize,
            tuple(m.labels),
            m.activation,
            m.ranking,
            dict(m.validation),
            m.is_default,
        )


@dataclass(frozen=True)
class Limits:
    """The server's request and batching limits (0 = not reported)."""

    max_texts_per_request: int = 0
    max_documents_per_upsert: int = 0
    max_top_k: int = 0
    max_candidates: int = 0
    max_text_chars: int = 0
    max_batch_tokens: int = 0
    max_batch_size: int = 0
    max_wait_ms: int = 0
    max_queue_tokens: int = 0
    max_inflight_requests: int = 0
    max_filter_keys: int = 0
    max_metadata_keys: int = 0
    max_metadata_key_chars: int = 0
    max_metadata_value_bytes: int = 0
    max_id_chars: int = 0
    max_tokenized_chars: int = 0

    @classmethod
    def from_proto(cls, lim: pb.Limits) -> Limits:
        known = {f.name for f in fields(cls)}
        return cls(
            **{f.name: getattr(lim, f.name) for f in lim.DESCRIPTOR.fields if f.name in known}
        )


@dataclass(frozen=True)
class ServerInfo:
    """Server version, device, loaded models and limits."""

    version: str
    device: str
    models: tuple[ModelInfo, ...]
    limits: Limits

    @classmethod
    def from_proto(cls, reply: pb.GetInfoResponse) -> ServerInfo:
        models = tuple(ModelInfo.from_proto(m) for m in reply.models)
        return cls(reply.version, reply.device, models, Limits.from_proto(reply.limits))


def embeddings_from_proto(reply: pb.EmbedResponse) -> np.ndarray:
    """The reply's packed little-endian float32 vectors as one ``[n, dim]`` float32 array."""
    n = len(reply.embeddings)
    dim = reply.dim
    out = np.empty((n, dim), dtype=np.float32)
    for i, emb in enumerate(reply.embeddings):
        vec = np.frombuffer(emb.vector, dtype="<f4")
        if vec.shape[0] != dim:
            raise ValueError(f"embedding {i} has {vec.shape[0]} values, the reply says dim={dim}")
        out[i] = vec
    return out


def rank_results_from_proto(reply: pb.RerankResponse, with_documents: bool) -> list[RankResult]:
    return [
        RankResult(r.index, r.score, r.document if with_documents else None) for r in reply.results
    ]


def classifications_from_proto(reply: pb.ScorePairsResponse) -> list[Classification]:
    names = list(reply.label_names)
    out = []
    for s in reply.scores:
        probs = list(s.probabilities)
        if not names or len(probs) != len(names):
            raise ValueError(
                "the model did not return class probabilities: it is a one-label reranker "
                "(use score_pairs), not a classifier"
            )
        out.append(
            Classification(s.label, s.label_index, s.score, dict(zip(names, probs, strict=True)))
        )
    return out


def as_document(doc: Document | Mapping[str, Any], position: int = 0) -> Document:
    """Accept a :class:`Document` or a mapping with ``id``, ``text``, optional ``metadata``."""
    if isinstance(doc, Document):
        return doc
    try:
        doc_id, text = doc["id"], doc["text"]
    except (KeyError, TypeError):
        raise ValueError(f"document {position}: needs 'id' and 'text'") from None
    meta = doc.get("metadata") or {}
    return Document(str(doc_id), str(text), {str(k): str(v) for k, v in meta.items()})
