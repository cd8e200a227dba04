"""The reference evaluator: the rule-language spec, section by section, in plain Python.

Slow on purpose and obviously right; the compiled matcher and its twin are tested against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matcher.regex import search
from matcher.rules import NEGATIVE_TWIN, And, Leaf, Node, Not, Or, Rule, operand_text, parse_rule
from matcher.values import fold, item_number, item_text, resolve, source_key


def evaluate(rule: Rule | Any, event: Mapping) -> bool:
    """Whether ``event`` satisfies ``rule`` (a Rule, or anything ``parse_rule`` takes)."""
    if not isinstance(rule, Rule):
        rule = parse_rule(rule)
    if not isinstance(event, Mapping):
        raise TypeError(f"an event is a mapping, got {type(event).__name__}")
    return _holds(rule.root, event)


def _holds(node: Node, event: Mapping) -> bool:
    if isinstance(node, And):
        return all(_holds(child, event) for child in node.children)
    if isinstance(node, Or):
        return any(_holds(child, event) for child in node.children)
    if isinstance(node, Not):
        return not any(_holds(child, event) for child in node.children)
    return _leaf_holds(node, event)


def _leaf_holds(leaf: Leaf, event: Mapping) -> bool:
    items = resolve(event, leaf.field)
    if leaf.op == "exists":
        return (items is not None) == leaf.operand
    if items is None:  # a missing field fails every other operator, negative ones included
        return False
    twin = NEGATIVE_TWIN.get(leaf.op)
    if twin is not None:  # negative: no item satisfies the positive twin
        return not any(item_satisfies(twin, leaf, item) for item in items)
    return any(item_satisfies(leaf.op, leaf, item) for item in items)


def item_satisfies(op: str, leaf: Leaf, item: Any) -> bool:
    """Whether one item satisfies a positive operator with the leaf's operand."""
    if op in ("lt", "lte", "gt", "gte"):
        value = item_number(item)
        if value is None:
            return False
        bound = leaf.number
        return {"lt": value < bound, "lte": value <= bound, "gt": value > bound, "gte": value >= bound}[op]
    if op == "eq" and leaf.number is not None:
        value = item_number(item)
        if value is not None:  # a number operand compares numerically when the value is a number
            return value == leaf.number
    text = item_text(item)
    if text is None:
        return False
    if op == "eq":
        return text == operand_text(leaf)
    if op == "contains":
        return leaf.operand in text
    if op == "i_contains":
        return fold(leaf.operand) in fold(text)
    if op == "starts_with":
        return text.startswith(leaf.operand)
    if op == "i_starts_with":
        return fold(text).startswith(fold(leaf.operand))
    if op == "is_any":
        return text in leaf.operand
    if op == "i_is_any":
        return fold(text) in {fold(o) for o in leaf.operand}
    if op == "regex_match":
        return search(leaf.operand, text)
    raise AssertionError(f"not a positive operator: {op}")


def match_rules(rules: Mapping[str, Any], events: list[Mapping], sources: Mapping[str, Any] | None = None) -> list[list[str]]:
    """Reference answers for a rule set: per event, the ids of the rules it satisfies, in order.

    ``sources`` scopes rules to an event source as ``compile_rules`` does: a scoped rule only
    sees events whose ``pixel_id`` (as text) is its source.
    """
    parsed = {rule_id: parse_rule(rule) for rule_id, rule in rules.items()}
    scope = {rule_id: source_key(source) for rule_id, source in (sources or {}).items()}
    out = []
    for event in events:
        pixel = source_key(event.get("pixel_id"))
        out.append([rule_id for rule_id, rule in parsed.items()
                    if (scope.get(rule_id) is None or scope[rule_id] == pixel) and _holds(rule.root, event)])
    return out
