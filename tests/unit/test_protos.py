"""The committed stubs are what the .proto generates, and the contract keeps its fixed names."""

from __future__ import annotations

from pathlib import Path

import pytest

from twostage.protos import generate
from twostage.protos.twostage.v1 import twostage_pb2 as pb


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    written = generate.generate(tmp_path)
    assert written, "protoc wrote nothing"
    for path in written:
        committed = generate.PROTO_ROOT / path.relative_to(tmp_path)
        assert committed.read_text() == path.read_text(), (
            f"{committed.name} is stale: run python -m twostage.protos.generate"
        )


def test_contract_names() -> None:
    services = {s.name: s for s in pb.DESCRIPTOR.services_by_name.values()}
    assert set(services) == {"Inference", "Collections", "Search", "Info"}
    assert pb.DESCRIPTOR.package == "twostage.v1"
    methods = {m.name for s in services.values() for m in s.methods}
    assert {
        "Embed",
        "Rerank",
        "ScorePairs",
        "CreateCollection",
        "ListCollections",
        "DescribeCollection",
        "DropCollection",
        "Upsert",
        "Delete",
        "Get",
        "Search",
        "GetInfo",
    } <= methods
    search = pb.SearchRequest.DESCRIPTOR.fields_by_name
    assert search["rerank"].has_presence, "rerank must be optional so unset differs from false"
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.name
    hit = set(pb.Hit.DESCRIPTOR.fields_by_name)
    assert {"id", "text", "metadata", "dense_score", "rerank_score", "dense_rank", "rank"} <= hit
    create = set(pb.CreateCollectionRequest.DESCRIPTOR.fields_by_name)
    assert {"name", "M", "ef_construction", "space"} <= create
