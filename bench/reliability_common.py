"""Shared pieces of the reliability harnesses: a real ``twostage serve`` they start, kill and
restart, health polling by the health RPC, the server's resident memory, latency percentiles.

The server runs from a scratch directory (its cwd), binds 127.0.0.1, and is stopped by the harness.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
EMBEDDER = MODELS / "all-MiniLM-L6-v2"
RERANKER = MODELS / "minilm-reranker-scifact"
SERVING = health_pb2.HealthCheckResponse.SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_on_sigterm() -> None:
    """SIGTERM ends the harness like Ctrl-C: ``finally`` blocks stop the server it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` (VmRSS of /proc/<pid>/status) in MB; None where unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        return None
    return None


def percentile_ms(seconds: list[float], q: float) -> float | None:
    if not seconds:
        return None
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, q)), 2)


def wait_serving(address: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the server's overall health is SERVING.

    Health.Watch streams every status change, so this waits on the server's own events; the
    channel waits for the port to open (``wait_for_ready``) instead of retrying connections.
    """
    deadline = time.monotonic() + timeout
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{address} not SERVING after {timeout:.0f} s")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while starting")
        with grpc.insecure_channel(address, options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            # A bounded slice per Watch, so a server that died while starting is noticed.
            stream = stub.Watch(
                health_pb2.HealthCheckRequest(service=""),
                timeout=min(remaining, 5.0),
                wait_for_ready=True,
            )
            try:
                for reply in stream:
                    if reply.status == SERVING:
                        stream.cancel()
                        return
            except grpc.RpcError as err:
                if err.code() not in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.CANCELLED,
                ):
                    raise


class Server:
    """``twostage serve`` on 127.0.0.1:``port`` with the given bundles; restartable on one data dir.

    It runs with its cwd in ``workdir``, so the ``twostage`` package it imports is the installed
    one (or the one ``PYTHONPATH`` names), never a folder that happens to be the caller's cwd.
    """

    def __init__(
        self,
        workdir: Path,
        models: dict[str, Path],
        extra: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "twostage.cli",
            "serve",
            "--listen",
            self.address,
            "--data-dir",
            str(self.data_dir),
            "--metrics-port",
            "0",
        ]
        for name, path in models.items():
            self.args += ["--model", f"{name}={path}"]
        self.args += list(extra or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 300.0) -> float:
        """Start and wait for SERVING; returns the seconds from exec to SERVING."""
        self.starts += 1
        log = (self.workdir / f"server-{self.starts}.log").open("wb")
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        # gRPC only: the HTTP surface's fixed default port would collide with other servers.
        # An env var, not a flag, so the harness also runs servers that predate the flag.
        env.setdefault("TWOSTAGE_HTTP_LISTEN", "off")
        began = time.monotonic()
        self.proc = subprocess.Popen(
            self.args, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        try:
            wait_serving(self.address, timeout, self.proc)
        except (TimeoutError, RuntimeError) as err:
            self.kill()
            raise RuntimeError(f"{err}:\n{self.log_tail()}") from None
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, grace: float = 60.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL if it does not end."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        path = self.workdir / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""
