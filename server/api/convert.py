"""Request validation and proto <-> domain conversion (the servicers stay thin).

Every check names the field and the limit, so a client sees e.g.
"texts: 300 texts given, the limit is 256" as INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.server.config import ServerConfig
from twostage.server.engine.models import Timings
from twostage.server.errors import InvalidArgument

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ID_CHARS = 512

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
    if not COLLECTION_NAME.match(value):
        raise InvalidArgument(
            f"{field}: {value[:80]!r} is not a valid collection name (1-64 characters: letters, "
            "digits, '_', '-', '.'; starting with a letter or digit)",
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
        if not value or len(value) > MAX_ID_CHARS:
            raise InvalidArgument(
                f"{field}[{i}]: ids must be 1-{MAX_ID_CHARS} characters", field=field
            )
    return out


def filter_map(values: Mapping[str, str]) -> dict[str, str] | None:
    out = dict(values)
    for key in out:
        if not key:
            raise InvalidArgument("filter: keys must not be empty", field="filter")
    return out or None


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
