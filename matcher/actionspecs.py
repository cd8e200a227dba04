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

import json
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from matcher.errors import SpecError

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
# Numbers beyond this many digits are not IDs or amounts; refusing them keeps the decimal
# text short and avoids formatting a 10**999999 on a short input.
_MAX_NUMBER_DIGITS = 64


def _key_path(path: str, key: str) -> str:
    if _SIMPLE_KEY_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _decimal_text(number: Decimal) -> str | None:
    """Plain decimal text of a finite number (``12.0`` -> ``12``), ``None`` when unsuitable."""
    if not number.is_finite():
        return None
    if number.is_zero():
        return "0"
    if abs(number.adjusted()) > _MAX_NUMBER_DIGITS:
        return None
    text = format(number.normalize(), "f")
    return text if len(text) <= 2 * _MAX_NUMBER_DIGITS else None


def _number_text(value: Any) -> str | None:
    """Decimal text of an ``int``, ``float`` or ``Decimal``; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if value.bit_length() > 3 * _MAX_NUMBER_DIGITS:
            return None
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return _decimal_text(Decimal(repr(float(value))))
    if isinstance(value, Decimal):
        try:
            return _decimal_text(value)
        except (InvalidOperation, ValueError):  # pragma: no cover - defensive
            return None
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


class ActionSpec:
    """One validated, normalised action spec.  Immutable and hashable.

    ``types`` are the action types as written (meta types kept), sorted and de-duplicated;
    ``constraints`` are ``(selector, values)`` pairs sorted by selector, values sorted and
    de-duplicated; ``expanded_types`` is the set of concrete types the spec accepts.
    ``rsvp_default`` says the spec accepts ``rsvp`` and names no ``response``, so an ``rsvp``
    action must answer ``yes`` or ``maybe``.
    """

    __slots__ = ("types", "constraints", "expanded_types", "rsvp_default", "_json", "_hash")

    types: tuple[str, ...]
    constraints: tuple[tuple[str, tuple[str, ...]], ...]
    expanded_types: frozenset[str]
    rsvp_default: bool

    def __init__(self, spec: Mapping[str, Any] | str, *, path: str = "spec") -> None:
        """Validate ``spec`` (a mapping, or JSON text of one spec); raise :class:`SpecError`."""
        if isinstance(spec, (str, bytes, bytearray)):
            decoded = _loads(spec, path, DEFAULT_MAX_LENGTH)
        else:
            decoded = spec
        types, constraints = _validate_spec(decoded, path, DEFAULT_MAX_LENGTH)
        self._init(types, constraints)

    @classmethod
    def _trusted(
        cls, types: tuple[str, ...], constraints: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> ActionSpec:
        """Build from already validated, normalised parts."""
        spec = object.__new__(cls)
        spec._init(types, constraints)
        return spec

    def _init(
        self, types: tuple[str, ...], constraints: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> None:
        expanded: set[str] = set()
        for action_type in types:
            expanded |= META_SPECS.get(action_type, {action_type})
        set_ = object.__setattr__
        set_(self, "types", types)
        set_(self, "constraints", constraints)
        set_(self, "expanded_types", frozenset(expanded))
        set_(
            self,
            "rsvp_default",
            "rsvp" in expanded and all(key != "response" for key, _ in constraints),
        )
        set_(self, "_json", None)
        set_(self, "_hash", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ActionSpec is immutable")

    def values(self, selector: str) -> tuple[str, ...] | None:
        """The accepted values of ``selector``, or ``None`` when the spec leaves it free."""
        for key, values in self.constraints:
            if key == selector:
                return values
        return None

    def to_dict(self) -> dict[str, list[str]]:
        """The canonical decoded form: every value a list of strings."""
        out: dict[str, list[str]] = {ACTION_TYPE_KEY: list(self.types)}
        for key, values in self.constraints:
            out[key] = list(values)
        return out

    def to_json(self) -> str:
        """Canonical JSON: compact, keys sorted, every value an array of sorted strings."""
        text = self._json
        if text is None:
            text = json.dumps(
                self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
            )
            object.__setattr__(self, "_json", text)
        return text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActionSpec):
            return NotImplemented
        return self.types == other.types and self.constraints == other.constraints

    def __hash__(self) -> int:
        value = self._hash
        if value is None:
            value = hash((self.types, self.constraints))
            object.__setattr__(self, "_hash", value)
        return value

    def __repr__(self) -> str:
        return f"ActionSpec({self.to_json()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_spec, (self.types, self.constraints))


def _rebuild_spec(types: tuple[str, ...], constraints: Any) -> ActionSpec:
    return ActionSpec._trusted(tuple(types), tuple((k, tuple(v)) for k, v in constraints))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid number")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {json.dumps(key, ensure_ascii=False)}")
            seen.add(key)
    return result


def _loads(text: str | bytes | bytearray, path: str, max_length: int) -> Any:
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
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_object,
        )
    except json.JSONDecodeError as error:
        raise SpecError(
            path, f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except (ValueError, RecursionError) as error:
        raise SpecError(path, f"invalid JSON: {error}") from None


def _scalar_text(value: Any, path: str) -> str:
    if isinstance(value, str):
        if not value:
            raise SpecError(path, "empty string is not a value")
        return str.__str__(value)
    if isinstance(value, bool) or value is None:
        raise SpecError(path, f"expected a string or a number, got {json.dumps(value)}")
    text = _number_text(value)
    if text is None:
        if isinstance(value, (int, float, Decimal)):
            raise SpecError(path, "number is not finite or has too many digits")
        raise SpecError(path, f"expected a string or a number, got {type(value).__name__}")
    return text


def _values(raw: Any, path: str, max_length: int) -> tuple[str, ...]:
    """String-or-array notation: one scalar or a non-empty list of them, as sorted texts."""
    if isinstance(raw, (list, tuple)):
        if not raw:
            raise SpecError(path, "empty list matches nothing; give at least one value")
        if len(raw) > max_length:
            raise SpecError(path, f"more than {max_length} values")
        texts = {_scalar_text(item, f"{path}[{i}]") for i, item in enumerate(raw)}
        return tuple(sorted(texts))
    if isinstance(raw, (Mapping, set, frozenset)):
        raise SpecError(path, "expected a string, a number or a list of them, got an object")
    return (_scalar_text(raw, path),)


def _validate_spec(
    spec: Any, path: str, max_length: int
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    if not isinstance(spec, Mapping):
        raise SpecError(path, f"expected an object (a spec), got {type(spec).__name__}")
    if ACTION_TYPE_KEY not in spec:
        raise SpecError(path, 'missing "action.type"')
    if len(spec) > max_length:
        raise SpecError(path, f"more than {max_length} keys")
    types_path = _key_path(path, ACTION_TYPE_KEY)
    types = _values(spec[ACTION_TYPE_KEY], types_path, max_length)
    for i, action_type in enumerate(types):
        if not _NAME_RE.fullmatch(action_type):
            raise SpecError(
                types_path,
                f"invalid action type {json.dumps(action_type, ensure_ascii=False)}: "
                "expected verb, namespace:verb or dotted.name",
            )
    constraints: list[tuple[str, tuple[str, ...]]] = []
    has_object = False
    for key, raw in spec.items():
        if key == ACTION_TYPE_KEY:
            continue
        if not isinstance(key, str) or not _NAME_RE.fullmatch(key):
            shown = json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)
            raise SpecError(
                path, f"invalid selector {shown[:80]}: expected a name like page or post.wall"
            )
        key_path = _key_path(path, key)
        values = _values(raw, key_path, max_length)
        if key == "response":
            for value in values:
                if value not in RSVP_RESPONSES:
                    raise SpecError(
                        key_path,
                        f"invalid response {json.dumps(value, ensure_ascii=False)[:80]}: "
                        "expected yes, maybe or no",
                    )
        if key not in ATTRIBUTE_KEYS:
            has_object = True
        constraints.append((key, values))
    if not has_object:
        raise SpecError(
            path, "needs at least one object reference (such as page, post or application)"
        )
    constraints.sort()
    return types, tuple(constraints)


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
    if isinstance(specs, (str, bytes, bytearray)):
        decoded = _loads(specs, field, max_length)
        measured_text = True
    else:
        decoded = specs
        measured_text = False
    if isinstance(decoded, ActionSpec):
        parsed = [decoded]
    elif isinstance(decoded, Mapping):
        parsed = [ActionSpec._trusted(*_validate_spec(decoded, field, max_length))]
    elif isinstance(decoded, (list, tuple)):
        if not decoded:
            raise SpecError(field, "empty list: give at least one spec")
        if len(decoded) > max_length:
            raise SpecError(field, f"more than {max_length} specs")
        parsed = []
        for index, item in enumerate(decoded):
            if isinstance(item, ActionSpec):
                parsed.append(item)
            else:
                item_path = f"{field}[{index}]"
                parsed.append(ActionSpec._trusted(*_validate_spec(item, item_path, max_length)))
    else:
        raise SpecError(
            field, f"expected a spec, a list of specs or JSON text, got {type(decoded).__name__}"
        )
    if not measured_text:
        length = sum(len(spec.to_json()) for spec in parsed) + len(parsed) + 1
        if length > max_length:
            raise SpecError(
                field,
                f"canonical JSON is {length} characters, longer than the limit of {max_length}",
            )
    return parsed


def specs_to_json(specs: Iterable[ActionSpec]) -> str:
    """Canonical JSON text of a list of specs (each as :meth:`ActionSpec.to_json`)."""
    return "[" + ",".join(spec.to_json() for spec in specs) + "]"


def parse_ads(
    ads: Any, *, max_length: int = DEFAULT_MAX_LENGTH
) -> list[tuple[str, tuple[ActionSpec, ...]]]:
    """Validate ``{ad_id: specs}`` into ``[(ad_id, specs)]`` in the mapping's order.

    Each value is anything :func:`parse_action_specs` takes; errors name the ad
    (``ads["ad1"][0].response``).  Ids must be non-empty strings.
    """
    if not isinstance(ads, Mapping):
        raise TypeError(f"ads must be a mapping of ad id to specs, got {type(ads).__name__}")
    parsed: list[tuple[str, tuple[ActionSpec, ...]]] = []
    for ad_id, specs in ads.items():
        if not isinstance(ad_id, str) or not ad_id:
            raise SpecError("ads", f"ad id must be a non-empty string, got {ad_id!r:.80}")
        ad_id = str.__str__(ad_id)
        if isinstance(specs, tuple) and specs and all(type(s) is ActionSpec for s in specs):
            parsed.append((ad_id, specs))
            continue
        field = f"ads[{json.dumps(ad_id, ensure_ascii=False)}]"
        parsed.append((ad_id, tuple(parse_action_specs(specs, field=field, max_length=max_length))))
    return parsed


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
