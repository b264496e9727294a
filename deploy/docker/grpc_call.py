"""Call one unary gRPC method by name with a JSON request, learning the schema by server reflection.

A small grpcurl for the container check: it needs only grpcio, grpcio-reflection and protobuf (no
generated stubs), so it also proves that reflection serves the method's full schema.

    python grpc_call.py 127.0.0.1:50051 twostage.v1.Inference/Embed '{"texts": ["hi"]}'

Prints the reply as JSON (proto field names) on stdout; exit 1 with the status on an RPC error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def call(target: str, method: str, request_json: str, timeout: float) -> dict[str, Any]:
    """Invoke ``method`` ("package.Service/Method") on ``target``; the reply as a JSON dict."""
    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    service_name, sep, method_name = method.strip("/").partition("/")
    if not sep or not method_name:
        raise ValueError(f"method {method!r} is not package.Service/Method")
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        try:
            service = pool.FindServiceByName(service_name)
        except KeyError as exc:
            raise ValueError(f"service {service_name!r} is not offered by reflection") from exc
        found = service.methods_by_name.get(method_name)
        if found is None:
            known = ", ".join(sorted(service.methods_by_name))
            raise ValueError(f"{service_name} has no method {method_name!r} (has: {known})")
        if found.client_streaming or found.server_streaming:
            raise ValueError(f"{method} is a streaming method; only unary calls are supported")
        request_type = message_factory.GetMessageClass(found.input_type)
        reply_type = message_factory.GetMessageClass(found.output_type)
        try:
            request = json_format.Parse(request_json, request_type())
        except json_format.ParseError as exc:
            raise ValueError(f"request does not fit {found.input_type.full_name}: {exc}") from exc
        rpc = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=reply_type.FromString,
        )
        reply = rpc(request, timeout=timeout)
        return json_format.MessageToDict(reply, preserving_proto_field_name=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="unary gRPC call by reflection, JSON in and out")
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("method", help="package.Service/Method")
    parser.add_argument("request", nargs="?", default="{}", help="request as JSON (default {})")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for connect and call")
    args = parser.parse_args(argv)
    import grpc

    try:
        reply = call(args.target, args.method, args.request, args.timeout)
    except grpc.RpcError as exc:
        print(f"grpc_call: {args.method}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except grpc.FutureTimeoutError:
        print(f"grpc_call: no server at {args.target} within {args.timeout}s", file=sys.stderr)
        return 1
    except ValueError as exc:  # bad method name, unknown service, JSON that does not fit
        print(f"grpc_call: {exc}", file=sys.stderr)
        return 1
    json.dump(reply, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
