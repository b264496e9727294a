"""Property-based fuzzing of every RPC against a live ``twostage serve``.

Requests are drawn from the proto descriptors (every field by type: strings with control
characters and long runs, unknown enum numbers, maps with thousands of keys, long lists), and
raw bytes are sent in place of a serialized request (corrupt wire format, invalid UTF-8 in a
string field). Whatever arrives, the server must answer with one of the documented status codes
and a short message without Python traceback text: never INTERNAL or UNKNOWN, and never crash.
A request that does not parse is INVALID_ARGUMENT.

The fuzz gets its own server (the same ``start_server`` as the session servers): it writes
megabytes of metadata and odd names into its data dir, which other tests must not see.

``TWOSTAGE_FUZZ_EXAMPLES`` sets examples per RPC (default 16; ``make reliability`` runs more).
``TWOSTAGE_FUZZ_REPORT=path.json`` records every outcome instead of failing at the first
violation, writes the counts there, and fails at the end if any violation was seen.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ServerProcess, start_server
from google.protobuf import descriptor as pbd
from google.protobuf import message_factory
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from twostage.protos.twostage.v1 import twostage_pb2 as pb
from twostage.protos.twostage.v1 import twostage_pb2_grpc as pb_grpc

EXAMPLES = int(os.environ.get("TWOSTAGE_FUZZ_EXAMPLES", "16"))
REPORT = os.environ.get("TWOSTAGE_FUZZ_REPORT", "")
CALL_TIMEOUT_S = 60.0
COLLECTION = "fz-docs"
# The documented collection name (proto: CreateCollectionRequest.name), matched as a whole string.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Refusals the contract names (protos/twostage/v1/twostage.proto header). DEADLINE_EXCEEDED and
# UNAVAILABLE are not expected: every request here is small enough to finish well in time.
EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MAX_DETAILS = 1000
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")

METHODS: list[pbd.MethodDescriptor] = [
    method for service in pb.DESCRIPTOR.services_by_name.values() for method in service.methods
]
METHOD_IDS = [m.name for m in METHODS]

# Values that reach past the first checks: the seeded collection, the loaded model names.
HINTS: dict[str, list[str]] = {
    "collection": [COLLECTION, COLLECTION, COLLECTION, "fz-missing"],
    "name": [COLLECTION, "fz-new", "fz-new\n", "fz-nl\n", "fz/../x", "..", "fz\x00x", "x" * 65],
    "model": ["", "embedder", "reranker", "classifier", "nope"],
    "reranker": ["", "reranker", "classifier", "embedder"],
    "embedder": ["", "embedder", "reranker"],
    "id": ["d0", "d1", "d2", "missing", "d0\n"],
    "ids": ["d0", "d1", "missing", ""],
}

# The seeded collection must survive the fuzz: DropCollection only gets other names.
MESSAGE_HINTS = {"DropCollectionRequest": {"name": ["fz-new", "fz-gone", "fz-new\n", "..", ""]}}
# Inputs a plausible request always carries.
INPUTS = {"texts", "query", "documents", "pairs", "text_a", "text_b", "text", "queries"}

# Valid unicode only: protobuf strings cannot carry surrogates.
_chars = st.characters(exclude_categories=("Cs",))
_odd = st.sampled_from(["", " ", "\n", "\r\n", "\x00", "\t", "../", "é", "日本", "🙂", "%s", "'"])
_text = st.one_of(
    st.text(_chars, max_size=40),
    st.text(string.printable, max_size=200),
    st.lists(_odd, max_size=6).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é ", "\x00", "🙂"]), st.integers(1, 5000)),
    st.builds(lambda n: "word " * n, st.integers(1, 30000)),
)
_words = st.lists(
    st.sampled_from(["cells", "protein", "cancer", "the", "of", "gene", "x", "é", "日本"]),
    min_size=1,
    max_size=12,
).map(" ".join)
# Map keys that match the seeded documents' metadata ("k") and ids (Tune's relevant ids).
MAP_KEYS = ["k", "a", "d0", "d1", "d2"]
_uint = st.one_of(st.integers(0, 20), st.integers(0, 2**32 - 1))
_int = st.one_of(st.integers(-5, 20), st.integers(-(2**63), 2**63 - 1))
_float = st.floats(width=32)
_double = st.floats()


def _text_for(field: pbd.FieldDescriptor, wild: bool) -> st.SearchStrategy[str]:
    hints = MESSAGE_HINTS.get(field.containing_type.name, {}).get(field.name, HINTS.get(field.name))
    if not wild:
        return st.sampled_from(hints) if hints else _words
    return st.one_of(st.sampled_from(hints), _text) if hints else _text


def _scalar(field: pbd.FieldDescriptor, wild: bool) -> st.SearchStrategy[Any]:
    t = field.type
    if t == pbd.FieldDescriptor.TYPE_STRING:
        return _text_for(field, wild)
    if t == pbd.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (pbd.FieldDescriptor.TYPE_FLOAT, pbd.FieldDescriptor.TYPE_DOUBLE):
        if not wild:
            return st.floats(0.0, 1.0, width=32)
        return _float if t == pbd.FieldDescriptor.TYPE_FLOAT else _double
    if t == pbd.FieldDescriptor.TYPE_ENUM:
        known = st.sampled_from([v.number for v in field.enum_type.values])
        # proto3 enums are open: unknown numbers travel on the wire and must be refused cleanly.
        return st.one_of(known, st.integers(-3, 1000)) if wild else known
    if not wild:
        return st.sampled_from([0, 0, 0, 1, 3, 10, 50])  # 0 = the server's default
    if t in (pbd.FieldDescriptor.TYPE_UINT32, pbd.FieldDescriptor.TYPE_FIXED32):
        return _uint
    if t in (pbd.FieldDescriptor.TYPE_UINT64, pbd.FieldDescriptor.TYPE_FIXED64):
        return st.one_of(_uint, st.integers(0, 2**64 - 1))
    if t in (pbd.FieldDescriptor.TYPE_INT32, pbd.FieldDescriptor.TYPE_SINT32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (pbd.FieldDescriptor.TYPE_INT64, pbd.FieldDescriptor.TYPE_SINT64):
        return _int
    raise NotImplementedError(f"field type {t} of {field.full_name}")


def _is_map(field: pbd.FieldDescriptor) -> bool:
    return (
        field.type == pbd.FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
    )


def _map(field: pbd.FieldDescriptor, wild: bool) -> st.SearchStrategy[dict[Any, Any]]:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    values = _scalar(value_field, wild)
    keys = st.text(_chars, max_size=20) if wild else st.sampled_from(MAP_KEYS)
    small = st.dictionaries(keys, values, max_size=6)
    options = [
        small,
        small,
        small,
        # Many keys (filters of hundreds or thousands of keys, metadata of 10k keys).
        st.builds(
            lambda n, v: {f"k{i}": v for i in range(n)},
            st.sampled_from([64, 600, 5000, 10000]),
            values,
        ),
    ]
    if key_field.type == value_field.type == pbd.FieldDescriptor.TYPE_STRING:
        # One huge value.
        options.append(st.builds(lambda n: {"k": "v" * n}, st.sampled_from([100_000, 1_000_000])))
    return st.one_of(options)


def _field(field: pbd.FieldDescriptor, depth: int, wild: bool) -> st.SearchStrategy[Any]:
    if _is_map(field):
        return _map(field, wild)
    if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
        item: st.SearchStrategy[Any] = message_strategy(field.message_type, depth + 1, wild)
    else:
        item = _scalar(field, wild)
    if not field.is_repeated:
        return item
    few = st.lists(item, max_size=5) if wild else st.lists(item, min_size=1, max_size=4)
    if field.type != pbd.FieldDescriptor.TYPE_STRING:
        return few
    # Many short items: past the per-request count limits.
    many = st.builds(lambda n: ["x"] * n, st.sampled_from([257, 1001, 5000]))
    return st.one_of(few, few, many)


def message_strategy(
    desc: pbd.Descriptor, depth: int = 0, wild: bool | None = None
) -> st.SearchStrategy[Message]:
    """Any message of type ``desc``: each field unset or drawn from its type's strategy.

    Half the requests are wild (any value of the field's type); the other half plausible (known
    names, small numbers, known enum values, most fields set), so that the fuzz reaches past the
    first validation into search, storage and the models.
    """
    cls = message_factory.GetMessageClass(desc)
    fields = [f for f in desc.fields if depth < 3 or f.type != pbd.FieldDescriptor.TYPE_MESSAGE]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        is_wild = draw(st.booleans()) if wild is None else wild
        msg = cls()
        for field in fields:
            # Plausible requests always name a target and carry inputs; knobs are set at random.
            essential = field.name in HINTS or field.name in INPUTS
            if is_wild and not draw(st.booleans()):
                continue
            if not is_wild and not essential and draw(st.integers(0, 2)) > 0:
                continue  # a plausible request sets one knob in three
            value = draw(_field(field, depth, is_wild))
            target = getattr(msg, field.name)
            if _is_map(field):
                target.update(value)  # no request map has message values
            elif field.is_repeated:
                if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                    for v in value:
                        target.add().CopyFrom(v)
                else:
                    target.extend(value)
            elif field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(msg, field.name, value)
        return msg

    return build()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_strategy(desc: pbd.Descriptor) -> st.SearchStrategy[bytes]:
    """Bytes in place of a serialized ``desc``: random, truncated, or invalid UTF-8 in a string."""
    strings = [
        f for f in desc.fields if f.type == pbd.FieldDescriptor.TYPE_STRING and not _is_map(f)
    ]
    bad_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"ok\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    options = [
        st.binary(min_size=1, max_size=64),
        # A field tag whose value never ends: a truncated varint or a length past the end.
        st.sampled_from([b"\x08\xff", b"\x12\x7f", b"\x0a\xff\xff\xff\xff\x0f", b"\xff\xff\xff"]),
    ]
    if strings:
        options.append(
            st.builds(
                lambda f, v: _varint(f.number << 3 | 2) + _varint(len(v)) + v,
                st.sampled_from(strings),
                bad_utf8,
            )
        )
    return st.one_of(options)


# --------------------------------------------------------------------------------------------------


class Outcomes:
    """Every call's status by RPC and kind; the violations, for the report or the assertion."""

    def __init__(self) -> None:
        self.codes: Counter[tuple[str, str, str]] = Counter()
        self.violations: list[dict[str, str]] = []
        self.messages: Counter[tuple[str, str, str]] = Counter()
        self.serving_after: bool | None = None

    def check(self, rpc: str, kind: str, code: grpc.StatusCode, details: str, expect: str) -> None:
        self.codes[(rpc, kind, code.name)] += 1
        if code != grpc.StatusCode.OK:
            self.messages[(rpc, code.name, details[:90])] += 1
        problems = []
        if expect == "invalid" and code != grpc.StatusCode.INVALID_ARGUMENT:
            problems.append(f"an unparsable request must be INVALID_ARGUMENT, got {code.name}")
        elif code != grpc.StatusCode.OK and code not in EXPECTED:
            problems.append(f"status {code.name} is not an expected refusal")
        if code != grpc.StatusCode.OK:
            if not details.strip():
                problems.append("empty status message")
            if TRACEBACK.search(details):
                problems.append("status message carries a Python traceback")
            if len(details) > MAX_DETAILS:
                problems.append(f"status message longer than {MAX_DETAILS} characters")
            if "metadata size exceeds" in details:
                # The server's status message was too large for the transport: the caller sees
                # this instead of the refusal the server meant (an echo of a huge input).
                problems.append("status message too large for gRPC metadata (echoes the input)")
        if not problems:
            return
        violation = {"rpc": rpc, "kind": kind, "code": code.name, "details": details[:300]}
        violation["problems"] = "; ".join(problems)
        if REPORT:
            self.violations.append(violation)
        else:
            raise AssertionError(f"{rpc} ({kind}): {violation['problems']}: {details[:300]!r}")


OUTCOMES = Outcomes()


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory, server_models: dict[str, Path]
) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("fuzz-server"), server_models)
    with grpc.insecure_channel(server.address) as ch:
        collections = pb_grpc.CollectionsStub(ch)
        collections.CreateCollection(pb.CreateCollectionRequest(name=COLLECTION), timeout=30)
        docs = [
            pb.Document(id=f"d{i}", text=f"document {i} about cells", metadata={"k": str(i % 2)})
            for i in range(8)
        ]
        collections.Upsert(pb.UpsertRequest(collection=COLLECTION, documents=docs), timeout=60)
    yield server
    server.stop()
    _write_report()


@pytest.fixture(scope="module")
def channel(fuzz_server: ServerProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(fuzz_server.address, options=options) as ch:
        yield ch


def _call(channel: grpc.Channel, method: pbd.MethodDescriptor, payload: bytes) -> tuple[Any, str]:
    # No serializers: the payload goes on the wire exactly as given.
    rpc = channel.unary_unary(f"/{method.containing_service.full_name}/{method.name}")
    try:
        rpc(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # Each example is a network call: shrinking would replay hundreds of them.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_any_request_is_answered_or_refused_cleanly(
    channel: grpc.Channel, method: pbd.MethodDescriptor
) -> None:
    @_SETTINGS
    @given(message_strategy(method.input_type))
    def check(request: Message) -> None:
        code, details = _call(channel, method, request.SerializeToString())
        OUTCOMES.check(method.name, "message", code, details, expect="any")

    check()


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_unparsable_request_is_invalid_argument(
    channel: grpc.Channel, method: pbd.MethodDescriptor
) -> None:
    cls = message_factory.GetMessageClass(method.input_type)

    @_SETTINGS
    @given(raw_strategy(method.input_type))
    def check(payload: bytes) -> None:
        try:
            cls.FromString(payload)
        except DecodeError:
            expect, kind = "invalid", "unparsable"
        else:
            expect, kind = "any", "random-bytes"  # random bytes that happen to parse
        code, details = _call(channel, method, payload)
        OUTCOMES.check(method.name, kind, code, details, expect=expect)

    check()


def test_collections_keep_documented_names(channel: grpc.Channel) -> None:
    """Whatever CreateCollection was sent, every collection listed has a documented name."""
    listed = pb_grpc.CollectionsStub(channel).ListCollections(
        pb.ListCollectionsRequest(), timeout=10
    )
    bad = [c.name for c in listed.collections if not NAME_PATTERN.fullmatch(c.name)]
    assert not bad, f"collections outside the documented name pattern: {bad!r}"


def _write_report() -> None:
    if not REPORT:
        return
    by_rpc: dict[str, dict[str, dict[str, int]]] = {}
    for (rpc, kind, code), n in sorted(OUTCOMES.codes.items()):
        by_rpc.setdefault(rpc, {}).setdefault(kind, {})[code] = n
    calls = sum(OUTCOMES.codes.values())
    codes = Counter[str]()
    for (_, _, code), n in OUTCOMES.codes.items():
        codes[code] += n
    report = {
        "examples_per_rpc_and_kind": EXAMPLES,
        "calls": calls,
        "codes": dict(codes.most_common()),
        "violations": len(OUTCOMES.violations),
        "serving_after": OUTCOMES.serving_after,
        "violations_by_problem": dict(
            Counter(v["problems"] for v in OUTCOMES.violations).most_common()
        ),
        "violation_examples": OUTCOMES.violations[:20],
        "by_rpc": by_rpc,
        "frequent_refusals": [
            {"rpc": rpc, "code": code, "details": details, "count": n}
            for (rpc, code, details), n in OUTCOMES.messages.most_common(40)
        ],
    }
    Path(REPORT).parent.mkdir(parents=True, exist_ok=True)
    Path(REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def test_server_survives_the_fuzz(fuzz_server: ServerProcess, channel: grpc.Channel) -> None:
    """Runs last: the process is alive and SERVING; in report mode, no violation was recorded."""
    assert fuzz_server.proc.poll() is None, f"the server died during the fuzz:\n{fuzz_server.log()}"
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
    OUTCOMES.serving_after = status == health_pb2.HealthCheckResponse.SERVING
    assert OUTCOMES.serving_after, fuzz_server.log()
    problems = Counter(v["problems"] for v in OUTCOMES.violations)
    assert not OUTCOMES.violations, f"{len(OUTCOMES.violations)} violations: {dict(problems)}"
