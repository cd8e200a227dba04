"""A small Python client for the conversion-matcher service.

    from server.client import Client, error_code
    with Client("127.0.0.1:50051", token="...") as client:
        pixel = client.create_pixel("act_1", "Checkout", tag="checkout")
        created = client.create_custom_conversion(
            "act_1", "Big purchases", pixel.id, {"and": [{"event": "Purchase"}, {"value": {"gt": 100}}]}
        )
        results = client.classify_pixel_events([{"pixel_id": pixel.id, "event": "Purchase", "custom_data": {"value": 150}}])

Rejected calls raise ``grpc.RpcError``; :func:`error_code` reads the numeric code (100, 190,
200, 368) from the rich status details, :func:`error_info` the whole ``ErrorInfo``.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from matcher.columns import NumberColumn, TextColumn
from matcher.values import fold, is_text

from server.gen.conversion_matcher.v1 import (
    ads_pb2,
    ads_pb2_grpc,
    classification_pb2,
    classification_pb2_grpc,
    custom_conversions_pb2,
    custom_conversions_pb2_grpc,
    pixels_pb2,
    pixels_pb2_grpc,
)

__all__ = ["Client", "ConversionMatch", "AdMatch", "EventResult", "error_code", "error_info", "split_columns", "pixel_event_columns",
           "pixel_event_buffers", "text_buffer", "number_buffer", "EVENT_FORMS",
           "custom_parameter_columns"]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` in a rejected call's rich status, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_code(error: grpc.RpcError) -> int | None:
    """The numeric Graph API code (100, 190, 200, 368, ...) of a rejected call."""
    info = error_info(error)
    return int(info.metadata["code"]) if info is not None and "code" in info.metadata else None


@dataclass(frozen=True)
class ConversionMatch:
    custom_conversion_id: str
    value: float


@dataclass(frozen=True)
class AdMatch:
    ad_id: str
    tracking_spec_index: int  # -1: no tracking spec matched
    conversion_spec_index: int  # -1: no conversion spec matched


@dataclass(frozen=True)
class EventResult:
    conversions: tuple[ConversionMatch, ...]
    ads: tuple[AdMatch, ...]


def split_columns(counts: Sequence[int], *columns: Sequence) -> list[list[tuple]]:
    """Turn a columnar reply into one list of row tuples per input."""
    out, position = [], 0
    for count in counts:
        out.append([tuple(column[i] for column in columns) for i in range(position, position + count)])
        position += count
    return out


def _typed_value(value: Any) -> bool:
    """Whether a custom parameter's value travels as a typed column with the same meaning as
    in JSON: a non-empty text with a UTF-8 form, a number that is not NaN, an int a double
    holds exactly (so its text and number are unchanged), or None (absent)."""
    kind = type(value)
    if kind is str:
        return bool(value) and is_text(value)
    if kind is float:
        return value == value
    if kind is int:
        try:
            return float(value) == value
        except OverflowError:
            return False
    return value is None


def custom_parameter_columns(data: Sequence[Any]) -> list[classification_pb2.CustomParameterColumn] | None:
    """Per-event custom data (a mapping or None each) as typed columns, or None when some
    event's data needs JSON (see ``_typed_value``), or two names are equal under case
    folding (rules look names up folded, first match first: the order of the columns could
    then change which key a rule reads)."""
    names: dict[str, int] = {}  # name -> its column, in first-appearance order
    for item in data:
        if item is None:
            continue
        if not isinstance(item, Mapping):
            return None
        for name, value in item.items():
            if not _typed_value(value):
                return None
            if name not in names:
                if type(name) is not str or not _typed_value(name):  # a non-empty text, as the server wants
                    return None
                names[name] = len(names)
    if not names or len({fold(name) for name in names}) != len(names):
        return None
    count = len(data)
    texts: list[list[str] | None] = [None] * len(names)
    numbers: list[list[float] | None] = [None] * len(names)
    for i, item in enumerate(data):
        if not item:
            continue
        for name, value in item.items():
            if value is None:
                continue
            column = names[name]
            if type(value) is str:
                if texts[column] is None:
                    texts[column] = [""] * count
                texts[column][i] = value
            else:
                if numbers[column] is None:
                    numbers[column] = [math.nan] * count
                numbers[column][i] = float(value)
    return [
        classification_pb2.CustomParameterColumn(name=name, texts=texts[c] or (), numbers=numbers[c] or ())
        for name, c in names.items()
    ]


def pixel_event_columns(events: Sequence[Mapping[str, Any]], *, custom: str = "auto") -> classification_pb2.PixelEventColumns:
    """Events (mappings like the matcher's) as the columnar message.

    Custom data goes as typed ``custom_parameters`` columns when ``custom`` is ``"auto"`` and
    every event's custom data can (flat: non-empty texts, numbers a double holds, nulls; no
    two names equal under case folding), else as the ``custom_data`` JSON array (always with
    ``custom="json"``)."""
    if custom not in ("auto", "json"):
        raise ValueError(f'custom: "auto" or "json", not {custom!r}')
    columns = classification_pb2.PixelEventColumns(
        pixel_id=[str(e["pixel_id"]) for e in events],
        event=[e.get("event") or "" for e in events],
        url=[e.get("url") or "" for e in events],
        device_type=[e.get("device_type") or "" for e in events],
        event_time=[int(e.get("event_time") or 0) for e in events],
    )
    if any(e.get("custom_data") for e in events):
        data = [e.get("custom_data") for e in events]
        typed = custom_parameter_columns(data) if custom == "auto" else None
        if typed is not None:
            columns.custom_parameters.extend(typed)
        else:
            columns.custom_data = json.dumps(data, separators=(",", ":"))
    return columns


def _little_endian(code: str, values: Iterable) -> array:
    """An array of type ``code`` from values (its bytes then little-endian) or from little-endian
    bytes (its values then this machine's): one byte swap on a big-endian machine either way."""
    values = array(code, values)
    if sys.byteorder == "big":
        values.byteswap()
    return values


def match_lists(buffers: classification_pb2.MatchBuffers) -> tuple[list[int], list[str], list[float]]:
    """A reply's ``MatchBuffers`` as its fields 1-3 would hold them: (counts, ids, values)."""
    offsets = _little_endian("i", buffers.custom_conversion_ids.offsets).tolist()
    data = buffers.custom_conversion_ids.data
    ids = [data[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:])]
    return (_little_endian("I", buffers.conversion_counts).tolist(), ids,
            _little_endian("d", buffers.conversion_values).tolist())


def text_buffer(texts: Sequence[str | None]) -> classification_pb2.TextBuffer:
    """Texts (``None``: absent) as a ``TextBuffer`` (Arrow's string layout, int32 offsets)."""
    validity, offsets, data = TextColumn.from_texts(texts).buffers()
    return classification_pb2.TextBuffer(data=bytes(data), offsets=_little_endian("i", offsets.tolist()).tobytes(),
                                         validity=validity or b"")


def number_buffer(numbers: Sequence[float | None]) -> classification_pb2.NumberBuffer:
    """Numbers (``None``: absent) as a ``NumberBuffer`` (float64)."""
    validity, values = NumberColumn.from_numbers(numbers).buffers()
    return classification_pb2.NumberBuffer(values=_little_endian("d", values).tobytes(), validity=validity or b"")


def pixel_event_buffers(events: Sequence[Mapping[str, Any]]) -> classification_pb2.PixelEventBuffers:
    """Events (mappings like the matcher's) as buffers: a field an event lacks (or holds as
    ``None``) is a clear validity bit, an empty text an empty text. Custom data must be what
    typed columns carry (see ``custom_parameter_columns``), else ValueError: the buffer form
    has no JSON."""
    def texts(name: str) -> classification_pb2.TextBuffer | None:
        values = [e.get(name) for e in events]
        return text_buffer(values) if any(v is not None for v in values) else None

    buffers = classification_pb2.PixelEventBuffers(
        count=len(events), pixel_id=text_buffer([str(e["pixel_id"]) for e in events]), event=texts("event"),
        url=texts("url"), device_type=texts("device_type"),
        event_time=_little_endian("q", [int(e.get("event_time") or 0) for e in events]).tobytes(),
    )
    if any(e.get("custom_data") for e in events):
        typed = custom_parameter_columns([e.get("custom_data") for e in events])
        if typed is None:
            raise ValueError("custom data that typed columns cannot carry: send it as columns (JSON) or rows")
        for column in typed:
            parameter = buffers.custom_parameters.add(name=column.name)
            if column.texts:
                parameter.texts.CopyFrom(text_buffer([t or None for t in column.texts]))
            if column.numbers:
                parameter.numbers.CopyFrom(number_buffer([n if n == n else None for n in column.numbers]))
    return buffers


# How a ClassifyPixelEventsRequest carries a batch: its field -> the message built from events.
EVENT_FORMS = {"columns": pixel_event_columns, "buffers": pixel_event_buffers}


class Client:
    """Stubs for the four services with the token attached; convenience methods for common calls."""

    def __init__(self, target: str, token: str | None = None, *, timeout: float = 30.0,
                 max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(
            target,
            options=[("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)],
        )
        self.metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
        self.timeout = timeout
        self.pixels = pixels_pb2_grpc.PixelServiceStub(self.channel)
        self.custom_conversions = custom_conversions_pb2_grpc.CustomConversionServiceStub(self.channel)
        self.ads = ads_pb2_grpc.AdServiceStub(self.channel)
        self.classification = classification_pb2_grpc.ClassificationServiceStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def call(self, method: Any, request: Any) -> Any:
        """Invoke any unary stub method with the token and timeout."""
        return method(request, metadata=self.metadata, timeout=self.timeout)

    def pages(self, method: Any, original: Any) -> Iterator[Any]:
        """The replies of a paged call (``ListAds``, ``ListPixels``, ``ListAuthorizedAdAccounts``,
        ``GetPixelSnippets``, ``GetCustomConversionStats``), one per page, following ``next_page_token`` until it is empty;
        ``original`` is not changed."""
        request = type(original)()
        request.CopyFrom(original)
        while True:
            reply = self.call(method, request)
            yield reply
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token

    def list_ads(self, account_id: str) -> list[ads_pb2.AdRegistration]:
        """Every ad of the account, every page."""
        request = ads_pb2.ListAdsRequest(account_id=account_id)
        return [ad for reply in self.pages(self.ads.ListAds, request) for ad in reply.ads]

    def list_pixels(self, account_id: str) -> list[pixels_pb2.Pixel]:
        """Every pixel the account is authorised on, every page."""
        request = pixels_pb2.ListPixelsRequest(account_id=account_id)
        return [pixel for reply in self.pages(self.pixels.ListPixels, request) for pixel in reply.pixels]

    # -- pixels -----------------------------------------------------------------------------
    def create_pixel(self, account_id: str, name: str, tag: str = "") -> pixels_pb2.Pixel:
        return self.call(self.pixels.CreatePixel, pixels_pb2.CreatePixelRequest(account_id=account_id, name=name, tag=tag))

    def get_pixel(self, pixel_id: str) -> pixels_pb2.Pixel:
        return self.call(self.pixels.GetPixel, pixels_pb2.GetPixelRequest(pixel_id=pixel_id))

    def authorized_accounts(self, pixel_id: str) -> list[str]:
        """Every ad account authorised on the pixel, every page."""
        request = pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel_id)
        return [a for reply in self.pages(self.pixels.ListAuthorizedAdAccounts, request) for a in reply.account_ids]

    def snippets(self, pixel_id: str, value_cents: int | None = None) -> pixels_pb2.PixelSnippets:
        """Every snippet of the pixel, the pages joined into one reply."""
        request = pixels_pb2.GetPixelSnippetsRequest(pixel_id=pixel_id)
        if value_cents is not None:
            request.value = value_cents
        joined = pixels_pb2.PixelSnippets(pixel_id=pixel_id)
        for reply in self.pages(self.pixels.GetPixelSnippets, request):
            joined.snippets.extend(reply.snippets)
        return joined

    # -- custom conversions ------------------------------------------------------------------
    def create_custom_conversion(self, account_id: str, name: str, event_source_id: str, rule: Any, *,
                                 custom_event_type: str | None = None, default_conversion_value: float = 0.0,
                                 description: str = "") -> custom_conversions_pb2.CreateCustomConversionResponse:
        request = custom_conversions_pb2.CreateCustomConversionRequest(
            account_id=account_id, name=name, event_source_id=event_source_id,
            rule=rule if isinstance(rule, str) else json.dumps(rule),
            default_conversion_value=default_conversion_value, description=description,
        )
        if custom_event_type is not None:
            request.custom_event_type = custom_event_type
        return self.call(self.custom_conversions.CreateCustomConversion, request)

    def update_custom_conversion(self, conversion_id: str, **changes: Any) -> custom_conversions_pb2.CustomConversion:
        return self.call(
            self.custom_conversions.UpdateCustomConversion,
            custom_conversions_pb2.UpdateCustomConversionRequest(
                custom_conversion=custom_conversions_pb2.CustomConversion(id=conversion_id, **changes),
                update_mask=field_mask_pb2.FieldMask(paths=list(changes)),
            ),
        )

    def stats(self, conversion_id: str, aggregation: str = "count", start_time: int = 0,
              end_time: int = 0, page_size: int = 0) -> custom_conversions_pb2.CustomConversionStats:
        """Every row of the range, every page (``page_size`` rows a call; 0: as many as fit),
        in one message."""
        request = custom_conversions_pb2.GetCustomConversionStatsRequest(
            custom_conversion_id=conversion_id, aggregation=aggregation, start_time=start_time, end_time=end_time,
            page_size=page_size,
        )
        whole = custom_conversions_pb2.CustomConversionStats()
        for reply in self.pages(self.custom_conversions.GetCustomConversionStats, request):
            whole.MergeFrom(reply)
        whole.next_page_token = ""  # (proto3 merges keep an earlier page's: the last one's is empty)
        return whole

    # -- classification ----------------------------------------------------------------------
    @staticmethod
    def event_results(reply: classification_pb2.ClassifyPixelEventsResponse) -> list[EventResult]:
        if reply.HasField("buffers"):
            conversions = split_columns(*match_lists(reply.buffers))
        else:
            conversions = split_columns(reply.conversion_counts, reply.custom_conversion_ids, reply.conversion_values)
        ads = split_columns(reply.ad_counts, reply.ad_ids, reply.tracking_spec_indexes, reply.conversion_spec_indexes)
        return [
            EventResult(tuple(ConversionMatch(*m) for m in c), tuple(AdMatch(*a) for a in a_))
            for c, a_ in zip(conversions, ads)
        ]

    def classify_pixel_events(self, events: Sequence[Mapping[str, Any]], *, record: bool = False,
                              form: str = "columns", reply_as_buffers: bool = False) -> list[EventResult]:
        """``form``: ``"columns"`` (``pixel_event_columns``) or ``"buffers"`` (``pixel_event_buffers``);
        ``reply_as_buffers``: the server sends the matches as ``MatchBuffers`` (the results are
        the same)."""
        if form not in EVENT_FORMS:
            raise ValueError(f'form: "columns" or "buffers", not {form!r}')
        request = classification_pb2.ClassifyPixelEventsRequest(**{form: EVENT_FORMS[form](events)}, record=record,
                                                                reply_as_buffers=reply_as_buffers)
        return self.event_results(self.call(self.classification.ClassifyPixelEvents, request))

    def stream_pixel_events(self, batches: Iterable[Sequence[Mapping[str, Any]]], *,
                            record: bool = False) -> Iterator[list[EventResult]]:
        requests = (
            classification_pb2.ClassifyPixelEventsRequest(columns=pixel_event_columns(b), record=record) for b in batches
        )
        for reply in self.classification.StreamClassifyPixelEvents(requests, metadata=self.metadata, timeout=self.timeout):
            yield self.event_results(reply)

    @staticmethod
    def action_results(reply: classification_pb2.ClassifyActionsResponse) -> list[list[AdMatch]]:
        rows = split_columns(reply.ad_counts, reply.ad_ids, reply.tracking_spec_indexes, reply.conversion_spec_indexes)
        return [[AdMatch(*row) for row in ads] for ads in rows]

    def classify_actions(self, actions: Sequence[Mapping[str, Any]]) -> list[list[AdMatch]]:
        request = classification_pb2.ClassifyActionsRequest(actions=[json.dumps(a) for a in actions])
        return self.action_results(self.call(self.classification.ClassifyActions, request))

    # -- ads -------------------------------------------------------------------------------------
    def register_ad(self, ad: Mapping[str, Any], *, replace: bool = False) -> ads_pb2.AdRegistration:
        fields = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in ad.items()}
        method = self.ads.ReplaceAd if replace else self.ads.RegisterAd
        return self.call(method, ads_pb2.RegisterAdRequest(ad=ads_pb2.Ad(**fields)))
