"""Request validation and proto <-> domain conversion (the servicers stay thin).

Every check names the field and the limit, so a client sees e.g.
"texts: 300 texts given, the limit is 256" as INVALID_ARGUMENT.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.server import limits
from twostage.server.config import ServerConfig
from twostage.server.engine.models import Timings
from twostage.server.engine.tuning import LabeledQuery
from twostage.server.errors import InvalidArgument
from twostage.server.fusion import DEFAULT_RRF_K, FirstStageFusion

INPUT_TYPES = {
    pb.INPUT_TYPE_UNSPECIFIED: None,
    pb.INPUT_TYPE_QUERY: "query",
    pb.INPUT_TYPE_DOCUMENT: "document",
}
SPACES = {
    pb.SPACE_UNSPECIFIED: "cosine",
    pb.SPACE_COSINE: "cosine",
    pb.SPACE_IP: "ip",
    pb.SPACE_L2: "l2",
}
SPACE_ENUM = {"cosine": pb.SPACE_COSINE, "ip": pb.SPACE_IP, "l2": pb.SPACE_L2}
ANALYZERS = {
    pb.ANALYZER_UNSPECIFIED: "english",
    pb.ANALYZER_ENGLISH: "english",
    pb.ANALYZER_SIMPLE: "simple",
    pb.ANALYZER_NONE: "none",
}
ANALYZER_ENUM = {
    "english": pb.ANALYZER_ENGLISH,
    "simple": pb.ANALYZER_SIMPLE,
    "none": pb.ANALYZER_NONE,
}
RETRIEVALS = {
    pb.RETRIEVAL_UNSPECIFIED: None,
    pb.RETRIEVAL_DENSE: "dense",
    pb.RETRIEVAL_LEXICAL: "lexical",
    pb.RETRIEVAL_HYBRID: "hybrid",
}
FUSION_METHODS = {
    pb.FUSION_METHOD_RRF: "rrf",
    pb.FUSION_METHOD_ZSCORE: "zscore",
    pb.FUSION_METHOD_ADAPTIVE: "adaptive",
}
KIND_ENUM = {
    "embedder": pb.MODEL_KIND_EMBEDDER,
    "reranker": pb.MODEL_KIND_RERANKER,
    "classifier": pb.MODEL_KIND_CLASSIFIER,
}

_LITTLE_ENDIAN = sys.byteorder == "little"


def metadata(timings: Timings) -> pb.Metadata:
    return pb.Metadata(
        tokenize_ns=timings.tokenize_ns,
        queue_ns=timings.queue_ns,
        inference_ns=timings.inference_ns,
        index_ns=timings.index_ns,
        lexical_ns=timings.lexical_ns,
        total_ns=timings.total_ns,
        tokens=timings.tokens,
        models=",".join(timings.models),
    )


def embeddings(vectors: np.ndarray) -> list[pb.Embedding]:
    """Rows as packed little-endian float32 bytes."""
    arr = np.ascontiguousarray(vectors, dtype="<f4")
    return [pb.Embedding(vector=row.tobytes()) for row in arr]


def texts(
    values: Sequence[str], cfg: ServerConfig, *, field: str = "texts", limit: int | None = None
) -> list[str]:
    """A non-empty list of texts within the count and size limits (empty strings allowed)."""
    limit = limit or cfg.max_texts_per_request
    if not values:
        raise InvalidArgument(f"{field}: at least one text is required", field=field)
    if len(values) > limit:
        raise InvalidArgument(
            f"{field}: {len(values)} given, the limit is {limit} per request", field=field
        )
    out = list(values)
    for i, text in enumerate(out):
        if len(text) > cfg.max_text_chars:
            raise InvalidArgument(
                f"{field}[{i}]: {len(text)} characters, the limit is {cfg.max_text_chars}",
                field=field,
            )
    return out


def query(value: str, cfg: ServerConfig, field: str = "query") -> str:
    if not value.strip():
        raise InvalidArgument(f"{field}: must not be empty", field=field)
    if len(value) > cfg.max_text_chars:
        raise InvalidArgument(
            f"{field}: {len(value)} characters, the limit is {cfg.max_text_chars}", field=field
        )
    return value


def collection_name(value: str, field: str = "collection") -> str:
    if not value:
        raise InvalidArgument(f"{field}: a collection name is required", field=field)
    if not limits.valid_name(value):
        raise InvalidArgument(
            f"{field}: {value[:80]!r} is not a valid collection name ({limits.NAME_RULE})",
            field=field,
        )
    return value


def ids(values: Iterable[str], cfg: ServerConfig, field: str = "ids") -> list[str]:
    out = list(values)
    if not out:
        raise InvalidArgument(f"{field}: at least one id is required", field=field)
    if len(out) > cfg.max_documents_per_upsert:
        raise InvalidArgument(
            f"{field}: {len(out)} given, the limit is {cfg.max_documents_per_upsert}", field=field
        )
    for i, value in enumerate(out):
        if not value or len(value) > limits.MAX_ID_CHARS or "\x00" in value:
            raise InvalidArgument(
                f"{field}[{i}]: ids must be 1-{limits.MAX_ID_CHARS} characters without NUL",
                field=field,
            )
    return out


def filter_map(values: Mapping[str, str]) -> dict[str, str] | None:
    out = dict(values)
    problem = limits.filter_problem(out)
    if problem is not None:
        raise InvalidArgument(f"filter: {problem}", field="filter")
    return out or None


def document_metadata(values: Sequence[Mapping[str, str]], field: str = "documents") -> None:
    """Each document's metadata within the limits (checked before any text is embedded)."""
    for i, value in enumerate(values):
        problem = limits.metadata_problem(dict(value))
        if problem is not None:
            raise InvalidArgument(f"{field}[{i}].metadata: {problem}", field=field)


def search_depth(top_k: int, candidates: int, ef: int, cfg: ServerConfig) -> tuple[int, int, int]:
    """(top_k, candidates, ef) with defaults applied and limits checked."""
    top_k = top_k or cfg.default_top_k
    candidates = candidates or max(cfg.default_candidates, top_k)
    if top_k > cfg.max_top_k:
        raise InvalidArgument(f"top_k: {top_k} is over the limit {cfg.max_top_k}", field="top_k")
    if candidates > cfg.max_candidates:
        raise InvalidArgument(
            f"candidates: {candidates} is over the limit {cfg.max_candidates}", field="candidates"
        )
    if top_k > candidates:
        raise InvalidArgument(
            f"top_k: {top_k} is larger than candidates ({candidates}); raise candidates",
            field="top_k",
        )
    if ef and ef > 10 * cfg.max_candidates:
        raise InvalidArgument(f"ef: {ef} is over the limit {10 * cfg.max_candidates}", field="ef")
    return top_k, candidates, max(ef, candidates) if ef else 0


def enum_value(value: int, table: Mapping[int, object], field: str) -> object:
    """The domain value of a proto enum; an unknown number is refused, naming the field."""
    if value not in table:
        raise InvalidArgument(f"{field}: unknown value {value}", field=field)
    return table[value]


def input_type(value: int) -> str | None:
    return enum_value(value, INPUT_TYPES, "input_type")  # type: ignore[return-value]


def retrieval(value: int) -> str | None:
    return enum_value(value, RETRIEVALS, "retrieval")  # type: ignore[return-value]


def fusion(request: pb.SearchRequest) -> FirstStageFusion | None:
    """The request's first-stage fusion; ``None`` = the collection's default."""
    if not request.HasField("fusion"):
        return None
    f = request.fusion
    has_weight = f.HasField("dense_weight")
    if f.method == pb.FUSION_METHOD_UNSPECIFIED and not has_weight and not f.rrf_k:
        return None
    method = "zscore" if f.method == pb.FUSION_METHOD_UNSPECIFIED else None
    method = method or str(enum_value(f.method, FUSION_METHODS, "fusion.method"))
    if f.rrf_k and not (np.isfinite(f.rrf_k) and 0 < f.rrf_k <= 1e6):
        raise InvalidArgument(
            f"fusion.rrf_k: {f.rrf_k} must be a positive number", field="fusion.rrf_k"
        )
    weight = f.dense_weight if has_weight else 0.5
    if not (np.isfinite(weight) and 0.0 <= weight <= 1.0):
        raise InvalidArgument(
            f"fusion.dense_weight: {weight} must be in [0, 1]", field="fusion.dense_weight"
        )
    return FirstStageFusion(
        method=method, dense_weight=float(weight), rrf_k=float(f.rrf_k or DEFAULT_RRF_K)
    )


def channel_depths(request: pb.SearchRequest, candidates: int, cfg: ServerConfig) -> None:
    """Check the per-channel and rerank depths against the limits."""
    for name in ("dense_candidates", "lexical_candidates"):
        value = getattr(request, name)
        if value > cfg.max_candidates:
            raise InvalidArgument(
                f"{name}: {value} is over the limit {cfg.max_candidates}", field=name
            )
    if request.rerank_depth > candidates:
        raise InvalidArgument(
            f"rerank_depth: {request.rerank_depth} is larger than candidates ({candidates})",
            field="rerank_depth",
        )


def labeled_queries(values: Sequence[pb.LabeledQuery], cfg: ServerConfig) -> list[LabeledQuery]:
    """Tune's labelled queries: each a valid query with at least one relevant id."""
    if len(values) > limits.MAX_TUNE_QUERIES:
        raise InvalidArgument(
            f"queries: {len(values)} given, the limit is {limits.MAX_TUNE_QUERIES}", field="queries"
        )
    out = []
    for i, q in enumerate(values):
        text = query(q.query, cfg, field=f"queries[{i}].query")
        relevant = dict(q.relevant)
        for doc, grade in relevant.items():
            if not doc or len(doc) > limits.MAX_ID_CHARS or not np.isfinite(grade):
                raise InvalidArgument(
                    f"queries[{i}].relevant: ids must be 1-{limits.MAX_ID_CHARS} characters with "
                    "finite grades",
                    field="queries",
                )
        out.append(LabeledQuery(text, relevant))
    return out
