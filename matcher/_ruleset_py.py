"""Pure-Python twin of the compiled rule matcher: the same plans, interpreted.

Chosen when ``MATCHER_NO_EXTENSIONS=1`` or when the extension cannot load; same API and
same answers as ``_ruleset_c``, more slowly.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from matcher.columns import TextColumn, match_buffers
from matcher.plan import (
    FOLDED, NUMBER, OP_AND, OP_EXISTS, OP_MISSING, OP_NEG, OP_NOR, OP_OR, OP_PRED,
    P_CONTAINS, P_ICONTAINS, P_IPREFIX, P_PREFIX, P_REGEX, TEXT, Group, PartitionPlan,
)
from matcher.regex import compile_regex
from matcher.values import EVENT_COLUMNS, FieldPath, fold, item_number, item_text, resolve, source_key

_COMPARE = (float.__lt__, float.__le__, float.__gt__, float.__ge__)


def first_decrease(offsets: Sequence[int], n: int) -> int:
    """The first i < n with offsets[i] > offsets[i + 1], or -1 (a TextColumn's check)."""
    for i in range(n):
        if offsets[i] > offsets[i + 1]:
            return i
    return -1


def ascii_text_column(data: bytes, offsets: bytes, validity: bytes | None, n: int) -> TextColumn | None:
    """``TextColumn(data, offsets as int32, validity, n)`` for ``offsets`` holding at least
    n + 1 little-endian int32 and ``validity`` bytes or None, when every check passes and the
    texts are ASCII; else None (the kernel's fast way to a request's columns)."""
    if sys.byteorder != "little" or not 0 <= n < len(offsets) // 4:
        return None
    if validity is not None and (type(validity) is not bytes or len(validity) < (n + 7) // 8):
        return None
    try:
        column = TextColumn(data, memoryview(offsets)[:4 * (n + 1)].cast("i"), validity, n)
    except ValueError:
        return None
    return column if column._ascii else None


class Partition:
    """One partition's plan, with its regexes compiled."""

    def __init__(self, plan: PartitionPlan) -> None:
        self.plan = plan
        self._matchers = [
            [(kind, text, compile_regex(text).search if kind == P_REGEX else None, pred)
             for kind, text, pred in group.patterns]
            for group in plan.groups
        ]

    def evaluate(self, values: "_EventValues", out: list[int]) -> None:
        plan = self.plan
        true_preds: set[int] = set()
        done: set[int] = set()

        def run_group(gid: int) -> None:
            done.add(gid)
            self._run_group(plan.groups[gid], self._matchers[gid], values.items(plan.groups[gid].field), true_preds)

        for gid in plan.eager:
            run_group(gid)
        for pid in list(true_preds):  # gated groups: those one of whose gates holds
            for gid in plan.gates[pid]:
                if gid not in done:
                    run_group(gid)
        candidates = set(plan.always)
        for pid in true_preds:
            candidates.update(plan.triggers[pid])

        def bit(pid: int) -> bool:
            if plan.pred_group[pid] not in done:
                run_group(plan.pred_group[pid])
            return pid in true_preds

        for local in sorted(candidates):
            if _run_program(plan.programs[local], bit, values):
                out.append(plan.rules[local])

    @staticmethod
    def _run_group(group: Group, matchers: list, items: list | None, true_preds: set[int]) -> None:
        if items is None:
            return
        if group.kind == NUMBER:
            compare = _COMPARE[group.op]
            if any((n := item_number(i)) is not None and compare(n, group.bound) for i in items):
                true_preds.add(group.pred)
            return
        for item in items:
            text = item_text(item)
            if group.kind == TEXT and (group.number_eq or group.number_text_eq):
                number = item_number(item)
                if number is not None:
                    true_preds.update(group.number_eq.get(number, ()))
                elif text is not None:
                    true_preds.update(group.number_text_eq.get(text, ()))
            if text is None:
                continue
            if group.kind == FOLDED:
                true_preds.update(group.text_eq.get(fold(text), ()))
                continue
            true_preds.update(group.text_eq.get(text, ()))
            folded = None
            for kind, pattern, search, pred in matchers:
                if kind == P_CONTAINS:
                    hit = pattern in text
                elif kind == P_PREFIX:
                    hit = text.startswith(pattern)
                elif kind == P_REGEX:
                    hit = search(text) is not None
                else:
                    folded = fold(text) if folded is None else folded
                    hit = pattern in folded if kind == P_ICONTAINS else folded.startswith(pattern)
                if hit:
                    true_preds.add(pred)


def _run_program(code: list[int], bit, values: "_EventValues") -> bool:
    stack: list[bool] = []
    i = 0
    while i < len(code):
        op = code[i]
        if op == OP_PRED:
            stack.append(bit(code[i + 1]))
            i += 2
        elif op == OP_NEG:
            stack.append(values.present(code[i + 2]) and not bit(code[i + 1]))
            i += 3
        elif op in (OP_EXISTS, OP_MISSING):
            stack.append(values.present(code[i + 1]) == (op == OP_EXISTS))
            i += 2
        else:
            n = code[i + 1]
            args = stack[len(stack) - n:]
            del stack[len(stack) - n:]
            stack.append(all(args) if op == OP_AND else any(args) if op == OP_OR else not any(args))
            i += 2
    return stack[-1]


class _EventValues:
    """Field values of one event, resolved on first use."""

    def __init__(self, event: Mapping, fields: Sequence[FieldPath]) -> None:
        self.event = event
        self.fields = fields
        self._cache: dict[int, list | None] = {}

    def items(self, slot: int) -> list | None:
        if slot not in self._cache:
            self._cache[slot] = resolve(self.event, self.fields[slot])
        return self._cache[slot]

    def present(self, slot: int) -> bool:
        return self.items(slot) is not None


class Matcher:
    """A compiled rule set's snapshot: partitions by event source, plus the unscoped one."""

    def __init__(self, fields: Sequence[FieldPath], unscoped: Partition | None,
                 scoped: Mapping[str, Partition], ids: Sequence[Any]) -> None:
        self._fields = list(fields)
        self._unscoped = unscoped
        self._scoped = dict(scoped)
        self._ids = list(ids)

    def match(self, event: Mapping) -> list[Any]:
        if not isinstance(event, Mapping):
            raise TypeError(f"an event is a mapping, got {type(event).__name__}")
        return self._match(event)

    def _match(self, event: Mapping) -> list[Any]:
        """``match`` of an event already known to be a mapping (``match_batch`` checks each
        one itself, naming its index)."""
        values = _EventValues(event, self._fields)
        matched: list[int] = []
        if self._unscoped is not None:
            self._unscoped.evaluate(values, matched)
        key = source_key(event.get("pixel_id"))
        part = self._scoped.get(key) if key is not None else None
        if part is not None:
            part.evaluate(values, matched)
        return [self._ids[i] for i in sorted(matched)]

    def match_batch(self, events: Sequence[Mapping]) -> list[list[Any]]:
        results = []
        for index, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise TypeError(f"events[{index}]: an event is a mapping, got {type(event).__name__}")
            results.append(self._match(event))
        return results

    def match_columns(self, n: int, pixel_id: Sequence | None, event: Sequence | None, url: Sequence | None,
                      device_type: Sequence | None, custom_data: Sequence | None,
                      parameters: Mapping[str, Sequence] | None = None) -> tuple[list[int], list[Any]]:
        """The events rebuilt as mappings, then ``match_batch``: the statement of what columns mean."""
        if parameters is not None:  # custom parameters as columns: each event's in the columns' order
            custom_data = [{name: column[i] for name, column in parameters.items() if column[i] is not None}
                           for i in range(n)]
        given = [(name, column) for name, column in zip(EVENT_COLUMNS, (pixel_id, event, url, device_type, custom_data))
                 if column is not None]
        events = [{name: column[i] for name, column in given if column[i] is not None} for i in range(n)]
        results = self.match_batch(events)
        return [len(r) for r in results], [rule_id for r in results for rule_id in r]

    def match_columns_buffers(self, n: int, pixel_id: Sequence | None, event: Sequence | None, url: Sequence | None,
                              device_type: Sequence | None, custom_data: Sequence | None,
                              parameters: Mapping[str, Sequence] | None = None, own_values: Sequence[float] | None = None,
                              rule_values: Sequence[float] | None = None) -> tuple:
        """``match_columns``, then per match the event's own value when it is finite, else the
        rule's (``rule_values`` by rule index), in ``match_buffers``' layout."""
        counts, ids = self.match_columns(n, pixel_id, event, url, device_type, custom_data, parameters)
        values = None
        if rule_values is not None:
            index = {rule_id: i for i, rule_id in enumerate(self._ids) if rule_id is not None}
            values, position = [], 0
            for row, count in enumerate(counts):
                own = own_values[row] if own_values is not None else math.nan
                for rule_id in ids[position:position + count]:
                    values.append(own if math.isfinite(own) else rule_values[index[rule_id]])
                position += count
        return tuple(match_buffers(counts, ids, values))
