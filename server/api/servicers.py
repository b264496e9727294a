"""The gRPC servicers: validate, call the engine, build the reply. Thin by design.

Every method goes through :func:`_handler`, which takes an admission permit (RESOURCE_EXHAUSTED at
once when the server is full), turns the call's deadline into an absolute one for the batcher,
refuses calls while the server is starting or draining (UNAVAILABLE), maps domain errors to status
codes and records the per-RPC metrics.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from twostage import __version__
from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc
from twostage.server import limits
from twostage.server.api import convert
from twostage.server.api.status import to_status
from twostage.server.batching import Admission, DeadlineAdmission, Ticket
from twostage.server.config import ServerConfig
from twostage.server.engine.ingest import Ingestor, NewDocument
from twostage.server.engine.models import CrossEncoder, Embedder, Timings
from twostage.server.engine.registry import ModelRegistry
from twostage.server.engine.search import Searcher, ranking_name
from twostage.server.engine.tuning import Tuner
from twostage.server.errors import InvalidArgument, Unavailable
from twostage.server.metrics import Metrics
from twostage.server.store.collections import Collection, CollectionManager

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass
class ServingState:
    """What the servicers share; ``ready`` flips once models are warm, off when draining."""

    cfg: ServerConfig
    metrics: Metrics
    admission: Admission
    deadlines: DeadlineAdmission
    registry: ModelRegistry | None = None
    collections: CollectionManager | None = None
    searcher: Searcher | None = None
    ingestor: Ingestor | None = None
    ready: bool = False
    draining: bool = False

    def require_ready(self) -> None:
        if self.draining:
            raise Unavailable("server is shutting down; retry on another replica")
        if not self.ready:
            raise Unavailable("server is starting (models warming up); retry shortly")


# Calls whose latency measures the service (see DeadlineAdmission): they ran, or waited it out.
_MEASURED = (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)


def _kind(method: str, request: Any) -> str:
    """The admission kind of a call: its method; a Search that asks for rerank apart."""
    if method == "Search" and request.HasField("rerank") and request.rerank:
        return "Search+rerank"
    return method


def _handler(
    method: str,
) -> Callable[
    [Callable[[Any, Any, grpc.aio.ServicerContext, float | None], Awaitable[Any]]],
    Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]],
]:
    def wrap(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def call(self: _Base, request: Any, context: grpc.aio.ServicerContext) -> Any:
            state = self.state
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            ticket: Ticket | None = None
            state.metrics.inflight.inc()
            try:
                if isinstance(request, Unparsable):
                    raise InvalidArgument(request.message, field="request")
                state.require_ready()
                with state.admission.try_acquire():
                    remaining = context.time_remaining()
                    deadline = time.monotonic() + remaining if remaining is not None else None
                    ticket = state.deadlines.admit(_kind(method, request), remaining)
                    return await fn(self, request, context, deadline)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:  # mapped to a status; INTERNAL for anything unexpected
                code, message = to_status(exc)
                await context.abort(code, message)
            finally:
                if ticket is not None:
                    ticket.finish(measured=code in _MEASURED)
                state.metrics.inflight.dec()
                state.metrics.requests.labels(method, code.name).inc()
                state.metrics.request_latency.labels(method).observe(time.perf_counter() - started)

        return call

    return wrap


class _Base:
    def __init__(self, state: ServingState) -> None:
        self.state = state

    @property
    def registry(self) -> ModelRegistry:
        assert self.state.registry is not None
        return self.state.registry

    @property
    def collections(self) -> CollectionManager:
        assert self.state.collections is not None
        return self.state.collections


class InferenceServicer(_Base, pb_grpc.InferenceServicer):
    @_handler("Embed")
    async def Embed(self, request, context, deadline):  # type: ignore[no-untyped-def]
        texts = convert.texts(request.texts, self.state.cfg)
        embedder = self.registry.embedder(request.model)
        timings = Timings()
        vectors = await embedder.embed(
            texts,
            input_type=convert.input_type(request.input_type),
            deadline=deadline,
            timings=timings,
        )
        return pb.EmbedResponse(
            embeddings=convert.embeddings(vectors),
            dim=embedder.dim,
            model=embedder.name,
            metadata=convert.metadata(timings),
        )

    @_handler("Rerank")
    async def Rerank(self, request, context, deadline):  # type: ignore[no-untyped-def]
        query = convert.query(request.query, self.state.cfg)
        documents = convert.texts(request.documents, self.state.cfg, field="documents")
        reranker = self.registry.reranker(request.model)
        timings = Timings()
        ranked = await reranker.rerank(
            query, documents, top_n=request.top_n, deadline=deadline, timings=timings
        )
        results = [
            pb.RerankResult(
                index=i, score=score, document=documents[i] if request.return_documents else ""
            )
            for i, score in ranked
        ]
        return pb.RerankResponse(
            results=results, model=reranker.name, metadata=convert.metadata(timings)
        )

    @_handler("ScorePairs")
    async def ScorePairs(self, request, context, deadline):  # type: ignore[no-untyped-def]
        if not request.pairs:
            raise InvalidArgument("pairs: at least one pair is required", field="pairs")
        convert.texts([p.text_a for p in request.pairs], self.state.cfg, field="pairs")
        convert.texts([p.text_b for p in request.pairs], self.state.cfg, field="pairs")
        model = self.registry.pair_scorer(request.model)
        timings = Timings()
        logits = await model.logits(
            [(p.text_a, p.text_b) for p in request.pairs], deadline=deadline, timings=timings
        )
        activated = model.activate(logits)
        reply = pb.ScorePairsResponse(model=model.name, metadata=convert.metadata(timings))
        if activated.ndim == 1:
            reply.scores.extend(pb.PairScore(score=float(s)) for s in activated)
        else:
            names = model.label_names
            reply.label_names.extend(names)
            best = np.argmax(activated, axis=1)
            for row, b in zip(activated, best, strict=True):
                reply.scores.append(
                    pb.PairScore(
                        score=float(row[b]),
                        probabilities=[float(x) for x in row],
                        label=names[int(b)],
                        label_index=int(b),
                    )
                )
        return reply


def _collection_info(collection: Collection, ranking: str = "") -> pb.CollectionInfo:
    d = collection.describe()
    try:
        created = int(datetime.fromisoformat(d.get("created", "")).timestamp())
    except ValueError:
        created = 0
    return pb.CollectionInfo(
        name=d["name"],
        count=int(d["count"]),
        dim=int(d["dim"]),
        space=convert.SPACE_ENUM.get(d["space"], pb.SPACE_UNSPECIFIED),
        M=int(d["M"]),
        ef_construction=int(d["ef_construction"]),
        ef=int(d["ef"]),
        embedder=str(d.get("embedder", {}).get("name", "")),
        embedder_source=str(d.get("embedder", {}).get("source", "")),
        created_unix=created,
        analyzer=convert.ANALYZER_ENUM.get(collection.config.analyzer, pb.ANALYZER_UNSPECIFIED),
        ranking=ranking,
        tuned=bool(collection.config.tuning),
    )


class CollectionsServicer(_Base, pb_grpc.CollectionsServicer):
    def _info(self, collection: Collection) -> pb.CollectionInfo:
        searcher = self.state.searcher
        ranking = searcher.default_ranking(collection) if searcher is not None else ""
        return _collection_info(collection, ranking)

    @_handler("CreateCollection")
    async def CreateCollection(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.name, field="name")
        if request.space not in convert.SPACES:
            raise InvalidArgument(f"space: unknown value {request.space}", field="space")
        for field, (low, high) in limits.INDEX_PARAM_RANGES.items():
            value = getattr(request, field)
            if value and not low <= value <= high:
                raise InvalidArgument(f"{field}: {value} is outside {low}..{high}", field=field)
        analyzer = str(convert.enum_value(request.analyzer, convert.ANALYZERS, "analyzer"))
        embedder: Embedder = self.registry.embedder(request.embedder)
        collection = await asyncio.to_thread(
            self.collections.create,
            name,
            dim=embedder.dim,
            space=convert.SPACES[request.space],
            M=request.M or 16,
            ef_construction=request.ef_construction or 200,
            ef=request.ef or max(self.state.cfg.default_candidates, 64),
            embedder={"name": embedder.name, "source": embedder.source_sha256},
            analyzer=analyzer,
        )
        return pb.CreateCollectionResponse(collection=self._info(collection))

    @_handler("ListCollections")
    async def ListCollections(self, request, context, deadline):  # type: ignore[no-untyped-def]
        return pb.ListCollectionsResponse(
            collections=[self._info(c) for c in self.collections.list()]
        )

    @_handler("DescribeCollection")
    async def DescribeCollection(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.name, field="name")
        return pb.DescribeCollectionResponse(collection=self._info(self.collections.get(name)))

    @_handler("DropCollection")
    async def DropCollection(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.name, field="name")
        await asyncio.to_thread(self.collections.drop, name)
        return pb.DropCollectionResponse()

    @_handler("Upsert")
    async def Upsert(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.collection)
        cfg = self.state.cfg
        if not request.documents:
            raise InvalidArgument("documents: at least one document is required", field="documents")
        if len(request.documents) > cfg.max_documents_per_upsert:
            raise InvalidArgument(
                f"documents: {len(request.documents)} given, the limit is "
                f"{cfg.max_documents_per_upsert} per request",
                field="documents",
            )
        convert.ids([d.id for d in request.documents], cfg, field="documents.id")
        convert.texts(
            [d.text for d in request.documents],
            cfg,
            field="documents.text",
            limit=cfg.max_documents_per_upsert,
        )
        convert.document_metadata([d.metadata for d in request.documents])
        docs = [NewDocument(d.id, d.text, dict(d.metadata)) for d in request.documents]
        assert self.state.ingestor is not None
        count, seq, timings = await self.state.ingestor.upsert(name, docs, deadline=deadline)
        return pb.UpsertResponse(upserted=count, sequence=seq, metadata=convert.metadata(timings))

    @_handler("Delete")
    async def Delete(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.collection)
        ids = convert.ids(request.ids, self.state.cfg)
        assert self.state.ingestor is not None
        deleted, missing = await self.state.ingestor.delete(name, ids)
        return pb.DeleteResponse(deleted=deleted, not_found=missing)

    @_handler("Get")
    async def Get(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.collection)
        ids = convert.ids(request.ids, self.state.cfg)
        collection = self.collections.get(name)
        found = await asyncio.to_thread(collection.get, ids)
        return pb.GetResponse(
            documents=[
                pb.Document(id=d.id, text=d.text, metadata=d.metadata)
                for d in found
                if d is not None
            ],
            not_found=[i for i, d in zip(ids, found, strict=True) if d is None],
        )

    @_handler("Tune")
    async def Tune(self, request, context, deadline):  # type: ignore[no-untyped-def]
        name = convert.collection_name(request.collection)
        queries = convert.labeled_queries(request.queries, self.state.cfg)
        assert self.state.searcher is not None
        report = await Tuner(self.state.searcher).tune(
            name,
            queries,
            rerank=request.rerank if request.HasField("rerank") else None,
            dry_run=request.dry_run,
        )
        return pb.TuneResponse(
            modes=[
                pb.TuneMode(
                    ranking=m.ranking,
                    ndcg10=m.ndcg10,
                    delta_vs_dense=m.delta_vs_dense,
                    p_value=m.p_value,
                    recall100=m.recall100,
                    chosen=m.chosen,
                    queries=m.queries,
                )
                for m in report.modes
            ],
            ranking=report.ranking,
            stored=report.stored,
            queries=report.queries,
        )


class SearchServicer(_Base, pb_grpc.SearchServicer):
    @_handler("Search")
    async def Search(self, request, context, deadline):  # type: ignore[no-untyped-def]
        cfg = self.state.cfg
        name = convert.collection_name(request.collection)
        query = convert.query(request.query, cfg)
        top_k, candidates, ef = convert.search_depth(
            request.top_k, request.candidates, request.ef, cfg
        )
        convert.channel_depths(request, candidates, cfg)
        rerank = request.rerank if request.HasField("rerank") else None
        assert self.state.searcher is not None
        outcome = await self.state.searcher.search(
            name,
            query,
            top_k=top_k,
            candidates=candidates,
            rerank=rerank,
            ef=ef,
            filter=convert.filter_map(request.filter),
            reranker_name=request.reranker,
            deadline=deadline,
            retrieval=convert.retrieval(request.retrieval),
            dense_candidates=request.dense_candidates,
            lexical_candidates=request.lexical_candidates,
            fusion=convert.fusion(request),
            rerank_depth=request.rerank_depth,
        )
        return pb.SearchResponse(
            hits=[
                pb.Hit(
                    id=h.id,
                    text=h.text,
                    metadata=h.metadata,
                    dense_score=h.dense_score,
                    rerank_score=h.rerank_score,
                    dense_rank=h.dense_rank,
                    rank=h.rank,
                    score=h.score,
                    lexical_score=h.lexical_score,
                    lexical_rank=h.lexical_rank,
                )
                for h in outcome.hits
            ],
            reranked=outcome.reranked,
            ranking=outcome.ranking,
            metadata=convert.metadata(outcome.timings),
        )


class InfoServicer(_Base, pb_grpc.InfoServicer):
    @_handler("GetInfo")
    async def GetInfo(self, request, context, deadline):  # type: ignore[no-untyped-def]
        cfg = self.state.cfg
        models = []
        for model in self.registry:
            m = model.runtime.manifest
            variant = m.variants.get(model.runtime.precision)
            info = pb.ModelInfo(
                name=model.name,
                kind=convert.KIND_ENUM[m.kind],
                source=m.source.id,
                revision=m.source.revision or "",
                weights_sha256=m.source.weights_sha256 or "",
                variant=model.runtime.precision,
                provider=model.runtime.session.providers[0],
                max_length=m.max_length,
                is_default=model.is_default,
            )
            if variant is not None:
                for key, value in variant.validation.items():
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        info.validation[key] = float(value)
            if isinstance(model, Embedder):
                info.dim = model.dim
                info.pooling = m.pooling or ""
                info.normalize = bool(m.normalize)
            elif isinstance(model, CrossEncoder):
                info.labels.extend(model.label_names)
                info.activation = m.activation or ""
                if m.kind == "reranker":
                    info.ranking = ranking_name(model)
            models.append(info)
        shape = pb.Limits(
            max_texts_per_request=cfg.max_texts_per_request,
            max_documents_per_upsert=cfg.max_documents_per_upsert,
            max_top_k=cfg.max_top_k,
            max_candidates=cfg.max_candidates,
            max_text_chars=cfg.max_text_chars,
            max_batch_tokens=cfg.batch_tokens,
            max_batch_size=cfg.batch_size,
            max_wait_ms=int(cfg.max_wait_ms),
            max_queue_tokens=cfg.queue_tokens,
            max_inflight_requests=cfg.max_inflight_requests,
            max_filter_keys=limits.MAX_FILTER_KEYS,
            max_metadata_keys=limits.MAX_METADATA_KEYS,
            max_metadata_key_chars=limits.MAX_METADATA_KEY_CHARS,
            max_metadata_value_bytes=limits.MAX_METADATA_VALUE_BYTES,
            max_id_chars=limits.MAX_ID_CHARS,
            max_tokenized_chars=max(
                (m.runtime.tokenizer.char_budget for m in self.registry), default=0
            ),
        )
        return pb.GetInfoResponse(
            version=__version__, models=models, limits=shape, device=cfg.device
        )


SERVICE_NAMES = tuple(
    pb.DESCRIPTOR.services_by_name[s].full_name
    for s in ("Inference", "Collections", "Search", "Info")
)


@dataclass(frozen=True)
class Unparsable:
    """What a request that does not parse becomes; ``_handler`` refuses it (INVALID_ARGUMENT)."""

    message: str


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    """``message_class.FromString`` that turns a parse error into :class:`Unparsable`.

    grpcio answers a deserializer's exception with UNKNOWN and the library's exception text;
    invalid UTF-8 in a string field or a corrupt wire format is the caller's error instead.
    """

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return Unparsable(
                f"request: not a valid {message_class.DESCRIPTOR.name} (corrupt protobuf "
                "wire format or invalid UTF-8 in a string field)"
            )

    return parse


def make_servicers(state: ServingState) -> dict[str, _Base]:
    """One servicer per service of the proto, by service name (``"Search"``), sharing ``state``;
    the gRPC server and the HTTP bridge call the same objects."""
    servicers: tuple[_Base, ...] = (
        InferenceServicer(state),
        CollectionsServicer(state),
        SearchServicer(state),
        InfoServicer(state),
    )
    return {type(s).__name__.removesuffix("Servicer"): s for s in servicers}


def add_servicers(server: grpc.aio.Server, state: ServingState) -> None:
    """Register every service of the proto with the parse-safe request deserializers."""
    for name, servicer in make_servicers(state).items():
        service = pb.DESCRIPTOR.services_by_name[name]
        handlers = {
            m.name: grpc.unary_unary_rpc_method_handler(
                getattr(servicer, m.name),
                request_deserializer=_parser(getattr(pb, m.input_type.name)),
                response_serializer=getattr(pb, m.output_type.name).SerializeToString,
            )
            for m in service.methods
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )
        server.add_registered_method_handlers(service.full_name, handlers)
