"""The regex dialect: RE2 syntax, PCRE-only constructs rejected by name, hostile patterns harmless."""

import pytest

from matcher import RuleError, compile_rules, evaluate, parse_rule


def reason(pattern):
    with pytest.raises(RuleError) as info:
        parse_rule({"url": {"regex_match": pattern}})
    assert info.value.code == 100
    return str(info.value)


@pytest.mark.parametrize(("pattern", "named"), [
    (r"(a)\1", "backreference \\1"),
    (r"(?P<x>a)(?P=x)", "named backreference"),
    (r"\k<x>", "named backreference"),
    ("(?=a)", "lookahead"),
    ("(?!a)", "negative lookahead"),
    ("(?<=a)b", "lookbehind"),
    ("(?<!a)b", "negative lookbehind"),
    ("(?>a)", "atomic group"),
    ("a*+", "possessive"),
    ("a{2}+", "possessive"),
    ("a{2,}+", "possessive"),
    ("[[:alpha:]](?=x)", "lookahead"),  # the POSIX class ends, then the class does
    ("(?(1)a|b)", "conditional"),
    ("(?R)", "recursion"),
    ("(?+1)", "recursion (?N)"),  # was named a possessive quantifier
    ("(a)(?1)", "recursion (?N)"),
    ("(a)(?-1)", "recursion (?N)"),
    ("(?x)a b", "flag x in (?x...)"),  # was "not valid RE2 syntax", naming nothing
    ("(?ix:a)", "flag x in (?ix...)"),
    (r"\Z", "\\Z"),
    (r"\C", "\\C"),
    (r"\Qa.b\E", "\\Q"),
    (r"\x{41}", "\\x{...}"),
    (r"\0", "octal"),
    (r"[\b]", "\\b inside a character class"),
    ("abc\\", "lone backslash"),
    ("", "empty"),
])
def test_unsupported_constructs_are_named(pattern, named):
    assert named in reason(pattern)


@pytest.mark.parametrize("pattern", ["(?i)a", "(?i-s:a)", "(?imsU)a", "(?P<n>a)(?-i)b"])
def test_re2_flag_groups_are_accepted(pattern):
    parse_rule({"url": {"regex_match": pattern}})


def test_invalid_syntax_carries_re2_reason():
    assert "invalid regex" in reason("(unclosed")
    assert "invalid regex" in reason("a{2,1}")


def test_too_large_programs_are_rejected():
    assert "too large" in reason("((((a{100}){100}){100}){100})") or "invalid" in reason("((((a{100}){100}){100}){100})")


@pytest.mark.parametrize("pattern", [r"\d+", r"\bword\b", r"[[:alpha:]]+", r"(?i)abc", r"\p{Greek}", r"\x41", r"[\]a]", r"(?P<n>x)", r"a{2,3}"])
def test_plain_re2_syntax_is_accepted(pattern):
    parse_rule({"url": {"regex_match": pattern}})


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), [
    # {,3} is no repetition in RE2 but the text "{,3}", so "+" repeats its "}": not possessive.
    ("x{,3}+", "x{,3}}}", "xxx"),
    (r"x\{2}+", "x{2}}", "xx"),
    # Inside a class, [:alpha:] is a POSIX class and "(?=x)" is characters, not a lookahead.
    ("^[[:alpha:](?=x)]+$", "ab(?=x)", "a1"),
    ("^[[:^digit:]]$", "a", "1"),
])
def test_re2_readings_the_dialect_check_once_refused(pattern, matching, not_matching):
    rule = {"url": {"regex_match": pattern}}
    parse_rule(rule)
    assert evaluate(rule, {"url": matching}) and not evaluate(rule, {"url": not_matching})
    assert compile_rules({"r": rule}).match_batch([{"url": matching}, {"url": not_matching}]) == [["r"], []]


def test_catastrophic_backtracking_patterns_run_in_linear_time():
    # Exponential for backtracking engines; RE2 is linear in the text. No timing asserted:
    # the test finishing at all (in a fraction of a second) is the point.
    rules = {"evil": {"url": {"regex_match": "^(a+)+$"}}, "evil2": {"url": {"regex_match": "(x+x+)+y"}}}
    text = "a" * 50000 + "!"
    assert evaluate(rules["evil"], {"url": text}) is False
    compiled = compile_rules(rules)
    assert compiled.match_batch([{"url": text}, {"url": "x" * 20000}]) == [[], []]


@pytest.mark.parametrize(("pattern", "possessive"), [
    ("a{2}{3}+", True),     # the last "{" opens the repetition the "}" ends
    ("{1\\{2}+", False),    # that "{" is escaped: "\{2}" is text
    ("a{2}[{3}+]", False),  # in a class, "{", "}" and "+" are characters
    ("a{2}b}+", False),     # "{2}b}" is no repetition: the "+" repeats "}"
    ("a}+" * 20000 + "b{2}+", True),   # a long run of "}+" and a repetition after it
    ("b{2a" + "}+" * 20000, False),    # one "{" far back, whose "}" ends no repetition
])
def test_a_plus_after_a_brace_is_possessive_only_after_a_counted_repetition(pattern, possessive):
    if possessive:
        assert "possessive" in reason(pattern)
    else:
        parse_rule({"url": {"regex_match": pattern}})


def test_a_brace_is_read_as_a_repetition_once_however_many_pluses_follow(monkeypatch):
    # Each "}+" once re-read the text from the last "{": quadratic in a 64 KiB regex.
    import matcher.regex

    calls = []
    repetition = matcher.regex._REPETITION

    class Counting:
        def fullmatch(self, *args):
            calls.append(args[1:])
            return repetition.fullmatch(*args)

    monkeypatch.setattr(matcher.regex, "_REPETITION", Counting())
    pattern = "a{" + "1" * 1000 + "x" + "}+" * 500  # no repetition: "{1...1x}" is text, each "}" repeated
    parse_rule({"url": {"regex_match": pattern}})
    assert len(calls) == 1  # the first "}" only, not once per "}+"
    assert "possessive" in reason("a{2}+")
    parse_rule({"url": {"regex_match": "a{2}}+"}})  # the second "}" is text
