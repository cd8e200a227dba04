"""Service errors and the one place that turns them into gRPC statuses.

Servicers raise :class:`ServiceError` subclasses (or let a ``matcher.MatcherError`` escape);
:class:`ErrorInterceptor` maps every exception to a status carrying rich details: a
``google.rpc.Status`` whose details hold a ``google.rpc.ErrorInfo`` with
``metadata["code"]`` set to the numeric Graph API code, so a client in any language can
read it. Anything unexpected becomes ``INTERNAL`` and is logged with its traceback;
the message sent to the client never includes internals.
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal
from typing import Any, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

import matcher
from matcher.values import json_error_reason, json_not_text, unique_keys_object

log = logging.getLogger("server.errors")

ERROR_DOMAIN = "conversion-matcher"

UNKNOWN_ERROR = 1
INVALID_PARAMETER = 100
INVALID_TOKEN = 190
PERMISSIONS_ERROR = 200
LIMIT_REACHED = 368


class ServiceError(Exception):
    """A request the service rejects: a gRPC status, a Graph API code and an actionable message."""

    status: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    code: int = INVALID_PARAMETER
    reason: str = "INVALID_PARAMETER"

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def within(self, place: str) -> "ServiceError":
        """The same error placed inside ``place`` (``requests[2]``): its message's path, which
        starts at a request's field, then starts there. (Made without the constructor, which a
        subclass may give other arguments than a message; its attributes copied.)"""
        placed = type(self).__new__(type(self))
        placed.__dict__.update(vars(self))
        placed.message = f"{place}.{self.message}"
        placed.args = (placed.message,)
        return placed


class InvalidArgument(ServiceError):
    """Code 100: a parameter is missing, malformed or not allowed."""


class Unauthenticated(ServiceError):
    status = grpc.StatusCode.UNAUTHENTICATED
    code = INVALID_TOKEN
    reason = "INVALID_ACCESS_TOKEN"


class PermissionDenied(ServiceError):
    status = grpc.StatusCode.PERMISSION_DENIED
    code = PERMISSIONS_ERROR
    reason = "PERMISSIONS_ERROR"


class PixelNotAuthorised(PermissionDenied):
    """An ad's specs name ``pixel_id``, a registered pixel its account is not authorised on (the
    store finds it in the write's transaction; the handler, which knows the request, names
    the field that named it)."""

    def __init__(self, pixel_id: str, account_id: str) -> None:
        super().__init__(f"Permissions error: the ad's specs name pixel {pixel_id}, and ad account "
                         f"{account_id} is not authorised on it")
        self.pixel_id = pixel_id


def account_not_on_pixel(account_id: str, pixel_id: str) -> PermissionDenied:
    """The refusal of a custom conversion whose account is not authorised on its pixel (the
    handler checks before compiling; the store again in the write's transaction)."""
    return PermissionDenied(
        f"event_source_id: Permissions error: ad account {account_id} is not authorised on pixel {pixel_id}")


def not_the_owner(what: str, field: str) -> PermissionDenied:
    """The refusal when ``what``, named by the request's ``field``, belongs to an account the
    caller's token does not hold. It does not name that account: ad ids are chosen by
    callers, so they can be guessed."""
    return PermissionDenied(
        f"{field}: Permissions error: {what} belongs to an ad account this access token cannot act for")


class NotFound(ServiceError):
    status = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(ServiceError):
    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class LimitExceeded(ServiceError):
    """Code 368: a request over the size limits."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = LIMIT_REACHED
    reason = "LIMIT_EXCEEDED"


# By (decimals, unique keys): json.loads's own decoder (NaN and Infinity, which Python's json
# writes, are read: a custom parameter's infinity is no conversion value), one reading
# fractions as Decimal, as action specs are read (a number is its decimal text), and each
# refusing a key given twice, as specs and rules do.
_DECODERS = {
    (decimals, unique): json.JSONDecoder(parse_float=Decimal if decimals else None,
                                         object_pairs_hook=unique_keys_object if unique else None)
    for decimals in (False, True) for unique in (False, True)
}


def parse_json(text: str, where: str, *, decimals: bool = False, unique_keys: bool = False) -> Any:
    """Decode JSON text a client sent; InvalidArgument naming ``where`` when it is not JSON, or
    holds what no event or spec can: an integer of more digits than Python converts, an
    escaped lone surrogate (protobuf's strings are UTF-8, so that is the only way
    one gets in, and nothing downstream could encode it). ``decimals``: fractions as
    ``Decimal``, their digits as written; ``unique_keys``: a key given twice in one object is
    an error (custom data, the hot path, keeps JSON's last-one-wins)."""
    try:
        value = _DECODERS[decimals, unique_keys].decode(text)
    except RecursionError:
        raise InvalidArgument(f"{where}: JSON nested too deeply") from None
    except ValueError as error:  # not JSON (its place as line and column), a hook's refusal, too many digits
        raise InvalidArgument(f"{where}: not JSON ({json_error_reason(text, error)})") from None
    found = json_not_text(text, value, where)
    if found is not None:
        place, reason = found
        raise InvalidArgument(f"{place}: {reason}")
    return value


def one_of(text: str, names: tuple[str, ...], where: str) -> str:
    """The one of ``names`` (upper-case) that ``text`` names, ASCII letters compared without
    case ("lead" is LEAD); InvalidArgument naming ``where`` for anything else, blanks around
    it included, and letters only Unicode upper-cases to ASCII ones ("\u017f" is no "S")."""
    upper = text.upper() if text.isascii() else ""
    if upper not in names:
        raise InvalidArgument(f"{where}: {text!r} is not one of {', '.join(names)}")
    return upper


# An error's message travels twice in the response's headers (grpc-message, percent-encoded,
# and in the details), which clients cap at 8-16 KiB: a message quoting a long input is cut.
MAX_MESSAGE_BYTES = 1024


def _sendable(message: str) -> str:
    """``message`` as UTF-8 text of at most ``MAX_MESSAGE_BYTES`` (a lone surrogate quoted
    from the input is written as its escape: protobuf cannot carry it)."""
    data = message.encode("utf-8", "backslashreplace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return data.decode("utf-8")
    return data[:MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "..."


def rich_status(status: grpc.StatusCode, code: int, reason: str, message: str) -> grpc.Status:
    """A gRPC status whose details carry ``ErrorInfo`` with the numeric ``code``."""
    message = _sendable(message)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata={"code": str(code)})
    detail = any_pb2.Any()
    detail.Pack(info)
    return rpc_status.to_status(
        status_pb2.Status(code=status.value[0], message=message, details=[detail])
    )


def to_status(error: BaseException) -> grpc.Status:
    """The status a client receives for ``error``."""
    if isinstance(error, ServiceError):
        return rich_status(error.status, error.code, error.reason, error.message)
    if isinstance(error, matcher.MatcherError):
        return rich_status(grpc.StatusCode.INVALID_ARGUMENT, error.code, "INVALID_PARAMETER", str(error))
    return rich_status(grpc.StatusCode.INTERNAL, UNKNOWN_ERROR, "INTERNAL", "internal error; the server logged it")


def _ended(error: BaseException, method: str, context: grpc.ServicerContext) -> tuple[grpc.Status, str]:
    """The status a call that raised ``error`` answers with, and the code it is counted and
    logged under. A call the client cancelled, or whose deadline passed, ends in errors that
    are neither its answer nor a bug: counted as CANCELLED or DEADLINE_EXCEEDED, not logged."""
    status = to_status(error)
    if isinstance(error, (ServiceError, matcher.MatcherError)):
        return status, status.code.name
    if not context.is_active():
        return status, _gone_code(context)
    log.exception("unexpected error", extra={"method": method})
    return status, status.code.name


def _gone_code(context: grpc.ServicerContext) -> str:
    """The code of a call that is no longer active: its deadline passed, or the client cancelled."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"


class Undecodable:
    """A request message that does not parse (bytes that are not protobuf, a string field that
    is not UTF-8). gRPC would answer it INTERNAL with no details, before any handler ran; the
    interceptor's deserializer hands it on instead, and the handler's wrapper answers code 100."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def error(self, place: str) -> InvalidArgument:
        return InvalidArgument(f"{place}: {self.message}")


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    owner = getattr(deserialize, "__self__", None)  # generated code passes Message.FromString
    name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")

    def tolerant(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:  # noqa: BLE001 - every parse failure is the client's
            return Undecodable(f"not a valid {name} message ({error})")

    return tolerant


def _decoded(request: Any) -> Any:
    if type(request) is Undecodable:
        raise request.error("request")
    return request


def _each_decoded(requests: Any) -> Any:
    for i, request in enumerate(requests):
        if type(request) is Undecodable:
            raise request.error(f"requests[{i}]")
        yield request


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions raised by any handler (unary or streaming) to rich statuses, and
    reports every call's method, status and duration to ``observe`` (metrics)."""

    def __init__(self, observe: Callable[[str, str, float], None] | None = None) -> None:
        self._observe = observe or (lambda method, code, seconds: None)
        # method -> (the handler gRPC found, its wrapped copy): gRPC asks on every call, and the
        # registered handlers never change, so each is wrapped once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        found = self._wrapped.get(method)
        if found is not None and found[0] is handler:
            return found[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)  # racing first calls wrap twice, harmlessly
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        checked = _each_decoded if handler.request_streaming else _decoded
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, method, checked))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, method, checked))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, method, checked))
        return handler._replace(stream_stream=self._wrap_stream(handler.stream_stream, method, checked))

    def _wrap_unary(self, behaviour: Callable, method: str, checked: Callable[[Any], Any]) -> Callable:
        observe = self._observe

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return behaviour(checked(request), context)
            except Exception as error:  # noqa: BLE001 - every error becomes a status
                status, code = _ended(error, method, context)
                context.abort_with_status(status)
            finally:
                observe(method, code, time.perf_counter() - started)

        return unary

    def _wrap_stream(self, behaviour: Callable, method: str, checked: Callable[[Any], Any]) -> Callable:
        observe = self._observe

        def stream(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                yield from behaviour(checked(request), context)
                if not context.is_active():  # requests ended as the client cancelled: not an answer
                    code = _gone_code(context)
            except GeneratorExit:  # gRPC stopped reading the replies: the client went away
                code = _gone_code(context)
                raise
            except Exception as error:  # noqa: BLE001 - every error becomes a status
                status, code = _ended(error, method, context)
                context.abort_with_status(status)
            finally:
                observe(method, code, time.perf_counter() - started)

        return stream
