"""Columns: the kernel reads the built-in columns' exact ASCII strs (and the sources given as
such, and the URL's host and path), and custom parameter columns' exact ASCII strs and exact
floats, without the GIL, and leaves every other value to the extraction under the GIL. Each test
puts the fallbacks next to the fast path in one call (the same chunks) and checks the answers
against ``match_batch`` over the same events as dicts, the twin and the reference."""

import random
import threading

import pytest

from matcher import compile_rules
from matcher.reference import match_rules
from matcher.values import EVENT_COLUMNS, source_key
from tests.conftest import ENGINES, _ruleset_c

kernel_only = pytest.mark.skipif(_ruleset_c is None, reason="the kernel's tolerance of lists shortened mid-call")


class _Text(str):
    """A str subclass, as some decoders hand out."""


# Every built-in field and some custom parameters are read by eager groups, both in the
# unscoped partition and in scoped ones (sources: ASCII, non-ASCII, integer-like, lone surrogate).
_SOURCES = ["P1", "é1", "1000", "\udc80x"]


def _rules():
    rules, sources = {}, {}
    for k, src in enumerate([None] + _SOURCES):
        tag = f"s{k}"
        group = {
            f"{tag}-url": {"url": {"contains": "thank"}},
            f"{tag}-url-i": {"url": {"i_contains": "ÉTÉ"}},
            f"{tag}-event": {"event": "Purchase"},
            f"{tag}-event-u": {"event": {"starts_with": "Kauf"}},
            f"{tag}-device": {"device_type": {"is_any": ["mobile", "tablet"]}},
            f"{tag}-device-n": {"device_type": {"gt": 2}},
            f"{tag}-domain": {"domain": {"regex_match": "shop\\.example$"}},
            f"{tag}-path": {"path": {"starts_with": "/p/"}},
            f"{tag}-value": {"value": {"gt": 5}},
            f"{tag}-and": {"and": [{"event": {"contains": "u"}}, {"url": {"exists": True}},
                                   {"device_type": {"exists": False}}]},
            f"{tag}-color": {"color": {"i_contains": "red"}},
        }
        rules.update(group)
        if src is not None:
            sources.update({rule_id: src for rule_id in group})
    rules.update(_LAZY)
    sources.update(dict.fromkeys(_LAZY, "L1"))
    return rules, sources


def _lazy_rules():
    # Only source "L1": no other partition reads its fields eagerly.
    return dict(_LAZY), dict.fromkeys(_LAZY, "L1")


# The built-in fields other than the event only in programs (read lazily, for the candidates
# the event triggers).
_LAZY = {
    "l-url": {"and": [{"event": "Purchase"}, {"url": {"contains": "thank"}}]},
    "l-url-i": {"and": [{"event": "Purchase"}, {"url": {"i_contains": "été"}}]},
    "l-device": {"and": [{"event": {"starts_with": "Kauf"}}, {"device_type": {"is_any": ["mobile", "3"]}}]},
    "l-device-n": {"and": [{"event": "Purchase"}, {"device_type": {"gte": 3}}]},
    "l-domain": {"and": [{"event": "Purchase"}, {"domain": {"regex_match": "shop\\.example$"}}]},
    "l-any": {"and": [{"event": {"exists": True}}, {"url": {"contains": "/p/"}}]},
}


_URLS = ["https://shop.example/p/thank", "https://x.com/thankyou", "/thank", "https://été.shop.example/p/É",
         _Text("https://shop.example/p/1"), "http://\ud800.com/p/x", ["https://a/thank", "b"], 7, True, "",
         "HTTPS://SHOP.EXAMPLE/", None]
_EVENTS = ["Purchase", "Kaufen", "Kauf€", _Text("Purchase"), "Purchasé", ["Purchase"], 3, 2.5, None, "", "\ud800"]
_DEVICES = ["mobile", "desktop", _Text("tablet"), "mobilé", 3, "3", 1.5, ["mobile", None], None, False, "4 "]
_PIXELS = ["P1", "L1", "é1", "1000", 1000, _Text("P1"), _Text("é1"), "\udc80x", _Text("\udc80x"), True, 1000.0, "P9", None]
_CUSTOMS = [None, {"value": 9}, {"value": "1"}, {"COLOR": "Red"}, {"color": ["x", "dark red"]}, {}]


def _event(rng):
    event = {}
    for key, pool in (("url", _URLS), ("event", _EVENTS), ("device_type", _DEVICES), ("pixel_id", _PIXELS),
                      ("custom_data", _CUSTOMS)):
        # Mostly the fast path (ASCII strs), fallbacks scattered among them.
        value = pool[0] if rng.random() < 0.4 else rng.choice(pool)
        if value is not None:
            event[key] = value
    return event


def _columns(events):
    return {name: [e.get(name) for e in events] for name in EVENT_COLUMNS}


def _flat(results):
    return [len(m) for m in results], [rule_id for m in results for rule_id in m]


@pytest.mark.parametrize("n", [1, 200, 600])
@pytest.mark.parametrize("make_rules", [_rules, _lazy_rules])
def test_fallbacks_next_to_the_fast_path_in_one_call(n, make_rules):
    rules, sources = make_rules()
    rng = random.Random(n)
    events = [_event(rng) for _ in range(n)]
    if make_rules is _lazy_rules:
        for event in events:
            event["pixel_id"] = "L1"
    if n == 600:  # a fallback at each chunk boundary
        for row in (255, 256, 511, 512, 599):
            events[row] = {"url": "https://été.shop.example/p/thank", "event": _Text("Purchase"),
                           "device_type": "mobilé", "pixel_id": "é1", "custom_data": {"value": 9}}
    expected = match_rules(rules, events, sources)
    assert sum(map(len, expected)) > n // 4  # the set matches: the comparison says something
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_batch(events) == expected, engine.__name__
        assert compiled.match_columns(_columns(events)) == _flat(expected), engine.__name__


@pytest.mark.parametrize("column", ["url", "event", "device_type", "pixel_id"])
def test_each_fallback_alone_among_ascii_rows(column):
    # One odd value per call, in a chunk of plain ASCII rows: the row is answered as its dict is.
    rules, sources = _rules()
    base = {"url": "https://shop.example/p/thank", "event": "Purchase", "device_type": "mobile",
            "pixel_id": "P1", "custom_data": {"value": 9}}
    pool = {"url": _URLS, "event": _EVENTS, "device_type": _DEVICES, "pixel_id": _PIXELS}[column]
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        for odd in pool:
            events = [dict(base) for _ in range(300)]
            for row in (0, 100, 255, 256, 299):
                events[row] = {**base, column: odd}
            expected = match_rules(rules, events, sources)
            assert compiled.match_batch(events) == expected, (engine.__name__, odd)
            assert compiled.match_columns(_columns(events)) == _flat(expected), (engine.__name__, odd)


def test_custom_parameters_as_columns_next_to_the_fast_path():
    rules, sources = _rules()
    rng = random.Random(7)
    events = [_event(rng) for _ in range(600)]
    expected = match_rules(rules, events, sources)
    columns = {name: [e.get(name) for e in events] for name in EVENT_COLUMNS if name != "custom_data"}
    columns["custom_data"] = {"value": [(e.get("custom_data") or {}).get("value") for e in events],
                              "COLOR": [(e.get("custom_data") or {}).get("COLOR") for e in events],
                              "color": [(e.get("custom_data") or {}).get("color") for e in events]}
    for engine in ENGINES:
        assert compile_rules(rules, sources, engine=engine).match_columns(columns) == _flat(expected), engine.__name__


@kernel_only
def test_columns_shorter_than_the_batch_are_missing_past_their_end():
    # (The public API checks the lengths; the kernel sees shorter lists when another thread
    # shortens them during the call. The twin needs whole columns.)
    rules, sources = _rules()
    rng = random.Random(3)
    n = 600
    events = [_event(rng) for _ in range(n)]
    cut = {"pixel_id": 300, "event": 256, "url": 10, "device_type": 599, "custom_data": 257}
    rows = [{k: v for k, v in e.items() if i < cut[k]} for i, e in enumerate(events)]
    expected = match_rules(rules, rows, sources)
    compiled = compile_rules(rules, sources, engine=_ruleset_c)
    assert compiled.match_batch(rows) == expected
    lists = [[e.get(name) for e in events][:cut[name]] for name in EVENT_COLUMNS]
    assert compiled._matcher.match_columns(n, *lists) == _flat(expected)


@kernel_only
def test_threads_changing_the_columns_during_calls():
    """One thread replaces the columns' items (with strs it then drops, non-ASCII text, other
    types) and shortens and regrows the lists while another matches them: no crash, and each
    row's answer is that of one of the values its columns held."""
    rules = {"a": {"url": {"contains": "thank"}}, "b": {"event": "Purchase"}, "c": {"device_type": "mobile"},
             "d": {"and": [{"event": {"contains": "a"}}, {"url": {"contains": "é"}}]}}
    sources = {"c": "P1", "d": "é1"}
    compiled = compile_rules(rules, sources, engine=_ruleset_c)
    n = 600
    values = {"pixel_id": ["P1", "é1", _Text("P1"), 1000, None],
              "event": ["Purchase", "Kauf", "Purchasé", _Text("Purchase"), 5, None],
              "url": ["/thank", "/é-thank", _Text("/thank"), ["/thank"], None],
              "device_type": ["mobile", "mobilé", 3, None]}
    # Every row's possible answers: any combination of the values its columns may hold.
    answers = set()
    for p in values["pixel_id"]:
        for e in values["event"]:
            for u in values["url"]:
                for d in values["device_type"]:
                    event = {k: v for k, v in (("pixel_id", p), ("event", e), ("url", u), ("device_type", d))
                             if v is not None}
                    answers.add(tuple(compiled.match(event)))
    columns = {name: [pool[0]] * n for name, pool in values.items()}
    _match_while_mutating(columns, values, answers, lambda: compiled._matcher.match_columns(
        n, columns["pixel_id"], columns["event"], columns["url"], columns["device_type"], None))


def _match_while_mutating(columns, values, answers, match, seed=1):
    """Calls ``match`` 200 times while a thread replaces the columns' items with values of
    their pools (fresh strs and floats, freed when replaced) and shortens and regrows them:
    each row's answer must be one of ``answers``."""
    n = len(next(iter(columns.values())))
    stop = threading.Event()
    errors = []
    rounds = [0]

    def mutate():
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                for name, column in columns.items():
                    pool = values[name]
                    for _ in range(50):
                        value = rng.choice(pool)
                        if isinstance(value, str):  # a fresh object, freed when replaced
                            value = type(value)("".join([value[:1], value[1:]]))
                        elif isinstance(value, float):
                            value = type(value)(value + 0.0)
                        column[rng.randrange(len(column))] = value
                    if rng.random() < 0.3:
                        del column[rng.randrange(len(column)):]
                    column.extend([pool[0]] * (n - len(column)))
                rounds[0] += 1
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    worker = threading.Thread(target=mutate)
    worker.start()
    try:
        for _ in range(200):
            counts, ids = match()
            assert len(counts) == n and sum(counts) == len(ids)
            at = 0
            for count in counts:
                assert tuple(ids[at:at + count]) in answers
                at += count
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert rounds[0] > 1  # the columns did change during the calls


# Custom parameters as columns: exact ASCII strs and exact floats are read without the GIL
# (a float only where no predicate reads its text); everything else under it.

class _Float(float):
    """A float subclass."""


_PARAMETER_RULES = {
    "v-gt": {"value": {"gt": 5}},
    "v-text": {"value": {"eq": "10"}},  # a number's text: its floats go to the GIL
    "c-i": {"color": {"i_contains": "red"}},
    "c-eq": {"color": {"eq": "blue"}},
    "c-n": {"color": {"lt": 3}},
    "s-and": {"and": [{"event": "Purchase"}, {"size": {"gte": 40}}, {"color": {"exists": True}}]},
}
_PARAMETER_VALUES = {
    "value": [9.5, 10.0, 1.5, "10", "12", float("nan"), float("inf"), -float("inf"), 10, True, _Float(9.5),
              _Text("10"), "1é", ["12"], None],
    "color": ["red", "Dark RED", "blue", "rouge€", "rÉd", _Text("red"), 2.0, 2, False, ["blue", "red"],
              float("nan"), "", None],
    "size": [42.0, 12.5, "44", 40, _Float(41.0), None],
}


def _parameter_events(rng, n):
    events = []
    for _ in range(n):
        custom = {}
        for name, pool in _PARAMETER_VALUES.items():
            value = pool[0] if rng.random() < 0.5 else rng.choice(pool)
            if value is not None:
                custom[name] = value
        events.append({"event": rng.choice(["Purchase", "Lead"]), "pixel_id": rng.choice(["P1", "P2"]),
                       "custom_data": custom})
    return events


def _parameter_columns(events, names):
    columns = {name: [e.get(name) for e in events] for name in EVENT_COLUMNS if name != "custom_data"}
    columns["custom_data"] = {name: [e["custom_data"].get(name) for e in events] for name in names}
    return columns


@pytest.mark.parametrize("scoped", [False, True])
def test_parameter_values_of_every_kind_next_to_the_fast_path(scoped):
    rules = dict(_PARAMETER_RULES)
    sources = dict.fromkeys(rules, "P1") if scoped else {}
    rng = random.Random(11)
    events = _parameter_events(rng, 600)
    for row in (255, 256, 511, 512, 599):  # a fallback at each chunk boundary
        events[row]["custom_data"].update(value=_Float(9.5), color="rÉd", size=40)
    expected = match_rules(rules, events, sources)
    assert sum(map(len, expected)) > 300
    columns = _parameter_columns(events, _PARAMETER_VALUES)
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_batch(events) == expected, engine.__name__
        assert compiled.match_columns(columns) == _flat(expected), engine.__name__


def test_parameter_columns_equal_under_folding_in_lookup_order():
    # "color" reads its exact column first, then the columns whose names fold to it; a row
    # where the exact one is None takes the next one's value, fast or not.
    rules = {"c": {"color": {"i_contains": "red"}}, "n": {"color": {"gt": 1}}}
    rng = random.Random(5)
    pool = ["red", "blue", "rÉd", 2.0, 2, None]
    events = []
    for _ in range(600):
        custom = {name: rng.choice(pool) for name in ("color", "COLOR", "Color")}
        events.append({"custom_data": {k: v for k, v in custom.items() if v is not None}})
    expected = match_rules(rules, events, {})
    columns = {"custom_data": {name: [e["custom_data"].get(name) for e in events] for name in ("COLOR", "color", "Color")}}
    for engine in ENGINES:
        assert compile_rules(rules, {}, engine=engine).match_columns(columns) == _flat(expected), engine.__name__


@kernel_only
def test_parameter_columns_shorter_than_the_batch_are_missing_past_their_end():
    rules = dict(_PARAMETER_RULES)
    rng = random.Random(4)
    n = 600
    events = _parameter_events(rng, n)
    cut = {"value": 300, "color": 256, "size": 10}
    rows = [{**e, "custom_data": {k: v for k, v in e["custom_data"].items() if i < cut[k]}}
            for i, e in enumerate(events)]
    expected = match_rules(rules, rows, {})
    compiled = compile_rules(rules, {}, engine=_ruleset_c)
    columns = _parameter_columns(events, _PARAMETER_VALUES)
    parameters = {name: column[:cut[name]] for name, column in columns.pop("custom_data").items()}
    lists = [columns.get(name) for name in EVENT_COLUMNS if name != "custom_data"]
    assert compiled._matcher.match_columns(n, *lists, None, parameters) == _flat(expected)


@kernel_only
def test_threads_changing_the_parameter_columns_during_calls():
    """As ``test_threads_changing_the_columns_during_calls``, for custom parameter columns."""
    rules = {"v": {"value": {"gt": 5}}, "c": {"color": "red"}, "both": {"and": [{"value": {"lt": 100}},
                                                                               {"color": {"i_contains": "é"}}]}}
    compiled = compile_rules(rules, {}, engine=_ruleset_c)
    n = 600
    values = {"value": [9.5, 1.0, "9", _Float(7.5), 7, float("nan"), None],
              "color": ["red", "rouge-é", _Text("red"), ["red"], 2.0, None]}
    answers = set()
    for v in values["value"]:
        for c in values["color"]:
            custom = {k: x for k, x in (("value", v), ("color", c)) if x is not None}
            answers.add(tuple(compiled.match({"custom_data": custom})))
    parameters = {name: [pool[0]] * n for name, pool in values.items()}
    _match_while_mutating(parameters, values, answers, lambda: compiled._matcher.match_columns(
        n, None, None, None, None, None, parameters), seed=2)


# The URL's host and path are read without the GIL from an exact ASCII str URL (the path, or
# a host without capitals, is a span of the URL's data); a host with capitals is lowercased
# under the GIL.

_URL_PART_RULES = {
    "host": {"domain": {"eq": "shop.example"}},
    "host-re": {"domain": {"regex_match": "^(www\\.)?shop\\.example$"}},
    "host-none": {"domain": {"exists": False}},
    "path": {"path": {"starts_with": "/p/"}},
    "path-root": {"path": "/"},
    "path-and": {"and": [{"event": "Purchase"}, {"path": {"i_contains": "thank"}}]},
    "host-and": {"and": [{"event": "Purchase"}, {"domain": {"contains": "example"}}]},
}
_URL_PART_URLS = ["https://shop.example/p/thank", "https://Shop.Example/p/Thank", "HTTPS://SHOP.EXAMPLE",
                  "https://www.shop.example?q=/p/", "//shop.example/p/x", "/p/thank", "p/thank", "",
                  "https://user:pw@Shop.example:8080/p/", "https://[::1]/p/", "https://shop.example#/p/",
                  "mailto:x@shop.example", "https://shop.example/P/thank", "https://été.example/p/",
                  _Text("https://shop.example/p/"), 3, None]


@pytest.mark.parametrize("scoped", [False, True])
def test_url_parts_next_to_the_fast_path(scoped):
    rules = dict(_URL_PART_RULES)
    sources = dict.fromkeys(rules, "P1") if scoped else {}
    rng = random.Random(8)
    events = []
    for row in range(600):
        url = _URL_PART_URLS[0] if rng.random() < 0.4 else rng.choice(_URL_PART_URLS)
        event = {"event": rng.choice(["Purchase", "Lead"]), "pixel_id": "P1"}
        if row in (255, 256, 511, 512):  # a host with capitals at each chunk boundary
            url = "https://Shop.Example/p/thank"
        if url is not None:
            event["url"] = url
        events.append(event)
    expected = match_rules(rules, events, sources)
    assert sum(map(len, expected)) > 300
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_batch(events) == expected, engine.__name__
        assert compiled.match_columns(_columns(events)) == _flat(expected), engine.__name__


# Float pixel ids in a list: an integral one in int64's range is its integer's id, read without
# the GIL as a float column's is (``_float_source``); one past that range is written by
# ``source_key`` with the GIL; a fraction, NaN or an infinity is no id.
_FLOAT_SOURCES = ["1234", "0", "100000000000000000000", "-9223372036854775808", "9223372036854775808"]
_FLOAT_PIXELS = [1234.0, -0.0, 0.0, 1e20, float("nan"), float("inf"), -float("inf"), 1234.5, -2.0**63, 2.0**63,
                 _Float(1234.0), 1234, "1234", None]


def _float_events(rng, n):
    events = []
    for _ in range(n):
        event = {"event": "Purchase", "url": "https://shop.example/thank"}
        pixel = rng.choice(_FLOAT_PIXELS)
        if pixel is not None:
            event["pixel_id"] = pixel
        events.append(event)
    return events


def _float_rules():
    rules = {"any": {"event": "Purchase"}}
    sources = {}
    for k, source in enumerate(_FLOAT_SOURCES):
        rules[f"s{k}"] = {"url": {"contains": "thank"}}
        sources[f"s{k}"] = source
    return rules, sources


@pytest.mark.parametrize("n", [1, 300, 600])
def test_float_pixel_ids_in_a_list_find_their_source_as_the_reference_does(n):
    rules, sources = _float_rules()
    rng = random.Random(n)
    events = _float_events(rng, n)
    if n > 1:
        events[:len(_FLOAT_PIXELS)] = [{"event": "Purchase", "url": "https://shop.example/thank", "pixel_id": p}
                                       for p in _FLOAT_PIXELS]  # each one at least once
    expected = match_rules(rules, events, sources)
    if n > 1:
        assert expected[:5] == [["any", "s0"], ["any", "s1"], ["any", "s1"], ["any", "s2"], ["any"]]
        assert expected[8:11] == [["any", "s3"], ["any", "s4"], ["any", "s0"]]
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_batch(events) == expected, engine.__name__
        assert compiled.match_columns(_columns(events)) == _flat(expected), engine.__name__


@kernel_only
def test_exact_float_pixel_ids_in_int64s_range_are_not_written_as_text(monkeypatch):
    # The kernel writes no str for them (``source_key`` is Python's, called with the GIL, per
    # row), in a list column as in a mapping per event: only an integer past int64's range,
    # or a float subclass, goes through ``source_key``.
    calls = []

    def counting(pixel_id):
        calls.append(pixel_id)
        return source_key(pixel_id)

    rules, sources = _float_rules()
    pixels = [1234.0, -0.0, 1e20, float("nan"), float("inf"), 1234.5, -2.0**63, _Float(1234.0)]
    events = [{"event": "Purchase", "url": "https://shop.example/thank", "pixel_id": p} for p in pixels] * 40
    expected = match_rules(rules, events, sources)
    compiled = compile_rules(rules, sources, engine=_ruleset_c)
    monkeypatch.setattr(_ruleset_c, "source_key", counting)
    assert compiled.match_columns(_columns(events)) == _flat(expected)
    assert [repr(p) for p in calls] == ["1e+20", "1234.0"] * 40  # (the subclass's repr is float's)
    assert [type(p) for p in calls[:2]] == [float, _Float]
    calls.clear()
    assert compiled.match_batch(events) == expected
    assert [type(p) for p in calls] == [float, _Float] * 40
