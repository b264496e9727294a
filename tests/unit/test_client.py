"""Client mechanics against a tiny in-test gRPC servicer: typed results, chunking, error mapping,
retries (only UNAVAILABLE, only idempotent calls), timeouts, bearer token and TLS.

The model-backed behaviour is tested against the real server in tests/integration.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from twostage.clients.client import NO_RETRY, AsyncTwostageClient, RetryPolicy, TwostageClient
from twostage.clients.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    error_for,
)
from twostage.clients.results import Hit
from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

DIM = 4
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)


def _vector(text: str) -> np.ndarray:
    return np.array([len(text), text.count("a"), 1.0, -1.0], dtype="<f4")


class FakeServer(pb_grpc.InferenceServicer, pb_grpc.CollectionsServicer, pb_grpc.SearchServicer):
    """A few methods of the contract, enough to drive the client's mechanics."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.unavailable_left: Counter[str] = Counter()
        self.seen: dict[str, object] = {}
        self.release = threading.Event()

    def _enter(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls[name] += 1
        self.seen[f"{name}.metadata"] = dict(context.invocation_metadata())
        if self.unavailable_left[name] > 0:
            self.unavailable_left[name] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    def Embed(self, request, context):
        self._enter("Embed", context)
        if "block" in request.texts:
            self.release.wait(5.0)
        vectors = [pb.Embedding(vector=_vector(t).tobytes()) for t in request.texts]
        return pb.EmbedResponse(embeddings=vectors, dim=DIM, model="fake")

    def Rerank(self, request, context):
        self._enter("Rerank", context)
        scored = sorted(
            ((i, len(d) / 100.0) for i, d in enumerate(request.documents)), key=lambda x: -x[1]
        )
        if request.top_n:
            scored = scored[: request.top_n]
        docs = request.documents
        return pb.RerankResponse(
            results=[
                pb.RerankResult(
                    index=i, score=s, document=docs[i] if request.return_documents else ""
                )
                for i, s in scored
            ]
        )

    def CreateCollection(self, request, context):
        self._enter("CreateCollection", context)
        context.abort(grpc.StatusCode.ALREADY_EXISTS, f"collection '{request.name}' exists")

    def Search(self, request, context):
        self._enter("Search", context)
        self.seen["Search.has_rerank"] = request.HasField("rerank")
        if request.collection != "known":
            context.abort(grpc.StatusCode.NOT_FOUND, f"collection '{request.collection}' not found")
        reranked = request.rerank if request.HasField("rerank") else True
        hit = pb.Hit(
            id="d1", text="t", dense_score=0.5, rerank_score=0.9 if reranked else 0.0,
            dense_rank=2, rank=1, score=0.9 if reranked else 0.5,
        )  # fmt: skip
        meta = pb.Metadata(total_ns=123, models="embedder,reranker")
        return pb.SearchResponse(hits=[hit], reranked=reranked, ranking="rerank", metadata=meta)


def _start(servicer: FakeServer, credentials: grpc.ServerCredentials | None = None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    pb_grpc.add_CollectionsServicer_to_server(servicer, server)
    pb_grpc.add_SearchServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture()
def fake() -> Iterator[tuple[FakeServer, str]]:
    servicer = FakeServer()
    server, address = _start(servicer)
    yield servicer, address
    servicer.release.set()
    server.stop(None)


def test_encode_returns_one_float32_row_per_text_across_batches(fake) -> None:
    servicer, address = fake
    texts = ["a", "banana", "cab", "", "aaaa"]
    with TwostageClient(address) as client:
        out = client.encode(texts, input_type="query", batch_size=2)
        single = client.encode("banana")
    assert servicer.calls["Embed"] == 3 + 1
    assert out.dtype == np.float32 and out.shape == (5, DIM)
    np.testing.assert_array_equal(out, np.stack([_vector(t) for t in texts]))
    assert single.shape == (1, DIM)


def test_rank_merges_batches_into_one_global_order(fake) -> None:
    _, address = fake
    docs = ["xx", "xxxxx", "x", "xxxx", "xxx"]
    with TwostageClient(address) as client:
        results = client.rank("q", docs, top_k=3, return_documents=True, batch_size=2)
    assert [r.index for r in results] == [1, 3, 4]
    assert [r.document for r in results] == ["xxxxx", "xxxx", "xxx"]
    assert results[0].score == pytest.approx(0.05)


def test_unavailable_is_retried_for_idempotent_calls_only(fake) -> None:
    servicer, address = fake
    servicer.unavailable_left["Embed"] = 2
    with TwostageClient(address, retry=FAST_RETRY) as client:
        assert client.encode(["a"]).shape == (1, DIM)
    assert servicer.calls["Embed"] == 3

    servicer.unavailable_left["Embed"] = 5
    with TwostageClient(address, retry=FAST_RETRY) as client, pytest.raises(UnavailableError):
        client.encode(["a"])
    assert servicer.calls["Embed"] == 3 + 3, "retries must stop at max_attempts"


def test_no_retry_policy_and_non_idempotent_calls_fail_at_once(fake) -> None:
    servicer, address = fake
    servicer.unavailable_left["Embed"] = 1
    with TwostageClient(address, retry=NO_RETRY) as client, pytest.raises(UnavailableError):
        client.encode(["a"])
    assert servicer.calls["Embed"] == 1

    servicer.unavailable_left["CreateCollection"] = 1
    with TwostageClient(address, retry=FAST_RETRY) as client:
        with pytest.raises(UnavailableError):
            client.create_collection("c")
        assert servicer.calls["CreateCollection"] == 1
        with pytest.raises(AlreadyExistsError) as err:
            client.create_collection("c")
    assert err.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert err.value.message == "collection 'c' exists"


def test_server_errors_carry_code_and_message(fake) -> None:
    _, address = fake
    with TwostageClient(address) as client, pytest.raises(NotFoundError) as err:
        client.search("missing", "q")
    assert err.value.code_name == "NOT_FOUND"
    assert err.value.message == "collection 'missing' not found"
    assert str(err.value) == "NOT_FOUND (Search): collection 'missing' not found"


def test_search_sends_rerank_only_when_given_and_types_hits(fake) -> None:
    servicer, address = fake
    with TwostageClient(address, token="s3cret") as client:
        default = client.search_detailed("known", "q")
        assert servicer.seen["Search.has_rerank"] is False
        dense = client.search("known", "q", rerank=False)
        assert servicer.seen["Search.has_rerank"] is True
    assert default.reranked and default.timings.total_ns == 123
    assert default.timings.models == ("embedder", "reranker")
    assert default.hits[0] == Hit("d1", "t", {}, 1, pytest.approx(0.9), 0.5, 2, pytest.approx(0.9))
    assert dense[0].rerank_score is None and dense[0].score == 0.5
    assert servicer.seen["Search.metadata"]["authorization"] == "Bearer s3cret"


def test_timeout_raises_deadline_exceeded(fake) -> None:
    servicer, address = fake
    with TwostageClient(address, timeout=0.2) as client, pytest.raises(DeadlineExceededError):
        client.encode(["block"])
    servicer.release.set()


def test_unreachable_server_is_unavailable() -> None:
    with (
        socket_free_port() as address,
        TwostageClient(address, retry=FAST_RETRY) as client,
        pytest.raises(UnavailableError),
    ):
        client.encode(["a"], timeout=5)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.UNKNOWN, InternalError),
        (grpc.StatusCode.DATA_LOSS, InternalError),
    ],
)
def test_error_for_maps_codes_to_classes(code: grpc.StatusCode, cls: type) -> None:
    err = error_for(code, "msg")
    assert type(err) is cls and err.code is code and err.message == "msg"


async def test_async_client_matches_sync(fake) -> None:
    servicer, address = fake
    servicer.unavailable_left["Embed"] = 1
    async with AsyncTwostageClient(address, retry=FAST_RETRY) as client:
        out = await client.encode(["aa", "b"], batch_size=1)
        hits = await client.search("known", "q", rerank=True)
        with pytest.raises(NotFoundError):
            await client.search("nope", "q")
    np.testing.assert_array_equal(out, np.stack([_vector("aa"), _vector("b")]))
    assert servicer.calls["Embed"] == 3  # one retried + one more batch
    assert hits[0].rerank_score == pytest.approx(0.9)


# --- TLS -------------------------------------------------------------------------------------


class socket_free_port:
    """An address nothing listens on: bind a port, note it, close it."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"127.0.0.1:{s.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        return None


def _self_signed(tmp: Path) -> tuple[bytes, bytes]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes()


def test_tls_with_root_certificates_and_token(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    servicer = FakeServer()
    server, address = _start(servicer, grpc.ssl_server_credentials([(key, cert)]))
    try:
        (tmp_path / "ca.pem").write_bytes(cert)
        with TwostageClient(address, root_certificates=tmp_path / "ca.pem", token="t") as client:
            assert client.encode(["a"]).shape == (1, DIM)
        assert servicer.seen["Embed.metadata"]["authorization"] == "Bearer t"
        with TwostageClient(address, retry=NO_RETRY) as plain, pytest.raises(UnavailableError):
            plain.encode(["a"], timeout=5)
    finally:
        server.stop(None)


def test_clients_import_only_protos_grpc_numpy_and_client_tools() -> None:
    import ast

    allowed_roots = {
        "grpc",
        "grpc_health",
        "numpy",
        "hdrh",
        "ir_measures",
        "matplotlib",
        "tqdm",
        "scipy",
    }
    forbidden = ("twostage.server", "twostage.export", "twostage.train", "onnxruntime")
    root = Path(__file__).resolve().parents[2] / "clients"
    import sys

    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
                assert (
                    top in allowed_roots
                    or top in sys.stdlib_module_names
                    or name.startswith(("twostage.clients", "twostage.protos", "__future__"))
                ), f"{path.name} imports {name}"


def test_limits_carry_every_field_the_server_reports() -> None:
    import dataclasses

    from twostage.clients.results import Limits
    from twostage.protos.twostage.v1 import twostage_pb2 as pb_

    proto = {f.name for f in pb_.Limits.DESCRIPTOR.fields}
    assert {f.name for f in dataclasses.fields(Limits)} == proto
    reply = pb_.Limits(max_filter_keys=32, max_tokenized_chars=4096, max_top_k=1000)
    got = Limits.from_proto(reply)
    assert (got.max_filter_keys, got.max_tokenized_chars, got.max_top_k) == (32, 4096, 1000)
