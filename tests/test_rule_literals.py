"""The kernel's ASCII fast path (literal scanner + FilteredRE2) agrees with the reference.

Rules here are many literals and regexes over one field, texts made of the same fragments in
any case, so literals occur at every offset, overlap, repeat and nearly match; non-ASCII
fragments (Kelvin sign, long s, sharp s) send texts down the RE2::Set path instead. Each
rule set is checked with the fast path and without it.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher import compile_rules
from matcher.reference import match_rules
from tests.conftest import _ruleset_c

pytestmark = pytest.mark.skipif(_ruleset_c is None, reason="compiled extension not loaded")

FRAGMENTS = ["thank", "you", "/checkout/", "p1x1", "p1x10", "x1", "aaaa", "aaa", "test=1", "/product/",
             "12", "/", "-", "kelvin", "secret", "shop1.example.com", "https://", "?", "&utm=fb"]
ODD = ["\u212aelvin", "\u017fecret", "straße", "STRASSE", "é"]  # fold to ASCII, or not
REGEXES = [r"/product/\d+/p1x1(/|$)", r"(?i)thank.*you", r"checkout/$", r"^https?://shop\d\.example",
           r"kelvin|secret", r"\d+", r"[a-z]{3}", r"(?i)P1X10", r"x1\b", r"^/checkout/p1x1",
           "(?i)\u017fecret", "(?i)\u212aelvin", "stra\u00dfe|thank", r"(thank|you)\w*(p1x1|test)"]


def _case(draw_bool, text):
    return text.upper() if draw_bool else text


# Only operands the scanner and the atoms decide (no rest set run for every text).
LONG = [f for f in FRAGMENTS if len(f) >= 4]
FILTERED = [r"/product/\d+/p1x1(/|$)", r"(?i)thank.*you", r"kelvin|secret", r"(?i)P1X10", r"^/checkout/p1x1",
            "(?i)\u017fecret", "(?i)\u212aelvin", r"(thank|kelvin)\w*(p1x1|test=1)", r"(p1x10|p1x1)/?$"]


@st.composite
def literal(draw, fragments):
    parts = draw(st.lists(st.sampled_from(fragments), min_size=1, max_size=3))
    return "".join(_case(draw(st.booleans()), p) for p in parts)


@st.composite
def leaf(draw, fragments, regexes):
    field = draw(st.sampled_from(["url", "url", "path", "name"]))
    if draw(st.integers(0, 4)) == 0:
        return {field: {"regex_match": draw(st.sampled_from(regexes))}}
    op = draw(st.sampled_from(["contains", "i_contains", "starts_with", "i_starts_with", "not_contains",
                               "i_not_contains"]))
    return {field: {op: draw(literal(fragments))}}


def rules(fragments, regexes):
    return st.recursive(leaf(fragments, regexes), lambda c: st.lists(c, min_size=1, max_size=3).map(lambda x: {"or": x})
                        | st.lists(c, min_size=2, max_size=3).map(lambda x: {"and": x}), max_leaves=4)


@st.composite
def event(draw):
    parts = draw(st.lists(st.sampled_from(FRAGMENTS + (ODD if draw(st.integers(0, 5)) == 0 else [])),
                          max_size=8))
    text = "".join(_case(draw(st.integers(0, 3)) == 0, p) for p in parts)
    return {"url": text, "custom_data": {"name": text[::-1]}}


def _without_fast_path(rule_set):
    _ruleset_c._set_literal_scanner(False)
    try:
        return compile_rules(rule_set, engine=_ruleset_c)
    finally:
        _ruleset_c._set_literal_scanner(True)


def _check(rule_list, evs):
    rule_set = {f"r{i}": rule for i, rule in enumerate(rule_list)}
    expected = match_rules(rule_set, evs, {})
    assert compile_rules(rule_set, engine=_ruleset_c).match_batch(evs) == expected
    assert _without_fast_path(rule_set).match_batch(evs) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_list=st.lists(rules(FRAGMENTS + ODD[:2], REGEXES), min_size=1, max_size=40),
       evs=st.lists(event(), min_size=1, max_size=10))
def test_fast_path_agrees_with_reference(rule_list, evs):
    _check(rule_list, evs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_list=st.lists(rules(LONG + ODD[:2], FILTERED), min_size=1, max_size=20),
       evs=st.lists(event(), min_size=1, max_size=10))
def test_prefiltered_regexes_agree_with_reference(rule_list, evs):
    """Groups whose regexes all have atoms: a regex runs only when the scanner found one."""
    _check(rule_list, evs)


def test_a_literal_is_found_at_every_offset_and_step():
    """Literals of 4 to 12 bytes (scan steps 1 to 4) at every offset of texts up to 40 bytes."""
    words = ["abcd", "bcdef", "cdefgh", "defghij", "efghijklmnop"]  # shortest 4 to 7: steps 1 to 4
    for shortest in range(len(words)):
        rule_set = {w: {"url": {"i_contains": w.upper()}} for w in words[shortest:]}
        rule_set["prefix"] = {"url": {"starts_with": "xyzw"}}
        matcher = compile_rules(rule_set, engine=_ruleset_c)
        evs = [{"url": "." * offset + w + "." * tail} for w in words + ["xyzw"]
               for offset in range(12) for tail in (0, 1, 5)]
        assert matcher.match_batch(evs) == match_rules(rule_set, evs, {})


def test_every_literal_of_a_large_group_is_found():
    """Thousands of literals (a bloom of thousands of words, every bit of a hash used) each found
    in a text, at offsets on and off the scan's step, and near-misses not."""
    words = [f"/k{i:x}q" for i in range(3000)]  # 5 to 6 bytes: step 2 or 3
    rule_set = {w: {"url": {"i_contains": w}} for w in words}
    matcher = compile_rules(rule_set, engine=_ruleset_c)
    evs = [{"url": "." * (i % 5) + w.upper() + "/" + w[:-1] + "." * (i % 3)} for i, w in enumerate(words)]
    assert matcher.match_batch(evs) == [[w] for w in words]
    assert matcher.match_batch([{"url": w[:-1] + "r" + w[1:]} for w in words[::7]]) == [[]] * len(words[::7])


def test_rest_set_out_of_memory_falls_back():
    """Short literals and atom-less regexes share a small set; when its DFA runs out of memory
    the group is evaluated pattern by pattern, with the same answers."""
    rule_set = {f"r{i}": {"or": [{"url": {"contains": f"a{i}"}}, {"url": {"regex_match": rf"[a-z]{{{i % 7 + 1}}}\d"}},
                                 {"url": {"i_contains": f"/token-{i}/"}}]} for i in range(60)}
    evs = [{"url": f"https://x.com/token-{i}/a{i % 9}b{i}c"} for i in range(80)]
    expected = match_rules(rule_set, evs, {})
    for budget in (4 << 20, 24 << 10, 40 << 10):
        _ruleset_c._set_multi_pattern_sets(True, budget)
        try:
            assert compile_rules(rule_set, engine=_ruleset_c).match_batch(evs) == expected, budget
        finally:
            _ruleset_c._set_multi_pattern_sets(True)
    compiled = compile_rules(rule_set, engine=_ruleset_c)
    _ruleset_c._set_multi_pattern_sets(True, run_out=True)  # the rest set out of memory on every text
    try:
        assert compiled.match_batch(evs) == expected
    finally:
        _ruleset_c._set_multi_pattern_sets(True)


def test_non_ascii_texts_are_folded_for_i_literals():
    """A text with a character outside ASCII folds to an i_ literal it does not spell (Kelvin
    sign, long s, capital sharp s), while exact literals and ASCII folding stay byte-true."""
    rule_set = {
        "i_kelvin": {"url": {"i_contains": "kelvin"}},
        "kelvin": {"url": {"contains": "kelvin"}},
        "i_secret": {"url": {"i_starts_with": "SECRET"}},
        "i_strasse": {"url": {"i_contains": "straße"}},
        "regex": {"url": {"regex_match": "(?i)kelvin-ab"}},
        "other": {"url": {"i_contains": "/checkout/"}},
    }
    evs = [{"url": url} for url in ["\u212aelvin-ab", "kelvin-ab", "\u017fecret/checkout/", "SECRET",
                                    "an der STRAẞE 1", "STRASSE", "\u212a", "é/CHECKOUT/kelvin"]]
    expected = match_rules(rule_set, evs, {})
    assert expected[0] == ["i_kelvin", "regex"] and expected[2] == ["i_secret", "other"]
    assert compile_rules(rule_set, engine=_ruleset_c).match_batch(evs) == expected
    assert _without_fast_path(rule_set).match_batch(evs) == expected


# Bytes that differ only in bit 5 (@ and `, [ and {, _ and DEL, ...) hash alike in the scanner
# (its bloom and slot table hash a window with bit 5 of each byte set), so windows spelled from
# such pairs all start their probe at one slot of the flat table.
_TWINS = [("@", "`"), ("[", "{"), ("_", "\x7f"), ("^", "~")]


def _spellings(pair_per_byte):
    words = [""]
    for a, b in pair_per_byte:
        words = [w + c for w in words for c in (a, b)]
    return words


def test_windows_colliding_in_the_slot_table_are_each_found():
    colliding = _spellings([_TWINS[0]] * 4)  # 16 windows, one hash
    assert len(set(colliding)) == 16
    filed = colliding[::2]  # 8 filed; the other 8 pass the bloom but are absent from the table
    literals = [(w.encode(), False, False, i) for i, w in enumerate(filed)]
    for i, w in enumerate(filed):
        for pad in ("", ".", "..", "..."):
            assert _ruleset_c._scan_literals(literals, (pad + w + pad).encode())[0] == [i], (w, pad)
    for w in colliding[1::2]:
        assert _ruleset_c._scan_literals(literals, ("." + w + ".").encode())[0] == []
    # Every filed window at once, as one text (runs of them overlap into unfiled windows too).
    assert _ruleset_c._scan_literals(literals, ".".join(filed).encode())[0] == list(range(8))


def test_many_probe_chains_in_one_table():
    """Several groups of colliding windows, long literals that share windows, and the
    literals' own texts checked after the window (a near miss with the same window)."""
    words = [w + tail for pairs in ([_TWINS[0], _TWINS[1]] * 2, [_TWINS[2], _TWINS[3]] * 2)
             for w in _spellings(pairs) for tail in ("", "zz")]
    literals = [(w.encode(), False, False, i) for i, w in enumerate(words)]
    for i, w in enumerate(words):
        found, step, _ = _ruleset_c._scan_literals(literals, ("ab" + w + "yz").encode())
        expected = sorted(j for j, v in enumerate(words) if v in "ab" + w + "yz")
        assert found == expected and i in found, w
    assert _ruleset_c._scan_literals(literals, "@[@[z".encode())[0] == [words.index("@[@[")]


def test_a_table_of_one_window():
    for literal, prefix in ((b"abcd", False), (b"abcd", True), (b"xabcdefgh", False)):
        literals = [(literal, False, prefix, 7)]
        assert _ruleset_c._scan_literals(literals, b"-" + literal)[0] == ([] if prefix else [7])
        assert _ruleset_c._scan_literals(literals, literal + b"-")[0] == [7]
        assert _ruleset_c._scan_literals(literals, literal[:-1] + b"-" + literal[-1:])[0] == []
        assert _ruleset_c._scan_literals(literals, b"")[0] == []
    # Folded literals: found in either case in an ASCII text, only folded in a folded scan.
    literals = [(b"abcd", True, False, 1), (b"ABCD", False, False, 2)]
    assert _ruleset_c._scan_literals(literals, b"xABCDx")[0] == [1, 2]
    assert _ruleset_c._scan_literals(literals, b"xabcdx")[0] == [1]
    assert _ruleset_c._scan_literals(literals, b"xABCDx", 1)[0] == [2]
    assert _ruleset_c._scan_literals(literals, b"xabcdx", 2)[0] == [1]


def test_a_table_of_thousands_of_windows_finds_each_and_nothing_else():
    words = [f"{i:05x}" for i in range(0, 40000, 7)]  # 5 bytes: step 2
    literals = [(w.encode(), False, False, i) for i, w in enumerate(words)]
    text = "|".join(words).encode()
    found, step, _ = _ruleset_c._scan_literals(literals, text)
    assert step == 2 and found == list(range(len(words)))
    absent = "|".join(f"{i:05x}" for i in range(3, 40000, 7)).encode()
    found = set(_ruleset_c._scan_literals(literals, absent)[0])
    assert found == {i for i, w in enumerate(words) if w.encode() in absent}


def test_a_literal_is_reported_once_however_often_it_occurs():
    # Literals "aaaa", "aaaaa", ... share every window of a text of "a"s: each was compared at
    # every position and reported each time, so a 16 MB URL (the service's message limit) grew
    # the scan's output to billions of ids. Each is now reported once, and once every literal
    # is found the scan stops reading.
    literals = [(b"a" * k, False, False, k) for k in range(4, 204)]
    found, step, reported = _ruleset_c._scan_literals(literals, b"a" * 100_000)
    assert step == 1 and found == list(range(4, 204)) and reported == 200
    text = (b"a" * 99 + b"!") * 1000  # runs of 99: the longer literals never match, the scan goes on
    found, _, reported = _ruleset_c._scan_literals(literals, text)
    assert found == list(range(4, 100)) and reported == 96
    folded = [(b"a" * k, True, False, k) for k in range(4, 20)]  # folded ones, in an ASCII text of capitals
    assert _ruleset_c._scan_literals(folded, b"A" * 10_000)[2] == 16
    rules = {f"r{k}": {"url": {"contains": "a" * k}} for k in range(4, 204)}
    assert compile_rules(rules).match({"url": "https://x.example/?q=" + "a" * 1_000_000}) == list(rules)
