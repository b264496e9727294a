"""A real ``twostage serve`` subprocess on 127.0.0.1, shared by the integration tests.

The server runs the session's exported bundles (offline MiniLM embedder, a MiniLM reranker and a
3-class classifier with fixed-seed heads). It is stopped with SIGTERM at the end of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running ``twostage serve``; ``address`` is 127.0.0.1:PORT."""

    proc: subprocess.Popen[bytes]
    address: str
    data_dir: Path
    metrics_port: int
    log_path: Path
    args: list[str] = field(default_factory=list)
    # http://127.0.0.1:PORT of the HTTP surface (same process, same engine)
    http_url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start_server(
    tmp: Path,
    models: dict[str, Path],
    *extra: str,
    data_dir: Path | None = None,
) -> ServerProcess:
    """Start ``twostage serve`` and wait until health says SERVING (polling the health RPC)."""
    tmp.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or tmp / "data"
    ready = tmp / f"ready-{time.monotonic_ns()}"
    metrics_port = free_port()
    http_port = free_port()
    args = [
        sys.executable,
        "-m",
        "twostage.cli",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        str(ready),
        "--data-dir",
        str(data_dir),
        "--metrics-port",
        str(metrics_port),
        "--http-listen",
        f"127.0.0.1:{http_port}",
        "--intra-op-threads",
        "2",
        "--grace-period",
        "10",
    ]
    for name, path in models.items():
        args += ["--model", f"{name}={path}"]
    args += list(extra)
    log_path = tmp / f"server-{time.monotonic_ns()}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start in {START_TIMEOUT}s:\n{log_path.read_text()}")
        time.sleep(0.05)
    port = int(ready.read_text().strip())
    server = ServerProcess(
        proc,
        f"127.0.0.1:{port}",
        data_dir,
        metrics_port,
        log_path,
        args,
        http_url=f"http://127.0.0.1:{http_port}",
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING, server.log()
    return server


@pytest.fixture(scope="session")
def server_models(
    embedder_bundle: Path, reranker_bundle: Path, classifier_bundle: Path
) -> dict[str, Path]:
    return {
        "embedder": embedder_bundle,
        "reranker": reranker_bundle,
        "classifier": classifier_bundle,
    }


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, server_models: dict[str, Path]
) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("live-server"), server_models)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fp32_server(
    tmp_path_factory: pytest.TempPathFactory, server_models: dict[str, Path]
) -> Iterator[ServerProcess]:
    """The fp32 variants: batch-invariant to ~1e-6, for exact comparisons.

    int8 quantizes activations per batch (one scale for the whole tensor), so the same text
    embedded alone or inside a batch differs in the third decimal; fp32 does not. An idle model
    here waits 5 ms for company (the default runs a lone request at once), so tests can see
    concurrent calls share a batch without racing the model.
    """
    server = start_server(
        tmp_path_factory.mktemp("fp32-server"),
        {"embedder": server_models["embedder"], "reranker": server_models["reranker"]},
        "--precision",
        "fp32",
        "--max-wait-ms",
        "5",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def overload_server(
    tmp_path_factory: pytest.TempPathFactory, server_models: dict[str, Path]
) -> Iterator[ServerProcess]:
    """A server with a queue limit of about two batches, for overload tests."""
    server = start_server(
        tmp_path_factory.mktemp("overload-server"),
        {"embedder": server_models["embedder"], "reranker": server_models["reranker"]},
        "--max-batch-tokens",
        "2048",
        "--max-queue-tokens",
        "4096",
        "--max-inflight-requests",
        "64",
    )
    yield server
    server.stop()
