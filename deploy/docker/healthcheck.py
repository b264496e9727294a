"""Container health probe: one grpc.health.v1 Check against the local server.

Exit 0 when the service answers SERVING, 1 otherwise (NOT_SERVING, unknown service, no answer),
so Docker's HEALTHCHECK and any shell can use it. The target defaults to the port of
``TWOSTAGE_LISTEN`` on loopback (a wildcard listen address is probed on 127.0.0.1 / ::1):

    python healthcheck.py                                  # overall health ("")
    python healthcheck.py --service twostage.v1.Search     # one service
    python healthcheck.py --target 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DEFAULT_LISTEN = "127.0.0.1:50051"
_WILDCARDS = {"", "0.0.0.0", "[::]", "::", "*"}


def probe_target(listen: str) -> str:
    """The address to dial for a server listening on ``listen`` (``HOST:PORT``, ``[V6]:PORT``)."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    if host in _WILDCARDS:
        host = "[::1]" if host in {"[::]", "::"} else "127.0.0.1"
    return f"{host}:{port}"


def check(target: str, service: str, timeout: float) -> tuple[bool, str]:
    """Ask ``target`` for the health of ``service``; (serving, what it answered)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="grpc.health.v1 probe for twostage serve")
    parser.add_argument(
        "--target",
        help="HOST:PORT to dial (default: the port of $TWOSTAGE_LISTEN on loopback)",
    )
    parser.add_argument("--service", default="", help='service name; "" = the whole server')
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    try:
        target = args.target or probe_target(os.environ.get("TWOSTAGE_LISTEN") or DEFAULT_LISTEN)
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    serving, answer = check(target, args.service, args.timeout)
    print(f"healthcheck {target} service={args.service or '(server)'}: {answer}")
    return 0 if serving else 1


if __name__ == "__main__":
    raise SystemExit(main())
