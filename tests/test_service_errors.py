"""The one mapping from exceptions to rich statuses (server.errors.to_status)."""

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

import matcher
from server import errors


def details(status: grpc.Status) -> tuple[int, str, dict]:
    """(grpc code number, message, ErrorInfo metadata) from the status's binary details trailer."""
    (key, value), = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    rich = status_pb2.Status.FromString(value)
    (detail,) = rich.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info) and info.domain == "conversion-matcher"
    return rich.code, rich.message, dict(info.metadata)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.InvalidArgument("name: required"), grpc.StatusCode.INVALID_ARGUMENT, "100"),
        (errors.Unauthenticated("Invalid OAuth 2.0 Access Token"), grpc.StatusCode.UNAUTHENTICATED, "190"),
        (errors.PermissionDenied("Permissions error"), grpc.StatusCode.PERMISSION_DENIED, "200"),
        (errors.NotFound("pixel '1' does not exist"), grpc.StatusCode.NOT_FOUND, "100"),
        (errors.AlreadyExists("ad 'a' is already registered"), grpc.StatusCode.ALREADY_EXISTS, "100"),
        (errors.FailedPrecondition("limit"), grpc.StatusCode.FAILED_PRECONDITION, "100"),
        (errors.LimitExceeded("too many events"), grpc.StatusCode.RESOURCE_EXHAUSTED, "368"),
        (matcher.RuleError("rule.and[1].value", 'operator "gt" needs a number'), grpc.StatusCode.INVALID_ARGUMENT, "100"),
    ],
)
def test_service_errors_keep_their_status_code_and_message(error, status, code):
    mapped = errors.to_status(error)
    assert mapped.code == status
    number, message, metadata = details(mapped)
    assert number == status.value[0] and message == str(error) and metadata == {"code": code}


def test_unexpected_errors_are_internal_without_internals():
    mapped = errors.to_status(KeyError("secret detail"))
    assert mapped.code == grpc.StatusCode.INTERNAL
    _, message, metadata = details(mapped)
    assert "secret" not in message and metadata == {"code": "1"}


def test_parse_json_names_the_place():
    assert errors.parse_json('{"a": 1}', "x") == {"a": 1}
    with pytest.raises(errors.InvalidArgument) as raised:
        errors.parse_json('{"a":\n 1,}', "events[2].custom_data")
    # placed as rules and specs place it: line and column
    assert str(raised.value) == ("events[2].custom_data: not JSON (Expecting property name enclosed in double quotes "
                                 "at line 2 column 4)")
    with pytest.raises(errors.InvalidArgument, match="nested too deeply"):
        errors.parse_json("[" * 100_000 + "]" * 100_000, "columns.custom_data")
    # Python's own words ("use sys.set_int_max_str_digits()") would tell a client to raise a limit
    with pytest.raises(errors.InvalidArgument) as raised:
        errors.parse_json('{"value":\n ' + "9" * 5000 + "}", "events[0].custom_data")
    assert str(raised.value) == ("events[0].custom_data: not JSON (a number of 5,000 digits "
                                 "(at most 4,300 are read) at line 2 column 2)")


def test_a_pixel_refusal_placed_within_a_request_keeps_its_status_and_message():
    placed = errors.PixelNotAuthorised("5123", "act_1").within("requests[2]")
    assert isinstance(placed, errors.PermissionDenied) and placed.code == errors.PERMISSIONS_ERROR
    assert placed.message == ("requests[2].Permissions error: the ad's specs name pixel 5123, and ad account act_1 "
                              "is not authorised on it")
