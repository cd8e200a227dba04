"""Custom-conversion rules: parse (both syntaxes), validate, normalise, write canonical JSON.

The grammar, operators and limits are those of the rule-language spec. A parsed rule is a
tree of ``And``/``Or``/``Not``/``Leaf`` nodes with aliases resolved, shorthand expanded and
the audience filter syntax converted; ``Rule.to_json()`` writes it back canonically and
parsing that text again gives an equal rule.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from matcher.errors import RuleError
from matcher.regex import check_regex
from matcher.values import (FieldPath, is_text, json_error_reason, not_text_reason, number_text,
                            parse_field, parse_number, unique_keys_object)

# Canonical operator names, by kind of operand.
SCALAR_OPS = ("eq", "neq")
STRING_OPS = ("contains", "not_contains", "i_contains", "i_not_contains", "starts_with", "i_starts_with")
LIST_OPS = ("is_any", "is_not_any", "i_is_any", "i_is_not_any")
NUMBER_OPS = ("lt", "lte", "gt", "gte")
OPERATORS = SCALAR_OPS + STRING_OPS + LIST_OPS + NUMBER_OPS + ("regex_match", "exists")

ALIASES = {
    "=": "eq", "==": "eq",
    "!=": "neq", "ne": "neq",
    "in": "is_any", "not_in": "is_not_any",
    "<": "lt", "<=": "lte", "le": "lte",
    ">": "gt", ">=": "gte", "ge": "gte",
}

# Negative operators hold when the field is present and no item satisfies the positive twin.
NEGATIVE_TWIN = {
    "neq": "eq",
    "not_contains": "contains",
    "i_not_contains": "i_contains",
    "is_not_any": "is_any",
    "i_is_not_any": "i_is_any",
}


@dataclass(frozen=True)
class Limits:
    """Validation limits (the spec's defaults)."""

    max_depth: int = 32
    max_leaves: int = 100
    max_json_bytes: int = 64 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Leaf:
    """``{field: {op: operand}}`` with a canonical operator.

    ``number`` is the operand as a float for the numeric operators and for ``eq``/``neq``
    with a JSON-number operand (which compare numerically when the event value is a number).
    """

    field: FieldPath
    op: str
    operand: Any
    number: float | None = None

    def to_obj(self) -> dict:
        operand = list(self.operand) if isinstance(self.operand, tuple) else self.operand
        return {self.field.text: {self.op: operand}}


@dataclass(frozen=True, slots=True)
class And:
    children: tuple["Node", ...]

    def to_obj(self) -> dict:
        return {"and": [c.to_obj() for c in self.children]}


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple["Node", ...]

    def to_obj(self) -> dict:
        return {"or": [c.to_obj() for c in self.children]}


@dataclass(frozen=True, slots=True)
class Not:
    """None of the children holds (``{"not": RULE}`` is the one-child case)."""

    children: tuple["Node", ...]

    def to_obj(self) -> dict:
        if len(self.children) == 1:
            return {"not": self.children[0].to_obj()}
        return {"not": [c.to_obj() for c in self.children]}


Node = Union[Leaf, And, Or, Not]


@dataclass(frozen=True)
class Rule:
    """A parsed, validated, normalised rule."""

    root: Node
    leaf_count: int = field(compare=False)
    depth: int = field(compare=False)

    def to_obj(self) -> dict:
        return self.root.to_obj()

    def to_json(self) -> str:
        """Canonical JSON text: compact, canonical operator names, nested-key syntax."""
        return json.dumps(self.to_obj(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def leaves(self) -> list[Leaf]:
        out: list[Leaf] = []
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Leaf):
                out.append(node)
            else:
                stack.extend(reversed(node.children))
        return out

    def __str__(self) -> str:
        return self.to_json()


def parse_rule(source: Any, limits: Limits = DEFAULT_LIMITS, path: str = "rule") -> Rule:
    """Parse a rule from JSON text (str/bytes) or a decoded object; raises RuleError."""
    if isinstance(source, Rule):
        return source
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError as err:
            raise RuleError(path, f"rule text is not UTF-8 ({err.reason} at byte {err.start})") from None
    if isinstance(source, str):
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > limits.max_json_bytes:
            raise RuleError(path, f"rule is {size} bytes of JSON, more than the limit of {limits.max_json_bytes}")
        obj = _decode(source, path, limits)
    else:
        obj = source
        try:
            text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (RecursionError, TypeError, ValueError) as err:
            # The parser names the place of what it refuses (NaN, a numpy int); of a rule too
            # deep to write out, the depth limit's (it recurses only that far), or whatever
            # else is wrong on the way down.
            _Parser(limits).node(obj, path, 1)
            if isinstance(err, RecursionError):
                raise RuleError(path, f"rule is nested deeper than {limits.max_depth} levels") from None
            raise RuleError(path, f"rule is not JSON data: {err}") from None
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_json_bytes:
            raise RuleError(path, f"rule is {size} bytes of JSON, more than the limit of {limits.max_json_bytes}")
    parser = _Parser(limits)
    root = parser.node(obj, path, 1)
    rule = Rule(root, parser.leaves, parser.max_depth)
    # The canonical JSON must fit the limit too, or it could not be parsed again (a store
    # reloading its rules would reject them). Writing it back grows a rule only where a leaf
    # expands (shorthand to {"eq": ...} +7 bytes, an alias +4, a number like 1e15 written
    # out +14), so only a rule this close to the limit can grow past it and is written out.
    if size > limits.max_json_bytes - _MAX_GROWTH_PER_LEAF * parser.leaves:
        canonical = len(rule.to_json().encode("utf-8"))
        if canonical > limits.max_json_bytes:
            raise RuleError(path, f"rule is {canonical} bytes of JSON written canonically "
                                  f"({size} as given), more than the limit of {limits.max_json_bytes}")
    return rule


# How many bytes a leaf's canonical JSON can be longer than the JSON it was given as (a bound).
_MAX_GROWTH_PER_LEAF = 32


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every rule and thread, as json.loads shares its default one (given hooks,
# json.loads builds a decoder and its scanner per call).
_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys_object, parse_constant=_reject_constant)


def _decode(text: str, path: str, limits: Limits) -> Any:
    try:
        if text.startswith("\ufeff"):  # as json.loads
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except RecursionError:  # JSON nested hundreds of levels deep: no rule nests that far
        raise RuleError(path, f"rule is nested deeper than {limits.max_depth} levels "
                              "(its JSON is nested too deeply to read)") from None
    except ValueError as err:  # malformed, a hook's refusal, or an integer of more digits than Python converts
        raise RuleError(path, f"malformed JSON: {json_error_reason(text, err)}") from None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 40 else value[:40] + "...", ensure_ascii=False)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Parser:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.leaves = 0
        self.max_depth = 0

    def node(self, obj: Any, path: str, depth: int) -> Node:
        if depth > self.limits.max_depth:
            raise RuleError(path, f"rule is nested deeper than {self.limits.max_depth} levels")
        self.max_depth = max(self.max_depth, depth)
        if type(obj) is not dict and not isinstance(obj, Mapping):  # (dict first: an ABC check is slow)
            raise RuleError(path, f"expected an object, got {_describe(obj)}")
        keys = set(obj)
        if keys == {"operator", "filters"}:
            return self.filter_group(obj, path, depth)
        if keys == {"field", "operator", "value"}:
            return self.filter_leaf(obj, path)
        if len(obj) != 1:
            listed = ", ".join(f'"{k}"' for k in list(obj)[:5]) or "none"
            raise RuleError(path, f"an object must have exactly one key, got {len(obj)} ({listed})")
        key, value = next(iter(obj.items()))
        if not isinstance(key, str):
            raise RuleError(path, f"keys must be strings, got {_describe(key)}")
        if key in ("and", "or"):
            children = self.children(value, f"{path}.{key}", depth, key)
            return And(children) if key == "and" else Or(children)
        if key == "not":
            if isinstance(value, (list, tuple)):
                return Not(self.children(value, f"{path}.not", depth, "not"))
            return Not((self.node(value, f"{path}.not", depth + 1),))
        return self.leaf(key, value, f"{path}.{key}")

    def children(self, value: Any, path: str, depth: int, key: str) -> tuple[Node, ...]:
        if not isinstance(value, (list, tuple)):
            raise RuleError(path, f'"{key}" takes a list of rules, got {_describe(value)}')
        if not value:
            raise RuleError(path, f'"{key}" must not be an empty list')
        return tuple(self.node(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(value))

    def filter_group(self, obj: Mapping, path: str, depth: int) -> Node:
        op = obj["operator"]
        if op not in ("and", "or"):
            raise RuleError(f"{path}.operator", f'a filter group\'s operator is "and" or "or", got {_describe(op)}')
        filters = obj["filters"]
        fpath = f"{path}.filters"
        if not isinstance(filters, (list, tuple)):
            raise RuleError(fpath, f"filters must be a list, got {_describe(filters)}")
        if not filters:
            raise RuleError(fpath, "filters must not be an empty list")
        children = []
        for i, item in enumerate(filters):
            ipath = f"{fpath}[{i}]"
            if not isinstance(item, Mapping) or set(item) not in ({"operator", "filters"}, {"field", "operator", "value"}):
                raise RuleError(ipath, 'expected a filter {"field", "operator", "value"} or a group {"operator", "filters"}')
            children.append(self.node(item, ipath, depth + 1))
        return And(tuple(children)) if op == "and" else Or(tuple(children))

    def filter_leaf(self, obj: Mapping, path: str) -> Leaf:
        name = obj["field"]
        if not isinstance(name, str):
            raise RuleError(f"{path}.field", f"field must be a string, got {_describe(name)}")
        op = obj["operator"]
        if not isinstance(op, str):
            raise RuleError(f"{path}.operator", f"operator must be a string, got {_describe(op)}")
        return self.make_leaf(name, op, obj["value"], path, f"{path}.value", f"{path}.field")

    def leaf(self, name: str, value: Any, path: str) -> Leaf:
        if type(value) is dict or isinstance(value, Mapping):
            if len(value) != 1:
                raise RuleError(path, f"a condition must have exactly one operator, got {len(value)}")
            op, operand = next(iter(value.items()))
            return self.make_leaf(name, op, operand, path, path, path)
        if value is None or isinstance(value, (list, tuple)):
            _field(name, path)  # a name that is no field is the first thing wrong ({"AND": [...]})
            raise RuleError(path, f"expected a condition {{operator: operand}} or a scalar, got {_describe(value)}")
        return self.make_leaf(name, "eq", value, path, path, path)

    def make_leaf(self, name: str, op: Any, operand: Any, path: str, operand_path: str, field_path: str) -> Leaf:
        self.leaves += 1
        if self.leaves > self.limits.max_leaves:
            raise RuleError(path, f"rule has more than {self.limits.max_leaves} conditions")
        fld = _field(name, field_path)
        canonical = ALIASES.get(op, op) if isinstance(op, str) else op
        if canonical not in OPERATORS:
            raise RuleError(path, f"unknown operator {_describe(op)}")
        if isinstance(operand, (list, tuple)):
            operand = [_plain(item, f"{operand_path}[{i}]") for i, item in enumerate(operand)]
        else:
            operand = _plain(operand, operand_path)
        return Leaf(fld, canonical, *_operand(canonical, operand, operand_path))


def _plain(operand: Any, path: str) -> Any:
    """An operand as its plain type: a subclass's own __eq__, __hash__, __str__ or __float__
    must not decide a match (nor differ from the canonical JSON), so a str subclass is held as
    plain str (``str.__str__``) and an int or float subclass as its value (``int.__int__``,
    ``float.__float__``), as event items are read (``item_text``, ``item_number``)."""
    if isinstance(operand, str):
        if not is_text(operand):
            raise _not_text(operand, path)
        return str.__str__(operand)
    if isinstance(operand, bool):
        return operand
    if isinstance(operand, int):
        return int.__int__(operand)
    if isinstance(operand, float):
        return float.__float__(operand)
    return operand


def _field(name: str, path: str) -> FieldPath:
    """The field a condition names, or the error for a name that is none."""
    if not is_text(name):
        raise _not_text(name, path)
    try:
        return parse_field(name)
    except ValueError as err:
        raise RuleError(path, str(err)) from None


def _not_text(text: str, path: str) -> RuleError:
    """The error for a string ``is_text`` refuses (a lone surrogate): no UTF-8 event text holds
    one, and a rule's canonical JSON could not be written as UTF-8."""
    shown = path.encode("utf-8", "backslashreplace").decode()  # the path may quote the text
    return RuleError(shown, not_text_reason(text))


def _operand(op: str, operand: Any, path: str) -> tuple[Any, float | None]:
    """Validate an operand; return it normalised, and its number where the operator needs one."""
    if op in SCALAR_OPS:
        if isinstance(operand, str) or isinstance(operand, bool):
            return operand, None
        if _is_number(operand):
            try:
                number = float(operand)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise RuleError(path, f'operator "{op}" needs a number that is finite, got {_describe(operand)}')
            return operand, number
        raise RuleError(path, f'operator "{op}" needs a string, number or boolean, got {_describe(operand)}')
    if op in STRING_OPS:
        if not isinstance(operand, str):
            raise RuleError(path, f'operator "{op}" needs a string, got {_describe(operand)}')
        return operand, None
    if op in LIST_OPS:
        if not isinstance(operand, (list, tuple)) or not operand:
            raise RuleError(path, f'operator "{op}" needs a non-empty list of strings, got {_describe(operand)}')
        for i, item in enumerate(operand):
            if not isinstance(item, str):
                raise RuleError(f"{path}[{i}]", f'operator "{op}" needs strings, got {_describe(item)}')
        return tuple(operand), None
    if op in NUMBER_OPS:
        number = None
        if _is_number(operand):
            try:
                number = float(operand)
            except OverflowError:
                number = None
        elif isinstance(operand, str):
            number = parse_number(operand)
        if number is None or not math.isfinite(number):
            # (a number that is not finite: "needs a number, got the number inf" would contradict itself)
            wanted = "a number that is finite" if _is_number(operand) else "a number"
            raise RuleError(path, f'operator "{op}" needs {wanted}, got {_describe(operand)}')
        return operand, number
    if op == "regex_match":
        if not isinstance(operand, str):
            raise RuleError(path, f'operator "regex_match" needs a string, got {_describe(operand)}')
        try:
            check_regex(operand)
        except ValueError as err:
            raise RuleError(path, str(err)) from None
        return operand, None
    # exists
    if not isinstance(operand, bool):
        raise RuleError(path, f'operator "exists" needs true or false, got {_describe(operand)}')
    return operand, None


def operand_text(leaf: Leaf) -> str:
    """The text an ``eq``/``neq`` operand is compared with when the event value is not a number."""
    operand = leaf.operand
    if isinstance(operand, bool):
        return "true" if operand else "false"
    if isinstance(operand, str):
        return operand
    return number_text(float(operand)) if isinstance(operand, float) else str(operand)
