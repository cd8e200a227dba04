"""ClassificationService: batches of pixel events and actions against the current snapshot.

The hot path per batch: decode the columns (a few C-level calls), one ``match_columns``
over all events (the compiled matcher reads the decoded lists as they are: no per-event
or per-rule Python), per-match Python only to attach conversion values (none when the
request asks for the matches as buffers: the matcher writes them, values included), and per
distinct firing, (pixel, event name), cached on the snapshot, the ads tracking it (the name
left out where no ad's spec reads it). Recording aggregates the batch in memory and writes it
in one transaction before the reply, so a recorded batch is durable when the call returns.
"""

from __future__ import annotations

import json
import math
import sys
from array import array
from functools import lru_cache
from itertools import compress, product, repeat
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from matcher.columns import MatchBuffers, NumberColumn, TextColumn, ascii_text_column, match_buffers
from matcher.values import Segment, fold, item_number, lookup, url_parts

from server.core import Core
from server.errors import InvalidArgument, LimitExceeded, ServiceError, parse_json
from server.gen.conversion_matcher.v1 import classification_pb2 as pb, classification_pb2_grpc
from server.registry import PIXEL_SELECTORS, Snapshot
from server.store import Recording

HOUR = 3600
NO_SPEC = -1
# Events name any pixel id and event name a web page sends; past this many (pixel id, event
# name) pairs the per-snapshot cache stops growing (lookups still work, uncached), and pairs
# longer than any real one are not cached, so junk cannot exhaust memory.
MAX_CACHED_FIRINGS = 100_000
MAX_CACHED_FIRING_CHARS = 256
#: The longest stats key (url, host, device_type) recorded whole; a longer one is recorded as
#: its first characters and "…" (one row for all that share them). Unbounded, one event with a
#: 16 MB url wrote 16 MB per matching conversion and made a stats row no reply could hold.
MAX_STATS_KEY_CHARS = 2048


def number_value(value: Any) -> float | None:
    """A raw custom-parameter value as a conversion value: a number (or numeric text) a double
    holds; an integer past a double's range, an infinity or NaN is no value."""
    if type(value) is float:  # JSON's and the typed columns' numbers first: the common case
        return value if math.isfinite(value) else None
    # The rest as a rule's numeric operators read an item: numeric text as ASCII decimals (not
    # all float() takes: "1_000", "١٢"); an int a double holds; no bool.
    return item_number(value)


# The ``value`` custom parameter, found as a rule's field ``value`` finds it: the exact key
# wins, else the first key equal under case folding (``Value``, ``VALUE``).
VALUE = Segment("value", "value", False)
# Every key that folds to "value": no character but an ASCII letter of it folds to one of its
# letters, so a mapping with none of these 32 spellings has no value, known without a Python
# loop over its keys (most events carry parameters but no value).
_VALUE_KEYS = frozenset(map("".join, product(*zip("value", "VALUE"))))


def event_value(custom_data: Any) -> float | None:
    """The event's ``value`` custom parameter as ``number_value`` reads it."""
    if not custom_data or (type(custom_data) is dict and custom_data.keys().isdisjoint(_VALUE_KEYS)):
        return None
    return number_value(lookup(custom_data, VALUE))


def value_column(columns: Mapping[str, Any]) -> Any:
    """Of parameter columns, what holds each event's ``value`` parameter (None: no column).

    Event ``i``'s parameters are ``{name: column[i]}`` for its non-``None`` entries, so its
    ``value`` is the exact column's entry when not ``None``, else the first entry not ``None``
    of the columns named ``value`` in another case, in the columns' order. The one column
    there nearly always is comes back as given (a ``NumberColumn`` is read in place)."""
    names = [name for name in columns if name != "value" and fold(name) == "value"]
    if "value" in columns:
        names.insert(0, "value")
    if len(names) <= 1:
        return columns[names[0]] if names else None
    lists = [_as_list(columns[name]) for name in names]
    return [next((v for v in entries if v is not None), None) for entries in zip(*lists)]


def conversion_values(counts: list[int], ids: list[str], own_values: Iterable[float | None],
                      defaults: Mapping[str, float]) -> list[float]:
    """Per match (flattened like ``ids``): the event's own value, else the conversion's default.

    ``own_values`` holds the own value (``None``: none) of each event *with matches*, in order:
    most events of a batch match nothing, and their values are never needed."""
    values: list[float] = []
    position = 0
    for count, value in zip(filter(None, counts), own_values):
        if value is None:
            values += map(defaults.__getitem__, ids[position:position + count])
        else:
            values += [value] * count
        position += count
    return values


def ad_columns(ads: list) -> dict[str, list[int] | list[str]]:
    """The reply's ad fields from per-item ``(ad id, tracking spec, conversion spec)`` entries."""
    return {
        "ad_counts": [len(a) for a in ads],
        "ad_ids": [ad for entries in ads for ad, _, _ in entries],
        "tracking_spec_indexes": [t for entries in ads for _, t, _ in entries],
        "conversion_spec_indexes": [c for entries in ads for _, _, c in entries],
    }


def _packed_bound(count: int, width: int) -> int:
    """Bytes at most of a packed repeated field of ``count`` elements of at most ``width`` bytes
    (a uint32 varint takes 5, a negative int32 10, a double 8): its tag, length and elements."""
    return 6 + width * count if count else 0


def _strings_bound(strings: list[str]) -> int:
    """Bytes at most of a repeated string field: each element's tag, length and UTF-8 text."""
    return 6 * len(strings) + 4 * sum(map(len, strings))


def ad_columns_bound(columns: dict[str, list]) -> int:
    """Bytes at most of ``ad_columns``' fields in a reply."""
    return (_packed_bound(len(columns["ad_counts"]), 5) + _strings_bound(columns["ad_ids"])
            + 2 * _packed_bound(len(columns["ad_ids"]), 10))


def buffers_bound(found: MatchBuffers) -> int:
    """Bytes at most of the reply's ``buffers`` holding ``found``: the buffers and what frames them."""
    return 64 + sum(len(buffer) for buffer in found if buffer is not None)


def buffers_reply(count: int, found: MatchBuffers) -> pb.ClassifyPixelEventsResponse:
    """A reply holding the matcher's ``MatchBuffers`` (the machine's byte order) in ``buffers``,
    little-endian. Its fields are set in place: a submessage passed to the constructor is
    serialised and parsed back, two more copies of every buffer."""
    counts, offsets, data, values = found
    if sys.byteorder == "big":
        counts, offsets, values = (_swapped(raw, code).tobytes()
                                   for raw, code in ((counts, "I"), (offsets, "i"), (values, "d")))
    reply = pb.ClassifyPixelEventsResponse()
    buffers = reply.buffers
    buffers.count = count
    buffers.conversion_counts = counts
    buffers.conversion_values = values
    buffers.custom_conversion_ids.data = data
    buffers.custom_conversion_ids.offsets = offsets
    return reply


def _swapped(raw: Any, code: str) -> array:
    """The values of array type ``code`` in ``raw`` with their bytes in the other order: from
    little-endian to this big-endian machine's, or back."""
    values = array(code, raw)
    values.byteswap()
    return values


@lru_cache(maxsize=8)
def no_ads_reply(count: int) -> bytes:
    """A serialised reply whose only field is ``ad_counts`` of ``count`` zeros: the ad fields of
    ``count`` items no ad tracks, merged into a reply (``MergeFromString`` appends a repeated
    field) in one C call instead of converting ``count`` Python ints. Batches mostly come in a
    few sizes, so a handful are kept."""
    return pb.ClassifyPixelEventsResponse(ad_counts=[0] * count).SerializeToString()


def _custom_data(text: str, where: str) -> dict | None:
    if not text:
        return None
    value = parse_json(text, where)
    if value is not None and not isinstance(value, dict):
        raise InvalidArgument(f"{where}: expected a JSON object of custom parameters")
    return value


_OBJECT_OR_NULL = frozenset((dict, type(None)))  # what JSON decodes objects and null to


def _texts(values) -> list:
    """A repeated string field as a column: an empty string is an absent value (proto3 cannot
    tell them apart). The scan for one runs in C, the rewrite only when there is one."""
    values = values[:]
    return values if all(values) else [v or None for v in values]


def _named(parameters, where: str) -> Iterator[tuple[str, str, Any]]:
    """(name, its place, parameter) of each custom-parameter column, checking the names: not
    empty, none given twice."""
    first: dict[str, int] = {}
    for i, parameter in enumerate(parameters):
        place = f"{where}[{i}]"
        name = parameter.name
        if not name:
            raise InvalidArgument(f"{place}.name: empty")
        if name in first:
            raise InvalidArgument(f"{place}.name: {json.dumps(name, ensure_ascii=False)} given twice (first at [{first[name]}])")
        first[name] = i
        yield name, place, parameter


def _parameter_columns(parameters, count: int) -> dict[str, list]:
    """Typed custom-parameter columns as ``match_columns`` takes them: name -> one value per
    event (``None``: the event lacks it). Slices of the repeated fields, rewritten only where
    a column holds an empty text or a NaN (the scans for one run in C)."""
    columns: dict[str, list] = {}
    for name, where, parameter in _named(parameters, "columns.custom_parameters"):
        texts, numbers = parameter.texts, parameter.numbers
        for label, values in (("texts", texts), ("numbers", numbers)):
            if values and len(values) != count:
                raise InvalidArgument(f"{where}.{label}: {len(values)} values, expected {count} (one per pixel_id)")
        if texts and numbers:
            columns[name] = [t if t else (n if n == n else None) for t, n in zip(texts[:], numbers[:])]
        elif texts:
            columns[name] = _texts(texts)
        elif numbers:
            values = numbers[:]
            total = sum(values)  # NaN if any is (or +inf and -inf are both there: a harmless rewrite)
            columns[name] = [v if v == v else None for v in values] if total != total else values
        # Neither: no event has the parameter, and no column is needed for that.
    return columns


def _little_endian(raw: bytes, code: str, count: int, where: str) -> Sequence:
    """The first ``count`` values of array type ``code`` stored little-endian in ``raw``, read in
    place (bytes after them are ignored: Arrow pads its buffers)."""
    size = array(code).itemsize
    if len(raw) < size * count:
        raise InvalidArgument(f"{where}: {len(raw)} bytes, fewer than the {size * count} of {count} values of {size} bytes")
    values = memoryview(raw)[:size * count]
    return values.cast(code) if sys.byteorder == "little" else _swapped(values, code)


def _text_buffer(buffer: pb.TextBuffer, count: int, where: str) -> TextColumn:
    """A ``TextBuffer`` as the column the matcher reads in place (the data is not copied). The
    column checks the offsets, the UTF-8 and the validity bitmap's length: in one compiled
    call when the texts are ASCII, else (or to name what is wrong) step by step."""
    # Each field read once: protobuf makes a new bytes object, a copy, on every read.
    data, raw_offsets, validity = buffer.data, buffer.offsets, buffer.validity or None
    column = ascii_text_column(data, raw_offsets, validity, count)
    if column is not None:
        return column
    offsets = _little_endian(raw_offsets, "i", count + 1, f"{where}.offsets")
    try:
        return TextColumn(data, offsets, validity, count)
    except ValueError as e:  # "offsets: ...", "data: ..." (the place within the buffer first)
        raise InvalidArgument(f"{where}.{e}") from None


def _number_buffer(buffer: pb.NumberBuffer, count: int, where: str) -> NumberColumn:
    values = _little_endian(buffer.values, "d", count, f"{where}.values")
    try:
        column = NumberColumn(values, buffer.validity or None, count)
    except ValueError as e:  # "validity: ..."
        raise InvalidArgument(f"{where}.{e}") from None
    if values != values:  # a memoryview or array of doubles is unequal to itself where a value is NaN (in C)
        for i, value in enumerate(column.tolist()):
            if value is not None and value != value:
                raise InvalidArgument(f"{where}.values[{i}]: NaN (an absent value is a clear bit in validity)")
    return column


def _parameter_buffers(parameters, count: int) -> dict[str, Sequence]:
    """Custom parameters as buffers: name -> the column ``match_columns`` reads in place, or a
    list where a parameter has both texts and numbers (an event's text first)."""
    columns: dict[str, Sequence] = {}
    for name, where, parameter in _named(parameters, "buffers.custom_parameters"):
        texts = _text_buffer(parameter.texts, count, f"{where}.texts") if parameter.HasField("texts") else None
        numbers = _number_buffer(parameter.numbers, count, f"{where}.numbers") if parameter.HasField("numbers") else None
        if texts is not None and numbers is not None:
            columns[name] = [t if t is not None else n for t, n in zip(texts.tolist(), numbers.tolist())]
        elif texts is not None or numbers is not None:
            columns[name] = texts if texts is not None else numbers
    return columns


def _as_list(column: Sequence) -> list:
    return column if type(column) is list else column.tolist()


class PixelBatch:
    """A decoded batch as columns, one entry per event (``None``: the event lacks the field).

    ``custom_data`` is one mapping (or ``None``) per event, from JSON, or, from typed
    ``custom_parameters``, a mapping of name -> one value per event: both as ``match_columns``
    takes them. From buffers, the columns are ``matcher.columns`` columns over the request's
    bytes (lists are made from them only where Python needs the values)."""

    __slots__ = ("_pixel_column", "_pixel_ids", "names", "urls", "devices", "custom_data", "times", "_count")

    def __init__(self, request: pb.ClassifyPixelEventsRequest, max_events: int) -> None:
        forms = [name for name, given in (("events", bool(request.events)), ("columns", request.HasField("columns")),
                                          ("buffers", request.HasField("buffers"))) if given]
        if len(forms) > 1:
            raise InvalidArgument(f"{forms[-1]}: give events in one form (events as rows, columns or buffers), "
                                  f"not both {' and '.join(forms)}")
        if request.events:
            self._from_rows(request.events, max_events)
        elif request.HasField("buffers"):
            self._from_buffers(request.buffers, max_events)
        else:
            self._from_columns(request.columns, max_events)

    def __len__(self) -> int:
        return self._count

    @property
    def pixel_ids(self) -> list[str]:
        """Per event its pixel id ("" when it has none), as a list."""
        if self._pixel_ids is None:
            ids = _as_list(self._pixel_column)
            self._pixel_ids = ids if None not in ids else [p if p is not None else "" for p in ids]
        return self._pixel_ids

    def matcher_columns(self) -> dict[str, Sequence]:
        """The columns as ``CompiledRules.match_columns`` takes them."""
        return {"pixel_id": self._pixel_column, "event": self.names, "url": self.urls, "device_type": self.devices,
                "custom_data": self.custom_data}

    def _value_source(self) -> tuple[Any, Callable[[Any], float | None]]:
        """(what holds each event's ``value`` parameter, as given; the function reading a
        conversion value from an entry of it): the ``value`` column (``value_column``; None:
        no column) and ``number_value`` for parameter columns, else the mappings (a list) and
        ``event_value``."""
        data = self.custom_data
        if type(data) is dict:
            return value_column(data), number_value
        return data, event_value

    def raw_values(self) -> tuple[list, Any]:
        """(per event, what holds its ``value`` parameter, as a list; the function reading a
        conversion value from that), as ``_value_source``."""
        source, read = self._value_source()
        return (_as_list(source) if source is not None else [None] * self._count), read

    def own_values(self) -> Sequence[float] | None:
        """Per event its own conversion value as float64 (NaN: none), as ``raw_values`` reads
        them; None when no event has a ``value``. A ``value`` column of float64 buffers is used
        in place (an infinity stays: the matcher reads any non-finite value as none)."""
        source, read = self._value_source()
        if source is None:
            return None
        if type(source) is NumberColumn:
            return source.float64s()
        nan = math.nan
        return array("d", [nan if value is None else value for value in map(read, _as_list(source))])

    def _from_rows(self, rows, max_events: int) -> None:
        if len(rows) > max_events:
            raise LimitExceeded(f"events: {len(rows)} events, more than the limit of {max_events} per batch")
        self._count = len(rows)
        self._pixel_column = self._pixel_ids = [r.pixel_id for r in rows]
        self.custom_data = [_custom_data(r.custom_data, f"events[{i}].custom_data") for i, r in enumerate(rows)]
        self.times = [r.event_time for r in rows]
        self.names = [r.event or None for r in rows]
        self.urls = [r.url or None for r in rows]
        self.devices = [r.device_type or None for r in rows]

    def _from_columns(self, columns: pb.PixelEventColumns, max_events: int) -> None:
        count = len(columns.pixel_id)
        if count > max_events:
            raise LimitExceeded(f"columns.pixel_id: {count} events, more than the limit of {max_events} per batch")
        # A slice of a repeated field is built in one C call; list() would fetch item by item.
        self._count = count
        self._pixel_column = self._pixel_ids = columns.pixel_id[:]
        missing = [None] * count

        def column(name: str) -> list:
            values = getattr(columns, name)
            if not values:
                return missing
            if len(values) != count:
                raise InvalidArgument(f"columns.{name}: {len(values)} values, expected {count} (one per pixel_id)")
            return _texts(values)

        self.names, self.urls, self.devices = column("event"), column("url"), column("device_type")
        self.times = columns.event_time[:] or [0] * count
        if len(self.times) != count:
            raise InvalidArgument(f"columns.event_time: {len(self.times)} values, expected {count} (one per pixel_id)")
        if columns.custom_parameters:
            if columns.custom_data:
                raise InvalidArgument(
                    "columns: give custom parameters as custom_data (JSON) or as custom_parameters, not both")
            self.custom_data = _parameter_columns(columns.custom_parameters, count)
        elif columns.custom_data:
            data = parse_json(columns.custom_data, "columns.custom_data")
            if not isinstance(data, list) or len(data) != count:
                raise InvalidArgument(f"columns.custom_data: expected a JSON array of {count} objects or nulls")
            if not set(map(type, data)) <= _OBJECT_OR_NULL:  # in C; the walk only to name the culprit
                i = next(i for i, item in enumerate(data) if type(item) not in _OBJECT_OR_NULL)
                raise InvalidArgument(f"columns.custom_data[{i}]: expected a JSON object or null")
            self.custom_data = data
        else:
            self.custom_data = missing

    def _from_buffers(self, buffers: pb.PixelEventBuffers, max_events: int) -> None:
        count = buffers.count
        if count > max_events:
            raise LimitExceeded(f"buffers.count: {count} events, more than the limit of {max_events} per batch")
        self._count = count
        missing = [None] * count

        def column(name: str) -> Sequence:
            return _text_buffer(getattr(buffers, name), count, f"buffers.{name}") if buffers.HasField(name) else missing

        self._pixel_column, self._pixel_ids = column("pixel_id"), None
        self.names, self.urls, self.devices = column("event"), column("url"), column("device_type")
        # (read in place: only a recorded batch reads the times)
        self.times = (_little_endian(buffers.event_time, "q", count, "buffers.event_time")
                      if buffers.event_time else [0] * count)
        self.custom_data = _parameter_buffers(buffers.custom_parameters, count)


def _json_actions(texts: Iterable[str], max_events: int) -> list[dict]:
    texts = list(texts)
    if len(texts) > max_events:
        raise LimitExceeded(f"actions: {len(texts)} actions, more than the limit of {max_events} per batch")
    actions = []
    for i, text in enumerate(texts):
        action = parse_json(text, f"actions[{i}]", decimals=True, unique_keys=True)
        if not isinstance(action, dict):
            raise InvalidArgument(f"actions[{i}]: expected a JSON object mapping selector to value")
        actions.append(action)
    return actions


def ads_for_actions(snapshot: Snapshot, actions: list[dict]) -> list[list[tuple[str, int, int]]]:
    """Per action: (ad id, tracking spec index or -1, conversion spec index or -1), tracked ads first."""
    empty: list[list] = [[] for _ in actions]
    tracked = snapshot.tracking.match_batch_detail(actions) if snapshot.tracking is not None else empty
    converted = snapshot.conversion.match_batch_detail(actions) if snapshot.conversion is not None else empty
    results = []
    for tracking_matches, conversion_matches in zip(tracked, converted):
        if not tracking_matches and not conversion_matches:
            results.append(())
            continue
        by_ad: dict[str, list[int]] = {}
        for ad_id, index in tracking_matches:
            by_ad.setdefault(ad_id, [index, NO_SPEC])
        for ad_id, index in conversion_matches:
            entry = by_ad.setdefault(ad_id, [NO_SPEC, NO_SPEC])
            if entry[1] == NO_SPEC:
                entry[1] = index
        results.append(tuple((ad_id, t, c) for ad_id, (t, c) in by_ad.items()))
    return results


def _cut_stats_key(key: str | None) -> str | None:
    """A key as stats record it: at most ``MAX_STATS_KEY_CHARS`` characters, a longer one cut
    to its first characters and "…"."""
    if key is None or len(key) <= MAX_STATS_KEY_CHARS:
        return key
    return key[:MAX_STATS_KEY_CHARS - 1] + "\u2026"


def pixel_firing_action(pixel_id: str, event_name: str | None = None) -> dict:
    """The action a pixel firing is, for ads' specs: the pixel under both the old and the new
    pixel selector, and the event's name (``event_name``) when it has one."""
    action = {"action.type": "offsite_conversion", **dict.fromkeys(PIXEL_SELECTORS, pixel_id)}
    if event_name:
        action["event_name"] = event_name
    return action


def firing_keys(snapshot: Snapshot, batch: PixelBatch) -> list[tuple[str, str | None]]:
    """Per event its firing as ``ads_for_firings`` takes it: (pixel id, event name), the name
    None for a pixel whose firings no ad's spec tells apart by name (every name of the pixel
    matches the same ads: one cache entry, not one per name)."""
    named = snapshot.event_name_pixels
    if named is not None and not named:  # the common case: no spec names event_name
        return list(zip(batch.pixel_ids, repeat(None)))
    names = _as_list(batch.names)
    if named is None:
        return list(zip(batch.pixel_ids, names))
    return [(pixel, name if pixel in named else None) for pixel, name in zip(batch.pixel_ids, names)]


def ads_for_firings(snapshot: Snapshot, firings: Iterable[tuple[str, str | None]]) -> dict[tuple, tuple]:
    """Ads tracking each (pixel id, event name or None) firing, memoised on the snapshot (a
    pure function of it)."""
    cache = snapshot.firing_ad_cache
    wanted = set(firings)
    unknown = [f for f in wanted if f not in cache]
    if not unknown:
        return cache
    found = dict(zip(unknown, ads_for_actions(snapshot, [pixel_firing_action(*f) for f in unknown])))
    kept = {f: ads for f, ads in found.items() if len(f[0]) + len(f[1] or "") <= MAX_CACHED_FIRING_CHARS}
    if len(cache) + len(kept) <= MAX_CACHED_FIRINGS:
        cache.update(kept)  # concurrent batches may both fill a key: with the same value
        if len(kept) == len(found):
            return cache
    found.update((f, cache[f]) for f in wanted if f not in found)  # this batch's, some uncached
    return found


class ClassificationServicer(classification_pb2_grpc.ClassificationServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core
        # The labelled children, looked up once (``labels()`` takes a lock and hashes the labels).
        self._pixel_events_counter = core.metrics.events.labels("pixel_event")
        self._actions_counter = core.metrics.events.labels("action")

    # -- pixel events ---------------------------------------------------------------------

    def classify_pixel_events(self, request: pb.ClassifyPixelEventsRequest) -> pb.ClassifyPixelEventsResponse:
        batch = PixelBatch(request, self.core.limits.max_batch_events)
        snapshot = self.core.registry.snapshot  # read once: the whole batch sees one snapshot
        recording = None
        if request.reply_as_buffers and not request.record:
            # The matcher builds the buffers, values included: no Python object per match.
            found = snapshot.rules.match_columns_buffers(batch.matcher_columns(), batch.own_values(),
                                                         snapshot.default_values)
            reply, bound = buffers_reply(len(batch), found), buffers_bound(found)
        else:
            reply, bound, recording = self._lists_reply(request, snapshot, batch)
        if snapshot.ad_specs:
            firings = firing_keys(snapshot, batch)
            pixel_ads = ads_for_firings(snapshot, firings)
            columns = ad_columns([pixel_ads.get(f, ()) for f in firings])
            reply.MergeFrom(pb.ClassifyPixelEventsResponse(**columns))
            bound += ad_columns_bound(columns)
        else:
            no_ads = no_ads_reply(len(batch))
            reply.MergeFromString(no_ads)
            bound += len(no_ads)
        # A client retrying a recorded batch would count it twice: a reply that cannot be sent
        # is refused before anything is recorded.
        self._check_reply_size(reply, bound, "events", "; nothing was recorded" if recording is not None else "")
        if recording is not None:
            recording()
        self._pixel_events_counter.inc(len(batch))  # (a refused batch, sent again split, counts once)
        return reply

    def _check_reply_size(self, reply: Any, bound: int, field: str, recorded: str = "") -> None:
        """Refuse (LimitExceeded at ``field``) a reply over the message limit: gRPC would refuse
        it after the handler returns, with no code a client can act on. The ``bound`` spares
        measuring the (exact, but O(matches)) size of the replies that fit by far, nearly all."""
        limit = self.core.limits.max_message_bytes
        if bound > limit and (size := reply.ByteSize()) > limit:
            raise LimitExceeded(
                f"{field}: the reply would be {size} bytes, more than the limit of {limit} (--max-message-bytes)"
                f"{recorded}: send fewer {field} per request")

    def _lists_reply(self, request: pb.ClassifyPixelEventsRequest, snapshot: Snapshot, batch: PixelBatch
                     ) -> tuple[pb.ClassifyPixelEventsResponse, int, Callable[[], None] | None]:
        """The matches as lists, in fields 1-3 or as buffers, a bound on their size in the reply,
        and (``record``) what records the batch, to call once the reply is known to fit."""
        counts, ids = snapshot.rules.match_columns(batch.matcher_columns())
        # Each event's own value, read once: for its matches' values and for the recording (which
        # needs every event's); without recording, only events with matches are read.
        raw, read = batch.raw_values()
        if request.record:
            own_values = list(map(read, raw))
            matched_values = compress(own_values, counts)
        else:
            matched_values = map(read, compress(raw, counts))
        values = conversion_values(counts, ids, matched_values, snapshot.default_values)
        recording = (lambda: self._record(snapshot, batch, counts, ids, values, own_values)) if request.record else None
        if request.reply_as_buffers:
            found = match_buffers(counts, ids, values)
            return buffers_reply(len(batch), found), buffers_bound(found), recording
        reply = pb.ClassifyPixelEventsResponse(conversion_counts=counts, custom_conversion_ids=ids, conversion_values=values)
        return reply, _packed_bound(len(counts), 5) + _strings_bound(ids) + _packed_bound(len(values), 8), recording

    def _record(self, snapshot: Snapshot, batch: PixelBatch, counts: list[int], ids: list[str],
                values: list[float], own_values: list[float | None]) -> None:
        now = self.core.now()
        recording = Recording()
        position = 0  # into ids and values: the matches, event after event
        for pixel_id, url, device_type, own_value, event_time, count in zip(
            batch.pixel_ids, _as_list(batch.urls), _as_list(batch.devices), own_values, batch.times, counts
        ):
            matched = range(position, position + count)
            position += count
            if pixel_id not in snapshot.pixel_ids:
                continue
            # Event times in the future (clock skew) count as now: they must not keep a pixel ACTIVE.
            fired = min(event_time, now) if event_time > 0 else now
            hour = fired - fired % HOUR
            own_value = own_value or 0.0
            earliest, latest = recording.pixel_firings.get(pixel_id, (fired, fired))
            recording.pixel_firings[pixel_id] = (min(earliest, fired), max(latest, fired))
            counter = recording.pixel_hourly.setdefault((pixel_id, hour), [0, 0.0])
            counter[0] += 1
            counter[1] += own_value
            if not count:
                continue
            keys = (("", ""), ("url", _cut_stats_key(url)), ("host", _cut_stats_key(url_parts(url)[0]) if url else None),
                    ("device_type", _cut_stats_key(device_type)))
            for match in matched:
                conversion_id, amount = ids[match], values[match]
                earliest, latest = recording.conversion_firings.get(conversion_id, (fired, fired))
                recording.conversion_firings[conversion_id] = (min(earliest, fired), max(latest, fired))
                for dimension, key in keys:
                    if key is None:
                        continue
                    counter = recording.conversion_hourly.setdefault((conversion_id, hour, dimension, key), [0, 0.0, 0.0])
                    counter[0] += 1
                    counter[1] += amount
                    counter[2] += own_value
        if recording.pixel_firings:
            self.core.store.record(recording)

    def ClassifyPixelEvents(self, request, context):
        self.core.authenticate(context).require_ingest()
        return self.classify_pixel_events(request)

    def StreamClassifyPixelEvents(self, request_iterator, context):
        self.core.authenticate(context).require_ingest()
        with self.core.stream_slot():
            yield from _each_answered(request_iterator, self.classify_pixel_events)

    # -- actions ------------------------------------------------------------------------------

    def classify_actions(self, request: pb.ClassifyActionsRequest) -> pb.ClassifyActionsResponse:
        actions = _json_actions(request.actions, self.core.limits.max_batch_events)
        snapshot = self.core.registry.snapshot
        ads = ads_for_actions(snapshot, actions) if snapshot.ad_specs else [()] * len(actions)
        columns = ad_columns(ads)
        reply = pb.ClassifyActionsResponse(**columns)
        self._check_reply_size(reply, ad_columns_bound(columns), "actions")
        self._actions_counter.inc(len(actions))
        return reply

    def ClassifyActions(self, request, context):
        self.core.authenticate(context).require_ingest()
        return self.classify_actions(request)

    def StreamClassifyActions(self, request_iterator, context):
        self.core.authenticate(context).require_ingest()
        with self.core.stream_slot():
            yield from _each_answered(request_iterator, self.classify_actions)


def _each_answered(requests: Iterable, answer: Callable) -> Iterator:
    """A stream's replies, one per request in order; a request's error ends the stream, its
    message's path starting at the request's place in the stream (``requests[2].events[0]...``)."""
    for i, request in enumerate(requests):
        try:
            reply = answer(request)
        except ServiceError as error:
            raise error.within(f"requests[{i}]") from None
        yield reply
