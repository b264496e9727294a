"""Malformed requests are refused cleanly: INVALID_ARGUMENT naming the field, nothing on disk.

Each case here was a defect once (INTERNAL for a filter of 600 keys, a folder named "ok\\n",
UNKNOWN with the library's exception text for bytes that do not parse, unbounded metadata, an
unknown enum accepted silently).
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc
from twostage.server import limits

NAME = "refusals"


@pytest.fixture(scope="module")
def channel(live_server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(live_server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def collection(channel) -> str:
    stub = pb_grpc.CollectionsStub(channel)
    stub.CreateCollection(pb.CreateCollectionRequest(name=NAME), timeout=60)
    docs = [
        pb.Document(id=f"d{i}", text=f"document number {i} about zebras", metadata={"k": str(i)})
        for i in range(20)
    ]
    stub.Upsert(pb.UpsertRequest(collection=NAME, documents=docs), timeout=60)
    return NAME


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


@pytest.mark.parametrize("keys", [limits.MAX_FILTER_KEYS + 1, 600, 5000])
def test_a_filter_over_the_key_limit_is_refused(channel, collection, keys) -> None:
    request = pb.SearchRequest(
        collection=collection, query="zebras", filter={f"key{i}": "v" for i in range(keys)}
    )
    err = refused(lambda: pb_grpc.SearchStub(channel).Search(request, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filter" in err.details() and str(limits.MAX_FILTER_KEYS) in err.details()


@pytest.mark.parametrize(
    "retrieval", [pb.RETRIEVAL_DENSE, pb.RETRIEVAL_LEXICAL, pb.RETRIEVAL_HYBRID]
)
def test_a_filter_at_the_key_limit_is_answered(channel, collection, retrieval) -> None:
    wanted = {"k": "3", **{f"absent{i}": "v" for i in range(limits.MAX_FILTER_KEYS - 1)}}
    search = pb_grpc.SearchStub(channel).Search
    reply = search(
        pb.SearchRequest(collection=collection, query="zebras", filter=wanted, retrieval=retrieval),
        timeout=30,
    )
    assert list(reply.hits) == []  # no document has the other keys
    reply = search(
        pb.SearchRequest(
            collection=collection, query="zebras", filter={"k": "3"}, retrieval=retrieval
        ),
        timeout=30,
    )
    assert [h.id for h in reply.hits] == ["d3"]


@pytest.mark.parametrize(
    "name", ["ok\n", "ok\r", "a/b", "a\\b", "..", "a\x00b", "x" * 65, "\nok", "ok\n\n"]
)
def test_bad_names_are_refused_and_make_nothing(live_server, channel, name) -> None:
    stub = pb_grpc.CollectionsStub(channel)
    err = refused(lambda: stub.CreateCollection(pb.CreateCollectionRequest(name=name), timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "name" in err.details()
    folders = [p.name for p in (live_server.data_dir / "collections").iterdir()]
    assert all(f.strip() == f and "\x00" not in f and len(f) <= 64 for f in folders), folders
    assert name not in folders


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ({f"k{i}": "v" for i in range(limits.MAX_METADATA_KEYS + 1)}, "keys"),
        ({"k" * (limits.MAX_METADATA_KEY_CHARS + 1): "v"}, "characters"),
        ({"k": "v" * (limits.MAX_METADATA_VALUE_BYTES + 1)}, "bytes"),
        ({"k": "é" * (limits.MAX_METADATA_VALUE_BYTES // 2 + 1)}, "bytes"),
    ],
)
def test_metadata_over_the_limits_is_refused(channel, collection, metadata, why) -> None:
    stub = pb_grpc.CollectionsStub(channel)
    docs = [
        pb.Document(id="fine", text="fine"),
        pb.Document(id="big", text="big", metadata=metadata),
    ]
    err = refused(
        lambda: stub.Upsert(pb.UpsertRequest(collection=collection, documents=docs), timeout=30)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "documents[1].metadata" in err.details() and why in err.details()
    got = stub.Get(pb.GetRequest(collection=collection, ids=["fine", "big"]), timeout=30)
    assert list(got.not_found) == ["fine", "big"]  # the whole call was refused


def test_unknown_enum_values_are_refused(channel, collection) -> None:
    embed = pb_grpc.InferenceStub(channel).Embed
    err = refused(lambda: embed(pb.EmbedRequest(texts=["a"], input_type=99), timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "input_type" in err.details()
    search = pb_grpc.SearchStub(channel).Search
    err = refused(
        lambda: search(pb.SearchRequest(collection=collection, query="q", retrieval=7), timeout=30)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "retrieval" in err.details()


@pytest.mark.parametrize(
    ("method", "payload"),
    [
        # EmbedRequest.texts (field 1, length-delimited) holding invalid UTF-8
        ("/twostage.v1.Inference/Embed", b"\x0a\x02\xff\xfe"),
        # a length prefix running past the end of the message
        ("/twostage.v1.Search/Search", b"\x0a\x7fabc"),
        # a field with the reserved wire type 7
        ("/twostage.v1.Collections/Upsert", b"\x0f\x01"),
    ],
)
def test_unparsable_requests_are_invalid_argument(channel, method, payload) -> None:
    rpc = channel.unary_unary(method)  # no serializers: the bytes go on the wire as given
    err = refused(lambda: rpc(payload, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert err.details().startswith("request: not a valid")
    assert "Traceback" not in err.details() and "Error" not in err.details()
