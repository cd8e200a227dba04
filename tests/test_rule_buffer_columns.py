"""Columns in flat buffers (``matcher.columns``): what they hold, what they refuse, and that
``match_columns`` answers for them exactly as for the same values in lists, across chunks,
next to the values the kernel leaves to the GIL, and from several threads at once."""

import random
import re
import sys
import threading
from array import array
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matcher import compile_rules
from matcher.columns import NumberColumn, TextColumn, _bitmap, match_buffers
from matcher.reference import match_rules
from tests.conftest import ENGINES, _ruleset_c
from tests.test_rule_columns_nogil import _flat, _rules

kernel_only = pytest.mark.skipif(_ruleset_c is None, reason="the kernel's own checks")


def as_buffer(values, wide=True, pad=0):
    """``values`` as a TextColumn (all texts or None), a NumberColumn (all floats, or all ints
    in int64's range, or None), else the list itself: offsets of 4 or 8 bytes (``wide``),
    ``pad`` bytes of data before the first value, a validity bitmap when a value is missing."""
    present = [v for v in values if v is not None]
    validity = _bitmap([v is None for v in values])
    if present and all(type(v) is str for v in present):
        try:
            encoded = [b"" if v is None else v.encode("utf-8") for v in values]
        except UnicodeEncodeError:  # a lone surrogate: no UTF-8 to hold it
            return values
        offsets, at = [pad], pad
        for raw in encoded:
            at += len(raw)
            offsets.append(at)
        return TextColumn(b"#" * pad + b"".join(encoded), array("q" if wide else "i", offsets), validity)
    if present and all(type(v) is float for v in present):
        return NumberColumn(array("d", [0.0 if v is None else v for v in values]), validity)
    if present and all(type(v) is int and -2**63 <= v < 2**63 for v in present):
        return NumberColumn(array("q", [0 if v is None else v for v in values]), validity)
    return values


# -- what the columns hold -------------------------------------------------------------------

def test_a_text_column_reads_as_its_texts():
    texts = ["a", None, "héllo", "", "ẞ€😀", None, "x" * 300]
    column = TextColumn.from_texts(texts)
    assert list(column) == texts and len(column) == 7
    assert column[-1] == "x" * 300 and column[1:3] == [None, "héllo"]
    with pytest.raises(IndexError):
        column[7]
    for wide in (False, True):
        for pad in (0, 5):
            assert list(as_buffer(texts, wide, pad)) == texts
    # Arrow's layout by hand: int32 offsets, a bitmap whose spare bits are set, n given.
    column = TextColumn(b"abcdef", array("i", [1, 3, 3, 6, 9]), b"\xfd", n=3)
    assert list(column) == ["bc", None, "def"]


@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=6), st.text("ab", max_size=6)), max_size=40),
       wide=st.booleans(), pad=st.integers(0, 3))
def test_tolist_is_list_of_the_column(texts, wide, pad):
    column = as_buffer(texts, wide, pad)
    if type(column) is list:  # nothing but None (or nothing)
        column = TextColumn.from_texts(texts)
    assert column.tolist() == list(column) == texts
    numbers = [None if t is None else float(len(t)) for t in texts]
    assert NumberColumn.from_numbers(numbers).tolist() == numbers


def test_a_number_column_reads_as_its_numbers():
    assert list(NumberColumn.from_numbers([1.5, None, -0.0, 1e300])) == [1.5, None, -0.0, 1e300]
    ints = NumberColumn.from_numbers([1, None, 2**62], integers=True)
    assert list(ints) == [1, None, 2**62] and type(ints[0]) is int
    assert list(NumberColumn(memoryview(array("d", [1.0, 2.0, 3.0])), n=2)) == [1.0, 2.0]


@pytest.mark.parametrize("make, message", [
    (lambda: TextColumn("abc", array("i", [0, 3])), "data: a buffer"),
    (lambda: TextColumn(memoryview(b"abcd").cast("B", (2, 2)), array("i", [0, 3])), "data: a contiguous one-dimensional"),
    (lambda: TextColumn(b"abc", b"\x00\x03"), "offsets: int32 or int64 values (format 'i' or 'q'), got format 'B'"),
    (lambda: TextColumn(b"abc", array("i", [0, 3]), n=2), "offsets: 2 values, expected n + 1 = 3"),
    (lambda: TextColumn(b"abc", array("i", [0, 2, 1, 3])), "offsets: offset 2 (1) is less than offset 1 (2)"),
    (lambda: TextColumn(b"abc", array("q", [0, 4])), "outside data's 0 to 3"),
    (lambda: TextColumn(b"abc", array("i", [-1, 3])), "from -1 to 3"),
    (lambda: TextColumn(b"ab\xff", array("i", [0, 3])), "data: not UTF-8 at byte 2"),
    (lambda: TextColumn(b"x\xc3\xa9", array("i", [0, 2, 3])), "offsets: offset 1 (2) falls inside a UTF-8 character"),
    (lambda: TextColumn(b"abc", array("i", [0, 1, 2, 3]), b""), "validity: 0 bytes hold fewer than 3 bits"),
    (lambda: NumberColumn(array("f", [1.0])), "values: float64 or int64 values (format 'd' or 'q'), got format 'f'"),
    (lambda: NumberColumn(array("i", [1])), "got format 'i'"),
    (lambda: NumberColumn(array("d", [1.0]), n=2), "values: 1 values, expected n = 2"),
])
def test_bad_buffers_are_refused_naming_the_buffer_and_the_place(make, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        make()


@given(values=st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=40), wide=st.booleans())
def test_the_engines_find_the_same_first_decreasing_offset(values, wide):
    # (TextColumn's check runs in the selected engine: the kernel's loop and the twin's agree.)
    offsets = memoryview(array("q" if wide else "i", values))
    expected = next((i for i in range(len(values) - 1) if values[i] > values[i + 1]), -1)
    for engine in ENGINES:
        assert engine.first_decrease(offsets, len(values) - 1) == expected, engine.__name__


@st.composite
def wire_text_buffers(draw):
    """(data, offsets as little-endian int32 bytes, validity bytes or None, n) as a request
    carries a text column: valid ASCII or UTF-8 texts, sometimes padded, sometimes broken (a
    decreasing or out-of-range offset, bytes missing, a short bitmap, a split character)."""
    texts = draw(st.lists(st.one_of(st.text("ab/?é", max_size=5), st.text(max_size=3)), max_size=12))
    pad = draw(st.integers(0, 3))
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = list(accumulate(map(len, encoded), initial=pad))
    data = b"#" * pad + b"".join(encoded) + b"#" * draw(st.integers(0, 2))
    n = len(texts)
    validity = draw(st.one_of(st.none(), st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8 + 2)))
    breakage = draw(st.sampled_from(["none"] * 6 + ["offset", "short offsets", "short bitmap", "n", "data"]))
    if breakage == "offset":
        offsets[draw(st.integers(0, n))] = draw(st.integers(-3, len(data) + 3))
    elif breakage == "short offsets":
        offsets = offsets[:-1]
    elif breakage == "short bitmap" and validity:
        validity = validity[:(n + 7) // 8 - 1]
    elif breakage == "n":
        n = draw(st.integers(-2, n + 2))
    elif breakage == "data":
        data = data[:draw(st.integers(0, len(data)))]
    raw = b"".join(offset.to_bytes(4, "little", signed=True) for offset in offsets)
    return data, raw + b"\0" * draw(st.integers(0, 5)), validity, n


@given(buffers=wire_text_buffers())
def test_a_request_text_buffer_is_the_column_the_constructor_makes_or_none(buffers):
    # The engines' one-call way to a request's text column (ASCII texts) makes what the
    # constructor makes from the same buffers; where the texts are not ASCII or a check
    # fails it makes nothing (the server then runs the constructor, which names the problem).
    data, offsets, validity, n = buffers
    expected = None  # (on a big-endian machine the engines leave every column to the constructor)
    if sys.byteorder == "little" and 0 <= n and 4 * (n + 1) <= len(offsets):  # (else no n + 1 offsets to read)
        try:
            expected = TextColumn(data, memoryview(offsets)[:4 * (n + 1)].cast("i"), validity, n)
        except ValueError:
            pass
    if expected is not None and not expected._ascii:
        expected = None
    for engine in ENGINES:
        column = engine.ascii_text_column(data, offsets, validity, n)
        if expected is None:
            assert column is None, engine.__name__
            continue
        assert type(column) is TextColumn and column._ascii and not column._wide, engine.__name__
        assert len(column) == len(expected) and column.tolist() == expected.tolist(), engine.__name__
        assert [None if b is None else bytes(b) for b in column.buffers()] == \
            [None if b is None else bytes(b) for b in expected.buffers()], engine.__name__


def test_writable_buffers_are_copied_read_only_ones_are_not():
    data, offsets = bytearray(b"abcd"), array("i", [0, 2, 4])
    column = TextColumn(data, offsets)
    data[:] = b"wxyz"
    offsets[1] = 0
    assert list(column) == ["ab", "cd"]
    frozen = b"abcd"
    assert TextColumn(frozen, array("i", [0, 4]))._data.obj is frozen  # (no copy)
    values = array("d", [1.0])
    numbers = NumberColumn(values)
    values[0] = 2.0
    assert list(numbers) == [1.0]


@kernel_only
def test_memory_changed_behind_a_read_only_view_never_reads_outside_it():
    # Offsets are always copied; data behind a read-only view is its owner's to change, and a
    # UTF-8 sequence cut off by the end of a value is then folded without reading past it.
    memory, offsets = bytearray("xé".encode()), array("i", [0, 3])
    column = TextColumn(memoryview(memory).toreadonly(), memoryview(offsets).toreadonly())
    offsets[1] = 1000
    assert list(column) == ["xé"]
    memory[:] = b"xy\xf0"  # a 4-byte sequence's first byte, last in the buffer
    compiled = compile_rules({"r": {"url": {"i_contains": "É"}}, "s": {"url": {"i_contains": "XY"}}},
                             engine=_ruleset_c)  # (the twin decodes each value: it refuses such data)
    assert compiled.match_columns({"url": column}) == ([1], ["s"])


# -- matching: the same answers as lists ---------------------------------------------------

_URLS = ["https://shop.example/p/thank", "https://x.com/thankyou", "/thank", "https://été.shop.example/p/É",
         "HTTPS://SHOP.EXAMPLE/", "https://Shop.Example/p/1", "", "http://a/ÉTÉ", None]
_EVENTS = ["Purchase", "Kaufen", "Kauf€", "Purchasé", "", None]
_DEVICES = ["mobile", "desktop", "mobilé", "3", "4 ", None]
_PIXELS = ["P1", "L1", "é1", "1000", "P9", None]
_VALUES = [9.0, 1.5, float("nan"), float("inf"), -0.0, None]
_COLORS = ["Red", "dark red", "rouge", "ÉTÉ", None]


def _events(rng, n, pixels=_PIXELS):
    def pick(pool):
        return pool[0] if rng.random() < 0.4 else rng.choice(pool)  # mostly the common case
    return [{"url": pick(_URLS), "event": pick(_EVENTS), "device_type": pick(_DEVICES), "pixel_id": pick(pixels),
             "value": pick(_VALUES), "COLOR": pick(_COLORS), "color": rng.choice([None, "red", ["x", "red"]])}
            for _ in range(n)]


def _as_rows(events):
    rows = []
    for e in events:
        row = {k: e[k] for k in ("url", "event", "device_type", "pixel_id") if e[k] is not None}
        custom = {k: e[k] for k in ("value", "COLOR", "color") if e[k] is not None}
        if custom:
            row["custom_data"] = custom
        rows.append(row)
    return rows


def _as_columns(events, wrap):
    columns = {name: wrap([e[name] for e in events]) for name in ("url", "event", "device_type", "pixel_id")}
    columns["custom_data"] = {name: wrap([e[name] for e in events]) for name in ("value", "COLOR", "color")}
    return columns


@pytest.mark.parametrize("n", [1, 300, 700])
@pytest.mark.parametrize("wide", [False, True])
def test_buffer_columns_answer_as_lists_across_chunks(n, wide):
    # Chunks start at rows 256 and 512: each chunk's part of every buffer (its offsets, its
    # validity bits) is read from there. Capitals in a host, non-ASCII texts, numbers whose
    # text a rule reads and "color" (a list column: lists among its values) go through the GIL.
    rules, sources = _rules()
    rules["v-text"] = {"value": {"eq": "9"}}
    rules["dev-num"] = {"device_type": {"lt": 4}}
    rng = random.Random(n)
    events = _events(rng, n)
    events[0]["color"] = ["x", "red"]
    expected = match_rules(rules, _as_rows(events), sources)
    assert sum(map(len, expected)) > n // 4  # the set matches: the comparison says something
    buffers = _as_columns(events, lambda values: as_buffer(values, wide, pad=3))
    assert {type(c).__name__ for c in buffers.values() if not isinstance(c, dict)} == {"TextColumn"}
    assert [type(c).__name__ for c in buffers["custom_data"].values()] == ["NumberColumn", "TextColumn", "list"]
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        assert compiled.match_columns(_as_columns(events, list)) == _flat(expected), engine.__name__
        assert compiled.match_columns(buffers) == _flat(expected), engine.__name__


def test_numbers_in_buffer_columns_where_texts_are_expected():
    # Integer pixel ids find their source by decimal text; numbers as events or devices are
    # read as a list's numbers are.
    rules, sources = _rules()
    rng = random.Random(5)
    events = _events(rng, 300, pixels=[1000, 7, None])
    for e in events:
        e["event"] = rng.choice([2.5, 3.0, None])
        e["device_type"] = rng.choice([3, 1, None])
    expected = match_rules(rules, _as_rows(events), sources)
    assert sum(map(len, expected)) > 50
    buffers = _as_columns(events, as_buffer)
    assert type(buffers["pixel_id"]) is NumberColumn and type(buffers["event"]) is NumberColumn
    for engine in ENGINES:
        assert compile_rules(rules, sources, engine=engine).match_columns(buffers) == _flat(expected), engine.__name__


def test_custom_data_as_one_value_per_event_is_read_from_a_list():
    rules = {"r": {"url": {"contains": "a"}}, "c": {"color": "red"}}
    for engine in ENGINES:
        compiled = compile_rules(rules, engine=engine)
        answer = compiled.match_columns({"url": TextColumn.from_texts(["a", "b"]),
                                         "custom_data": TextColumn.from_texts(["x", None])})
        assert answer == ([1, 0], ["r"])


@pytest.mark.skipif(_ruleset_c is None, reason="the kernel")
def test_the_kernel_refuses_other_column_types():
    compiled = compile_rules({"r": {"url": {"contains": "a"}}}, engine=_ruleset_c)
    with pytest.raises(TypeError, match="a column: a list, TextColumn or NumberColumn, got tuple"):
        compiled._matcher.match_columns(1, None, None, ("a",), None, None)
    with pytest.raises(TypeError, match="custom_data: a list, got TextColumn"):
        compiled._matcher.match_columns(1, None, None, None, None, TextColumn.from_texts(["x"]))
    with pytest.raises(TypeError, match="a custom parameter's column: a list, TextColumn or NumberColumn, got str"):
        compiled._matcher.match_columns(1, None, None, None, None, None, {"color": "red"})


@kernel_only
def test_buffer_columns_shorter_than_the_batch_are_missing_past_their_end():
    # (The public API checks the lengths; the kernel reads no value past a column's end.)
    rules, sources = _rules()
    events = _events(random.Random(3), 600)
    cut = {"pixel_id": 300, "event": 256, "url": 10, "device_type": 599}
    for e in events[1:]:
        e["pixel_id"] = "P1"  # (the fast path for the sources, up to the cut)
    for i, e in enumerate(events):
        for name, at in cut.items():
            if i >= at:
                e[name] = None
    expected = match_rules(rules, _as_rows(events), sources)
    compiled = compile_rules(rules, sources, engine=_ruleset_c)
    full = _as_columns(events, as_buffer)
    short = [TextColumn.from_texts([e[name] for e in events][:cut[name]]) if name in cut else None
             for name in ("pixel_id", "event", "url", "device_type")]
    parameters = full["custom_data"]
    assert compiled._matcher.match_columns(600, *short, None, parameters) == _flat(expected)


def test_threads_sharing_buffer_columns():
    rules, sources = _rules()
    batches = [_as_columns(_events(random.Random(k), 600), as_buffer) for k in range(4)]
    for engine in ENGINES:
        compiled = compile_rules(rules, sources, engine=engine)
        expected = [compiled.match_columns(b) for b in batches]
        errors = []

        def work():
            try:
                for _ in range(5):
                    for batch, answer in zip(batches, expected):
                        assert compiled.match_columns(batch) == answer
            except BaseException as e:  # (reported below, from the main thread)
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, engine.__name__



# -- the answer as buffers -------------------------------------------------------------------

def test_matches_as_buffers_with_values():
    rules = {"shop": {"url": {"i_contains": "shop"}}, "buy": {"event": {"eq": "Purchase"}},
             "big": {"value": {"gt": 10}}}
    columns = {"url": ["https://shop.example/", None, "https://shop.example/é"], "event": ["Purchase", "Purchase", None],
               "custom_data": {"value": NumberColumn.from_numbers([20.0, None, float("inf")])}}
    defaults = {"shop": 1.5, "buy": 2.5, "big": 3.5}
    for engine in ENGINES:
        compiled = compile_rules(rules, engine=engine)
        own = columns["custom_data"]["value"].float64s()
        found = compiled.match_columns_buffers(columns, own, defaults)
        assert array("I", found.counts).tolist() == [3, 1, 1]
        offsets = array("i", found.offsets).tolist()
        assert [found.data[a:b].decode() for a, b in zip(offsets, offsets[1:])] == ["shop", "buy", "big", "buy", "shop"]
        # Own values when finite (20.0), else the rule's: a missing value is NaN, an infinity no value.
        assert array("d", found.values).tolist() == [20.0, 20.0, 20.0, 2.5, 1.5]
        assert compiled.match_columns_buffers(columns, None, defaults).values == array("d", [1.5, 2.5, 3.5, 2.5, 1.5]).tobytes()
        assert found == match_buffers(*compiled.match_columns(columns), [20.0, 20.0, 20.0, 2.5, 1.5])
        # After a rule is removed (its index is left empty) and another replaced, with a new mapping.
        changed = compiled.with_changes({"shop": {"url": {"i_contains": "example"}}}, remove=["buy"])
        found = changed.match_columns_buffers(columns, None, {"shop": 7.0, "big": 8.0})
        assert array("d", found.values).tolist() == [7.0, 8.0, 7.0] and found.data == b"shopbigshop"


def test_an_id_with_no_utf8_fails_only_when_matched():
    # The kernel copies the ids' UTF-8 from a table it makes on first use; an id with none (a
    # lone surrogate) is left out of it and raises, as the twin's encode does, only if matched.
    rules = {"ok": {"event": {"eq": "x"}}, "odd\ud800": {"event": {"eq": "y"}}}
    for engine in ENGINES:
        compiled = compile_rules(rules, engine=engine)
        found = compiled.match_columns_buffers({"event": ["x", "z"]})
        assert (array("I", found.counts).tolist(), found.data) == ([1, 0], b"ok"), engine.__name__
        with pytest.raises(UnicodeEncodeError):
            compiled.match_columns_buffers({"event": ["x", "y"]})
        assert compiled.match_columns_buffers({"event": ["x", "x"]}).data == b"okok"


def test_values_asked_of_the_matcher_are_checked():
    compiled = compile_rules({"a": {"event": {"eq": "x"}}, "b": {"event": {"eq": "y"}}})
    columns = {"event": ["x", "y"]}
    with pytest.raises(ValueError, match=re.escape("rule_values: no value for rule 'b'")):
        compiled.match_columns_buffers(columns, None, {"a": 1.0})
    with pytest.raises(ValueError, match=re.escape("own_values: 2 float64 values (format 'd'), one per event; got 3")):
        compiled.match_columns_buffers(columns, array("d", [1.0, 2.0, 3.0]), {"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match="of format 'q'"):
        compiled.match_columns_buffers(columns, array("q", [1, 2]), {"a": 1.0, "b": 2.0})
    # The values follow the mapping given, call after call.
    assert array("d", compiled.match_columns_buffers(columns, None, {"a": 1.0, "b": 2.0}).values).tolist() == [1.0, 2.0]
    assert array("d", compiled.match_columns_buffers(columns, None, {"a": 5.0, "b": 6.0}).values).tolist() == [5.0, 6.0]


def test_a_number_column_as_float64s():
    assert NumberColumn.from_numbers([1.5, 2.0]).float64s().tolist() == [1.5, 2.0]
    values = NumberColumn.from_numbers([1.5, None, 3.0]).float64s(missing=-1.0)
    assert values.tolist() == [1.5, -1.0, 3.0]
    assert NumberColumn.from_numbers([1, None, 2**62], integers=True).float64s(missing=0.5).tolist() == [1.0, 0.5, 2.0**62]
