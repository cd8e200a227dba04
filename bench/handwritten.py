"""Hand-written rule evaluators with Python's ``re``: the baselines a team would write itself.

``naive_matcher`` is the issue's baseline, plain, as a user would write it: each rule walked
as its JSON tree per event, texts lower-cased again by every rule that asks, a dict built per
numeric test. ``careful_matcher`` is the same semantics written with care: each rule turned
into Python closures once, each event's lower-cased texts computed once and shared by its
pixel's rules, operands converted and patterns compiled up front. Both answer alike (the
benches assert it on what they time), so the kernel's ratio to each says what a compiled
kernel buys over plain Python and over good plain Python.

Close to the spec for the operators ``bench.workload`` uses; not references (no aliases beyond
these, no Unicode folding, no list values).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable


def naive_matcher(rules: dict[str, str], sources: dict[str, str]):
    """What a user would write by hand: rules grouped by pixel, each walked per event with ``re``.

    Close to the spec for the operators this workload uses; not a reference (no aliases beyond
    these, no Unicode folding, no list values), just the baseline a team would start from.
    """
    by_pixel: dict[str, list] = {}
    for rid, text in rules.items():  # normalised once per rule, as a team would: one syntax, operands pre-lowered
        by_pixel.setdefault(sources[rid], []).append((rid, _normalise(json.loads(text))))
    compiled: dict[str, re.Pattern] = {}

    def value(event, field, memo):
        name = field.lower()
        if name in ("url", "event", "device_type"):
            return event.get(name)
        if name == "path":
            if "path" not in memo:  # split the URL once per event
                memo["path"] = _url_path(event.get("url"))
            return memo["path"]
        return (event.get("custom_data") or {}).get(field)

    def holds(node, event, memo):
        if "and" in node:
            return all(holds(c, event, memo) for c in node["and"])
        if "or" in node:
            return any(holds(c, event, memo) for c in node["or"])
        if "not" in node:
            return not holds(node["not"], event, memo)
        (field, cond), = node.items()
        (op, operand), = cond.items()
        v = value(event, field, memo)
        if v is None:
            return False
        if op in ("gt", "lt", "gte", "lte"):
            try:
                x, y = float(v), float(operand)
            except (TypeError, ValueError):
                return False
            return {"gt": x > y, "lt": x < y, "gte": x >= y, "lte": x <= y}[op]
        v = str(v)
        if op == "eq":
            return v == str(operand)
        if op == "contains":
            return operand in v
        if op == "i_contains":
            return operand in v.lower()
        if op == "starts_with":
            return v.startswith(operand)
        if op == "is_any":
            return v in operand
        if op == "i_is_any":
            return v.lower() in operand
        if op == "regex_match":
            pattern = compiled.get(operand) or compiled.setdefault(operand, re.compile(operand))
            return pattern.search(v) is not None
        raise ValueError(op)

    def match_event(event):
        memo: dict = {}
        return [rid for rid, rule in by_pixel.get(event.get("pixel_id"), ()) if holds(rule, event, memo)]

    def match_batch(events):
        return [match_event(e) for e in events]

    return match_batch


def _url_path(url: str | None) -> str:
    """The path of an event's URL (both evaluators' ``path``): after the scheme and host, without
    the query or fragment; "/" when there is none."""
    rest = (url or "").split("://", 1)[-1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0].split("#", 1)[0]


def _normalise(node: dict) -> dict:
    """A rule in one syntax (the audience filters' ``{"operator", "filters"}`` as ``and``/``or``,
    a bare operand as ``eq``), its case-insensitive operands lower-cased."""
    if "filters" in node:
        return {node["operator"]: [_normalise({f["field"]: {f["operator"]: f["value"]}}) for f in node["filters"]]}
    for key in ("and", "or"):
        if key in node:
            return {key: [_normalise(c) for c in node[key]]}
    if "not" in node:
        return {"not": _normalise(node["not"])}
    (field, cond), = node.items()
    if not isinstance(cond, dict):
        cond = {"eq": cond}
    (op, operand), = cond.items()
    if op == "i_contains":
        operand = operand.lower()
    elif op == "i_is_any":
        operand = [o.lower() for o in operand]
    return {field: {op: operand}}


Test = Callable[[dict, dict], bool]  # (event, the event's memo of derived texts) -> holds
NUMERIC = {"gt": operator.gt, "lt": operator.lt, "gte": operator.ge, "lte": operator.le}


def _getter(field: str) -> Callable[[dict, dict], object]:
    """The function reading ``field``'s raw value from an event (None: absent)."""
    name = field.lower()
    if name in ("url", "event", "device_type"):
        def top(event, memo):
            return event.get(name)
        return top
    if name == "path":
        def path(event, memo):
            found = memo.get("\0path")
            if found is None:  # the URL split once per event, whichever rule asks first
                found = memo["\0path"] = _url_path(event.get("url"))
            return found
        return path

    def custom(event, memo):
        data = event.get("custom_data")
        return data.get(field) if data else None
    return custom


def _leaf(field: str, op: str, operand, where: str) -> Test:
    """One condition as a closure: operand converted once, the field's texts through the memo."""
    get = _getter(field)
    text_slot, lower_slot = f"\0text {field}", f"\0lower {field}"  # the memo's keys for this field

    def text(event, memo):  # str() of the value, once per event and field
        found = memo.get(text_slot)
        if found is None:
            value = get(event, memo)
            if value is None:
                return None
            found = memo[text_slot] = str(value)
        return found

    def lower(event, memo):  # its lower-cased form, once per event and field
        found = memo.get(lower_slot)
        if found is None:
            value = text(event, memo)
            if value is None:
                return None
            found = memo[lower_slot] = value.lower()
        return found

    if op in NUMERIC:
        compare = NUMERIC[op]
        try:
            bound = float(operand)
        except (TypeError, ValueError):
            return lambda event, memo: False  # (the plain one: a bound that is no number never holds)

        def numeric(event, memo):
            value = get(event, memo)
            if value is None:
                return False
            try:
                return compare(float(value), bound)
            except (TypeError, ValueError):
                return False
        return numeric
    if op == "i_contains":
        def folded_contains(event, memo):
            value = lower(event, memo)
            return value is not None and operand in value
        return folded_contains
    if op == "i_is_any":
        folded_members = frozenset(operand)

        def folded_any_of(event, memo):
            value = lower(event, memo)
            return value is not None and value in folded_members
        return folded_any_of
    if op == "eq":
        same = str(operand)
        return lambda event, memo: text(event, memo) == same
    if op == "contains":
        def contains(event, memo):
            value = text(event, memo)
            return value is not None and operand in value
        return contains
    if op == "starts_with":
        def starts(event, memo):
            value = text(event, memo)
            return value is not None and value.startswith(operand)
        return starts
    if op == "is_any":
        members = frozenset(operand)

        def any_of(event, memo):
            value = text(event, memo)
            return value is not None and value in members
        return any_of
    if op == "regex_match":
        search = re.compile(operand).search

        def regex(event, memo):
            value = text(event, memo)
            return value is not None and search(value) is not None
        return regex
    raise ValueError(f"{where}: operator {op!r} is not one the hand-written evaluators know")


def _closure(node: dict, where: str) -> Test:
    """A normalised rule as one closure over its children's."""
    if "and" in node or "or" in node:
        children = tuple(_closure(c, where) for c in node["and" if "and" in node else "or"])
        if "and" in node:
            def every(event, memo):
                for test in children:
                    if not test(event, memo):
                        return False
                return True
            return every

        def some(event, memo):
            for test in children:
                if test(event, memo):
                    return True
            return False
        return some
    if "not" in node:
        child = _closure(node["not"], where)
        return lambda event, memo: not child(event, memo)
    (field, cond), = node.items()
    (op, operand), = cond.items()
    return _leaf(field, op, operand, where)


def careful_matcher(rules: dict[str, str], sources: dict[str, str]):
    """The careful hand-written evaluator: ``match_batch(events) -> [[rule ids] per event]``,
    answering as ``naive_matcher`` does."""
    by_pixel: dict[str, list[tuple[str, Test]]] = {}
    for rid, text in rules.items():
        by_pixel.setdefault(sources[rid], []).append((rid, _closure(_normalise(json.loads(text)), f"rule {rid}")))
    empty: list = []

    def match_batch(events):
        answers = []
        for event in events:
            memo: dict = {}
            answers.append([rid for rid, test in by_pixel.get(event.get("pixel_id"), empty) if test(event, memo)])
        return answers

    return match_batch
