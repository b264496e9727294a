"""Python clients for a twostage server: :class:`TwostageClient` (blocking) and
:class:`AsyncTwostageClient` (asyncio), with the same typed methods.

The methods read like sentence-transformers (``encode``, ``rank``, ``score_pairs``) plus the
collection and search calls. Each method is written once as a generator of RPCs ("operation")
that both clients drive, so the two cannot drift apart.

Retries: only UNAVAILABLE, only for idempotent calls, with exponential backoff, done by gRPC's own
retry machinery (a service config on the channel), bounded by the call's timeout. Idempotent here:
Embed, Rerank, ScorePairs, Search, Get, ListCollections, DescribeCollection, GetInfo, health
Check, and Upsert (insert-or-replace by id: sending the same batch twice leaves the same state and
the same reply). Never retried: CreateCollection and DropCollection (a retry after a lost reply
would report ALREADY_EXISTS / NOT_FOUND for work that succeeded) and Delete (its ``deleted`` count
would be wrong after a retry).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twostage.clients.errors import DeadlineExceededError, from_rpc_error
from twostage.clients.results import (
    ANALYZERS,
    RETRIEVALS,
    SPACES,
    Classification,
    CollectionInfo,
    DeleteResult,
    Document,
    GetResult,
    Hit,
    RankResult,
    SearchResult,
    ServerInfo,
    TuneResult,
    UpsertResult,
    as_document,
    classifications_from_proto,
    embeddings_from_proto,
    fusion_from_spec,
    rank_results_from_proto,
)
from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 60.0
InputType = Literal["query", "document"]
T = TypeVar("T")

_INPUT_TYPES = {"query": pb.INPUT_TYPE_QUERY, "document": pb.INPUT_TYPE_DOCUMENT}
_PACKAGE = "twostage.v1"
_HEALTH = "grpc.health.v1.Health"
# (service, method) pairs that are safe to send twice; see the module docstring.
IDEMPOTENT_METHODS: tuple[tuple[str, str], ...] = (
    (f"{_PACKAGE}.Inference", "Embed"),
    (f"{_PACKAGE}.Inference", "Rerank"),
    (f"{_PACKAGE}.Inference", "ScorePairs"),
    (f"{_PACKAGE}.Search", "Search"),
    (f"{_PACKAGE}.Collections", "Get"),
    (f"{_PACKAGE}.Collections", "ListCollections"),
    (f"{_PACKAGE}.Collections", "DescribeCollection"),
    (f"{_PACKAGE}.Collections", "Upsert"),
    (f"{_PACKAGE}.Info", "GetInfo"),
    (_HEALTH, "Check"),
)
_STUBS = {
    "Inference": pb_grpc.InferenceStub,
    "Collections": pb_grpc.CollectionsStub,
    "Search": pb_grpc.SearchStub,
    "Info": pb_grpc.InfoStub,
    "Health": health_pb2_grpc.HealthStub,
}
_MESSAGE_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of UNAVAILABLE for idempotent calls. ``max_attempts`` counts the first try.

    gRPC caps attempts at 5. ``RetryPolicy(max_attempts=1)`` turns retries off (the load
    generator does, so that it sees every UNAVAILABLE).
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 5:
            raise ValueError(f"max_attempts must be 1..5 (gRPC's cap), got {self.max_attempts}")
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0 or self.multiplier <= 0:
            raise ValueError("backoff times and multiplier must be > 0")

    def service_config(self) -> str:
        """The gRPC service config (JSON) that applies this policy to the idempotent methods.

        Only valid with ``max_attempts >= 2`` (gRPC refuses a retry policy of one attempt).
        """
        names = [{"service": s, "method": m} for s, m in IDEMPOTENT_METHODS]
        policy = {
            "maxAttempts": self.max_attempts,
            "initialBackoff": f"{self.initial_backoff_s:.3f}s",
            "maxBackoff": f"{self.max_backoff_s:.3f}s",
            "backoffMultiplier": self.multiplier,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class SearchOptions:
    """The first-stage and rerank options of a search; unset values let the collection decide.

    ``retrieval``: ``dense``, ``lexical`` or ``hybrid``; ``fusion``: ``rrf``, ``rrf:K``,
    ``zscore``, ``zscore:DENSE_WEIGHT`` or ``adaptive``; depths 0 = ``candidates`` (rerank: the
    tuned or fitted depth).
    """

    retrieval: str | None = None
    fusion: str | None = None
    dense_candidates: int = 0
    lexical_candidates: int = 0
    rerank_depth: int = 0

    def apply(self, req: pb.SearchRequest) -> None:
        if self.retrieval is not None:
            if self.retrieval not in RETRIEVALS:
                raise ValueError(
                    f"retrieval must be one of {sorted(RETRIEVALS)}, got {self.retrieval!r}"
                )
            req.retrieval = RETRIEVALS[self.retrieval]
        if self.fusion is not None:
            req.fusion.CopyFrom(fusion_from_spec(self.fusion))
        req.dense_candidates = self.dense_candidates
        req.lexical_candidates = self.lexical_candidates
        req.rerank_depth = self.rerank_depth


@dataclass(frozen=True)
class _Call:
    """One RPC an operation wants made: stub name, method name, request message."""

    stub: str
    method: str
    request: Any


# An operation yields the RPCs it needs, receives each reply, and returns the typed result.
Operation = Generator[_Call, Any, T]


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _texts(texts: str | Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(t).__name__}")
    return out


def _pairs(pairs: Iterable[tuple[str, str]]) -> list[pb.TextPair]:
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ValueError(f"pairs[{i}] must be (text_a, text_b), got {len(pair)} items")
        out.append(pb.TextPair(text_a=pair[0], text_b=pair[1]))
    return out


class _Operations:
    """Every public method as an operation, shared by the sync and the async client."""

    @staticmethod
    def encode(
        texts: str | Sequence[str], input_type: InputType, model: str, batch_size: int
    ) -> Operation[np.ndarray]:
        items = _texts(texts, "texts")
        if input_type not in _INPUT_TYPES:
            raise ValueError(f"input_type must be 'query' or 'document', got {input_type!r}")
        parts: list[np.ndarray] = []
        for chunk in _chunks(items, batch_size):
            req = pb.EmbedRequest(texts=chunk, input_type=_INPUT_TYPES[input_type], model=model)
            parts.append(embeddings_from_proto((yield _Call("Inference", "Embed", req))))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    @staticmethod
    def rank(
        query: str,
        documents: Sequence[str],
        top_k: int | None,
        return_documents: bool,
        model: str,
        batch_size: int,
    ) -> Operation[list[RankResult]]:
        docs = _texts(documents, "documents")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        results: list[RankResult] = []
        offset = 0
        for chunk in _chunks(docs, batch_size):
            req = pb.RerankRequest(
                query=query,
                documents=chunk,
                top_n=top_k or 0,
                return_documents=return_documents,
                model=model,
            )
            reply = yield _Call("Inference", "Rerank", req)
            for r in rank_results_from_proto(reply, return_documents):
                results.append(RankResult(r.index + offset, r.score, r.document))
            offset += len(chunk)
        results.sort(key=lambda r: (-r.score, r.index))
        return results[:top_k] if top_k else results

    @staticmethod
    def score_pairs(
        pairs: Iterable[tuple[str, str]], model: str, batch_size: int
    ) -> Operation[np.ndarray]:
        scores: list[float] = []
        for chunk in _chunks(_pairs(pairs), batch_size):
            reply = yield _Call(
                "Inference", "ScorePairs", pb.ScorePairsRequest(pairs=chunk, model=model)
            )
            scores.extend(s.score for s in reply.scores)
        return np.asarray(scores, dtype=np.float32)

    @staticmethod
    def classify(
        pairs: Iterable[tuple[str, str]], model: str, batch_size: int
    ) -> Operation[list[Classification]]:
        out: list[Classification] = []
        for chunk in _chunks(_pairs(pairs), batch_size):
            reply = yield _Call(
                "Inference", "ScorePairs", pb.ScorePairsRequest(pairs=chunk, model=model)
            )
            out.extend(classifications_from_proto(reply))
        return out

    @staticmethod
    def create_collection(
        name: str,
        space: str,
        m: int,
        ef_construction: int,
        ef: int,
        embedder: str,
        analyzer: str = "english",
    ) -> Operation[CollectionInfo]:
        if space not in SPACES:
            raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
        if analyzer not in ANALYZERS:
            raise ValueError(f"analyzer must be one of {sorted(ANALYZERS)}, got {analyzer!r}")
        req = pb.CreateCollectionRequest(
            name=name,
            M=m,
            ef_construction=ef_construction,
            space=SPACES[space],
            ef=ef,
            embedder=embedder,
            analyzer=ANALYZERS[analyzer],
        )
        reply = yield _Call("Collections", "CreateCollection", req)
        return CollectionInfo.from_proto(reply.collection)

    @staticmethod
    def list_collections() -> Operation[list[CollectionInfo]]:
        reply = yield _Call("Collections", "ListCollections", pb.ListCollectionsRequest())
        return [CollectionInfo.from_proto(c) for c in reply.collections]

    @staticmethod
    def describe_collection(name: str) -> Operation[CollectionInfo]:
        req = pb.DescribeCollectionRequest(name=name)
        reply = yield _Call("Collections", "DescribeCollection", req)
        return CollectionInfo.from_proto(reply.collection)

    @staticmethod
    def drop_collection(name: str) -> Operation[None]:
        yield _Call("Collections", "DropCollection", pb.DropCollectionRequest(name=name))
        return None

    @staticmethod
    def upsert(
        collection: str, documents: Iterable[Document | Mapping[str, Any]], batch_size: int
    ) -> Operation[UpsertResult]:
        docs = [as_document(d, i).to_proto() for i, d in enumerate(documents)]
        upserted, sequence = 0, 0
        for chunk in _chunks(docs, batch_size):
            reply = yield _Call(
                "Collections", "Upsert", pb.UpsertRequest(collection=collection, documents=chunk)
            )
            upserted += reply.upserted
            sequence = max(sequence, reply.sequence)
        return UpsertResult(upserted, sequence)

    @staticmethod
    def delete(collection: str, ids: Sequence[str]) -> Operation[DeleteResult]:
        req = pb.DeleteRequest(collection=collection, ids=_texts(ids, "ids"))
        reply = yield _Call("Collections", "Delete", req)
        return DeleteResult(reply.deleted, tuple(reply.not_found))

    @staticmethod
    def get(collection: str, ids: Sequence[str]) -> Operation[GetResult]:
        req = pb.GetRequest(collection=collection, ids=_texts(ids, "ids"))
        reply = yield _Call("Collections", "Get", req)
        docs = tuple(Document.from_proto(d) for d in reply.documents)
        return GetResult(docs, tuple(reply.not_found))

    @staticmethod
    def search(
        collection: str,
        query: str,
        top_k: int,
        candidates: int,
        rerank: bool | None,
        ef: int,
        filter: Mapping[str, str] | None,
        reranker: str,
        options: SearchOptions | None = None,
    ) -> Operation[SearchResult]:
        req = pb.SearchRequest(
            collection=collection,
            query=query,
            top_k=top_k,
            candidates=candidates,
            ef=ef,
            filter=dict(filter or {}),
            reranker=reranker,
        )
        if rerank is not None:
            req.rerank = rerank
        if options is not None:
            options.apply(req)
        return SearchResult.from_proto((yield _Call("Search", "Search", req)))

    @staticmethod
    def tune(
        collection: str,
        queries: Sequence[tuple[str, Mapping[str, float]]],
        rerank: bool | None,
        dry_run: bool,
    ) -> Operation[TuneResult]:
        req = pb.TuneRequest(collection=collection, dry_run=dry_run)
        for text, relevant in queries:
            req.queries.add(query=text, relevant={k: float(v) for k, v in relevant.items()})
        if rerank is not None:
            req.rerank = rerank
        return TuneResult.from_proto((yield _Call("Collections", "Tune", req)))

    @staticmethod
    def info() -> Operation[ServerInfo]:
        return ServerInfo.from_proto((yield _Call("Info", "GetInfo", pb.GetInfoRequest())))

    @staticmethod
    def health(service: str) -> Operation[str]:
        reply = yield _Call("Health", "Check", health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _read_certificates(root_certificates: bytes | str | Path | None) -> bytes | None:
    if root_certificates is None or isinstance(root_certificates, bytes):
        return root_certificates
    path = Path(root_certificates)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read root certificates {path}: {e.strerror}") from None


class _ClientBase:
    """Channel settings shared by both clients: address, TLS, token, retries, timeout."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        token: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not address:
            raise ValueError("address must be HOST:PORT")
        self.address = address
        self.timeout = timeout
        self._tls = tls or root_certificates is not None
        self._root_certificates = _read_certificates(root_certificates)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        retrying = retry.max_attempts > 1
        self._options = [
            ("grpc.enable_retries", 1 if retrying else 0),
            *([("grpc.service_config", retry.service_config())] if retrying else []),
            ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
            ("grpc.max_send_message_length", _MESSAGE_LIMIT),
            # Requests larger than the retry buffer are not retried; upsert batches can be large.
            ("grpc.per_rpc_retry_buffer_size", _MESSAGE_LIMIT),
            *options,
        ]
        creds = (
            grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
            if self._tls
            else None
        )
        self._channel = self._open_channel(creds)
        self._stubs = {name: cls(self._channel) for name, cls in _STUBS.items()}

    def _open_channel(self, creds: grpc.ChannelCredentials | None) -> Any:
        raise NotImplementedError

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def __repr__(self) -> str:
        scheme = "tls" if self._tls else "plaintext"
        return f"{type(self).__name__}({self.address!r}, {scheme})"


class TwostageClient(_ClientBase):
    """Blocking client. ``timeout`` (seconds) is per RPC; methods that send in batches
    (``encode``, ``rank``, ``upsert``, ...) give each batch its own timeout.

    >>> with TwostageClient("127.0.0.1:50051") as client:
    ...     vectors = client.encode(["a query"], input_type="query")
    """

    def _open_channel(self, creds: grpc.ChannelCredentials | None) -> grpc.Channel:
        if creds is None:
            return grpc.insecure_channel(self.address, options=self._options)
        return grpc.secure_channel(self.address, creds, options=self._options)

    def _run(self, op: Operation[T], timeout: float | None) -> T:
        deadline = self._timeout(timeout)
        try:
            call = next(op)
            while True:
                method = getattr(self._stubs[call.stub], call.method)
                try:
                    reply = method(call.request, timeout=deadline, metadata=self._metadata)
                except grpc.RpcError as e:
                    raise from_rpc_error(e, method=call.method) from e
                call = op.send(reply)
        except StopIteration as stop:
            return stop.value

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> TwostageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Inference ---------------------------------------------------------------------------

    def encode(
        self,
        texts: str | Sequence[str],
        input_type: InputType = "document",
        *,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Embed texts: a ``[n, dim]`` float32 array in input order (a single str gives n=1).

        Use ``input_type="query"`` for search queries (models that prefix queries need it).
        """
        return self._run(_Operations.encode(texts, input_type, model, batch_size), timeout)

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        return_documents: bool = False,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> list[RankResult]:
        """Score documents against a query with the cross-encoder; best first, ``top_k`` kept."""
        op = _Operations.rank(query, documents, top_k, return_documents, model, batch_size)
        return self._run(op, timeout)

    def score_pairs(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> np.ndarray:
        """One score per (text_a, text_b) pair, in input order, like ``CrossEncoder.predict``."""
        return self._run(_Operations.score_pairs(pairs, model, batch_size), timeout)

    def classify(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> list[Classification]:
        """Classify pairs with a classifier model (e.g. NLI): label and class probabilities."""
        return self._run(_Operations.classify(pairs, model, batch_size), timeout)

    # --- Collections -------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        space: str = "cosine",
        m: int = 0,
        ef_construction: int = 0,
        ef: int = 0,
        embedder: str = "",
        analyzer: str = "english",
        timeout: float | None = None,
    ) -> CollectionInfo:
        """Create an empty collection (0 = server default for the HNSW parameters); ``analyzer``
        sets its lexical channel: ``english`` (default), ``simple`` or ``none``."""
        op = _Operations.create_collection(name, space, m, ef_construction, ef, embedder, analyzer)
        return self._run(op, timeout)

    def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        """All collections with their sizes."""
        return self._run(_Operations.list_collections(), timeout)

    def describe_collection(self, name: str, *, timeout: float | None = None) -> CollectionInfo:
        """One collection's size and parameters; NotFoundError if it does not exist."""
        return self._run(_Operations.describe_collection(name), timeout)

    def drop_collection(self, name: str, *, timeout: float | None = None) -> None:
        """Delete a collection and its documents."""
        self._run(_Operations.drop_collection(name), timeout)

    def upsert(
        self,
        collection: str,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> UpsertResult:
        """Insert or replace documents by id, ``batch_size`` per request; returns once durable."""
        return self._run(_Operations.upsert(collection, documents, batch_size), timeout)

    def delete(
        self, collection: str, ids: Sequence[str], *, timeout: float | None = None
    ) -> DeleteResult:
        """Delete documents by id; ids that are absent are reported, not an error."""
        return self._run(_Operations.delete(collection, ids), timeout)

    def get(
        self, collection: str, ids: Sequence[str], *, timeout: float | None = None
    ) -> GetResult:
        """Fetch documents by id: those found in request order, and the ids not found."""
        return self._run(_Operations.get(collection, ids), timeout)

    # --- Search ------------------------------------------------------------------------------

    def search(
        self,
        collection: str,
        query: str,
        top_k: int = 10,
        candidates: int = 100,
        rerank: bool | None = None,
        *,
        ef: int = 0,
        filter: Mapping[str, str] | None = None,
        reranker: str = "",
        retrieval: str | None = None,
        fusion: str | None = None,
        dense_candidates: int = 0,
        lexical_candidates: int = 0,
        rerank_depth: int = 0,
        timeout: float | None = None,
    ) -> list[Hit]:
        """Search: a first stage of ``candidates`` (dense, lexical or hybrid; by default the
        collection's), reranked where that earns its cost, best ``top_k`` returned.

        ``rerank=None`` lets the collection decide (yes only where ``twostage tune`` found a
        gain). ``retrieval``: ``dense``, ``lexical`` or ``hybrid``; ``fusion``: ``rrf``,
        ``rrf:K``, ``zscore``, ``zscore:DENSE_WEIGHT`` or ``adaptive``; per-channel and rerank
        depths 0 = the defaults (see :class:`SearchOptions`).
        """
        return list(
            self.search_detailed(
                collection,
                query,
                top_k,
                candidates,
                rerank,
                ef=ef,
                filter=filter,
                reranker=reranker,
                retrieval=retrieval,
                fusion=fusion,
                dense_candidates=dense_candidates,
                lexical_candidates=lexical_candidates,
                rerank_depth=rerank_depth,
                timeout=timeout,
            ).hits
        )

    def search_detailed(
        self,
        collection: str,
        query: str,
        top_k: int = 10,
        candidates: int = 100,
        rerank: bool | None = None,
        *,
        ef: int = 0,
        filter: Mapping[str, str] | None = None,
        reranker: str = "",
        retrieval: str | None = None,
        fusion: str | None = None,
        dense_candidates: int = 0,
        lexical_candidates: int = 0,
        rerank_depth: int = 0,
        timeout: float | None = None,
    ) -> SearchResult:
        """Like :meth:`search`, with whether it reranked, the ranking rule and server timings."""
        options = SearchOptions(
            retrieval, fusion, dense_candidates, lexical_candidates, rerank_depth
        )
        op = _Operations.search(
            collection, query, top_k, candidates, rerank, ef, filter, reranker, options
        )
        return self._run(op, timeout)

    def tune(
        self,
        collection: str,
        queries: Sequence[tuple[str, Mapping[str, float]]],
        *,
        rerank: bool | None = None,
        dry_run: bool = False,
        timeout: float | None = 3600.0,
    ) -> TuneResult:
        """Fit how Search ranks ``collection`` on labelled ``(query, {doc id: grade})`` pairs
        and store it (unless ``dry_run``); returns every mode measured."""
        return self._run(_Operations.tune(collection, queries, rerank, dry_run), timeout)

    # --- Info and health ---------------------------------------------------------------------

    def info(self, *, timeout: float | None = None) -> ServerInfo:
        """Server version, device, loaded models and limits."""
        return self._run(_Operations.info(), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """Health status name (``"SERVING"``, ``"NOT_SERVING"``, ...) of the server or a service
        (e.g. ``"twostage.v1.Search"``)."""
        return self._run(_Operations.health(service), timeout)

    def wait_until_serving(self, service: str = "", *, timeout: float = 60.0) -> None:
        """Block until the health status is SERVING (follows the health Watch stream)."""
        stub = self._stubs["Health"]
        req = health_pb2.HealthCheckRequest(service=service)
        try:
            stream = stub.Watch(req, timeout=timeout, metadata=self._metadata, wait_for_ready=True)
            for reply in stream:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    stream.cancel()
                    return
        except grpc.RpcError as e:
            raise from_rpc_error(e, method="Watch") from e
        raise DeadlineExceededError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "health stream ended before SERVING", method="Watch"
        )


class AsyncTwostageClient(_ClientBase):
    """asyncio client with the same methods as :class:`TwostageClient`, as coroutines.

    Create it inside the running event loop (the channel binds to it).
    """

    def _open_channel(self, creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        if creds is None:
            return grpc.aio.insecure_channel(self.address, options=self._options)
        return grpc.aio.secure_channel(self.address, creds, options=self._options)

    async def _run(self, op: Operation[T], timeout: float | None) -> T:
        deadline = self._timeout(timeout)
        try:
            call = next(op)
            while True:
                method = getattr(self._stubs[call.stub], call.method)
                try:
                    reply = await method(call.request, timeout=deadline, metadata=self._metadata)
                except grpc.RpcError as e:
                    raise from_rpc_error(e, method=call.method) from e
                call = op.send(reply)
        except StopIteration as stop:
            return stop.value

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncTwostageClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def encode(
        self,
        texts: str | Sequence[str],
        input_type: InputType = "document",
        *,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> np.ndarray:
        """See :meth:`TwostageClient.encode`."""
        return await self._run(_Operations.encode(texts, input_type, model, batch_size), timeout)

    async def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        return_documents: bool = False,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> list[RankResult]:
        """See :meth:`TwostageClient.rank`."""
        op = _Operations.rank(query, documents, top_k, return_documents, model, batch_size)
        return await self._run(op, timeout)

    async def score_pairs(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> np.ndarray:
        """See :meth:`TwostageClient.score_pairs`."""
        return await self._run(_Operations.score_pairs(pairs, model, batch_size), timeout)

    async def classify(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        model: str = "",
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> list[Classification]:
        """See :meth:`TwostageClient.classify`."""
        return await self._run(_Operations.classify(pairs, model, batch_size), timeout)

    async def create_collection(
        self,
        name: str,
        *,
        space: str = "cosine",
        m: int = 0,
        ef_construction: int = 0,
        ef: int = 0,
        embedder: str = "",
        analyzer: str = "english",
        timeout: float | None = None,
    ) -> CollectionInfo:
        """See :meth:`TwostageClient.create_collection`."""
        op = _Operations.create_collection(name, space, m, ef_construction, ef, embedder, analyzer)
        return await self._run(op, timeout)

    async def list_collections(self, *, timeout: float | None = None) -> list[CollectionInfo]:
        """See :meth:`TwostageClient.list_collections`."""
        return await self._run(_Operations.list_collections(), timeout)

    async def describe_collection(
        self, name: str, *, timeout: float | None = None
    ) -> CollectionInfo:
        """See :meth:`TwostageClient.describe_collection`."""
        return await self._run(_Operations.describe_collection(name), timeout)

    async def drop_collection(self, name: str, *, timeout: float | None = None) -> None:
        """See :meth:`TwostageClient.drop_collection`."""
        await self._run(_Operations.drop_collection(name), timeout)

    async def upsert(
        self,
        collection: str,
        documents: Iterable[Document | Mapping[str, Any]],
        *,
        batch_size: int = 64,
        timeout: float | None = None,
    ) -> UpsertResult:
        """See :meth:`TwostageClient.upsert`."""
        return await self._run(_Operations.upsert(collection, documents, batch_size), timeout)

    async def delete(
        self, collection: str, ids: Sequence[str], *, timeout: float | None = None
    ) -> DeleteResult:
        """See :meth:`TwostageClient.delete`."""
        return await self._run(_Operations.delete(collection, ids), timeout)

    async def get(
        self, collection: str, ids: Sequence[str], *, timeout: float | None = None
    ) -> GetResult:
        """See :meth:`TwostageClient.get`."""
        return await self._run(_Operations.get(collection, ids), timeout)

    async def search(
        self,
        collection: str,
        query: str,
        top_k: int = 10,
        candidates: int = 100,
        rerank: bool | None = None,
        *,
        ef: int = 0,
        filter: Mapping[str, str] | None = None,
        reranker: str = "",
        retrieval: str | None = None,
        fusion: str | None = None,
        dense_candidates: int = 0,
        lexical_candidates: int = 0,
        rerank_depth: int = 0,
        timeout: float | None = None,
    ) -> list[Hit]:
        """See :meth:`TwostageClient.search`."""
        result = await self.search_detailed(
            collection,
            query,
            top_k,
            candidates,
            rerank,
            ef=ef,
            filter=filter,
            reranker=reranker,
            retrieval=retrieval,
            fusion=fusion,
            dense_candidates=dense_candidates,
            lexical_candidates=lexical_candidates,
            rerank_depth=rerank_depth,
            timeout=timeout,
        )
        return list(result.hits)

    async def search_detailed(
        self,
        collection: str,
        query: str,
        top_k: int = 10,
        candidates: int = 100,
        rerank: bool | None = None,
        *,
        ef: int = 0,
        filter: Mapping[str, str] | None = None,
        reranker: str = "",
        retrieval: str | None = None,
        fusion: str | None = None,
        dense_candidates: int = 0,
        lexical_candidates: int = 0,
        rerank_depth: int = 0,
        timeout: float | None = None,
    ) -> SearchResult:
        """See :meth:`TwostageClient.search_detailed`."""
        options = SearchOptions(
            retrieval, fusion, dense_candidates, lexical_candidates, rerank_depth
        )
        op = _Operations.search(
            collection, query, top_k, candidates, rerank, ef, filter, reranker, options
        )
        return await self._run(op, timeout)

    async def tune(
        self,
        collection: str,
        queries: Sequence[tuple[str, Mapping[str, float]]],
        *,
        rerank: bool | None = None,
        dry_run: bool = False,
        timeout: float | None = 3600.0,
    ) -> TuneResult:
        """See :meth:`TwostageClient.tune`."""
        return await self._run(_Operations.tune(collection, queries, rerank, dry_run), timeout)

    async def info(self, *, timeout: float | None = None) -> ServerInfo:
        """See :meth:`TwostageClient.info`."""
        return await self._run(_Operations.info(), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """See :meth:`TwostageClient.health`."""
        return await self._run(_Operations.health(service), timeout)

    async def wait_until_serving(self, service: str = "", *, timeout: float = 60.0) -> None:
        """See :meth:`TwostageClient.wait_until_serving`."""
        stub = self._stubs["Health"]
        req = health_pb2.HealthCheckRequest(service=service)
        stream: AsyncIterator[Any] = stub.Watch(
            req, timeout=timeout, metadata=self._metadata, wait_for_ready=True
        )
        try:
            async for reply in stream:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    stream.cancel()  # type: ignore[attr-defined]
                    return
        except grpc.RpcError as e:
            raise from_rpc_error(e, method="Watch") from e
        raise DeadlineExceededError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "health stream ended before SERVING", method="Watch"
        )
