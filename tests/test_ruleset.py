"""The compiled set's API: scoping, order, immutable updates, threads, and the extension guard."""

import os
import random
import re
import sys
import threading
from array import array
from collections.abc import Mapping

import pytest

import matcher
from matcher import RuleError, _ruleset, compile_rules
from matcher.columns import match_buffers
from matcher.reference import match_rules
from tests.conftest import ENGINES
from tools.gen_casefold import render


def test_the_compiled_extension_loaded():
    """Guard: the suite must exercise the kernel, not silently fall back to the twin."""
    if os.environ.get("MATCHER_NO_EXTENSIONS") == "1":
        assert not _ruleset.USING_EXTENSION
        pytest.skip("twin forced by MATCHER_NO_EXTENSIONS=1")
    assert _ruleset.USING_EXTENSION, "matcher._ruleset_c did not load: run `make build`"
    assert compile_rules({"a": {"event": "x"}}).compiled


def test_casefold_table_is_current():
    from pathlib import Path

    assert (Path(matcher.__file__).parent / "_casefold_data.py").read_text(encoding="utf-8") == render()


def test_api_contract():
    rule = matcher.parse_rule('{"url": {"i_contains": "thankyou"}}')
    assert matcher.evaluate(rule, {"url": "/ThankYou"}) is True
    cr = matcher.compile_rules({"cc1": rule, "cc2": '{"event": "Lead"}', "cc3": {"event": "Lead"}}, sources={"cc1": "PX"})
    assert cr.match({"url": "/thankyou", "pixel_id": "PX", "event": "Lead"}) == ["cc1", "cc2", "cc3"]
    assert cr.match_batch([{"event": "Lead"}, {}]) == [["cc2", "cc3"], []]
    assert len(cr) == 3 and "cc2" in cr and cr.ids == ["cc1", "cc2", "cc3"]
    assert cr.source("cc1") == "PX" and cr.source("cc2") is None
    assert cr.rule("cc3").to_json() == '{"event":{"eq":"Lead"}}'


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_match_columns(engine):
    cr = compile_rules({"a": {"url": {"contains": "thank"}}, "b": {"event": "Lead"}, "c": {"value": {"gt": 5}}},
                       sources={"a": "P1"}, engine=engine)
    columns = {"pixel_id": ["P1", "P2", 1, None], "url": ["/thank", "/thank", None, "/thank"],
               "event": ("Lead", None, "Lead", "x"), "custom_data": [None, {"value": 9}, {"value": "1"}, None]}
    assert cr.match_columns(columns) == ([2, 1, 1, 0], ["a", "b", "c", "b"])
    assert cr.match_columns({}) == ([], [])
    assert cr.match_columns({"event": []}) == ([], [])
    with pytest.raises(ValueError, match=r"columns\['url'\]: 1 values, expected 2 \(as many as columns\['event'\]\)"):
        cr.match_columns({"event": ["a", "b"], "url": ["x"]})
    with pytest.raises(ValueError, match="unknown column 'urls'"):
        cr.match_columns({"urls": ["x"]})


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_match_batch_takes_any_iterable(engine):
    # The twin iterated a generator; the kernel took len() of it (TypeError).
    cr = compile_rules({"a": {"url": {"contains": "x"}}}, engine=engine)
    events = [{"url": "x"}, {}, {"url": "yx"}]
    expected = [["a"], [], ["a"]]
    assert cr.match_batch(e for e in events) == cr.match_batch(tuple(events)) == cr.match_batch(iter(events)) == expected


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_a_rule_id_cannot_be_none(engine):
    # None marks a removed rule's place: a rule under it was counted but never reported.
    with pytest.raises(RuleError, match=r"rules\[None\]: a rule id cannot be None"):
        compile_rules({None: {"url": "x"}, "b": {"url": "x"}}, engine=engine)
    with pytest.raises(RuleError, match="cannot be None"):
        compile_rules({"b": {"url": "x"}}, engine=engine).with_changes({None: {"url": "x"}})


class _Text(str):
    """A str subclass, as some decoders hand out."""


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_event_source_is_read_by_its_text(engine):
    # A pixel id is the text of the str (a subclass too) or the decimal text of an integer (an
    # integral float too, as action specs read one); sources that have no UTF-8 form (lone
    # surrogates) are found as well.
    rules = {"a": {"event": "Purchase"}, "b": {"event": "Purchase"}, "c": {"event": "Purchase"}}
    sources = {"a": "1000", "b": "\udc80x", "c": "é1"}
    cr = compile_rules(rules, sources=sources, engine=engine)
    events = [{"event": "Purchase", "pixel_id": p} for p in
              ("1000", _Text("1000"), 1000, _Text("\udc80x"), "é1", _Text("é1"), "1000 ", True, 1000.0, 1000.5)]
    expected = [["a"], ["a"], ["a"], ["b"], ["c"], ["c"], [], [], ["a"], []]
    assert cr.match_batch(events) == expected
    assert match_rules({rid: cr.rule(rid) for rid in rules}, events, sources) == expected
    columns = {"event": ["Purchase"] * len(events), "pixel_id": [e["pixel_id"] for e in events]}
    assert cr.match_columns(columns) == ([len(m) for m in expected], [i for m in expected for i in m])


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_match_columns_with_custom_parameters_as_columns(engine):
    cr = compile_rules({"a": {"value": {"gt": 5}}, "b": {"color": {"eq": "red"}}, "c": {"order.country": "DE"},
                        "d": {"tags": {"is_any": ["x"]}}}, engine=engine)
    # Event 0: value 9 and color red; 1: no exact "color", so "COLOR" (the first equal under
    # case folding) is read; 2: "1" is no more than 5, tags fan out; 3: nothing; 4: a nested value.
    parameters = {"value": [9, None, "1", None, None], "COLOR": ["blue", "red", None, None, None],
                  "color": ["red", None, None, None, None], "tags": [None, None, ["y", "x"], None, None],
                  "order": [None, None, None, None, {"country": "DE"}]}
    assert cr.match_columns({"custom_data": parameters}) == ([2, 1, 1, 0, 1], ["a", "b", "b", "d", "c"])
    assert cr.match_columns({"event": ["x", "y"], "custom_data": {}}) == ([0, 0], [])
    with pytest.raises(ValueError, match=r"columns\['custom_data'\]\['color'\]: 1 values, expected 2 "
                                         r"\(as many as columns\['custom_data'\]\['value'\]\)"):
        cr.match_columns({"custom_data": {"value": [1, 2], "color": ["red"]}})
    with pytest.raises(ValueError, match=r"columns\['url'\]: 1 values, expected 2"):
        cr.match_columns({"custom_data": {"value": [1, 2]}, "url": ["x"]})
    with pytest.raises(ValueError, match=r"columns\['custom_data'\]: a custom parameter's name is a str, got 7"):
        cr.match_columns({"custom_data": {7: [1]}})


def test_invalid_rule_names_its_id_and_builds_nothing():
    with pytest.raises(RuleError) as info:
        compile_rules({"ok": {"event": "x"}, "bad": {"value": {"gt": "abc"}}})
    assert str(info.value).startswith("rules['bad'].value:")


def test_matching_holds_no_reference_to_the_events_values_after_the_call():
    # The kernel holds each text it reads while the GIL is released (another thread may change
    # the event meanwhile) and must let go of all of them when the chunk is done.
    compiled = compile_rules({"a": matcher.parse_rule({"and": [{"url": {"i_contains": "shop"}},
                                                               {"category": {"eq": "hats-1"}}]}),
                              "b": matcher.parse_rule({"path": {"starts_with": "/p/"}})})
    urls = ["".join(["https://shop.example/p/", str(i)]) for i in range(600)]
    categories = ["".join(["hats-", str(i % 3)]) for i in range(600)]
    events = [{"url": u, "custom_data": {"category": c, "n": [c, 7, 1.5, True]}} for u, c in zip(urls, categories)]
    before = [sys.getrefcount(x) for x in urls + categories]
    results = compiled.match_batch(events)
    counts, _ = compiled.match_columns({"url": urls, "custom_data": [e["custom_data"] for e in events]})
    by_parameter, _ = compiled.match_columns({"url": urls, "custom_data": {"category": categories}})
    assert [sys.getrefcount(x) for x in urls + categories] == before
    assert by_parameter == counts
    assert results[1] == ["a", "b"] and results[0] == ["b"] and counts[1] == 2


def test_events_whose_key_objects_differ_match_alike():
    # The kernel looks keys up with the key objects the chunk's first event holds (a hit on
    # identity); events built elsewhere hold other, equal objects, or lack the keys.
    from matcher.reference import match_rules

    def fresh(text):  # an equal str that is not the same object
        return "".join(list(text))

    rules = {"u": {"url": {"i_contains": "shop"}}, "e": {"event": "Lead"}, "d": {"device_type": "mobile"},
             "c": {"and": [{"event": "Lead"}, {"value": {"gt": 3}}]}, "p": {"url": {"contains": "example"}}}
    compiled = compile_rules({k: matcher.parse_rule(v) for k, v in rules.items()}, {"p": "P1"})
    rng = random.Random(7)
    events = []
    for _ in range(700):
        keys = ["pixel_id", "event", "url", "device_type", "custom_data"]
        values = ["P1", "Lead", "https://Shop.example", "mobile", {"value": rng.choice([1, 5])}]
        event = {}
        for key, value in zip(keys, values):
            if rng.random() < 0.8:
                event[fresh(key) if rng.random() < 0.5 else key] = value if rng.random() < 0.7 else "other"
        events.append(event)
    expected = match_rules(rules, events, {"p": "P1"})
    assert compiled.match_batch(events) == expected
    assert [r for r in expected if r] and [r for r in expected if not r]


def test_non_mapping_events_are_type_errors():
    cr = compile_rules({"a": {"event": "x"}})
    with pytest.raises(TypeError):
        cr.match_batch([["not", "a", "mapping"]])
    assert cr.match_batch([]) == []


def test_with_changes_leaves_the_old_set_alone():
    old = compile_rules({"a": {"event": "x"}, "b": {"event": "y"}}, sources={"b": "P1"})
    new = old.with_changes({"c": {"event": "x"}, "a": {"event": "z"}}, sources={"c": "P1"}, remove=["b"])
    x_event, y_event = {"event": "x", "pixel_id": "P1"}, {"event": "y", "pixel_id": "P1"}
    assert old.match_batch([x_event, y_event]) == [["a"], ["b"]]
    assert new.match_batch([x_event, y_event, {"event": "z"}]) == [["c"], [], ["a"]]
    assert new.ids == ["a", "c"]  # a replaced rule keeps its place
    with pytest.raises(KeyError):
        new.with_changes(remove=["nope"])


def test_a_replaced_rule_keeps_its_source_unless_sources_names_it():
    """Replacing a rule's condition once dropped its scope when ``sources`` left it out, so a
    conversion of one pixel silently began counting every pixel's events."""
    old = compile_rules({"a": {"event": "x"}, "b": {"event": "x"}, "c": {"event": "x"}},
                        sources={"a": "P1", "b": "P1", "c": "P1"})
    new = old.with_changes({"a": {"event": "y"}, "b": {"event": "y"}, "c": {"event": "y"}},
                           sources={"b": None, "c": "P2"})
    events = [{"event": "y", "pixel_id": p} for p in ("P1", "P2", "P3")]
    assert new.match_batch(events) == [["a", "b"], ["b", "c"], ["b"]]
    assert new.ids == ["a", "b", "c"]


def test_with_changes_recompiles_only_touched_partitions():
    old = compile_rules({f"r{i}": {"event": "x"} for i in range(6)}, sources={f"r{i}": f"P{i % 3}" for i in range(6)})
    new = old.with_changes({"n": {"event": "y"}}, sources={"n": "P1"})
    assert new._partitions["P0"] is old._partitions["P0"]
    assert new._partitions["P2"] is old._partitions["P2"]
    assert new._partitions["P1"] is not old._partitions["P1"]


def test_threads_classify_in_parallel_with_the_same_answers():
    rules = {f"r{i}": {"or": [{"url": {"i_contains": f"p{i}"}}, {"value": {"gt": i}}]} for i in range(200)}
    cr = compile_rules(rules, sources={f"r{i}": f"P{i % 4}" for i in range(0, 200, 2)})
    events = [{"url": f"https://x.com/p{i % 300}", "custom_data": {"value": i % 250}, "pixel_id": f"P{i % 5}"}
              for i in range(2000)]
    expected = cr.match_batch(events)
    results = [None] * 4
    errors = []

    def work(k):
        try:
            results[k] = cr.match_batch(events)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [expected] * 4


def test_non_dict_mappings_work():
    from types import MappingProxyType

    cr = compile_rules({"a": {"color": "red"}})
    assert cr.match(MappingProxyType({"custom_data": MappingProxyType({"COLOR": "red"})})) == ["a"]


def test_lone_surrogates_are_not_text():
    cr = compile_rules({"a": {"color": {"exists": True}}, "b": {"color": {"contains": ""}}, "c": {"domain": {"exists": True}}})
    assert cr.match({"custom_data": {"color": "\ud800"}, "url": "http://\ud800.com"}) == ["a"]
    assert matcher.evaluate({"color": {"contains": ""}}, {"custom_data": {"color": "\ud800"}}) is False


def test_case_insensitive_literals_follow_simple_folding_for_every_folding_code_point():
    """The kernel runs i_contains as RE2 (?i) literals; RE2's case orbits must equal simple folding.

    For every code point the fold table maps, both the code point and its folding must match
    a rule written with either, on every implementation's answer (reference included).
    """
    from matcher._casefold_data import FOLD_PAIRS

    pairs = FOLD_PAIRS
    rules = {f"r{j}": {"t": {"i_contains": chr(a)}} for j, (a, _) in enumerate(pairs)}
    rules.update({f"s{j}": {"t": {"i_starts_with": chr(b)}} for j, (_, b) in enumerate(pairs)})
    cr = compile_rules(rules)
    events = [{"custom_data": {"t": f"{chr(a)}>"}} for a, _ in pairs] + [{"custom_data": {"t": f"{chr(b)}>"}} for _, b in pairs]
    targets = [b for _, b in pairs] * 2
    for target, matched in zip(targets, cr.match_batch(events)):
        expected = [f"r{j}" for j, (_, b) in enumerate(pairs) if b == target]
        expected += [f"s{j}" for j, (_, b) in enumerate(pairs) if b == target]
        assert matched == expected, hex(target)


def test_matching_leaves_the_garbage_collector_as_it_was():
    import gc

    cr = compile_rules({"a": {"event": "x"}})
    assert gc.isenabled()
    cr.match_batch([{"event": "x"}] * 3000)
    assert gc.isenabled()
    gc.disable()
    try:
        cr.match_batch([{"event": "x"}] * 3000)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.skipif(not _ruleset.USING_EXTENSION, reason="the kernel's branch form only")
def test_branch_programs_decide_as_their_postfix_programs():
    """The kernel runs each postfix program in branch form (an AND stops at its first false
    child, an OR at its first true one, NOT/NEG/MISSING swap where to go): under every
    assignment of predicates and field presence, it decides as the postfix program does."""
    import random

    from matcher import _ruleset_c, _ruleset_py
    from matcher.plan import OP_AND, OP_EXISTS, OP_MISSING, OP_NEG, OP_NOR, OP_OR, OP_PRED

    def tree(rng, depth):
        if depth == 0 or rng.random() < 0.3:
            kind = rng.randrange(4)
            pred, slot = rng.randrange(3), rng.randrange(2)
            return [[OP_PRED, pred], [OP_NEG, pred, slot], [OP_EXISTS, slot], [OP_MISSING, slot]][kind]
        children = [tree(rng, depth - 1) for _ in range(rng.randint(1, 3))]
        return sum(children, []) + [rng.choice([OP_AND, OP_OR, OP_NOR]), len(children)]

    def run_branch(words, bits, present):
        i = words[0]
        while i >= 0:
            test = words[i]
            i = words[i + 2] if (bits[test] if test >= 0 else present[~test]) else words[i + 3]
        return i == -1

    class Values:
        def __init__(self, present):
            self.present = lambda slot: present[slot]

    rng = random.Random(7)
    for _ in range(400):
        code = tree(rng, 4)
        words = _ruleset_c._branch_program(code, [0, 0, 0])
        for mask in range(32):
            bits, present = [bool(mask >> k & 1) for k in range(3)], [bool(mask >> k & 1) for k in (3, 4)]
            expected = _ruleset_py._run_program(code, bits.__getitem__, Values(present))
            assert run_branch(words, bits, present) == expected, (code, words, mask)


@pytest.mark.parametrize("fields", [6, 90])
def test_candidates_request_every_field_they_read(fields):
    """Triage requests the fields the candidates' programs read: as one mask per event while
    every field slot is below 64, rule by rule beyond. Rule i is the only candidate of event
    E{i} and reads three lazy custom_data fields (one shared); each decides some events."""
    rule_set = {f"r{i}": {"and": [{"event": {"eq": f"E{i}"}},
                                  {"or": [{f"k{i % fields}": {"eq": "v"}}, {f"k{(i * 7 + 1) % fields}": {"gt": 5}}]},
                                  {"shared": {"eq": "s"}}]}
                for i in range(2 * fields)}
    evs = [{"event": f"E{j % (2 * fields)}",
            "custom_data": {f"k{(j * 5 + m) % fields}": v for m, v in enumerate(["v", 9, "w"])}
            | {f"k{j % fields}": "v" if j % 3 else "x", f"k{(j * 7 + 1) % fields}": j % 11}
            | ({"shared": "s"} if j % 5 else {})} for j in range(8 * fields)]
    expected = match_rules(rule_set, evs, {})
    assert sum(map(bool, expected)) > len(evs) // 4 and not all(expected)
    for engine in ENGINES:
        assert compile_rules(rule_set, engine=engine).match_batch(evs) == expected, engine.__name__


def test_rules_their_triggers_decide_match_once_without_programs():
    """A rule whose program is a predicate or an OR of predicates (at any depth), each one of
    its triggers, is a match as soon as a trigger fires, without running a program; any other
    operator (an AND, a NOT, a negated leaf, a presence test) among them keeps the program.
    Several triggers of one rule firing together still make one match."""
    from matcher import _ruleset_c
    from matcher.plan import OP_AND, OP_EXISTS, OP_NEG, OP_OR, OP_PRED

    decided = _ruleset_c._decided_by_trigger
    assert decided([OP_PRED, 3], {3})
    assert decided([OP_PRED, 1, OP_PRED, 2, OP_PRED, 4, OP_OR, 2, OP_OR, 2], {1, 2, 4})
    assert not decided([OP_PRED, 1, OP_PRED, 2, OP_AND, 2], {2})
    assert not decided([OP_PRED, 1, OP_NEG, 2, 0, OP_OR, 2], {1})
    assert not decided([OP_PRED, 1, OP_EXISTS, 0, OP_OR, 2], {1})
    assert not decided([OP_PRED, 1, OP_PRED, 2, OP_OR, 2], {1, 5})  # a trigger outside the OR
    assert not decided([OP_PRED, 1], set())

    rule_set = {
        "one": {"url": {"contains": "thank"}},
        "any": {"or": [{"url": {"i_contains": "THANK"}}, {"url": {"contains": "you"}}, {"event": "Lead"}]},
        "nested": {"or": [{"event": "Lead"}, {"or": [{"url": {"contains": "you"}}, {"device_type": "d"}]}]},
        "and": {"or": [{"url": {"contains": "thank"}}, {"and": [{"event": "Lead"}, {"url": {"contains": "x"}}]}]},
        "not": {"or": [{"url": {"contains": "thank"}}, {"not": {"event": "Lead"}}]},
        "neg": {"or": [{"event": "Lead"}, {"url": {"not_contains": "you"}}]},
    }
    evs = [{"url": u, "event": e, "device_type": d} for u in ("/thankyou", "/you", "/x", "/thank", "/") for e in
           ("Lead", "View") for d in ("d", "m")] + [{}]
    expected = match_rules(rule_set, evs, {})
    assert {rid for ids in expected for rid in ids} == set(rule_set)
    for engine in ENGINES:
        for sources in ({}, {rid: "P" for rid in rule_set}):
            got = compile_rules(rule_set, sources, engine=engine).match_batch([e | {"pixel_id": "P"} for e in evs])
            assert got == expected, engine.__name__


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_a_pixel_id_past_pythons_digit_limit_is_no_source(engine):
    """``str()`` refuses an int of more than 4,300 digits: such an event belongs to no pixel
    (only unscoped rules see it), in every engine and the reference, whether or not the set
    has scoped rules (found by the fuzz audit: the kernel raised only when it had)."""
    event = {"event": "Purchase", "pixel_id": 10**5000}
    rules, sources = {"a": {"event": "Purchase"}, "b": {"event": "Purchase"}}, {"b": "P1"}
    assert compile_rules(rules, sources, engine=engine).match(event) == ["a"]
    assert compile_rules({"a": rules["a"]}, engine=engine).match(event) == ["a"]
    assert match_rules(rules, [event], sources) == [["a"]]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_buffers_refuse_a_set_with_ids_that_are_not_text(engine):
    rules = compile_rules({1: {"event": "x"}, "b": {"event": "x"}}, engine=engine)
    assert rules.match_columns({"event": ["x"]}) == ([2], [1, "b"])  # lists hold any id
    with pytest.raises(TypeError, match=r"every id must be a str; this set has 1 \(int\): use match_columns"):
        rules.match_columns_buffers({"event": ["x"]})


class _Id(str):
    """A str subclass rule id whose own text and UTF-8 are not its str's."""

    def __str__(self):
        return "other"

    def encode(self, *args, **kwargs):
        return b"other"


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_buffers_hold_a_str_subclass_id_as_its_text(engine):
    # Lists hold the id as given; buffers its str's UTF-8 (what a str id of that text gives).
    rule_id = _Id("sub-é")
    rules = compile_rules({rule_id: {"event": "x"}, "b": {"event": "x"}}, engine=engine)
    counts, ids = rules.match_columns({"event": ["x", "y"]})
    assert (counts, ids) == ([2, 0], [rule_id, "b"]) and ids[0] is rule_id
    found = rules.match_columns_buffers({"event": ["x", "y"]}, None, {rule_id: 1.5, "b": 2.5})
    as_str = compile_rules({"sub-é": {"event": "x"}, "b": {"event": "x"}}, engine=engine)
    assert found == as_str.match_columns_buffers({"event": ["x", "y"]}, None, {"sub-é": 1.5, "b": 2.5})
    assert found.data == "sub-éb".encode() and array("d", found.values).tolist() == [1.5, 2.5]
    assert found == match_buffers(counts, ids, [1.5, 2.5])
    # A set with a str subclass id and one that is no str still refuses, naming the latter.
    changed = rules.with_changes({2: {"event": "x"}})
    with pytest.raises(TypeError, match=r"this set has 2 \(int\)"):
        changed.match_columns_buffers({"event": ["x"]})
    assert rules.match_columns_buffers({"event": ["x"]}).data == "sub-éb".encode()


class _CaseInsensitiveMapping(Mapping):
    """As requests' CaseInsensitiveDict: its keys' case is kept, and ``get`` ignores it."""

    def __init__(self, data):
        self._data = {key.lower(): (key, value) for key, value in data.items()}

    def __getitem__(self, key):
        return self._data[key.lower()][1]

    def __iter__(self):
        return (key for key, _ in self._data.values())

    def __len__(self):
        return len(self._data)


class _Computed(dict):
    """A dict whose values are computed when read (its storage holds functions)."""

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        return value() if callable(value) else value

    def get(self, key, default=None):
        return self[key] if key in self else default


def test_an_events_fields_are_read_with_its_own_get(match_all):
    # The kernel copied a mapping that is not exactly a dict with dict(event), bypassing its
    # methods: it read no "event" of either, where the twin and the reference read one.
    rules = {"ev": {"event": "Purchase"}, "url": {"url": {"contains": "/thank"}}, "color": {"color": "red"}}
    events = [_CaseInsensitiveMapping({"Event": "Purchase", "URL": "https://a/thank"}),
              _Computed({"event": lambda: "Purchase", "custom_data": lambda: {"color": "red"}})]
    assert match_all(rules, events) == [["ev", "url"], ["ev", "color"]]


class _CaseInsensitiveText(str):
    def __eq__(self, other):
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self):
        return hash(self.lower())


def test_a_str_subclass_is_compared_as_its_text(match_all):
    # Its own __eq__/__hash__ decided "eq" and "is_any" in the twin and the reference.
    rules = {"eq": {"color": "red"}, "any": {"color": {"is_any": ["red", "blue"]}}, "neq": {"color": {"neq": "red"}}}
    assert match_all(rules, [{"custom_data": {"color": _CaseInsensitiveText("RED")}}]) == [["neq"]]
    # ... in a rule's operands too: a rule of them is the rule of their text.
    odd = {"eq": {"color": _CaseInsensitiveText("RED")}, "any": {"color": {"is_any": [_CaseInsensitiveText("RED")]}}}
    assert match_all(odd, [{"custom_data": {"color": "red"}}, {"custom_data": {"color": "RED"}}]) == [[], ["eq", "any"]]
    assert type(matcher.parse_rule(odd["eq"]).leaves()[0].operand) is str
    # ... and as an event's source: its text, not its own __eq__, finds the scoped rules.
    events = [{"pixel_id": _CaseInsensitiveText("P1")}, {"pixel_id": _CaseInsensitiveText("p1")}]
    assert match_all({"a": {"event": {"exists": False}}}, events, {"a": "P1"}) == [["a"], []]


def test_a_defaultdict_parameter_is_not_added_by_reading_it(match_all):
    from collections import defaultdict

    custom = defaultdict(lambda: "red", {"size": "L"})
    assert match_all({"color": {"color": "red"}, "size": {"size": "L"}}, [{"custom_data": custom}]) == [["size"]]
    assert dict(custom) == {"size": "L"}


def test_the_twin_checks_each_event_of_a_batch_once(monkeypatch):
    """match_batch checks that each event is a mapping (naming its index), and match_batch's
    events are not checked again by ``match``; ``match`` alone still checks its event."""
    from matcher import _ruleset_py

    checked = []

    class _Counting(type):
        def __instancecheck__(cls, instance):
            checked.append(instance)
            return isinstance(instance, Mapping)

    class CountingMapping(metaclass=_Counting):
        pass

    cr = compile_rules({"p": {"event": "Purchase"}}, engine=_ruleset_py)
    monkeypatch.setattr(_ruleset_py, "Mapping", CountingMapping)
    events = [{"event": "Purchase"}, {"event": "Lead"}, {"event": "Purchase"}]
    assert cr.match_batch(events) == [["p"], [], ["p"]]
    assert len(checked) == 3
    assert cr.match(events[0]) == ["p"] and len(checked) == 4
    with pytest.raises(TypeError, match=r"^events\[1\]: an event is a mapping, got int$"):
        cr.match_batch([events[0], 7])
    with pytest.raises(TypeError, match=r"^an event is a mapping, got int$"):
        cr.match(7)


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_bad_batches_and_columns_are_named(engine):
    cr = compile_rules({"p": {"event": "Purchase"}, "v": {"value": {"gt": 1}}}, engine=engine)
    with pytest.raises(TypeError, match=r"^events\[2\]: an event is a mapping, got NoneType$"):
        cr.match_batch([{"event": "Purchase"}] * 2 + [None])
    with pytest.raises(TypeError, match=r"^an event is a mapping, got int$"):
        cr.match(7)
    # A text or a mapping iterates over its characters or keys, never one value per event.
    for columns, place, kind in [({"event": "Purchase"}, "columns['event']", "str"),
                                 ({"url": {"a": 1}}, "columns['url']", "dict"),
                                 ({"event": ["Purchase"] * 3, "custom_data": {"value": "123"}},
                                  "columns['custom_data']['value']", "str"),
                                 ({"event": ["Purchase"], "custom_data": {"value": 150}},
                                  "columns['custom_data']['value']", "int"),
                                 ({"event": 5}, "columns['event']", "int")]:
        message = f"{place}: a column is a sequence of values, one per event, got {kind}"
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            cr.match_columns(columns)
    # A str subclass names a parameter as its text does (as a key of a mapping per event).
    class Name(str):
        pass

    assert cr.match_columns({"event": ["x", "y"], "custom_data": {Name("value"): [2, 0]}}) == ([1, 0], ["v"])


def test_bad_rule_values_are_named():
    cr = compile_rules({"p": {"event": "Purchase"}, "v": {"value": {"gt": 1}}})
    for value, kind in [(None, "NoneType"), ("3", "str"), (object(), "object")]:
        with pytest.raises(TypeError, match=rf"^rule_values\['v'\]: a number, got {kind}$"):
            cr.match_columns_buffers({"event": ["Purchase"]}, rule_values={"p": 1.0, "v": value})
    assert cr.match_columns_buffers({"event": ["Purchase"]}, rule_values={"p": 2, "v": 1.5}).values == array("d", [2.0]).tobytes()
