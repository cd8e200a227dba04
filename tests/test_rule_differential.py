"""The compiled matcher, its twin and the reference agree on every (rule set, event)."""

import math
import random
from array import array

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher import compile_rules
from matcher.columns import match_buffers
from matcher.reference import match_rules
from matcher.values import EVENT_COLUMNS
from tests.conftest import ENGINES, _ruleset_c
from tests.strategies import URLS, events, rules, texts, values
from tests.test_rule_buffer_columns import as_buffer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_list=st.lists(st.tuples(rules, st.sampled_from([None, None, "P1", "P2", "1"])), min_size=1, max_size=12),
    evs=st.lists(events, min_size=1, max_size=8),
)
def test_engines_agree_with_reference(rule_list, evs):
    rule_set = {f"r{i}": rule for i, (rule, _) in enumerate(rule_list)}
    sources = {f"r{i}": src for i, (_, src) in enumerate(rule_list) if src is not None}
    expected = match_rules(rule_set, evs, sources)
    for engine in ENGINES:
        assert compile_rules(rule_set, sources, engine=engine).match_batch(evs) == expected, engine.__name__


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_list=st.lists(st.tuples(rules, st.sampled_from([None, None, "P1", "P2", "1"])), min_size=1, max_size=12),
    evs=st.lists(events, max_size=8),
    left_out=st.sets(st.sampled_from(EVENT_COLUMNS)),
)
def test_columns_agree_with_rows(rule_list, evs, left_out):
    """match_columns over columns equals match_batch (and the reference) over the same events as rows."""
    rule_set = {f"r{i}": rule for i, (rule, _) in enumerate(rule_list)}
    sources = {f"r{i}": src for i, (_, src) in enumerate(rule_list) if src is not None}
    rows = [{k: v for k, v in e.items() if k not in left_out} for e in evs]
    columns = {name: [e.get(name) for e in evs] for name in EVENT_COLUMNS if name not in left_out}
    if not columns:  # no column, no events: the columns' length is the batch's
        rows = []
    expected = match_rules(rule_set, rows, sources)
    flat = ([len(m) for m in expected], [rule_id for m in expected for rule_id in m])
    for engine in ENGINES:
        assert compile_rules(rule_set, sources, engine=engine).match_columns(columns) == flat, engine.__name__


PARAMETER_NAMES = ["color", "Color", "COLOR", "value", "tags", "order", "items", "Äpfel", "äpfel", "n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_list=st.lists(st.tuples(rules, st.sampled_from([None, None, "P1", "P2", "1"])), min_size=1, max_size=12),
    evs=st.lists(events, max_size=8),
    names=st.lists(st.sampled_from(PARAMETER_NAMES), unique=True, max_size=6),
    data=st.data(),
)
def test_custom_parameter_columns_agree_with_rows(rule_list, evs, names, data):
    """Custom parameters as columns (name -> one value per event) match as the events whose
    custom_data holds, in the columns' order, their non-None entries: names equal under case
    folding, exact names missing on some events, nested values and lists included."""
    rule_set = {f"r{i}": rule for i, (rule, _) in enumerate(rule_list)}
    sources = {f"r{i}": src for i, (_, src) in enumerate(rule_list) if src is not None}
    parameters = {name: data.draw(st.lists(values, min_size=len(evs), max_size=len(evs)), label=name)
                  for name in names}
    rows = []
    for i, e in enumerate(evs):
        row = {k: v for k, v in e.items() if k != "custom_data"}
        custom = {name: column[i] for name, column in parameters.items() if column[i] is not None}
        if custom:
            row["custom_data"] = custom
        rows.append(row)
    columns = {name: [e.get(name) for e in evs] for name in EVENT_COLUMNS if name != "custom_data"}
    columns["custom_data"] = parameters
    expected = match_rules(rule_set, rows, sources)
    flat = ([len(m) for m in expected], [rule_id for m in expected for rule_id in m])
    for engine in ENGINES:
        compiled = compile_rules(rule_set, sources, engine=engine)
        assert compiled.match_columns(columns) == flat, engine.__name__
        assert compiled.match_batch(rows) == expected, engine.__name__


# One kind of value per column, so that it can be held in buffers (``matcher.columns``).
_BUFFER_KINDS = {
    "text": st.sampled_from(URLS + ["P1", "P2", "1", "Purchase", "mobile_iphone"]) | texts,
    "float": st.sampled_from([1.5, 10.0, -0.0, 1e20, float("nan"), float("inf"), 1.0, 2.0**64]) | st.floats(width=32),
    "int": st.sampled_from([1, 10, 2**53 + 1, -2**63]) | st.integers(-1000, 1000),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_list=st.lists(st.tuples(rules, st.sampled_from([None, None, "P1", "P2", "1"])), min_size=1, max_size=12),
    n=st.integers(0, 8),
    builtin_kinds=st.dictionaries(st.sampled_from(["pixel_id", "event", "url", "device_type"]),
                                  st.sampled_from(sorted(_BUFFER_KINDS))),
    parameter_kinds=st.dictionaries(st.sampled_from(PARAMETER_NAMES), st.sampled_from(sorted(_BUFFER_KINDS)),
                                    max_size=5),
    wide=st.booleans(),
    pad=st.integers(0, 3),
    data=st.data(),
)
def test_buffer_columns_agree_with_lists(rule_list, n, builtin_kinds, parameter_kinds, wide, pad, data):
    """Columns held in buffers (texts, floats, integers; values missing by the validity bitmap)
    match as the same values in lists, and as the events they make (the reference)."""
    rule_set = {f"r{i}": rule for i, (rule, _) in enumerate(rule_list)}
    sources = {f"r{i}": src for i, (_, src) in enumerate(rule_list) if src is not None}

    def column(label, kind):
        return data.draw(st.lists(_BUFFER_KINDS[kind] | st.none(), min_size=n, max_size=n), label=label)

    builtins = {name: column(name, kind) for name, kind in builtin_kinds.items()}
    parameters = {name: column(name, kind) for name, kind in parameter_kinds.items()}
    rows = []
    for i in range(n):
        row = {name: values[i] for name, values in builtins.items() if values[i] is not None}
        custom = {name: values[i] for name, values in parameters.items() if values[i] is not None}
        if custom:
            row["custom_data"] = custom
        rows.append(row)
    if not builtins and not parameters:  # no column, no events
        rows = []
    expected = match_rules(rule_set, rows, sources)
    flat = ([len(m) for m in expected], [rule_id for m in expected for rule_id in m])
    buffers = {name: as_buffer(values, wide, pad) for name, values in builtins.items()}
    buffers["custom_data"] = {name: as_buffer(values, wide, pad) for name, values in parameters.items()}
    # The same answer as buffers, each match with a value: the event's own when finite, else its rule's.
    own = data.draw(st.none() | st.lists(st.floats(), min_size=len(rows), max_size=len(rows)), label="own")
    rule_values = {rule_id: data.draw(st.floats(allow_nan=False, allow_infinity=False), label=rule_id)
                   for rule_id in rule_set}
    expected_values = [own[i] if own is not None and math.isfinite(own[i]) else rule_values[rule_id]
                       for i, matched in enumerate(expected) for rule_id in matched]
    expected_buffers = match_buffers(*flat, expected_values)
    for engine in ENGINES:
        compiled = compile_rules(rule_set, sources, engine=engine)
        assert compiled.match_columns(buffers) == flat, engine.__name__
        own_buffer = None if own is None else array("d", own)
        assert compiled.match_columns_buffers(buffers, own_buffer, rule_values) == expected_buffers, engine.__name__
        assert compiled.match_columns_buffers(buffers) == expected_buffers._replace(values=None), engine.__name__


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(rules, min_size=1, max_size=6),
    second=st.lists(rules, min_size=1, max_size=6),
    drop=st.sets(st.integers(0, 5)),
    evs=st.lists(events, min_size=1, max_size=5),
)
def test_incremental_changes_agree_with_a_fresh_compile(first, second, drop, evs):
    base = {f"a{i}": r for i, r in enumerate(first)}
    sources = {rid: ("P1" if i % 2 else None) for i, rid in enumerate(base)}
    sources = {k: v for k, v in sources.items() if v}
    added = {f"b{i}": r for i, r in enumerate(second)}
    removed = [f"a{i}" for i in drop if f"a{i}" in base]
    for engine in ENGINES:
        changed = compile_rules(base, sources, engine=engine).with_changes(added, sources={"b0": "P1"}, remove=removed)
        final = {k: v for k, v in {**base, **added}.items() if k not in removed}
        final_sources = {k: v for k, v in {**sources, "b0": "P1"}.items() if k in final}
        assert changed.match_batch(evs) == match_rules(final, evs, final_sources)


def test_thousands_of_rules_in_one_set():
    """3,000 random rules over 30 pixels plus unscoped ones, 300 events: all agree."""
    rng = random.Random(20261122)
    rule_set = {f"cc{i}": _random_rule(rng) for i in range(3000)}
    sources = {rid: f"P{rng.randrange(30)}" for rid in rule_set if rng.random() < 0.8}
    evs = [_random_event(rng) for _ in range(300)]
    expected = match_rules(rule_set, evs, sources)
    assert sum(map(len, expected)) > 100  # the workload really matches things
    for engine in ENGINES:
        assert compile_rules(rule_set, sources, engine=engine).match_batch(evs) == expected


WORDS = ["thank", "cart", "checkout", "confirm", "Sale", "shoes", "red", "Black", "10", "99.5"]


def _random_rule(rng):
    def leaf():
        kind = rng.randrange(7)
        if kind == 0:
            return {"url": {"i_contains": rng.choice(WORDS)}}
        if kind == 1:
            return {"event": rng.choice(["Purchase", "Lead", "AddToCart", "ViewContent"])}
        if kind == 2:
            return {"value": {rng.choice(["gt", "lte", "gte", "lt"]): rng.choice([10, 50, "99.5", 100])}}
        if kind == 3:
            return {"url": {"regex_match": rng.choice([r"/p/\d+", "(?i)conf", "checkout$", "^https://shop"])}}
        if kind == 4:
            op = rng.choice(["eq", "neq", "i_is_any", "i_contains"])
            return {"color": {op: ["red", "Black"] if op == "i_is_any" else rng.choice(["red", "Black"])}}
        if kind == 5:
            return {"path": {"starts_with": rng.choice(["/checkout", "/p/", "/cart"])}}
        return {"category": {"is_not_any": rng.sample(WORDS, 2)}}

    def node(depth):
        if depth == 0 or rng.random() < 0.4:
            return leaf()
        op = rng.choice(["and", "or", "not"])
        if op == "not":
            return {"not": node(depth - 1)}
        return {op: [node(depth - 1) for _ in range(rng.randint(1, 3))]}

    return node(3)


def _random_event(rng):
    host = rng.choice(["shop.example.com", "Shop.Example.COM", "blog.example.org"])
    path = rng.choice(["/checkout", "/checkout/confirm", "/p/123", "/cart", "/ThankYou.html", "/"])
    custom = {}
    if rng.random() < 0.7:
        custom["value"] = rng.choice([5, 10, 50.5, "99.5", "100", "abc", None])
    if rng.random() < 0.5:
        custom[rng.choice(["color", "Color"])] = rng.choice(["red", "BLACK", ["red", "blue"], 3])
    if rng.random() < 0.3:
        custom["category"] = rng.choice(WORDS)
    return {"event": rng.choice(["Purchase", "Lead", "AddToCart", "ViewContent", "PageView"]),
            "url": f"https://{host}{path}?utm=1", "custom_data": custom, "pixel_id": f"P{rng.randrange(35)}"}


def test_pattern_by_pattern_fallback_agrees():
    """Without RE2::Set (as after a DFA out-of-memory), the kernel still gives the same answers."""
    if _ruleset_c is None:
        import pytest

        pytest.skip("compiled extension not loaded")
    rng = random.Random(7)
    rule_set = {f"cc{i}": _random_rule(rng) for i in range(400)}
    rule_set["fold"] = {"or": [{"name": {"i_contains": "STRAẞE"}}, {"name": {"i_starts_with": "\u212a"}}]}
    evs = [_random_event(rng) for _ in range(200)] + [
        {"custom_data": {"name": "an der straße 1"}}, {"custom_data": {"name": "kelvin"}}]
    expected = match_rules(rule_set, evs, {})
    # No sets at all, then sets with small DFA budgets (from "cannot compile" to thrashing).
    for enabled, budget in [(False, 4 << 20), (True, 2 << 10), (True, 24 << 10), (True, 40 << 10), (True, 64 << 10)]:
        _ruleset_c._set_multi_pattern_sets(enabled, budget)
        try:
            assert compile_rules(rule_set, engine=_ruleset_c).match_batch(evs) == expected, (enabled, budget)
        finally:
            _ruleset_c._set_multi_pattern_sets(True)
    # Every set's DFA out of memory at match time: each text's patterns one by one, regexes as
    # programs made for the call.
    compiled = compile_rules(rule_set, engine=_ruleset_c)
    _ruleset_c._set_multi_pattern_sets(True, run_out=True)
    try:
        assert compiled.match_batch(evs) == expected
    finally:
        _ruleset_c._set_multi_pattern_sets(True)


def test_regexes_the_parser_accepts_near_its_budget_match_pattern_by_pattern():
    """The parser checks a regex's program against REGEX_MAX_MEM in pyre2's bundled RE2; the
    system RE2 the kernel links needs more for the same program. Run one by one (no set, or
    every set out of memory), each must still match, not compile to nothing."""
    if _ruleset_c is None:
        import pytest

        pytest.skip("compiled extension not loaded")
    rule_set = {f"r{n}": {"v": {"regex_match": f"\\pL{{{n}}}"}} for n in (66, 61, 56)}
    rule_set.update({f"s{n}": {"v": {"regex_match": f"[\\pL\\pN]{{{n}}}"}} for n in (60, 51)})
    evs = [{"custom_data": {"v": "é" * 70}}, {"custom_data": {"v": "é" * 52}}]
    expected = match_rules(rule_set, evs, {})
    assert sorted(expected[0]) == sorted(rule_set)
    for enabled, run_out in [(False, False), (True, True)]:
        _ruleset_c._set_multi_pattern_sets(enabled, run_out=run_out)
        try:
            assert compile_rules(rule_set, engine=_ruleset_c).match_batch(evs) == expected, (enabled, run_out)
        finally:
            _ruleset_c._set_multi_pattern_sets(True)
