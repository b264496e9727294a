"""Composition root: load bundles, warm up, serve gRPC + metrics, drain on SIGTERM.

Start order: the gRPC port opens first with every health status NOT_SERVING (load balancers and
probes see a live but not-ready server), models load and warm up, collections open (snapshot +
replay), then health turns SERVING. Shutdown order on SIGTERM/SIGINT: health NOT_SERVING, new calls
refused, in-flight calls get ``grace_period`` seconds, batchers stop, index snapshots written,
stores closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from twostage.server.api.http import HttpServer
from twostage.server.api.interceptors import BearerTokenInterceptor
from twostage.server.api.servicers import SERVICE_NAMES, ServingState, add_servicers
from twostage.server.batching import Admission, DeadlineAdmission
from twostage.server.config import ServerConfig
from twostage.server.engine.ingest import Ingestor
from twostage.server.engine.models import BatchingLimits, ServedModel, make_served_model
from twostage.server.engine.registry import ModelRegistry
from twostage.server.engine.search import Searcher
from twostage.server.errors import ConfigError
from twostage.server.metrics import Metrics
from twostage.server.runtime import load_runtime
from twostage.server.store.collections import CollectionManager

log = logging.getLogger("twostage.server")

_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class App:
    """One server instance. ``await start()``, then ``await wait()`` or ``await stop()``."""

    cfg: ServerConfig
    metrics: Metrics = field(default_factory=Metrics)
    port: int = 0
    server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None  # type: ignore[name-defined]
    state: ServingState | None = None
    models: list[ServedModel] = field(default_factory=list)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    _tokenize_pool: ThreadPoolExecutor | None = None
    _metrics_server: object | None = None
    http: HttpServer | None = None
    _stopping: bool = False
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        cfg = self.cfg
        self.state = ServingState(
            cfg=cfg,
            metrics=self.metrics,
            admission=Admission(
                "requests", max_requests=cfg.max_inflight_requests, metrics=self.metrics
            ),
            deadlines=DeadlineAdmission(metrics=self.metrics),
        )
        interceptors = (
            [BearerTokenInterceptor(cfg.auth_token, auth_reads=cfg.auth_reads)]
            if cfg.auth_token
            else []
        )
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_servicers(self.server, self.state)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        for service in ("", *SERVICE_NAMES):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        if cfg.tls_cert and cfg.tls_key:
            creds = grpc.ssl_server_credentials(
                [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())]
            )
            self.port = self.server.add_secure_port(cfg.listen, creds)
        else:
            self.port = self.server.add_insecure_port(cfg.listen)
        if self.port == 0:
            raise ConfigError(f"cannot listen on {cfg.listen} (address in use?)", field="listen")
        if cfg.http_listen != "off":
            # same loop, same state: HTTP calls go through the gRPC servicers and batchers
            self.http = HttpServer(self.state, max_body_bytes=_MAX_MESSAGE)
            self.http.bind()
        await self.server.start()
        if self.http is not None:
            self.http.start()
        self._start_metrics_http()
        log.info("listening on %s (port %d), loading models", cfg.listen, self.port)
        try:
            await self._load()
        except BaseException:
            await self.stop(grace=0)
            raise
        self.state.ready = True
        for service in ("", *SERVICE_NAMES):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving: %s", ", ".join(f"{m.name} ({m.kind})" for m in self.models))

    def _start_metrics_http(self) -> None:
        if not self.cfg.metrics_port:
            return
        from prometheus_client import start_http_server

        try:
            server, _thread = start_http_server(
                self.cfg.metrics_port,
                addr=self.cfg.host or "127.0.0.1",
                registry=self.metrics.registry,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on port {self.cfg.metrics_port}: {exc}",
                field="metrics_port",
            ) from None
        self._metrics_server = server

    def model_specs(self) -> list[tuple[str, Path]]:
        if not self.cfg.models:
            raise ConfigError(
                "no models to serve: pass --model NAME=BUNDLE_DIR (or run `twostage serve` "
                "without --model to make the default bundles)",
                field="model",
            )
        return list(self.cfg.models)

    async def _load(self) -> None:
        cfg = self.cfg
        assert self.state is not None
        self._tokenize_pool = ThreadPoolExecutor(
            cfg.tokenize_threads, thread_name_prefix="tokenize"
        )
        limits = BatchingLimits(
            max_batch_tokens=cfg.batch_tokens,
            max_batch_size=cfg.batch_size,
            max_wait_ms=cfg.max_wait_ms,
            max_queue_tokens=cfg.queue_tokens,
            max_padding_ratio=cfg.padding_ratio_cap,
        )
        for name, path in self.model_specs():
            runtime = await asyncio.to_thread(
                load_runtime,
                path,
                device=cfg.device,
                precision=cfg.precision or None,
                intra_op_threads=cfg.intra_op_threads or None,
                device_id=cfg.device_id,
                verify=not cfg.skip_bundle_verify,
            )
            model = make_served_model(
                name, runtime, limits, self._tokenize_pool, self.metrics, self._on_model_failure
            )
            await model.start()
            self.models.append(model)
            log.info(
                "model %s: %s %s on %s (%s)",
                name,
                runtime.kind,
                runtime.precision,
                runtime.session.providers[0],
                runtime.manifest.source.id,
            )
        registry = ModelRegistry(self.models)
        await self._warmup(registry)
        collections = await asyncio.to_thread(
            CollectionManager, Path(cfg.data_dir), metrics=self.metrics
        )
        await asyncio.to_thread(collections.open_all)
        searcher = Searcher(registry, collections)
        self.state.registry = registry
        self.state.collections = collections
        self.state.searcher = searcher
        self.state.ingestor = Ingestor(searcher, cfg.snapshot_every)

    async def _warmup(self, registry: ModelRegistry) -> None:
        """One short and one long call per model: first ONNX runs allocate and are slow."""
        from twostage.server.engine.models import CrossEncoder, Embedder

        long_text = " ".join(["retrieval"] * 400)
        for model in registry:
            if isinstance(model, Embedder):
                await model.embed(["warm up", long_text])
            elif isinstance(model, CrossEncoder):
                await model.logits([("warm", "up"), ("warm up", long_text)])

    def _on_model_failure(self, exc: BaseException) -> None:
        log.error("a model worker died: %s; health -> NOT_SERVING", exc)
        if self.health is not None:
            self._background.add(asyncio.get_running_loop().create_task(self._not_serving()))

    async def _not_serving(self) -> None:
        assert self.health is not None
        for service in ("", *SERVICE_NAMES):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop; idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.cfg.grace_period if grace is None else grace
        log.info("shutting down (grace %.1fs)", grace)
        if self.state is not None:
            self.state.draining = True
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is not None or self.http is not None:
            await asyncio.gather(
                *([self.server.stop(grace)] if self.server is not None else []),
                *([self.http.stop()] if self.http is not None else []),
            )
        for model in self.models:
            await model.stop(grace=0)
        if self.state is not None and self.state.collections is not None:
            await asyncio.to_thread(self.state.collections.close_all)
        if self._tokenize_pool is not None:
            self._tokenize_pool.shutdown(wait=False, cancel_futures=True)
        if self._metrics_server is not None:
            with contextlib.suppress(Exception):
                self._metrics_server.shutdown()  # type: ignore[attr-defined]
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(cfg: ServerConfig, ready_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain."""
    app = App(cfg)
    loop = asyncio.get_running_loop()
    stop_task: list[asyncio.Task[None]] = []

    def on_signal(signame: str) -> None:
        log.info("received %s", signame)
        if not stop_task:
            stop_task.append(loop.create_task(app.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig.name)
    await app.start()
    http = f"; HTTP on port {app.http.port}" if app.http is not None else ""
    print(f"twostage serving on {cfg.host}:{app.port}{http}", flush=True)
    if ready_file is not None:
        ready_file.write_text(f"{app.port}\n", encoding="utf-8")
    await app.wait()
