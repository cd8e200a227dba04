"""Compile a set of rules into evaluation plans: shared predicates, boolean programs, triggers.

One plan per *partition* (the rules of one event source, or the unscoped rules). The plan is
plain data; the Cython kernel loads it into C++ structures and the pure-Python twin
interprets it directly, so both execute the same design:

- Leaves become *predicates*, deduplicated across the partition's rules. A negative leaf
  (``neq``, ``not_contains``, ...) uses the predicate of its positive twin.
- Predicates are evaluated in *groups*, one pass per group and event:
  ``TEXT`` groups (per field) look the field's text up in hash maps (``eq``, ``is_any``,
  numeric ``eq``) and run one multi-pattern pass (``contains``, ``starts_with``,
  ``regex_match`` and their ``i_`` variants); ``FOLDED`` groups look the case-folded text
  up (``i_is_any``); a ``NUMBER`` group is one numeric comparison.
- Each rule is a postfix *program* over predicate bits and field presence.
- Each rule gets a *trigger set*: predicates of which at least one must hold for the rule
  to hold. Only rules triggered by a true predicate (plus the few rules with no trigger
  set, e.g. pure negations) run their program, and only groups holding trigger predicates
  are evaluated up front; other groups are evaluated when a program first needs them.
  So the work per event grows with what the event matches, not with the number of rules.
- A hash-lookup group that is not eager may be *gated* by predicates of eager groups (its
  *gates*): it runs for an event only when one of its gates holds (before any program runs),
  and a rule ``P AND Q AND ...`` (P one of the group's gates, Q a lookup predicate of the
  group, or an OR of such) triggers on Q instead of on P. This is sound: the rule can hold
  only when P holds, and then the group runs, so Q holds whenever the rule can. When the
  group runs because of another gate, a rule whose P is false may become a candidate whose
  program then fails: wasted work, never a wrong answer. The point: 17 rules ``event =
  AddToCart AND category = X`` no longer all become candidates on every AddToCart event, and
  the category is read only for AddToCart events, not for every event as an eager group would.
  A rule triggered by a gated group's predicate triggers only on gated groups' predicates
  (the group is not eager), so those rules never become candidates in the first phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from matcher.rules import NEGATIVE_TWIN, And, Leaf, Node, Not, Or, Rule, operand_text
from matcher.values import FieldPath, fold

# Group kinds.
TEXT, FOLDED, NUMBER = 0, 1, 2
# Pattern kinds within TEXT groups. The case-insensitive ones hold folded literals and match
# where the folded text contains (starts with) them; the kernel runs them as RE2 ``(?i)``
# literals in the same multi-pattern pass, RE2's case orbits being simple case folding.
P_CONTAINS, P_PREFIX, P_REGEX, P_ICONTAINS, P_IPREFIX = 0, 1, 2, 3, 4
# Numeric comparisons.
NUMBER_OPS = {"lt": 0, "lte": 1, "gt": 2, "gte": 3}
# Program opcodes (postfix). PRED p | NEG p f | EXISTS f | MISSING f | AND n | OR n | NOR n
OP_PRED, OP_NEG, OP_EXISTS, OP_MISSING, OP_AND, OP_OR, OP_NOR = range(7)

# Trigger cost of one predicate by how it is found: hash lookups are cheap and selective.
_COST_LOOKUP, _COST_PATTERN, _COST_NUMBER = 1, 2, 4
# Trigger choice, second pass: a hash-lookup group no trigger needed yet is made eager (run for
# every event) when this many rules would move to it from predicates 4x more shared. A rule
# moved saves a candidate (~80 instructions) on the events its shared predicate holds for
# (~8 an event for an event name one event in ten has); the group costs every event its
# field's read and lookup: ~280 instructions for an event column (event, device type, URL),
# ~560 for a custom parameter (a dict lookup, and a scan of the keys when it is absent; a
# part of the URL, parsed per event, is counted with these).
_MOVERS_FOR_A_COLUMN, _MOVERS_FOR_A_PARAMETER = 32, 64
# Gating (see the module docstring): on each event where the gate P holds, rules moved from P
# to the gated group save a candidate each (~80 instructions) and the group costs its field's
# read and lookup (~280 for an event column, ~560 for a custom parameter or a part of the
# URL), on those same events. So the gate's frequency cancels out: 4 rules moving (320 > 280)
# pay for a column, 8 (640 > 560) for a parameter. Counted per (gate, group). A group enough
# rules would move to by gating is gated rather than made eager: it then costs its read only
# on the events its gates hold for, not on every event.
_GATED_MOVERS_FOR_A_COLUMN, _GATED_MOVERS_FOR_A_PARAMETER = 4, 8
_COLUMN_FIELDS = frozenset(("event", "url", "device_type"))
# Trigger choice nodes (see _Builder.compile).
_ANY, _ONE = range(2)


@dataclass
class Group:
    kind: int
    field: int  # field slot
    # TEXT / FOLDED
    text_eq: dict[str, list[int]] = field(default_factory=dict)
    number_eq: dict[float, list[int]] = field(default_factory=dict)  # TEXT only
    number_text_eq: dict[str, list[int]] = field(default_factory=dict)  # TEXT only
    patterns: list[tuple[int, str, int]] = field(default_factory=list)  # TEXT only: (kind, text, pred)
    # NUMBER
    op: int = 0
    bound: float = 0.0
    pred: int = -1


@dataclass
class PartitionPlan:
    rules: list[int]  # global rule index of each partition-local rule
    programs: list[list[int]]
    groups: list[Group]
    pred_group: list[int]
    triggers: list[list[int]]  # per predicate: local rules it triggers
    always: list[int]  # local rules with no trigger set
    eager: list[int]  # groups holding trigger predicates (and gates)
    gates: list[list[int]]  # per predicate (of an eager group): the gated groups it runs
    needs_text: set[int]  # field slots whose items' text is used


class FieldTable:
    """Field slots, shared by the partitions of a compiled set; append-only."""

    def __init__(self, fields: list[FieldPath] | None = None) -> None:
        self.fields: list[FieldPath] = list(fields or ())
        self._slots = {f.text: i for i, f in enumerate(self.fields)}

    def slot(self, path: FieldPath) -> int:
        slot = self._slots.get(path.text)
        if slot is None:
            slot = self._slots[path.text] = len(self.fields)
            self.fields.append(path)
        return slot

    def copy(self) -> "FieldTable":
        return FieldTable(self.fields)


class _Builder:
    def __init__(self, table: FieldTable) -> None:
        self.table = table
        self.groups: list[Group] = []
        self.pred_group: list[int] = []
        self.pred_cost: list[int] = []
        self._preds: dict[tuple, int] = {}
        self._text_groups: dict[tuple[int, int], int] = {}
        self.needs_text: set[int] = set()

    def _group(self, kind: int, slot: int) -> int:
        key = (kind, slot)
        gid = self._text_groups.get(key)
        if gid is None:
            gid = self._text_groups[key] = len(self.groups)
            self.groups.append(Group(kind, slot))
        return gid

    def _new_pred(self, key: tuple, gid: int, cost: int) -> tuple[int, bool]:
        pid = self._preds.get(key)
        if pid is not None:
            return pid, False
        pid = self._preds[key] = len(self.pred_group)
        self.pred_group.append(gid)
        self.pred_cost.append(cost)
        return pid, True

    def predicate(self, leaf: Leaf, op: str, slot: int) -> int:
        """The predicate of a positive operator on a field, created on first use."""
        if op in NUMBER_OPS:
            pid, new = self._new_pred(("num", slot, op, leaf.number), len(self.groups), _COST_NUMBER)
            if new:
                self.groups.append(Group(NUMBER, slot, op=NUMBER_OPS[op], bound=leaf.number, pred=pid))
            return pid
        self.needs_text.add(slot)
        if op == "eq":
            gid = self._group(TEXT, slot)
            group = self.groups[gid]
            if leaf.number is not None:
                number = leaf.number + 0.0  # one key for 0.0 and -0.0
                pid, new = self._new_pred(("eqn", slot, number), gid, _COST_LOOKUP)
                if new:
                    group.number_eq.setdefault(number, []).append(pid)
                    group.number_text_eq.setdefault(operand_text(leaf), []).append(pid)
                return pid
            text = operand_text(leaf)
            pid, new = self._new_pred(("eq", slot, text), gid, _COST_LOOKUP)
            if new:
                group.text_eq.setdefault(text, []).append(pid)
            return pid
        if op in ("is_any", "i_is_any"):
            folded = op == "i_is_any"
            gid = self._group(FOLDED if folded else TEXT, slot)
            values = sorted({fold(v) if folded else v for v in leaf.operand})
            pid, new = self._new_pred((op, slot, tuple(values)), gid, _COST_LOOKUP * len(values))
            if new:
                for value in values:
                    self.groups[gid].text_eq.setdefault(value, []).append(pid)
            return pid
        kind = {"contains": P_CONTAINS, "i_contains": P_ICONTAINS, "starts_with": P_PREFIX,
                "i_starts_with": P_IPREFIX, "regex_match": P_REGEX}[op]
        text = fold(leaf.operand) if kind in (P_ICONTAINS, P_IPREFIX) else leaf.operand
        gid = self._group(TEXT, slot)
        pid, new = self._new_pred((op, slot, text), gid, _COST_PATTERN)
        if new:
            self.groups[gid].patterns.append((kind, text, pid))
        return pid

    def compile(self, node: Node, code: list[int]) -> int | tuple | None:
        """Append the node's program to ``code``; return its trigger choices, if it has any.

        Choices are a small tree resolved later (``resolve``), once every rule is compiled:
        a predicate id, ``(ANY, children)`` (an OR: every child's set, united) or
        ``(ONE, children)`` (an AND: one child's set suffices). None: no trigger set.
        """
        if isinstance(node, Leaf):
            slot = self.table.slot(node.field)
            if node.op == "exists":
                code += [OP_EXISTS if node.operand else OP_MISSING, slot]
                return None
            twin = NEGATIVE_TWIN.get(node.op)
            if twin is not None:
                code += [OP_NEG, self.predicate(node, twin, slot), slot]
                return None
            pid = self.predicate(node, node.op, slot)
            code += [OP_PRED, pid]
            return pid
        choices = [self.compile(child, code) for child in node.children]
        if isinstance(node, And):
            code += [OP_AND, len(node.children)]
            known = tuple(c for c in choices if c is not None)
            return (_ONE, known) if known else None
        if isinstance(node, Or):
            code += [OP_OR, len(node.children)]
            return None if any(c is None for c in choices) else (_ANY, tuple(choices))
        assert isinstance(node, Not)
        code += [OP_NOR, len(node.children)]
        return None

    def resolve(self, choice: int | tuple, choose: Callable[[list], tuple[frozenset[int], int]] | None = None
                ) -> tuple[frozenset[int], int]:
        """A trigger set and its cost: an OR's children's sets united, an AND's one child's
        set, the one ``choose`` picks from ``[(set, cost), ...]`` (default: the cheapest)."""
        if isinstance(choice, int):
            return frozenset((choice,)), self.pred_cost[choice]
        kind, detail = choice
        resolved = [self.resolve(c, choose) for c in detail]
        if kind == _ANY:
            union = frozenset().union(*(t[0] for t in resolved))
            return union, sum(self.pred_cost[p] for p in union)
        return choose(resolved) if choose is not None else min(resolved, key=lambda t: t[1])

    def rarest(self, eager: set[int], uses: dict[int, int], votes: dict[int, int] | None = None
               ) -> Callable[[list], tuple[frozenset[int], int]]:
        """The second pass's choice for an AND, given the groups ``eager`` anyway and how many
        rules ``uses`` each predicate: a set entirely in those groups (they run for every
        event already), the one the fewest rules share (a predicate many rules use, like a
        common event name, holds often and then makes all those rules candidates).

        ``votes`` (when given) counts, per hash-lookup group not in ``eager``, the rules
        whose rarest such set would be 4x rarer there than their choice: the groups worth
        making eager (see ``plan_partition``)."""

        def shared(found: tuple[frozenset[int], int]) -> int:
            return sum(uses[p] for p in found[0])

        def choose(resolved: list) -> tuple[frozenset[int], int]:
            in_eager = [t for t in resolved if all(self.pred_group[p] in eager for p in t[0])]
            best = min(in_eager or resolved, key=lambda t: (shared(t), t[1]))
            if votes is not None:
                lookups = [t for t in resolved if shared(t) * 4 <= shared(best)
                           and all(self.pred_group[p] in eager or self._lookup_only(self.pred_group[p]) for p in t[0])]
                if lookups:
                    found = min(lookups, key=lambda t: (shared(t), t[1]))
                    for gid in {self.pred_group[p] for p in found[0]} - eager:
                        votes[gid] = votes.get(gid, 0) + 1
            return best

        return choose

    def movers_for(self, gid: int) -> int:
        """How many rules must move to a lookup group for it to be worth running for every event."""
        return _MOVERS_FOR_A_COLUMN if self._reads_a_column(gid) else _MOVERS_FOR_A_PARAMETER

    def gated_movers_for(self, gid: int) -> int:
        """How many rules must move to a lookup group for it to be worth running when a gate holds."""
        return _GATED_MOVERS_FOR_A_COLUMN if self._reads_a_column(gid) else _GATED_MOVERS_FOR_A_PARAMETER

    def _reads_a_column(self, gid: int) -> bool:
        return self.table.fields[self.groups[gid].field].builtin in _COLUMN_FIELDS

    def _lookup_only(self, gid: int) -> bool:
        group = self.groups[gid]
        return group.kind != NUMBER and not group.patterns


def _leaves(choice: int | tuple, out: set[int]) -> set[int]:
    if isinstance(choice, int):
        out.add(choice)
    else:
        for child in choice[1]:
            _leaves(child, out)
    return out


def _union(choice: int | tuple) -> set[int] | None:
    """The predicates of a choice that is a predicate or an OR of them (at any depth), else None."""
    if isinstance(choice, int):
        return {choice}
    if choice[0] != _ANY:
        return None
    found: set[int] = set()
    for child in choice[1]:
        preds = _union(child)
        if preds is None:
            return None
        found |= preds
    return found


def _groups_of(builder: _Builder, trigger_sets: list) -> set[int]:
    """The groups holding the trigger sets' predicates: those to run for every event."""
    return {builder.pred_group[p] for t in trigger_sets if t is not None for p in t}


def _gating(builder: _Builder, choices: list, trigger_sets: list, eager: set[int]
            ) -> dict[tuple[int, int], list[tuple[int, frozenset[int]]]]:
    """Per (gate P, group G) worth gating, the rules that would move and their new trigger sets:
    rules whose root is an AND that triggers on the single predicate P, with a child that is a
    lookup predicate of G or an OR of such (G a lookup group not eager; the first such child)."""
    moves: dict[tuple[int, int], list[tuple[int, frozenset[int]]]] = {}
    pred_group = builder.pred_group
    lookup = {}  # per group: a lookup group not eager
    for local, choice in enumerate(choices):
        trigger = trigger_sets[local]
        if trigger is None or len(trigger) != 1 or type(choice) is int or choice[0] != _ONE:
            continue
        (gate,) = trigger
        for child in choice[1]:
            if type(child) is int:  # (the common case: a leaf)
                preds = (child,)
                gid = pred_group[child]
            else:
                found = _union(child)
                if found is None or len({pred_group[p] for p in found}) != 1:
                    continue
                preds = tuple(found)
                gid = pred_group[preds[0]]
            ok = lookup.get(gid)
            if ok is None:
                ok = lookup[gid] = gid not in eager and builder._lookup_only(gid)
            if ok:
                moves.setdefault((gate, gid), []).append((local, frozenset(preds)))
                break
    return {key: movers for key, movers in moves.items() if len(movers) >= builder.gated_movers_for(key[1])}


def plan_partition(rules: list[tuple[int, Rule]], table: FieldTable) -> PartitionPlan:
    """Plan the rules (global index, rule) of one partition; fields are interned in ``table``."""
    builder = _Builder(table)
    programs: list[list[int]] = []
    choices = []
    for _, rule in rules:
        code: list[int] = []
        choices.append(builder.compile(rule.root, code))
        programs.append(code)
    # Two passes: the cheapest sets first; then each AND takes the rarest set, knowing which
    # groups the first pass made eager and how many rules share each predicate.
    eager_first: set[int] = set()
    uses: dict[int, int] = {}
    for c in choices:
        if c is not None:
            eager_first.update(builder.pred_group[p] for p in builder.resolve(c)[0])
            for p in _leaves(c, set()):
                uses[p] = uses.get(p, 0) + 1
    # A hash-lookup group enough rules would move to becomes eager: its lookup, once per
    # event, costs less than the candidates those rules' shared predicates make.
    # The counting pass chooses as the final one would with no new eager group, so its sets
    # stand unless some group got enough votes.
    votes: dict[int, int] = {}
    count = builder.rarest(eager_first, uses, votes)
    trigger_sets = [builder.resolve(c, count)[0] if c is not None else None for c in choices]
    worth = {gid for gid, n in votes.items() if n >= builder.movers_for(gid)}
    # A group worth gating is gated rather than made eager (see _GATED_MOVERS_FOR_A_COLUMN).
    eager = _groups_of(builder, trigger_sets)
    gating = _gating(builder, choices, trigger_sets, eager)
    worth -= {gid for _, gid in gating}
    if worth:
        choose = builder.rarest(eager_first | worth, uses)
        trigger_sets = [builder.resolve(c, choose)[0] if c is not None else None for c in choices]
        eager = _groups_of(builder, trigger_sets)
        gating = _gating(builder, choices, trigger_sets, eager)
    # (The gates' groups stay eager: the gates were the movers' trigger predicates.)
    gates: list[list[int]] = [[] for _ in builder.pred_group]
    for (gate, gid), movers in sorted(gating.items()):
        gates[gate].append(gid)
        for local, preds in movers:
            trigger_sets[local] = preds
    triggers: list[list[int]] = [[] for _ in builder.pred_group]
    always: list[int] = []
    for local, trigger in enumerate(trigger_sets):
        if trigger is None:
            always.append(local)
            continue
        for pid in sorted(trigger):
            triggers[pid].append(local)
    return PartitionPlan(
        rules=[index for index, _ in rules],
        programs=programs,
        groups=builder.groups,
        pred_group=builder.pred_group,
        triggers=triggers,
        always=always,
        eager=sorted(eager),
        gates=gates,
        needs_text=builder.needs_text,
    )
