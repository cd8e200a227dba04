"""How an event's values look to a rule (rule-language spec, sections 1 and 4).

This module is the single statement of value semantics in Python: the reference evaluator
and the pure-Python twin call it, and the compiled kernel (``_ruleset_c.pyx``) mirrors it
line for line; the differential tests hold the two to each other.

- A field resolves to a list of *items* or to ``None`` (missing). Null values, empty lists
  and absent keys are missing; a list value contributes its elements.
- An item has a *text* form (strings as they are, numbers canonically, booleans as
  ``true``/``false``; mappings and lists have none) and possibly a *number* form (JSON
  numbers, and strings in decimal notation; booleans are not numbers). Integers of any type
  (``int`` subclasses, numpy's) are read as their value, ``decimal.Decimal`` as a number.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from numbers import Integral
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from matcher._casefold_data import FOLD_PAIRS

# Fields of the event itself; every other name is a custom parameter in ``custom_data``.
EVENT_FIELDS = ("url", "event", "device_type")
# Fields derived from ``url``.
URL_FIELDS = ("domain", "path")
BUILTIN_FIELDS = EVENT_FIELDS + URL_FIELDS
# Event keys a rule may not name: they select or describe the event, they are not matched.
UNMATCHABLE_FIELDS = ("pixel_id", "event_time", "custom_data")
# The rule language's combinators: not field names, in any case (field names are matched so).
RESERVED_WORDS = ("and", "or", "not")
# The event keys rules read, in the order the engines take them as columns (match_columns).
EVENT_COLUMNS = ("pixel_id", "event", "url", "device_type", "custom_data")

_FOLD_TABLE = dict(FOLD_PAIRS)
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}

# Decimal numbers: optional ASCII white space around an optionally signed decimal with an
# optional exponent. No hex, no underscores, no "inf"/"nan" (Python's float() is laxer).
_NUMBER = re.compile(r"[ \t\n\r\f\v]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\r\f\v]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def fold(text: str) -> str:
    """Unicode simple case folding, one code point to one code point."""
    return text.translate(_FOLD_TABLE)


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def parse_number(text: str) -> float | None:
    """The number a decimal string denotes, or None (not decimal, or not finite)."""
    if _NUMBER.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def number_text(value: float) -> str:
    """Canonical text of a float: integral values without a fraction, else shortest round-trip."""
    if type(value) is not float and isinstance(value, float):  # a subclass as its value (its own
        value = float.__float__(value)  # is_integer, __int__ and __repr__ decide nothing)
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return float.__repr__(value)  # a float subclass's own repr (numpy's "np.float64(1.5)") is no number text


def is_text(value: str) -> bool:
    """Strings holding lone surrogates are not text (they have no UTF-8 form)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def item_text(item: Any) -> str | None:
    """The text a string operator sees for one item, or None when it has none."""
    if isinstance(item, str):  # a subclass as plain str: its own __eq__ and __hash__ decide nothing
        return str.__str__(item) if is_text(item) else None
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        try:  # a subclass as its value (as action specs read it): its own __str__ decides nothing
            return int.__repr__(item)
        except ValueError:  # more digits than int->str allows
            return None
    if isinstance(item, float):
        return number_text(item)
    if isinstance(item, Integral):  # an integer of another type (numpy.int64): as its int
        return item_text(int(item))
    if isinstance(item, Decimal):  # from a database's NUMERIC column, say
        return decimal_text(item)
    return None


def item_number(item: Any) -> float | None:
    """The number a numeric operator sees for one item, or None."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        try:
            return int.__float__(item)  # a subclass as its value, as its text
        except OverflowError:
            return None
    if isinstance(item, float):  # a subclass (numpy.float64) as its value: its own == and < decide nothing
        number = float.__float__(item)
        return number if math.isfinite(number) else None
    if isinstance(item, str):
        return parse_number(item)
    if isinstance(item, Integral):  # numpy.int64 and other registered integers
        return item_number(int(item))
    if isinstance(item, Decimal):
        return decimal_number(item)
    return None


# Digits past which an integral Decimal has no text when Python's own limit for writing an
# int is off (``sys.set_int_max_str_digits(0)``): Decimal("1E+999999999") is short to give
# and a billion digits to write.
_MAX_DECIMAL_DIGITS = 4300


def _decimal_fraction(value: Decimal) -> bool:
    """Whether a finite Decimal has a non-zero digit past the point (is no integer)."""
    _, digits, exponent = Decimal.as_tuple(value)
    assert isinstance(exponent, int)  # finite
    return exponent < 0 and any(digits[exponent:])


def _decimal_integer_text(value: Decimal) -> str | None:
    """The decimal text of a finite Decimal that is an integer (``12``, ``12.00``, ``1.2E+3``),
    as its ``int`` is written; None when it has more digits than Python writes an int
    (``sys.get_int_max_str_digits()``: an int that long has no text either)."""
    if Decimal.is_zero(value):  # (0E+999999999 too, whose adjusted() is its exponent)
        return "0"
    if Decimal.adjusted(value) >= (sys.get_int_max_str_digits() or _MAX_DECIMAL_DIGITS):
        return None
    return int.__repr__(Decimal.__int__(value))


def decimal_text(value: Decimal) -> str | None:
    """The text of a ``decimal.Decimal`` item: the text the rule language gives the number it
    is. An integer is its exact decimal digits, as an ``int`` (ids from a NUMERIC column keep
    every digit); another finite value is ``number_text`` of its double (``Decimal("19.90")``
    is ``19.9``, ``Decimal("1E-7")`` is ``1e-07``); NaN and the infinities are float's
    ``nan``, ``inf``, ``-inf``. None when it has none: a fraction past a double's range, an
    integer of more digits than Python writes."""
    if Decimal.is_nan(value):  # (a signalling NaN too, which float() refuses)
        return "nan"
    if Decimal.is_infinite(value):
        return "-inf" if Decimal.is_signed(value) else "inf"
    if not _decimal_fraction(value):
        return _decimal_integer_text(value)
    number = Decimal.__float__(value)
    return number_text(number) if math.isfinite(number) else None


def decimal_number(value: Decimal) -> float | None:
    """The number of a ``decimal.Decimal`` item: its double, correctly rounded as a decimal
    string's is; None when NaN, infinite, or past a double's range."""
    if not Decimal.is_finite(value):
        return None
    number = Decimal.__float__(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class Segment:
    """One step of a custom-parameter path: a key, and whether it fans out over a list."""

    name: str
    folded: str
    each: bool  # written ``name[*]``


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A field a rule names, resolved once when the rule is parsed."""

    text: str  # canonical spelling: built-in names lower-cased, custom paths as written
    builtin: str | None  # one of BUILTIN_FIELDS, or None for a custom parameter
    segments: tuple[Segment, ...] = ()


_SEGMENT = re.compile(r"([^.\[\]]+)(\[\*\])?")


def parse_field(name: str) -> FieldPath:
    """Parse a field name; raises ValueError with the reason when it is not one.

    Parsed paths are shared (rules name few distinct fields), which keeps rules small.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("field name must be a non-empty string")
    return _parse_field(name)


@lru_cache(maxsize=65536)
def _parse_field(name: str) -> FieldPath:
    if not name:
        raise ValueError("field name must be a non-empty string")
    lowered = ascii_lower(name)
    if lowered in BUILTIN_FIELDS:
        return FieldPath(lowered, lowered)
    if lowered in RESERVED_WORDS:
        raise ValueError(f'"{name}" is reserved (and, or, not combine rules, written in lower case): '
                         "not a field name")
    if lowered in UNMATCHABLE_FIELDS:
        raise ValueError(f'"{name}" is not a field a rule can match (it selects or describes the event)')
    segments = []
    for part in name.split("."):
        m = _SEGMENT.fullmatch(part)
        if m is None:
            raise ValueError(f'invalid field name "{name}": each dotted part is a key, optionally followed by [*]')
        segments.append(Segment(m.group(1), fold(m.group(1)), m.group(2) is not None))
    return FieldPath(name, None, tuple(segments))


_ABSENT = object()


def json_error_reason(text: str, error: ValueError) -> str:
    """What decoding ``text`` found wrong, with its place: for a ``json.JSONDecodeError`` its
    message without the " at" some end in (its own text then gives the place: "Invalid control
    character at: line 1 column 9") and its line and column; else as ``json_value_reason``."""
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg.removesuffix(' at')} at line {error.lineno} column {error.colno}"
    return json_value_reason(text, error)


def json_value_reason(text: str, error: ValueError) -> str:
    """What a ValueError raised while decoding ``text`` says: a hook's own refusal (a key given
    twice, a NaN) as it is; an integer of more digits than Python converts
    (``sys.get_int_max_str_digits()``) with its place, instead of Python's advice to raise the limit."""
    limit = sys.get_int_max_str_digits()
    if not limit or "integer string conversion" not in str(error):  # (0: no limit)
        return str(error)
    # the first run of digits that is an integer (not a fraction's digits, not an exponent's),
    # outside the strings (a string's digits are no number: each string is matched whole, skipped)
    integer = rf"(?<![0-9.eE])([0-9]{{{limit + 1},}})(?![0-9.eE])"
    found = next((match for match in re.finditer(rf'"(?:[^"\\]|\\.)*"|{integer}', text)
                  if match.group(1) is not None), None)
    if found is None:
        return str(error)
    start = found.start()
    line = text.count("\n", 0, start) + 1
    column = start - text.rfind("\n", 0, start)
    return (f"a number of {len(found.group()):,} digits (at most {limit:,} are read) "
            f"at line {line} column {column}")


def lookup(mapping: Mapping, segment: Segment) -> Any:
    """A custom parameter: the exact key wins, else the first key equal under case folding."""
    # With ``get``, as an event's own fields are read (not ``in`` then ``[]``: a key removed
    # in between would raise KeyError; nor ``[]`` alone, which a defaultdict answers by adding it).
    value = mapping.get(segment.name, _ABSENT)
    if value is not _ABSENT:
        return value
    for key, value in mapping.items():  # folding keeps the length: only keys as long can equal
        if isinstance(key, str) and len(key) == len(segment.folded) and fold(key) == segment.folded:
            return value
    return None


def url_parts(url: str) -> tuple[str | None, str]:
    """(domain, path) of a URL as reported by a pixel.

    The authority follows ``scheme://`` or ``//``; a URL starting with ``/`` has none; any
    other string is read as a URL without scheme (``example.com/x``). The host is the
    authority after the last ``@``, without ``:port`` (an IPv6 ``[...]`` is kept whole),
    ASCII lower-cased; empty means no domain. The path runs to ``?`` or ``#``; empty is ``/``.
    """
    m = _SCHEME.match(url)
    if m is not None:
        rest, has_authority = url[m.end() :], True
    elif url.startswith("//"):
        rest, has_authority = url[2:], True
    elif url.startswith("/"):
        rest, has_authority = url, False
    else:
        rest, has_authority = url, True
    host = None
    if has_authority:
        end = _first_of(rest, "/?#")
        authority, rest = rest[:end], rest[end:]
        authority = authority[authority.rfind("@") + 1 :]
        if authority.startswith("["):
            close = authority.find("]")
            authority = authority if close < 0 else authority[: close + 1]
        else:
            colon = authority.find(":")
            authority = authority if colon < 0 else authority[:colon]
        host = ascii_lower(authority) or None
    path = rest[: _first_of(rest, "?#")]
    return host, path or "/"


def _first_of(text: str, chars: str) -> int:
    positions = [i for i in (text.find(c) for c in chars) if i >= 0]
    return min(positions) if positions else len(text)


def _items(value: Any) -> list[Any]:
    """A value's items: a list contributes its non-null elements, null nothing."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


def resolve(event: Mapping, field: FieldPath) -> list[Any] | None:
    """The items a field has in an event, or None when the field is missing."""
    if field.builtin is not None:
        if field.builtin in EVENT_FIELDS:
            items = _items(event.get(field.builtin))
        else:
            url = event.get("url")
            if not isinstance(url, str) or not is_text(url):
                return None
            domain, path = url_parts(url)
            items = [domain if field.builtin == "domain" else path]
            items = [v for v in items if v is not None]
        return items or None
    nodes = [event.get("custom_data")]
    last = len(field.segments) - 1
    for i, segment in enumerate(field.segments):
        found = []
        for node in nodes:
            if not isinstance(node, Mapping):
                continue
            value = lookup(node, segment)
            if value is None:
                continue
            if segment.each or i == last:
                found.extend(_items(value))
            else:
                found.append(value)
        nodes = found
    return nodes or None


def source_key(pixel_id: Any) -> str | None:
    """The event source an event belongs to: its ``pixel_id`` as text (ids may come as numbers;
    a str subclass is its text, as ``item_text`` reads one). A number is an id when it is an
    integer: an int (a subclass as its value) or another integer type in decimal, and an
    integral float or Decimal as that integer (``1234.0`` is ``"1234"``, as action specs read
    it); a fraction, NaN, an infinity or a bool is no id (only unscoped rules see the event)."""
    if isinstance(pixel_id, str):
        return str.__str__(pixel_id)
    if isinstance(pixel_id, bool):
        return None
    # (item_text: None for more digits than Python writes, 4,300: no source has such an id)
    if isinstance(pixel_id, Integral):  # an int (a subclass as its value), numpy.int64
        return item_text(pixel_id)
    if isinstance(pixel_id, float):  # (a subclass, numpy.float64, as its value; inf and nan are no integer)
        return number_text(pixel_id) if float.is_integer(pixel_id) else None
    if isinstance(pixel_id, Decimal) and Decimal.is_finite(pixel_id) and not _decimal_fraction(pixel_id):
        return _decimal_integer_text(pixel_id)
    return None


def not_text_reason(value: str) -> str:
    """Why a string ``is_text`` refuses is no text: its first lone surrogate."""
    code = next(ord(c) for c in value if "\ud800" <= c <= "\udfff")
    return f"\\u{code:04x} is a lone surrogate, not a character"


# JSON's \uXXXX escape of a surrogate: a pair of them is one character, a lone one no text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _dotted(place: str, key: str) -> str:
    return f"{place}.{key}"


def unique_keys_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json``: the object as a dict, or ValueError naming a key it
    gives twice (``json`` alone keeps the last one silently)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {json.dumps(key, ensure_ascii=False)}")
            seen.add(key)
    return result


def json_not_text(text: str, value: Any, where: str,
                  key_place: Callable[[str, str], str] = _dotted) -> tuple[str, str] | None:
    """Where JSON ``text``, decoded to ``value``, holds a string that is no text (a lone
    surrogate, which no UTF-8 can carry), and ``not_text_reason``; ``None`` when it holds
    none. Only an escape puts one in JSON text, so text without one is not walked.
    ``key_place(place, key)`` names an object's member."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return None
    stack = [(value, where)]
    while stack:
        item, place = stack.pop()
        if isinstance(item, str):
            if not is_text(item):
                return place, not_text_reason(item)
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                shown = key_place(place, key.encode("utf-8", "backslashreplace").decode())
                stack.append((child, shown))
                stack.append((key, f"{shown} (a key)"))
        elif isinstance(item, list):
            stack.extend((child, f"{place}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None
