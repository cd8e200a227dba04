"""Whatever a client sends to any method, the server answers with a status and stays up; no
handler fails with an unexpected exception (the INTERNAL "server logged it" status).

Two generators: raw bytes (mostly refused by gRPC's own decoding), and well-formed requests
whose every field holds arbitrary values, or values that look almost right (ids of real
objects, JSON fragments, account ids), so the handlers' own validation is what gets tested."""

import math
import struct

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings, strategies as st

from server.app import SERVICE_NAMES
from server.client import Client
from server.gen.conversion_matcher.v1 import (
    ads_pb2,
    classification_pb2,
    custom_conversions_pb2,
    pixels_pb2,
)
from server.testing import running_server

FILES = (pixels_pb2, custom_conversions_pb2, ads_pb2, classification_pb2)
UNARY = [
    (f"/{service.full_name}/{method.name}", method.input_type)
    for module in FILES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if not method.client_streaming and not method.server_streaming
]
UNARY_METHODS = [name for name, _ in UNARY]
ALMOST_RIGHT = st.sampled_from([
    "", "act_1", "act_3", "act_", "1", "PX1", "{}", "[]", "null", '{"event": "Lead"}', '{"event": {"gt": "x"}}',
    '[{"action.type": "like", "page": "1"}]', '{"kind": "page_like", "page_id": "1"}', '[{}, null]', "{", "caf\u00e9 \u2713",
    "count", "url", "PURCHASE", "checkout", "name", "rule", "PAGE_LIKES", "x" * 300,
])
SCALARS = {
    # Mostly almost-right values: arbitrary text rarely gets past the first validation.
    FieldDescriptor.TYPE_STRING: st.one_of(ALMOST_RIGHT, ALMOST_RIGHT, ALMOST_RIGHT, st.text(max_size=40)),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_DOUBLE: st.floats(),
    # Buffers: arbitrary bytes, and runs of little-endian int32 that may pass as offsets.
    FieldDescriptor.TYPE_BYTES: st.one_of(
        st.binary(max_size=40), st.sampled_from([b"", b"\xff", b"caf\xc3\xa9", struct.pack("<2d", 1.5, math.nan)]),
        st.lists(st.integers(-2, 12), max_size=6).map(lambda xs: struct.pack(f"<{len(xs)}i", *xs)),
    ),
}


def messages(descriptor, depth=0):
    """Well-formed messages of ``descriptor`` with arbitrary field values."""
    fields = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 2:
                continue
            if field.message_type.full_name == "google.protobuf.FieldMask":
                value = st.builds(lambda paths: {"paths": paths}, st.lists(ALMOST_RIGHT, max_size=3))
            else:
                value = messages(field.message_type, depth + 1)
        else:
            value = SCALARS[field.type]
        if field.is_repeated:
            value = st.lists(value, max_size=4)
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields)


def build(descriptor, values):
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(descriptor)
    message = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if field.is_repeated else [value]
            for item in items:
                target = getattr(message, name).add() if field.is_repeated else getattr(message, name)
                target.CopyFrom(build(field.message_type, item))
        elif field.is_repeated:
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message
OUR_BUG = "internal error; the server logged it"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("fuzz") / "matcher.db") as (_, target):
        with Client(target, "owner-token") as owner:
            pixel = owner.create_pixel("act_1", "p").id
            owner.create_custom_conversion("act_1", "c", pixel, {"event": "Lead"})
        yield target


def test_every_unary_method_is_covered():
    assert len(UNARY_METHODS) == 9 + 7 + 5 + 2
    assert {m.split("/")[1] for m in UNARY_METHODS} == set(SERVICE_NAMES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(UNARY_METHODS), payload=st.binary(max_size=200),
       token=st.sampled_from(["owner-token", "ingest-token"]))
def test_random_bytes_never_crash_a_handler(target, method, payload, token):
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        try:
            call(payload, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except grpc.RpcError as error:
            assert error.details() != OUR_BUG, (method, payload)
            assert error.code() != grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("method", "descriptor"), UNARY, ids=[name.rsplit("/", 1)[1] for name in UNARY_METHODS])
def test_arbitrary_well_formed_requests_never_crash_a_handler(target, method, descriptor):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(values=messages(descriptor), token=st.sampled_from(["owner-token", "ingest-token"]))
    def check(values, token):
        request = build(descriptor, values)
        with grpc.insecure_channel(target) as channel:
            try:
                channel.unary_unary(method)(
                    request.SerializeToString(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
                )
            except grpc.RpcError as error:
                assert error.details() != OUR_BUG, request
                assert error.code() != grpc.StatusCode.UNAVAILABLE

    check()


def test_the_server_is_still_serving_after_the_fuzzing(target):
    with Client(target, "owner-token") as owner:
        assert owner.call(owner.pixels.ListPixels, pixels_pb2.ListPixelsRequest(account_id="act_1")).pixels
