"""Columns are evaluated grouped by event source (one pixel's rules stay in cache for a run of
its events), and answered in call order: whatever the order of the events, each one's matches
are those of the event alone, where it was in the call. The sources mix the ones read without
the GIL with those left to it (integers, str subclasses, non-ASCII ids), missing and unknown
ones, across several chunks, and across the windows a large call is grouped within. A matcher
keeps its calls' working memory for the next call: calls of every size and form one after
another, and after one that failed half way, answer as each event alone."""

import random

import pytest

from matcher import compile_rules
from matcher.reference import match_rules
from matcher.values import EVENT_COLUMNS
from tests.conftest import ENGINES, _ruleset_c
from tests.test_rule_buffer_columns import as_buffer
from tests.test_rule_columns_nogil import _Text, _flat

_SOURCES = [f"{1000 + k}" for k in range(12)] + ["é1"]


def _rules():
    rules, sources = {}, {}
    for k, source in enumerate(_SOURCES):
        for rule_id, rule in {
            f"s{k}-url": {"url": {"contains": f"/t{k}/"}},
            f"s{k}-buy": {"and": [{"event": "Purchase"}, {"value": {"gt": k}}]},
            f"s{k}-color": {"color": {"i_is_any": [f"red{k}", "blue"]}},
        }.items():
            rules[rule_id], sources[rule_id] = rule, source
    rules["any-url"] = {"url": {"contains": "/t3/"}}  # unscoped: every event's partition too
    return rules, sources


def _events(rng, n):
    pixels = _SOURCES + [1003, _Text("1004"), None, "9999"]
    events = []
    for _ in range(n):
        k = rng.randrange(14)
        event = {"url": f"https://shop.example/t{k}/p", "event": rng.choice(["Purchase", "PageView"]),
                 "custom_data": {"value": float(rng.randrange(14)), "color": rng.choice([f"RED{k}", "Blue", "green"])}}
        pixel = rng.choice(pixels)
        if pixel is not None:
            event["pixel_id"] = pixel
        events.append(event)
    return events


def _columns(events, by_parameter, buffers):
    columns = {name: [e.get(name) for e in events] for name in EVENT_COLUMNS}
    if by_parameter:
        customs = [e.get("custom_data") or {} for e in events]
        columns["custom_data"] = {name: [c.get(name) for c in customs] for name in ("value", "color")}
    if buffers:
        columns = {name: ({k: as_buffer(v) for k, v in column.items()} if isinstance(column, dict)
                          else column if name == "custom_data" else as_buffer(column))
                   for name, column in columns.items()}
    return columns


@pytest.mark.parametrize("by_parameter", [False, True])
@pytest.mark.parametrize("buffers", [False, True])
def test_events_grouped_by_source_are_answered_in_call_order(by_parameter, buffers):
    rules, sources = _rules()
    rng = random.Random(7)
    events = _events(rng, 700)  # three chunks; every source's events spread over all of them
    expected = match_rules(rules, events, sources)
    assert sum(map(len, expected)) > 300  # most events match something: order errors would show
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_columns(_columns(events, by_parameter, buffers)) == _flat(expected), engine.__name__


_INT_SOURCES = ["0", "1003", "-5", "9223372036854775807", "-9223372036854775808", "18446744073709551616", "True"]
_INT_IDS = [0, 1003, -5, 2**63 - 1, -2**63, 2**64, True, 1003.0, None, 77]


@pytest.mark.parametrize("buffers", [False, True])
def test_integer_pixel_ids_find_their_source_as_decimal_text(buffers):
    """An integer pixel id is its decimal text, read in the kernel (once by a Python call per
    event, and left to the GIL in columns): negative ids, int64's bounds, an id past 64 bits,
    and ids that are no integer (True, a float) next to them, as a list and (where every id is
    an int64) as an integer column."""
    rules = {f"r{k}": {"url": {"contains": "/p"}} for k in range(len(_INT_SOURCES))}
    sources = {f"r{k}": source for k, source in enumerate(_INT_SOURCES)}
    rng = random.Random(5)
    ids = [rng.choice(_INT_IDS) for _ in range(600)]
    if buffers:  # an int64 column: only ints in its range, or nothing
        ids = [i if type(i) is int and -2**63 <= i < 2**63 else None for i in ids]
    events = [{"url": "https://shop.example/p", **({"pixel_id": i} if i is not None else {})} for i in ids]
    expected = match_rules(rules, events, sources)
    assert {tuple(e) for e in expected} >= {("r0",), ("r1",), ("r2",), ("r3",), ("r4",), ()}
    assert buffers or ["r5"] in expected  # past 64 bits: a list's int, not an int64 column's
    columns = _columns(events, False, buffers)
    if buffers:
        assert type(columns["pixel_id"]).__name__ == "NumberColumn"
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_columns(columns) == _flat(expected), engine.__name__
        assert compiled.match_batch(events) == expected, engine.__name__
        # A float column: an integral float is its integer's id (in int64's range without the
        # GIL, past it with), a fraction, NaN or an infinity none.
        pixels = [1003.0, 0.0, None, 1003.5, float("nan"), -2.0**63, 2.0**64, 2.0**63, -0.0, float("inf")]
        floats = {"url": ["https://shop.example/p"] * len(pixels), "pixel_id": as_buffer(pixels)}
        assert type(floats["pixel_id"]).__name__ == "NumberColumn"
        expected_floats = ([1, 1, 0, 0, 0, 1, 1, 0, 1, 0], ["r1", "r0", "r4", "r5", "r0"])
        assert compiled.match_columns(floats) == expected_floats
        assert compiled.match_columns({**floats, "pixel_id": pixels}) == expected_floats
        rows = [{"url": "https://shop.example/p", **({"pixel_id": p} if p is not None else {})} for p in pixels]
        assert _flat(match_rules(rules, rows, sources)) == expected_floats


def test_a_shuffled_batch_answers_each_event_as_before():
    rules, sources = _rules()
    rng = random.Random(3)
    events = _events(rng, 600)
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        alone = [compiled.match(event) for event in events]
        for _ in range(3):
            order = list(range(len(events)))
            rng.shuffle(order)
            shuffled = [events[i] for i in order]
            assert compiled.match_columns(_columns(shuffled, True, True)) == _flat([alone[i] for i in order])
        grouped = sorted(range(len(events)), key=lambda i: str(events[i].get("pixel_id")))
        assert compiled.match_columns(_columns([events[i] for i in grouped], False, False)) == \
            _flat([alone[i] for i in grouped])


@pytest.mark.skipif(_ruleset_c is None, reason="the compiled kernel did not build")
@pytest.mark.parametrize("buffers", [False, True])
def test_a_call_of_several_windows_is_answered_in_call_order(buffers):
    """Grouped by source within each window of ``GROUPED_WITHIN`` events, not across them: two
    and a half windows, every source in each, against each event alone."""
    rules, sources = _rules()
    events = _events(random.Random(11), _ruleset_c.GROUPED_WITHIN * 5 // 2)
    compiled = compile_rules(rules, sources, engine=_ruleset_c)
    alone = [compiled.match(event) for event in events]
    assert compiled.match_columns(_columns(events, True, buffers)) == _flat(alone)


def test_one_matcher_answers_calls_of_every_size_and_form_in_turn():
    """The working memory a call leaves (marks, chunk arrays) is the next call's, whatever its
    size and form; a call that fails in its second chunk leaves nothing the next one sees."""
    rules, sources = _rules()
    rng = random.Random(5)
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        for n in [700, 1, 0, 300, 2, 257, 3]:
            events = _events(rng, n)
            alone = [compiled.match(event) for event in events]
            assert compiled.match_batch(events) == alone, (engine.__name__, n)
            for by_parameter, buffers in [(False, False), (True, True), (True, False)]:
                assert compiled.match_columns(_columns(events, by_parameter, buffers)) == _flat(alone)
        events = _events(rng, 600)
        with pytest.raises(TypeError, match="an event is a mapping"):
            compiled.match_batch(events[:300] + [42] + events[300:])
        assert compiled.match_batch(events) == [compiled.match(event) for event in events]


@pytest.mark.parametrize("slow_chunk", [0, 1, 2, 3])
def test_chunks_left_to_the_gil_between_chunks_that_are_not(slow_chunk):
    """A columnar call runs chunk after chunk without the GIL until one leaves a value to it
    (a non-ASCII URL, custom data as a dict), finishes that one with the GIL and goes on
    without it: four chunks of one source, in call order, only one of them slow."""
    rules, sources = _rules()
    rng = random.Random(13 + slow_chunk)
    events = _events(rng, 900)
    for k, event in enumerate(events):
        event["pixel_id"] = "1003"
        slow = k // 256 == slow_chunk
        if slow and k % 5 == 0:
            event["url"] = "https://shop.example/t3/é"
        if not slow:
            del event["custom_data"]
    expected = match_rules(rules, events, sources)
    assert sum(map(len, expected)) > 200
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        for by_parameter in (False, True):
            got = compiled.match_columns(_columns(events, by_parameter, False))
            assert got == _flat(expected), (engine.__name__, by_parameter)
