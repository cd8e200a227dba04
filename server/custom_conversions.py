"""CustomConversionService: rules over one pixel's events, their values and stats."""

from __future__ import annotations

import math
import sys
from operator import itemgetter
from typing import Iterator

import matcher
from matcher.rules import LIST_OPS, SCALAR_OPS, And, Leaf, operand_text

from server.auth import Principal
from server.core import Core
from server.errors import InvalidArgument, account_not_on_pixel, one_of
from server.gen.conversion_matcher.v1 import custom_conversions_pb2 as pb, custom_conversions_pb2_grpc
from server.paging import fill, page_request, read_on, text_key
from server.store import CustomConversionRecord

CUSTOM_EVENT_TYPES = (
    "ADD_PAYMENT_INFO", "ADD_TO_CART", "ADD_TO_WISHLIST", "COMPLETE_REGISTRATION", "CONTENT_VIEW",
    "INITIATED_CHECKOUT", "LEAD", "PURCHASE", "SEARCH", "CONTACT", "CUSTOMIZE_PRODUCT", "DONATE",
    "FIND_LOCATION", "SCHEDULE", "START_TRIAL", "SUBMIT_APPLICATION", "SUBSCRIBE", "LISTING_INTERACTION",
    "FACEBOOK_SELECTED", "OTHER",
)
# Pixel standard event names (as fbq('track', ...) sends them) and the type each one predicts.
STANDARD_EVENTS = {
    "AddPaymentInfo": "ADD_PAYMENT_INFO",
    "AddToCart": "ADD_TO_CART",
    "AddToWishlist": "ADD_TO_WISHLIST",
    "CompleteRegistration": "COMPLETE_REGISTRATION",
    "ViewContent": "CONTENT_VIEW",
    "InitiateCheckout": "INITIATED_CHECKOUT",
    "Lead": "LEAD",
    "Purchase": "PURCHASE",
    "Search": "SEARCH",
    "Contact": "CONTACT",
    "CustomizeProduct": "CUSTOMIZE_PRODUCT",
    "Donate": "DONATE",
    "FindLocation": "FIND_LOCATION",
    "Schedule": "SCHEDULE",
    "StartTrial": "START_TRIAL",
    "SubmitApplication": "SUBMIT_APPLICATION",
    "Subscribe": "SUBSCRIBE",
}
UPDATABLE_FIELDS = ("name", "description", "default_conversion_value")
AGGREGATIONS = ("count", "url", "host", "device_type", "pixel_fire", "usd_amount", "unmatched_count", "unmatched_usd_amount")
# The aggregations read from the conversion's own hourly rows: (the dimension they are kept
# under, "" for per hour only; the row's column reported: 2 matches, 3 usd amount). The
# others read the pixel's rows.
_MATCHED_ROWS = {"count": ("", 2), "usd_amount": ("", 3), "url": ("url", 2), "host": ("host", 2),
                 "device_type": ("device_type", 2)}
DEFAULT_STATS_RANGE = 7 * 24 * 3600
HOUR = 3600


def _required_leaves(node) -> list[Leaf]:
    """Leaves that must hold for the rule to hold: the root leaf or leaves under top-level ``and``s."""
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, And):
        return [leaf for child in node.children for leaf in _required_leaves(child)]
    return []


def predict_custom_event_type(rule: matcher.Rule) -> str:
    """PURCHASE for a rule that requires ``event`` eq ``Purchase`` (and so on); else OTHER."""
    for leaf in _required_leaves(rule.root):
        if leaf.field.builtin == "event" and leaf.op == "eq" and leaf.operand in STANDARD_EVENTS:
            return STANDARD_EVENTS[leaf.operand]
    return "OTHER"


def check_event_names(rule: matcher.Rule, limit: int) -> None:
    """Custom event names in rules are at most ``limit`` characters: an equality's or a list's
    names, and the text of a number an equality compares names with (60 digits name an event
    of 60 characters)."""
    for leaf in rule.leaves():
        if leaf.field.builtin != "event" or leaf.op not in SCALAR_OPS + LIST_OPS:  # (the ops naming events)
            continue
        operands = leaf.operand if leaf.op in LIST_OPS else (operand_text(leaf),)
        for operand in operands:
            if len(operand) > limit:
                raise InvalidArgument(
                    f"rule: custom event name {operand[:20]!r}... is {len(operand)} characters, more than {limit}"
                )


def conversion_value(value: float, field_name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{field_name}: must be a finite number >= 0, got {value}")
    return value


def to_message(record: CustomConversionRecord) -> pb.CustomConversion:
    message = pb.CustomConversion(
        id=record.id,
        account_id=record.account_id,
        name=record.name,
        description=record.description,
        rule=record.rule,
        event_source_id=record.event_source_id,
        event_source_type=record.event_source_type,
        custom_event_type=record.custom_event_type,
        default_conversion_value=record.default_conversion_value,
        creation_time=record.creation_time,
        is_archived=record.is_archived,
        retention_days=record.retention_days,
    )
    if record.first_fired_time is not None:
        message.first_fired_time = record.first_fired_time
    if record.last_fired_time is not None:
        message.last_fired_time = record.last_fired_time
    return message


def _stats_key(key: object) -> tuple[int, str] | None:
    """The (hour, key) a stats token holds as ``[hour, key]``, the key read as ``text_key`` reads
    an id, or None when it holds something else (an hour past SQLite's integers or a lone
    surrogate could not even be bound)."""
    if (isinstance(key, list) and len(key) == 2 and type(key[0]) is int and -2**63 <= key[0] < 2**63
            and text_key(key[1]) is not None):
        return key[0], key[1]
    return None


def _unmatched(fired: Iterator[tuple[int, int, float]], matched: Iterator[tuple[int, str, int, float, float]],
               column: int) -> Iterator[tuple[int, str, float]]:
    """Per hour of the pixel's rows, its events (column 0) or their own values' sum (1) minus
    the conversion's matched ones: the two hour-ordered row streams merged."""
    row = next(matched, None)
    for hour, events, amount in fired:
        while row is not None and row[0] < hour:
            row = next(matched, None)
        taken = (row[2], row[4]) if row is not None and row[0] == hour else (0, 0.0)
        yield hour, "", (events, amount)[column] - taken[column]


class CustomConversionServicer(custom_conversions_pb2_grpc.CustomConversionServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    def _owned(self, principal: Principal, conversion_id: str, field: str = "custom_conversion_id") -> CustomConversionRecord:
        if not conversion_id:
            raise InvalidArgument(f"{field}: required")
        record = self.core.store.get_custom_conversion(conversion_id, field=field)
        principal.require_owner(record.account_id, f"custom conversion {record.id}", field)
        return record

    def CreateCustomConversion(self, request, context):
        principal = self.core.authenticate(context)
        account = principal.require_account(request.account_id)
        limits = self.core.limits
        name = self.core.text(request.name, "name")
        description = self.core.text(request.description, "description", required=False,
                                     limit=limits.max_description_chars, lines=True)
        if not request.event_source_id:
            raise InvalidArgument("event_source_id: required (the pixel whose events it counts)")
        if not request.rule:
            raise InvalidArgument("rule: required")
        rule = matcher.parse_rule(request.rule)
        check_event_names(rule, limits.max_custom_event_name_chars)
        predicted = not request.HasField("custom_event_type")
        if predicted:
            event_type = predict_custom_event_type(rule)
        else:
            event_type = one_of(request.custom_event_type, CUSTOM_EVENT_TYPES, "custom_event_type")
        default_value = conversion_value(request.default_conversion_value, "default_conversion_value")
        pixel = self.core.store.get_pixel(request.event_source_id, among=[account], field="event_source_id")
        if account not in pixel.authorized_accounts:
            raise account_not_on_pixel(account, pixel.id)
        record = CustomConversionRecord(
            id="",
            account_id=account,
            name=name,
            description=description,
            rule=rule.to_json(),
            event_source_id=pixel.id,
            event_source_type="pixel",
            custom_event_type=event_type,
            default_conversion_value=default_value,
            creation_time=self.core.now(),
            retention_days=request.retention_days,
        )
        stored = self.core.registry.add_custom_conversion(record, rule, limits.conversions_per_account)
        return pb.CreateCustomConversionResponse(
            id=stored.id, is_custom_event_type_predicted=predicted, custom_conversion=to_message(stored)
        )

    def GetCustomConversion(self, request, context):
        principal = self.core.authenticate(context)
        return to_message(self._owned(principal, request.custom_conversion_id))

    def ListCustomConversions(self, request, context):
        principal = self.core.authenticate(context)
        account = principal.require_account(request.account_id)
        archived = request.is_archived if request.HasField("is_archived") else None
        records = self.core.store.list_custom_conversions(account, archived)
        return pb.ListCustomConversionsResponse(custom_conversions=[to_message(r) for r in records])

    def UpdateCustomConversion(self, request, context):
        principal = self.core.authenticate(context)
        wanted = request.custom_conversion
        if request.HasField("update_mask") and request.update_mask.paths:
            paths = list(request.update_mask.paths)
        else:
            paths = [f.name for f, _ in wanted.ListFields() if f.name != "id"]
        frozen = [p for p in paths if p not in UPDATABLE_FIELDS]
        if frozen:
            raise InvalidArgument(
                f"custom_conversion.{frozen[0]}: cannot be changed; only {', '.join(UPDATABLE_FIELDS)} can be updated"
            )
        if not paths:
            raise InvalidArgument(f"nothing to update: give one of {', '.join(UPDATABLE_FIELDS)}")
        changes: dict[str, object] = {}
        limits = self.core.limits
        for path in dict.fromkeys(paths):
            if path == "name":
                changes["name"] = self.core.text(wanted.name, "custom_conversion.name")
            elif path == "description":
                changes["description"] = self.core.text(
                    wanted.description, "custom_conversion.description", required=False,
                    limit=limits.max_description_chars, lines=True,
                )
            else:
                changes[path] = conversion_value(wanted.default_conversion_value, "custom_conversion.default_conversion_value")
        record = self._owned(principal, wanted.id, "custom_conversion.id")
        return to_message(self.core.registry.update_custom_conversion(record.id, changes, field="custom_conversion.id"))

    def ArchiveCustomConversion(self, request, context):
        principal = self.core.authenticate(context)
        record = self._owned(principal, request.custom_conversion_id)
        archived = self.core.registry.untrack_custom_conversion(record.id, self.core.store.archive_custom_conversion)
        return to_message(archived)

    def DeleteCustomConversion(self, request, context):
        principal = self.core.authenticate(context)
        record = self._owned(principal, request.custom_conversion_id)
        self.core.registry.untrack_custom_conversion(record.id, self.core.store.delete_custom_conversion)
        return pb.DeleteCustomConversionResponse(success=True)

    def GetCustomConversionStats(self, request, context):
        principal = self.core.authenticate(context)
        aggregation = request.aggregation or "count"
        if aggregation not in AGGREGATIONS:
            raise InvalidArgument(f"aggregation: {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        for name in ("start_time", "end_time"):
            if getattr(request, name) < 0:
                raise InvalidArgument(f"{name}: {getattr(request, name)} is before 1970 (seconds since the epoch)")
        end = request.end_time or self.core.now() + 1
        start = request.start_time or end - DEFAULT_STATS_RANGE
        if start >= end:
            raise InvalidArgument(f"start_time: {start} is not before end_time {end}")
        start -= start % HOUR  # whole hours: an hour bucket is in range when it starts in range
        record = self._owned(principal, request.custom_conversion_id)
        page = page_request(request, "GetCustomConversionStats", f"{record.id}/{aggregation}", largest=sys.maxsize,
                            key=_stats_key)
        rows = self._stats_rows(record, aggregation, start, end, page.after)
        items = (((hour, key), pb.CustomConversionStatsRow(timestamp=hour, key=key, value=value))
                 for hour, key, value in rows)
        messages, token = fill(page, items, reply_bytes=self.core.limits.max_message_bytes, what="stats row")
        return pb.CustomConversionStats(custom_conversion_id=record.id, aggregation=aggregation, rows=messages,
                                        next_page_token=token)

    def _stats_rows(self, record: CustomConversionRecord, aggregation: str, start: int, end: int,
                    after: tuple[int, str] | None) -> Iterator[tuple[int, str, float]]:
        """(hour, key, value) rows after ``after``, in (hour, key) order, read from the store as
        the page needs them."""
        store = self.core.store

        def matched(dimension: str, after_row: tuple[int, str] | None) -> Iterator[tuple[int, str, int, float, float]]:
            return read_on(lambda after_, limit: store.conversion_hourly(record.id, dimension, start, end,
                                                                         after=after_, limit=limit),
                           itemgetter(0, 1), after_row)

        if aggregation in _MATCHED_ROWS:
            dimension, column = _MATCHED_ROWS[aggregation]
            return ((row[0], row[1], row[column]) for row in matched(dimension, after))
        after_hour = None if after is None else after[0]
        fired = read_on(lambda after_, limit: store.pixel_hourly(record.event_source_id, start, end,
                                                                 after=after_, limit=limit),
                        itemgetter(0), after_hour)
        if aggregation == "pixel_fire":
            return ((hour, "", events) for hour, events, _ in fired)
        # The pixel's events minus this conversion's matches; amounts are the events' own values.
        # The matched rows (one per hour, key "") are read alongside, as far as the page goes.
        return _unmatched(fired, matched("", None if after_hour is None else (after_hour, "")),
                          0 if aggregation == "unmatched_count" else 1)
