"""uvicorn inside the gRPC server's event loop: bind at start, serve as a task, drain at stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from twostage.server.api.http.routes import build_app
from twostage.server.api.servicers import ServingState
from twostage.server.errors import ConfigError

log = logging.getLogger("twostage.server.http")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # the App owns SIGTERM/SIGINT and stops this server as one step of its drain
        yield


class HttpServer:
    """The HTTP surface of one :class:`~twostage.server.app.App`."""

    def __init__(self, state: ServingState, *, max_body_bytes: int) -> None:
        cfg = state.cfg
        self.listen = cfg.http_listen
        self.max_body_bytes = max_body_bytes
        self.tls = bool(cfg.tls_cert and cfg.tls_key)
        config = uvicorn.Config(
            build_app(state, max_body_bytes=max_body_bytes),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(cfg.grace_period)),
            ssl_certfile=str(cfg.tls_cert) if self.tls else None,
            ssl_keyfile=str(cfg.tls_key) if self.tls else None,
        )
        self._server = _Server(config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def bind(self) -> int:
        """Bind and listen now (connections queue until :meth:`start`); the bound port."""
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]")
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, int(port), type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(2048)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve HTTP on {self.listen}: {exc}", field="http_listen"
            ) from None
        sock.setblocking(False)
        self._socket = sock
        self.port = int(sock.getsockname()[1])
        return self.port

    def start(self) -> None:
        assert self._socket is not None, "bind() first"
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._socket])
        )
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the HTTP server stopped: %s", task.exception())

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), close."""
        if self._task is None:
            if self._socket is not None:
                self._socket.close()
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
