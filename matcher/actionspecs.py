"""Action specs: parsing, validation and the canonical form of tracking and conversion specs.

An action spec is ``{"action.type": T, SELECTOR: V, ...}`` (``docs/action-specs.md``,
normative text in ``shared/spec/action-specs.md``).  Every value is a string, a number or a
non-empty list of them; numbers stand for their decimal text.  This module turns JSON text or
decoded objects into immutable :class:`ActionSpec` values and back into canonical JSON, and
says exactly what is wrong, and where, when the input is not a valid spec.

The matching itself lives in :mod:`matcher.action_reference` (readable reference) and the
compiled set (:mod:`matcher._actionset`); both read the normalised fields defined here.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from functools import partial
from numbers import Integral
from operator import itemgetter
from typing import Any

from matcher.errors import SpecError
from matcher.values import json_error_reason, json_not_text, unique_keys_object

__all__ = [
    "ACTION_TYPE_KEY",
    "ATTRIBUTE_KEYS",
    "DEFAULT_MAX_LENGTH",
    "META_SPECS",
    "RSVP_DEFAULT_RESPONSES",
    "RSVP_RESPONSES",
    "ActionSpec",
    "action_value_text",
    "parse_action_specs",
    "specs_to_json",
]

ACTION_TYPE_KEY = "action.type"
#: Keys that qualify an action rather than name an object; a spec needs one key besides these.
ATTRIBUTE_KEYS = frozenset({"response"})
RSVP_RESPONSES = frozenset({"yes", "maybe", "no"})
#: ``rsvp`` without a ``response`` key counts these responses (not ``no``).
RSVP_DEFAULT_RESPONSES = frozenset({"yes", "maybe"})
#: Default limit on the JSON text of one ad's specs.
DEFAULT_MAX_LENGTH = 4096

#: Meta action types and the concrete types each one stands for.  A meta type is replaced by
#: its expansion: actions carry concrete types only, so the meta name itself matches nothing.
META_SPECS: Mapping[str, frozenset[str]] = {
    "page_engagement": frozenset(
        {
            "checkin", "comment", "follow", "like", "mention", "post", "share", "vote",
            "link_click", "photo_view", "video_play",
        }
    ),
    "post_engagement": frozenset(
        {
            "comment", "follow", "like", "share", "vote", "receive_offer", "link_click",
            "photo_view", "video_play",
        }
    ),
    "app_engagement": frozenset({"app_story", "app_use", "app_install", "credit_spent"}),
}

# One name segment: letters, digits, underscore, inner dashes (app namespaces use dashes).
_SEGMENT = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
_DOTTED = rf"{_SEGMENT}(?:\.{_SEGMENT})*"
# ``verb``, ``namespace:verb``, ``music.listens``: at most one namespace separator.
_NAME_RE = re.compile(rf"{_DOTTED}(?::{_DOTTED})?")
_SIMPLE_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Numbers with more digits than this before or after the point are not IDs or amounts;
# refusing them keeps the decimal text short and avoids formatting 1e999999 from short input.
_MAX_NUMBER_DIGITS = 64


def key_path(path: str, key: str) -> str:
    if _SIMPLE_KEY_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _decimal_text(number: Decimal) -> str | None:
    """Plain decimal text of a finite number (``12.0`` -> ``12``), ``None`` when unsuitable."""
    if not number.is_finite():
        return None
    if number.is_zero():
        return "0"
    # From the digits as written, not ``normalize()``: that rounds to the context's 28 digits
    # and turns 1e-999999999 into 0.
    if number.adjusted() >= _MAX_NUMBER_DIGITS:
        return None
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    end = len(digits)
    while digits[end - 1] == 0:  # (stops: the number is not zero, so some digit is not)
        end -= 1
    exponent += len(digits) - end
    if -exponent > _MAX_NUMBER_DIGITS:
        return None
    return format(Decimal((sign, digits[:end], exponent)), "f")


def _number_text(value: Any) -> str | None:
    """Decimal text of an ``int`` (or another integer type, e.g. ``numpy.int64``), ``float`` or
    ``Decimal``; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value.bit_length() > 4 * _MAX_NUMBER_DIGITS:  # surely too long: skip formatting
            return None
        text = int.__repr__(value)  # a subclass as its value: its own __int__ or __str__ decides nothing
        return text if len(text.lstrip("-")) <= _MAX_NUMBER_DIGITS else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return _decimal_text(Decimal(float.__repr__(value)))  # (a subclass's own __float__: no say)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, Integral):  # numpy.int64 from numpy or pandas data: as its int, as rules read it
        return _number_text(int(value))
    return None


def action_value_text(value: Any) -> str | None:
    """The text an action value stands for, or ``None`` when the value can match nothing.

    Strings are themselves; numbers (not booleans) are their decimal text, so ``174829001234``,
    ``174829001234.0`` and ``"174829001234"`` are the same value.  Anything else (``None``,
    booleans, lists, mappings, NaN) counts as if the key were absent.
    """
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return None
    return _number_text(value)


# types as written -> concrete types; shared so equal type sets are one object (cheap to hash).
_EXPANSIONS: dict[tuple[str, ...], frozenset[str]] = {}


def _expand(types: tuple[str, ...]) -> frozenset[str]:
    expanded: set[str] = set()
    for action_type in types:
        expanded |= META_SPECS.get(action_type, {action_type})
    result = frozenset(expanded)
    if len(_EXPANSIONS) < 10_000:
        _EXPANSIONS[types] = result
    return result


class ActionSpec(tuple):
    """One validated, normalised action spec.  Immutable and hashable.

    ``types`` are the action types as written (meta types kept), sorted and de-duplicated;
    ``constraints`` are ``(selector, values)`` pairs sorted by selector, values sorted and
    de-duplicated; ``expanded_types`` is the set of concrete types the spec accepts.
    ``rsvp_default`` says the spec accepts ``rsvp`` and names no ``response``, so an ``rsvp``
    action must answer ``yes`` or ``maybe``.

    It is stored as a tuple of those four fields (the cheapest immutable record to create by
    the hundred thousand), but compares equal only to another ``ActionSpec``.
    """

    __slots__ = ()

    types: tuple[str, ...] = property(itemgetter(0))  # type: ignore[assignment]
    constraints: tuple[tuple[str, tuple[str, ...]], ...] = property(itemgetter(1))  # type: ignore[assignment]
    expanded_types: frozenset[str] = property(itemgetter(2))  # type: ignore[assignment]
    rsvp_default: bool = property(itemgetter(3))  # type: ignore[assignment]

    def __new__(cls, spec: Mapping[str, Any] | str, *, path: str = "spec") -> ActionSpec:
        """Validate ``spec`` (a mapping, or JSON text of one spec); raise :class:`SpecError`."""
        text = isinstance(spec, (str, bytes, bytearray))
        decoded = decode_specs_text(spec, path, DEFAULT_MAX_LENGTH) if text else spec
        return _one_spec(decoded, lambda: path, DEFAULT_MAX_LENGTH, measured=text)

    @classmethod
    def _trusted(
        cls, types: tuple[str, ...], constraints: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> ActionSpec:
        """Build from already validated, normalised parts."""
        expanded = _EXPANSIONS.get(types)
        if expanded is None:
            expanded = _expand(types)
        rsvp_default = "rsvp" in expanded and all(key != "response" for key, _ in constraints)
        return tuple.__new__(cls, (types, constraints, expanded, rsvp_default))

    def values(self, selector: str) -> tuple[str, ...] | None:
        """The accepted values of ``selector``, or ``None`` when the spec leaves it free."""
        for key, values in self[1]:
            if key == selector:
                return values
        return None

    def to_dict(self) -> dict[str, list[str]]:
        """The canonical decoded form: every value a list of strings."""
        out: dict[str, list[str]] = {ACTION_TYPE_KEY: list(self[0])}
        for key, values in self[1]:
            out[key] = list(values)
        return out

    def to_json(self) -> str:
        """Canonical JSON: compact, keys sorted, every value an array of sorted strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    # Never equal to a plain tuple (whose reflected comparison would say so otherwise).
    def __eq__(self, other: object) -> bool:
        return type(other) is ActionSpec and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"ActionSpec({self.to_json()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_spec, (self[0], self[1]))


def _rebuild_spec(types: tuple[str, ...], constraints: Any) -> ActionSpec:
    return ActionSpec._trusted(tuple(types), tuple((k, tuple(v)) for k, v in constraints))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid number")


def decode_specs_text(text: str | bytes | bytearray, path: str, max_length: int) -> Any:
    """The decoded JSON of specs given as text, within ``max_length`` characters; raises
    :class:`matcher.SpecError` at ``path`` for text too long, not UTF-8 or not JSON."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > 4 * max_length:
            raise SpecError(path, f"JSON text is longer than {max_length} characters")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SpecError(path, f"JSON text is not valid UTF-8 ({error.reason})") from None
    if len(text) > max_length:
        raise SpecError(
            path, f"JSON text is {len(text)} characters, longer than the limit of {max_length}"
        )
    try:
        value = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=unique_keys_object,
        )
    except RecursionError:
        raise SpecError(path, "invalid JSON: nested too deeply") from None
    except ValueError as error:  # malformed, a hook's refusal, or an integer of more digits than Python converts
        raise SpecError(path, f"invalid JSON: {json_error_reason(text, error)}") from None
    found = json_not_text(text, value, path, key_path)
    if found is not None:
        raise SpecError(*found)
    return value


def scalar_text(value: Any, path: Callable[[], str]) -> str:
    """A spec value's text (a non-empty string, or a number's decimal text); else a SpecError
    at ``path()`` naming what is wrong with it."""
    if type(value) is str:
        if value:
            return value
        raise SpecError(path(), "empty string is not a value")
    if isinstance(value, str):
        return scalar_text(str.__str__(value), path)
    if isinstance(value, bool) or value is None:
        raise SpecError(path(), f"expected a string or a number, got {json.dumps(value)}")
    text = _number_text(value)
    if text is None:
        if isinstance(value, (Integral, float, Decimal)):
            raise SpecError(path(), "number is not finite or has too many digits")
        raise SpecError(path(), f"expected a string or a number, got {type(value).__name__}")
    return text


def _values(raw: Any, path: Callable[[], str], max_length: int) -> tuple[str, ...]:
    """String-or-array notation: one scalar or a non-empty list of them, as sorted texts."""
    kind = type(raw)
    if kind is str and raw:
        return (raw,)
    if kind is list or kind is tuple:
        if len(raw) == 1 and type(raw[0]) is str and raw[0]:
            return (raw[0],)
        if not raw:
            raise SpecError(path(), "empty list matches nothing; give at least one value")
        if len(raw) > max_length:
            raise SpecError(path(), f"more than {max_length} values")
        texts = {
            scalar_text(item, lambda i=i: f"{path()}[{i}]")  # type: ignore[misc]
            for i, item in enumerate(raw)
        }
        return tuple(sorted(texts))
    if isinstance(raw, (Mapping, set, frozenset, list, tuple)):
        raise SpecError(path(), "expected a string, a number or a list of them, got an object")
    return (scalar_text(raw, path),)


# Names already checked against _NAME_RE: specs repeat a handful of types and selectors.
_VALID_NAMES: set[str] = set()


def _valid_name(name: Any) -> bool:
    if name in _VALID_NAMES:
        return True
    if type(name) is not str or not _NAME_RE.fullmatch(name):
        return False
    if len(_VALID_NAMES) < 100_000:
        _VALID_NAMES.add(name)
    return True


def _validate_spec(
    spec: Any, path: str, max_length: int
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...], int]:
    """``(types, constraints, bound)``: ``bound`` is at least the canonical JSON length."""
    if type(spec) is not dict and not isinstance(spec, Mapping):
        raise SpecError(path, f"expected an object (a spec), got {type(spec).__name__}")
    if ACTION_TYPE_KEY not in spec:
        raise SpecError(path, 'missing "action.type"')
    if len(spec) > max_length:
        raise SpecError(path, f"more than {max_length} keys")
    raw = spec[ACTION_TYPE_KEY]
    # Inline fast paths for the common one-string forms ("like", ["like"]).
    if type(raw) is str and raw:
        types: tuple[str, ...] = (raw,)
    elif type(raw) is list and len(raw) == 1 and type(raw[0]) is str and raw[0]:
        types = (raw[0],)
    else:
        types = _values(raw, lambda: key_path(path, ACTION_TYPE_KEY), max_length)
    for action_type in types:
        if not _valid_name(action_type):
            raise SpecError(
                key_path(path, ACTION_TYPE_KEY),
                f"invalid action type {json.dumps(action_type, ensure_ascii=False)[:80]}: "
                "expected verb, namespace:verb or dotted.name",
            )
    constraints: list[tuple[str, tuple[str, ...]]] = []
    has_object = False
    # A JSON string is at most 6 characters per character (\\u escapes) plus quotes.
    chars = sum(map(len, types)) + 11
    items = len(types)
    for key, raw in spec.items():
        if key == ACTION_TYPE_KEY:
            continue
        if not _valid_name(key):
            shown = json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)
            raise SpecError(
                path, f"invalid selector {shown[:80]}: expected a name like page or post.wall"
            )
        if type(raw) is str and raw:
            values: tuple[str, ...] = (raw,)
        elif type(raw) is list and len(raw) == 1 and type(raw[0]) is str and raw[0]:
            values = (raw[0],)
        else:
            values = _values(raw, lambda key=key: key_path(path, key), max_length)
        if key in ATTRIBUTE_KEYS:
            for value in values:
                if value not in RSVP_RESPONSES:
                    raise SpecError(
                        key_path(path, key),
                        f"invalid response {json.dumps(value, ensure_ascii=False)[:80]}: "
                        "expected yes, maybe or no",
                    )
        else:
            has_object = True
        constraints.append((key, values))
        chars += len(key) + (len(values[0]) if len(values) == 1 else sum(map(len, values)))
        items += len(values) + 1
    if not has_object:
        raise SpecError(
            path, "needs at least one object reference (such as page, post or application)"
        )
    constraints.sort()
    return types, tuple(constraints), 6 * chars + 4 * items + 2


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _json_length(text: str) -> int:
    """Length of ``text`` as a JSON string (``ensure_ascii=False``), without encoding it."""
    if _NEEDS_ESCAPE.search(text) is None:
        return len(text) + 2
    return len(json.dumps(text, ensure_ascii=False))


def canonical_length(spec: ActionSpec) -> int:
    """``len(spec.to_json())``, computed without building the text."""
    total = 1 + _json_length(ACTION_TYPE_KEY) + 3 + sum(map(_json_length, spec.types))
    total += len(spec.types) - 1
    for key, values in spec.constraints:
        total += 1 + _json_length(key) + 3 + sum(map(_json_length, values)) + len(values) - 1
    return total + 1


def parse_action_specs(
    specs: Any, *, field: str = "specs", max_length: int = DEFAULT_MAX_LENGTH
) -> list[ActionSpec]:
    """Parse one spec or a list of specs into :class:`ActionSpec` values.

    ``specs`` is JSON text (``str``/``bytes``), a decoded spec (a mapping), a list of decoded
    specs, or already parsed :class:`ActionSpec` values.  ``field`` names the input in error
    paths (``tracking_specs[1].response``).  The JSON text of the specs may be at most
    ``max_length`` characters; for decoded input the limit applies to the canonical JSON.
    Raises :class:`matcher.SpecError` (code 100) naming the spec and key that is wrong.
    """
    return _parse(specs, lambda: field, max_length)


def _parse(specs: Any, field: Callable[[], str], max_length: int) -> list[ActionSpec]:
    """:func:`parse_action_specs` with the field name built only when an error needs it."""
    if isinstance(specs, (str, bytes, bytearray)):
        return parse_decoded(decode_specs_text(specs, field(), max_length), field, max_length, measured=True)
    return parse_decoded(specs, field, max_length)


def parse_decoded(
    specs: Any, field: Callable[[], str], max_length: int, *, measured: bool = False
) -> list[ActionSpec]:
    """Parse decoded specs; ``measured`` when they came from text already held to
    ``max_length``, so their canonical JSON need not be measured again."""
    if type(specs) is ActionSpec:  # (a tuple, but one spec: its canonical JSON has no brackets)
        if not measured:
            _check_length([specs], False, field, max_length)
        return [specs]
    if type(specs) is list or isinstance(specs, (list, tuple)):
        if not specs:
            raise SpecError(field(), "empty list: give at least one spec")
        if len(specs) > max_length:
            raise SpecError(field(), f"more than {max_length} specs")
        parsed = []
        bound = 1  # at least the canonical JSON's length ("[" and "]", less the last spec's comma)
        for index, item in enumerate(specs):
            if type(item) is ActionSpec:
                parsed.append(item)
                bound += max_length + 1  # unknown: measure exactly below
                continue
            types, constraints, size = _validate_spec(item, f"{field()}[{index}]", max_length) \
                if type(item) is not dict else _validate_dict(item, field, index, max_length)
            parsed.append(ActionSpec._trusted(types, constraints))
            bound += size + 1
        if not measured and bound > max_length:  # past the limit: measured exactly
            _check_length(parsed, True, field, max_length)
        return parsed
    if isinstance(specs, Mapping):
        return [_one_spec(specs, field, max_length, measured)]
    raise SpecError(field(), f"expected a spec, a list of specs or JSON text, got {type(specs).__name__}")


def _one_spec(spec: Any, field: Callable[[], str], max_length: int, measured: bool) -> ActionSpec:
    """One decoded spec, validated, and held to ``max_length`` unless ``measured`` (as text)."""
    types, constraints, bound = _validate_spec(spec, field(), max_length)
    made = ActionSpec._trusted(types, constraints)
    if not measured and bound > max_length:
        _check_length([made], False, field, max_length)
    return made


def _check_length(parsed: list[ActionSpec], listed: bool, field: Callable[[], str], max_length: int) -> None:
    """SpecError unless the canonical JSON of ``parsed`` (a list when ``listed``, else its one
    spec) is at most ``max_length`` characters."""
    length = sum(map(canonical_length, parsed)) + (len(parsed) + 1 if listed else 0)
    if length > max_length:
        raise SpecError(field(), f"canonical JSON is {length} characters, longer than the limit of {max_length}")


def _validate_dict(item: dict, field: Callable[[], str], index: int, max_length: int):
    """Validate a decoded spec, formatting its path only if it is wrong."""
    try:
        return _validate_spec(item, "\0", max_length)
    except SpecError as error:
        # Re-raise with the real place; "\0" stood in for it while validating.
        path = f"{field()}[{index}]" + error.path[1:]
        raise SpecError(path, error.reason) from None


def specs_to_json(specs: Iterable[ActionSpec]) -> str:
    """Canonical JSON text of a list of specs (each as :meth:`ActionSpec.to_json`)."""
    return "[" + ",".join(spec.to_json() for spec in specs) + "]"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects.

    Parsing or compiling 100,000 ads creates millions of tuples; each allocation burst would
    trigger collections that walk every live object again (more than half the build time).
    Nothing built here can form a cycle, so pausing loses nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_ads(
    ads: Any, *, max_length: int = DEFAULT_MAX_LENGTH
) -> list[tuple[str, tuple[ActionSpec, ...]]]:
    """Validate ``{ad_id: specs}`` into ``[(ad_id, specs)]`` in the mapping's order.

    Each value is anything :func:`parse_action_specs` takes; errors name the ad
    (``ads["ad1"][0].response``).  Ids must be non-empty strings.
    """
    if not isinstance(ads, Mapping):
        raise TypeError(f"ads must be a mapping of ad id to specs, got {type(ads).__name__}")
    with gc_paused():
        return _parse_ads(ads, max_length)


def _parse_ads(ads: Mapping[Any, Any], max_length: int) -> list[tuple[str, tuple[ActionSpec, ...]]]:
    parsed: list[tuple[str, tuple[ActionSpec, ...]]] = []
    for ad_id, specs in ads.items():
        if not isinstance(ad_id, str) or not ad_id:
            raise SpecError("ads", f"ad id must be a non-empty string, got {ad_id!r:.80}")
        ad_id = str.__str__(ad_id)
        if type(specs) is tuple and specs:
            for spec in specs:
                if type(spec) is not ActionSpec:
                    break
            else:  # already parsed (a set rebuilt from another): share, don't re-validate
                parsed.append((ad_id, specs))
                continue
        parsed.append((ad_id, tuple(_parse(specs, partial(_ad_field, ad_id), max_length))))
    return parsed


def _ad_field(ad_id: str) -> str:
    return f"ads[{json.dumps(ad_id, ensure_ascii=False)}]"


def choose_anchor(
    constraints: tuple[tuple[str, tuple[str, ...]], ...], distinct_values: Mapping[str, int]
) -> int:
    """Index of the constraint a compiled set files a spec under.

    Every spec has at least one object selector, and an action has one value per selector, so
    filing a spec under each value of one selector finds it exactly once.  The fewest values
    keeps the index small; among equals the selector with the most distinct values in the whole
    set (``post`` rather than ``page``) keeps the candidate lists short.  Attribute keys
    (``response``, three values) are never chosen.
    """
    best = -1
    best_rank: tuple[int, int, str] | None = None
    for index, (key, values) in enumerate(constraints):
        if key in ATTRIBUTE_KEYS:
            continue
        rank = (len(values), -distinct_values.get(key, 0), key)
        if best_rank is None or rank < best_rank:
            best, best_rank = index, rank
    return best


def count_distinct_values(ads: Iterable[tuple[str, tuple[ActionSpec, ...]]]) -> dict[str, int]:
    """Per selector, how many distinct values the specs of ``ads`` name."""
    seen: dict[str, set[str]] = {}
    for _, specs in ads:
        for spec in specs:
            for key, values in spec.constraints:
                bucket = seen.get(key)
                if bucket is None:
                    seen[key] = bucket = set()
                bucket.update(values)
    return {key: len(values) for key, values in seen.items()}
