"""Compiled rule sets: many rules, each optionally scoped to an event source, matched in batches.

Concurrency contract: a ``CompiledRules`` is immutable. ``with_changes`` builds a new one,
recompiling only the partitions (event sources) whose rules changed and sharing the rest;
readers keep using the snapshot they hold, without locks, and the writer swaps in the new
one (one reference assignment). The kernel releases the GIL while it evaluates a batch, so
threads holding the same snapshot classify in parallel.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from types import ModuleType
from typing import Any

from matcher import _ruleset
from matcher.columns import MatchBuffers, NumberColumn, TextColumn, _frozen
from matcher.errors import RuleError
from matcher.plan import FieldTable, plan_partition
from matcher.rules import Rule, parse_rule
from matcher.values import EVENT_COLUMNS, source_key

_UNSCOPED = None


class CompiledRules:
    """An immutable compiled set of rules; build one with :func:`compile_rules`."""

    def __init__(self, *, _engine: ModuleType, _table: FieldTable, _entries: dict, _order: list,
                 _members: dict, _partitions: dict) -> None:
        self._engine = _engine
        self._table = _table
        self._entries = _entries  # id -> (global index, rule, source or None)
        self._order = _order  # global index -> id, None where a rule was removed
        self._members = _members  # source -> {id: None} of its rules (shared until changed)
        self._partitions = _partitions  # source (None: unscoped) -> engine Partition
        self._values_kept: tuple[Mapping, array] | None = None  # (rule_values, by rule index)
        self._matcher = _engine.Matcher(
            _table.fields,
            _partitions.get(_UNSCOPED),
            {k: v for k, v in _partitions.items() if k is not _UNSCOPED},
            _order,
        )

    # -- matching -------------------------------------------------------------------------
    def match(self, event: Mapping) -> list[str]:
        """Ids of the rules the event satisfies, in the order the rules were given."""
        return self._matcher.match(event)

    def match_batch(self, events: Iterable[Mapping]) -> list[list[str]]:
        """One ``match`` result per event (a list or tuple is read in place; any other
        iterable, a generator say, is made a list first)."""
        if type(events) is not list and type(events) is not tuple:
            events = list(events)
        return self._matcher.match_batch(events)

    def match_columns(self, columns: Mapping[str, Any]) -> tuple[list[int], list[str]]:
        """Events given as columns, ``{"pixel_id": [...], "url": [...], ...}``: one value per event.

        The columns are those of ``EVENT_COLUMNS``; a value of ``None`` is a key the event
        lacks, a column left out is a key every event lacks (so at least one column is needed
        to have any events: the columns' common length is the number of events).
        ``custom_data`` is one value per event (a mapping of custom parameters, or ``None``)
        or itself columns, one per custom parameter: ``{"value": [...], "color": [...]}``,
        where event ``i``'s custom parameters are ``{name: column[i]}`` for its non-``None``
        entries, in the columns' order (no mapping per event is built or read).

        A column (but ``custom_data`` as one value per event) may also be a ``TextColumn`` or
        a ``NumberColumn`` (``matcher.columns``): values in flat buffers, as Arrow holds
        them, read in place by the compiled kernel.

        Returns ``(counts, ids)``: ``counts[i]`` is the number of rules event ``i``
        satisfies, and ``ids`` lists them all, event after event, each event's in rule
        order; the same answers as ``match_batch`` over the equivalent mappings, without
        building them.
        """
        count, lists, parameters = _column_lists(columns)
        return self._matcher.match_columns(count, *(lists.get(name) for name in EVENT_COLUMNS), parameters)

    def match_columns_buffers(self, columns: Mapping[str, Any], own_values: Any = None,
                              rule_values: Mapping[str, float] | None = None) -> MatchBuffers:
        """``match_columns`` with the answer as buffers (``MatchBuffers``: Arrow's layouts), built
        by the kernel with no Python object per event or match.

        With ``rule_values`` (rule id -> number, one for every rule), each match also gets a
        value: the event's own value from ``own_values`` (a float64 buffer, one per event; or
        None: no event has one) when it is finite, else the matched rule's. The set keeps
        ``rule_values`` in its rule order while it is given the same mapping object: give a new
        mapping, not a changed one, when the values change.
        """
        if self._odd_id is not None:
            raise TypeError(f"match_columns_buffers: the buffers hold rule ids as UTF-8 text, so every id must be "
                            f"a str; this set has {self._odd_id!r} ({type(self._odd_id).__name__}): use match_columns")
        count, lists, parameters = _column_lists(columns)
        own = None
        if own_values is not None:
            own = _frozen(own_values, "own_values")
            if own.format != "d" or len(own) != count:
                raise ValueError(f"own_values: {count} float64 values (format 'd'), one per event; "
                                 f"got {len(own)} of format {own.format!r}")
        aligned = self._aligned_values(rule_values) if rule_values is not None else None
        return MatchBuffers(*self._matcher.match_columns_buffers(
            count, *(lists.get(name) for name in EVENT_COLUMNS), parameters, own, aligned))

    @cached_property
    def _odd_id(self) -> Any:
        """The first rule id that is no str (buffers hold ids as UTF-8: a str subclass as its
        text), None when none (None is no rule id). The set is immutable: found once."""
        return next((rule_id for rule_id in self._entries if not isinstance(rule_id, str)), None)

    def _aligned_values(self, rule_values: Mapping[str, float]) -> array:
        """``rule_values`` as float64 by rule index (kept for the next call with the same mapping)."""
        kept = self._values_kept
        if kept is not None and kept[0] is rule_values:
            return kept[1]
        missing = [rule_id for rule_id in self._order if rule_id is not None and rule_id not in rule_values]
        if missing:
            raise ValueError(f"rule_values: no value for rule {missing[0]!r}"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        aligned = array("d", [_rule_value(rule_values, i) if i is not None else math.nan for i in self._order])
        self._values_kept = (rule_values, aligned)
        return aligned

    # -- inspection -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._entries

    @property
    def ids(self) -> list[str]:
        return [i for i in self._order if i is not None]

    def rule(self, rule_id: str) -> Rule:
        return self._entries[rule_id][1]

    def source(self, rule_id: str) -> str | None:
        return self._entries[rule_id][2]

    @property
    def compiled(self) -> bool:
        """True when the compiled kernel (not the pure-Python twin) evaluates this set."""
        return self._engine.__name__.endswith("_c")

    # -- changes ----------------------------------------------------------------------------
    def with_changes(self, add: Mapping[str, Any] | None = None, *, sources: Mapping[str, Any] | None = None,
                     remove: Iterable[str] = ()) -> "CompiledRules":
        """A new set with rules added or replaced (``add``) and removed (``remove``).

        A replaced rule keeps its place in the order, and its event source unless ``sources``
        names it (``None`` there: unscoped); new rules go last. Only partitions whose rules
        changed are recompiled. Raises RuleError (and builds nothing) when a
        rule is invalid, KeyError when removing an unknown id.
        """
        add = dict(add or {})
        sources = dict(sources or {})
        parsed = _parse_all(add, sources)
        entries = dict(self._entries)
        order = list(self._order)
        members = dict(self._members)
        touched: set = set()

        def member_set(source):  # copy a source's member set the first time it changes
            if source not in touched:
                touched.add(source)
                members[source] = dict(members.get(source, {}))
            return members[source]

        for rule_id in remove:
            index, _, source = entries.pop(rule_id)
            order[index] = None
            del member_set(source)[rule_id]
        for rule_id, (rule, source) in parsed.items():
            old = entries.get(rule_id)
            if old is not None:
                index = old[0]
                del member_set(old[2])[rule_id]
                if rule_id not in sources:  # replaced without a word on its scope: it keeps it
                    source = old[2]
            else:
                index = len(order)
                order.append(rule_id)
            entries[rule_id] = (index, rule, source)
            member_set(source)[rule_id] = None
        return _build(self._engine, self._table.copy(), entries, order, members, dict(self._partitions), touched)


_KEPT = (list, TextColumn, NumberColumn)  # the column types the engines read as they are


def _rule_value(rule_values: Mapping[str, float], rule_id: str) -> float:
    """A rule's value, as float64; TypeError naming the rule for what is no number (text too:
    ``float("3")`` would read it)."""
    value = rule_values[rule_id]
    if not isinstance(value, (str, bytes, bytearray)):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"rule_values[{rule_id!r}]: a number, got {type(value).__name__}")


def _column_lists(columns: Mapping[str, Any]) -> tuple[int, dict[str, Sequence], dict[str, Sequence] | None]:
    """(the number of events, the columns as lists or buffer columns, the custom-parameter
    columns or None), checked: known names, parameter names that are strings, one length."""
    lists: dict[str, Sequence] = {}
    parameters: dict[str, Sequence] | None = None
    first: str | None = None
    count = 0

    def as_list(label: str, values: Any, kept: tuple = _KEPT) -> Sequence:
        nonlocal first, count
        if type(values) not in kept:
            listed = None
            # (a text or a mapping iterates, but over its characters or keys: never one value per event)
            if not isinstance(values, (str, bytes, bytearray, Mapping)):
                try:
                    listed = list(values)
                except TypeError:
                    pass
            if listed is None:
                raise TypeError(f"{label}: a column is a sequence of values, one per event, got {type(values).__name__}")
            values = listed
        if first is None:
            first, count = label, len(values)
        elif len(values) != count:
            raise ValueError(f"{label}: {len(values)} values, expected {count} (as many as {first})")
        return values

    for name, values in columns.items():
        if name not in EVENT_COLUMNS:
            raise ValueError(f"columns: unknown column {name!r}; the columns are {', '.join(EVENT_COLUMNS)}")
        if name == "custom_data" and isinstance(values, Mapping):
            parameters = {}
            for key, column in values.items():
                if not isinstance(key, str):
                    raise ValueError(f"columns['custom_data']: a custom parameter's name is a str, got {key!r}")
                key = str.__str__(key)  # (a subclass, numpy.str_ say, as its text: as in a mapping per event)
                parameters[key] = as_list(f"columns['custom_data'][{key!r}]", column)
        else:  # (custom data, one mapping per event, is read from a list)
            lists[name] = as_list(f"columns[{name!r}]", values, (list,) if name == "custom_data" else _KEPT)
    return count, lists, parameters


def _parse_all(rules: Mapping[str, Any], sources: Mapping[str, Any]) -> dict:
    unknown = set(sources) - set(rules)
    if unknown:
        raise KeyError(f"sources given for rules not in the set: {sorted(map(str, unknown))[:5]}")
    parsed = {}
    for rule_id, rule in rules.items():
        if rule_id is None:  # None marks a removed rule's place in the order
            raise RuleError("rules[None]", "a rule id cannot be None")
        rule = parse_rule(rule, path=f"rules[{rule_id!r}]")
        source = sources.get(rule_id)
        if source is not None:
            key = source_key(source)
            if key is None:
                raise RuleError(f"sources[{rule_id!r}]", "an event source id is a string or an integer")
            source = key
        parsed[rule_id] = (rule, source)
    return parsed


def _build(engine: ModuleType, table: FieldTable, entries: dict, order: list, members: dict, partitions: dict,
           touched: set) -> CompiledRules:
    """Recompile the touched sources' partitions; the others are shared with the previous set."""
    for source in touched:
        rules = sorted((entries[rule_id][0], entries[rule_id][1]) for rule_id in members.get(source, ()))
        if not rules:
            partitions.pop(source, None)
            members.pop(source, None)
            continue
        partitions[source] = engine.Partition(plan_partition(rules, table))
    return CompiledRules(_engine=engine, _table=table, _entries=entries, _order=order, _members=members,
                         _partitions=partitions)


def compile_rules(rules: Mapping[str, Any], sources: Mapping[str, Any] | None = None, *,
                  engine: ModuleType | None = None) -> CompiledRules:
    """Compile ``{id: rule}`` (rules as ``Rule``, JSON text or decoded objects).

    ``sources`` maps ids to the event source (pixel id) a rule is scoped to; a scoped rule
    only sees events whose ``pixel_id`` is that source, unscoped rules see every event.
    ``engine`` picks an implementation module (default: the kernel when it loaded).
    """
    parsed = _parse_all(rules, sources or {})
    entries = {rule_id: (i, rule, source) for i, (rule_id, (rule, source)) in enumerate(parsed.items())}
    order = list(parsed)
    members: dict = {}
    for rule_id, (_, _, source) in entries.items():
        members.setdefault(source, {})[rule_id] = None
    return _build(engine or _ruleset.engine, FieldTable(), entries, order, members, {}, set(members))
