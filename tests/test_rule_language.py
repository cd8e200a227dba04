"""Parsing, validation (code 100 with the place), normalisation and canonical JSON."""

import json
from fractions import Fraction

import pytest
from hypothesis import given, settings

import matcher
from matcher import Limits, RuleError, parse_rule
from matcher.rules import _MAX_GROWTH_PER_LEAF
from tests.strategies import rules


def error_of(source, **kw):
    with pytest.raises(RuleError) as info:
        parse_rule(source, **kw)
    assert info.value.code == 100
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_the_spec_example_message():
    msg = error_of('{"and":[{"event":"Purchase"},{"value":{"gt":"abc"}}]}')
    assert msg == 'rule.and[1].value: operator "gt" needs a number, got "abc"'


@pytest.mark.parametrize(("source", "where", "what"), [
    ("{", "rule", "malformed JSON"),
    ('{"url": {"eq": NaN}}', "rule", "malformed JSON"),
    ('{"url": "a", "url": "b"}', "rule", "duplicate key"),
    ("[]", "rule", "expected an object"),
    ("{}", "rule", "exactly one key, got 0"),
    ('{"url": "a", "event": "b"}', "rule", "exactly one key, got 2"),
    ('{"and": []}', "rule.and", "empty"),
    ('{"or": []}', "rule.or", "empty"),
    ('{"not": []}', "rule.not", "empty"),
    ('{"and": {"url": "a"}}', "rule.and", "list of rules"),
    ('{"url": {"eq": "a", "neq": "b"}}', "rule.url", "exactly one operator"),
    ('{"url": {"like": "a"}}', "rule.url", "unknown operator"),
    ('{"url": {"EQ": "a"}}', "rule.url", "unknown operator"),
    ('{"url": {"eq": ["a", "b"]}}', "rule.url", "needs a string, number or boolean"),
    ('{"url": {"eq": null}}', "rule.url", "needs a string, number or boolean"),
    ('{"url": {"contains": 10}}', "rule.url", "needs a string"),
    ('{"value": {"gt": "abc"}}', "rule.value", "needs a number"),
    ('{"value": {"gt": true}}', "rule.value", "needs a number"),
    ('{"value": {"gt": 1e999}}', "rule.value", "needs a number"),
    ('{"value": {"gt": "inf"}}', "rule.value", "needs a number"),
    ('{"tags": {"is_any": []}}', "rule.tags", "non-empty list"),
    ('{"tags": {"is_any": "a"}}', "rule.tags", "non-empty list"),
    ('{"tags": {"is_any": ["a", 1]}}', "rule.tags[1]", "needs strings"),
    ('{"color": {"exists": "yes"}}', "rule.color", "true or false"),
    ('{"url": {"regex_match": ""}}', "rule.url", "must not be empty"),
    ('{"url": {"regex_match": "(a"}}', "rule.url", "invalid regex"),
    ('{"url": null}', "rule.url", "expected a condition"),
    ('{"url": ["a"]}', "rule.url", "expected a condition"),
    ('{"": "a"}', "rule.", "non-empty"),
    ('{"a..b": "x"}', "rule.a..b", "invalid field name"),
    ('{"pixel_id": "1"}', "rule.pixel_id", "not a field a rule can match"),
    ('{"and": [{"url": "a"}, {"or": [{"x": {"gt": "no"}}]}]}', "rule.and[1].or[0].x", "needs a number"),
    ('{"operator": "xor", "filters": [{"field": "url", "operator": "eq", "value": "a"}]}', "rule.operator", '"and" or "or"'),
    ('{"operator": "and", "filters": []}', "rule.filters", "empty"),
    ('{"operator": "and", "filters": [{"url": "a"}]}', "rule.filters[0]", "expected a filter"),
    ('{"operator": "and", "filters": [{"field": "v", "operator": "gt", "value": "x"}]}', "rule.filters[0].value", "needs a number"),
])
def test_rejected_with_place(source, where, what):
    msg = error_of(source)
    assert msg.startswith(where + ":"), msg
    assert what in msg, msg


def test_bytes_and_decoded_objects_are_accepted():
    text = '{"url": {"i_contains": "thankyou"}}'
    assert parse_rule(text.encode()) == parse_rule(text) == parse_rule(json.loads(text))
    assert "not UTF-8" in error_of(b'{"url": "\xff"}')


def test_canonical_json_normalises_aliases_shorthand_and_filters():
    rule = parse_rule({"operator": "or", "filters": [
        {"field": "URL", "operator": "=", "value": "a"},
        {"field": "Value", "operator": ">=", "value": 3},
    ]})
    assert rule.to_json() == '{"or":[{"url":{"eq":"a"}},{"Value":{"gte":3}}]}'
    assert parse_rule({"event": "Purchase"}).to_json() == '{"event":{"eq":"Purchase"}}'
    assert parse_rule({"not": [{"x": 1}]}).to_json() == '{"not":{"x":{"eq":1}}}'
    assert parse_rule({"tags": {"in": ["a", "b"]}}).to_json() == '{"tags":{"is_any":["a","b"]}}'


def test_canonical_json_round_trips():
    rule = parse_rule('{"and":[{"event":{"==":"Purchase"}},{"not":[{"color":{"i_contains":"bläck"}},{"v":{"<":"10"}}]}]}')
    again = parse_rule(rule.to_json())
    assert again == rule
    assert again.to_json() == rule.to_json()


def test_limits_defaults():
    deep = {"url": "a"}
    for _ in range(31):
        deep = {"not": deep}
    parse_rule(deep)  # 32 levels
    assert "deeper than 32" in error_of({"not": deep})
    parse_rule({"or": [{"f": str(i)} for i in range(100)]})
    assert "more than 100 conditions" in error_of({"or": [{"f": str(i)} for i in range(101)]})
    big = '{"url": {"contains": "' + "x" * (64 * 1024) + '"}}'
    assert "more than the limit of 65536" in error_of(big)
    assert "more than the limit" in error_of({"url": {"contains": "x" * 70000}})


def test_a_rule_whose_canonical_json_is_over_the_limit_is_rejected():
    # Shorthand grows by {"eq": ...} when written back: 100 leaves of 643 characters fit as
    # given, not canonically, and a rule accepted must parse again from its canonical JSON.
    text = json.dumps({"or": [{"f": "x" * 643}] * 100}, separators=(",", ":"))
    assert len(text) <= 65536
    message = error_of(text)
    assert "65908 bytes of JSON written canonically (65208 as given)" in message
    fits = parse_rule(json.dumps({"or": [{"f": "x" * 630}] * 100}))
    assert parse_rule(fits.to_json()) == fits


@settings(max_examples=300, deadline=None)
@given(rules)
def test_writing_a_rule_back_grows_it_at_most_the_bound_per_leaf(source):
    # parse_rule writes a rule out to measure it only when it is this close to the limit.
    given_size = len(json.dumps(source, separators=(",", ":"), ensure_ascii=False).encode())
    rule = parse_rule(source)
    growth = len(rule.to_json().encode()) - given_size
    assert growth <= _MAX_GROWTH_PER_LEAF * rule.leaf_count
    for number in (1e15, -1.5e15, 1e-5, 1e22, 123456789012345.6):  # numbers written out
        leaf = {"n": number}
        assert len(parse_rule(leaf).to_json()) - len(json.dumps(leaf, separators=(",", ":"))) <= _MAX_GROWTH_PER_LEAF


@pytest.mark.parametrize("source, place", [
    ('{"url":{"contains":"\\ud800"}}', "rule.url"),
    ('{"url":{"regex_match":"a\\udfff"}}', "rule.url"),
    ('{"and":[{"event":"x"},{"tags":{"in":["a","\\udc00"]}}]}', "rule.and[1].tags[1]"),
    ('{"c\\udc00":"x"}', "rule.c\\udc00"),
    ('{"c\\udc00":["x"]}', "rule.c\\udc00"),  # the name is wrong before the list is
    ('{"c\\udc00":null}', "rule.c\\udc00"),
    ({"field": "c\udc00", "operator": "eq", "value": 1}, "rule.field"),
    ({"value": {"eq": "\ud800"}}, "rule.value"),
])
def test_a_lone_surrogate_is_not_text(source, place):
    # JSON can escape one and Python can hold one, but no event's UTF-8 text has one, and the
    # canonical JSON could not be written as UTF-8: an error naming the place (printable).
    message = error_of(source)
    assert message.startswith(f"{place}: \\u") and "lone surrogate" in message
    message.encode("utf-8")
    assert parse_rule('{"event":"\\ud83d\\ude00"}').to_json() == '{"event":{"eq":"\U0001f600"}}'


def test_limits_are_configurable():
    limits = Limits(max_depth=2, max_leaves=2, max_json_bytes=100)
    parse_rule({"and": [{"a": 1}, {"b": 2}]}, limits=limits)
    assert "deeper than 2" in error_of({"and": [{"not": {"a": 1}}]}, limits=limits)
    assert "more than 2 conditions" in error_of({"or": [{"a": 1}, {"b": 1}, {"c": 1}]}, limits=limits)


def test_an_integer_too_long_to_read_is_named_at_its_place():
    assert error_of('{"a": {"eq": 1.5' + "5" * 5000 + '}, "b": ' + "7" * 4301 + "}") == (
        "rule: malformed JSON: a number of 4,301 digits (at most 4,300 are read) at line 1 column 5025")


def test_hostile_nesting_is_an_error_not_a_crash():
    """Nesting past what Python's json can read or write once gave "malformed JSON: nested too
    deeply" or "not JSON data: maximum recursion depth exceeded"; now the depth limit, and the
    place where a decoded rule passes it."""
    too_deep = "rule: rule is nested deeper than 32 levels (its JSON is nested too deeply to read)"
    assert error_of("[" * 60000) == too_deep
    assert error_of('{"not":' * 5000 + '{"a":1}' + "}" * 5000) == too_deep
    assert error_of('{"not":' * 200 + '{"a":1}' + "}" * 200) == "rule" + ".not" * 32 + ": rule is nested deeper than 32 levels"
    decoded = {"a": 1}
    for _ in range(5000):
        decoded = {"and": [decoded]}
    assert error_of(decoded) == "rule" + ".and[0]" * 32 + ": rule is nested deeper than 32 levels"
    value = [1]
    for _ in range(5000):
        value = [value]
    assert error_of({"a": {"eq": value}}).startswith("rule.a: operator \"eq\" needs a string")  # not a rule depth


def test_leaves_and_public_names():
    rule = matcher.parse_rule({"and": [{"a": 1}, {"or": [{"b": 2}, {"c": {"exists": True}}]}]})
    assert [leaf.field.text for leaf in rule.leaves()] == ["a", "b", "c"]
    assert rule.leaf_count == 3
    assert str(rule) == rule.to_json()


def test_json_errors_read_as_json_loads_words_them():
    # The parser keeps one decoder for every rule; its errors must stay json.loads' own.
    for text in ('\ufeff{"url": "a"}', '{"url": "a",}', '{"url": Infinity}'):
        with pytest.raises(ValueError) as info:
            json.loads(text, parse_constant=lambda name: float("x"))
        assert error_of(text).startswith("rule: malformed JSON: ")
        if isinstance(info.value, json.JSONDecodeError):
            err = info.value
            assert error_of(text) == f"rule: malformed JSON: {err.msg} at line {err.lineno} column {err.colno}"
    assert error_of('{"url": Infinity}') == "rule: malformed JSON: Infinity is not valid JSON"


@pytest.mark.parametrize("name", ["and", "or", "not", "NOT", "Or"])
def test_the_combinators_are_not_field_names(name):
    # Written back, {"and": {"eq": "x"}} would not parse again, and {"not": {"eq": "x"}} would
    # parse as another rule; names are matched case-insensitively, so no case of them is a field.
    assert "is reserved" in error_of({"field": name, "operator": "eq", "value": "x"})
    if name != name.lower():  # (lower-case, the key combines: {"not": {"eq": "x"}} negates a leaf)
        assert "is reserved" in error_of({"and": [{"event": "x"}, {name: {"eq": "x"}}]})
        # Given a list, as its lower-case twin takes, the name is still what is wrong.
        assert error_of({name: [{"event": "x"}]}) == (
            f'rule.{name}: "{name}" is reserved (and, or, not combine rules, written in lower case): not a field name')
    assert parse_rule({"not.x": "y"}).to_json() == '{"not.x":{"eq":"y"}}'  # a dotted path is a field


def test_a_float_subclass_has_the_text_of_its_value():
    class Money(float):
        def __repr__(self):
            return f"Money({float(self)})"

    rule_set = matcher.compile_rules({"r": {"v": {"eq": "1.5"}}, "s": {"v": {"contains": "Money"}}})
    assert rule_set.match_batch([{"custom_data": {"v": Money(1.5)}}]) == [["r"]]


@pytest.mark.parametrize("operand, message", [
    (float("nan"), 'operator "gt" needs a number that is finite, got the number nan'),
    (10**400, f'operator "gt" needs a number that is finite, got the number {10**400}'),
    (Fraction(1, 2), 'operator "gt" needs a number, got Fraction'),
])
def test_an_operand_json_cannot_write_is_refused_at_its_place(operand, message):
    # json.dumps refused it first, and the error named only "rule".
    assert error_of({"and": [{"event": "Purchase"}, {"value": {"gt": operand}}]}) == f"rule.and[1].value: {message}"


@pytest.mark.parametrize("op", ["eq", "neq", "gt", "lte"])
@pytest.mark.parametrize("operand", [float("inf"), float("-inf"), float("nan"), 10**400])
def test_a_number_that_is_not_finite_is_refused_in_the_same_words_by_every_operator(op, operand):
    shown = operand if isinstance(operand, int) else float.__repr__(operand)
    assert error_of({"v": {op: operand}}) == (
        f'rule.v: operator "{op}" needs a number that is finite, got the number {shown}')


def test_a_json_message_ending_in_at_does_not_say_at_twice():
    assert error_of('{"event": "a\tb"}') == "rule: malformed JSON: Invalid control character at line 1 column 13"
    with pytest.raises(matcher.SpecError) as caught:
        matcher.parse_action_specs('[{"action.type": "li\tke"}]')
    assert str(caught.value).endswith("invalid JSON: Invalid control character at line 1 column 21")


def test_a_json_refusal_is_named_as_raised_unless_it_is_the_integer_digit_limit(monkeypatch):
    from matcher.values import json_value_reason

    long_digits = '{"a": "' + "1" * 5000 + '", "a": 1}'
    assert json_value_reason(long_digits, ValueError("key 'a' given twice")) == "key 'a' given twice"
    monkeypatch.setattr("sys.get_int_max_str_digits", lambda: 0)  # no limit: nothing is too long
    assert json_value_reason('{"a": 1, "a": 2}', ValueError("key 'a' given twice")) == "key 'a' given twice"
    digit_limit = ValueError("Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits")
    assert json_value_reason('{"a": ' + "1" * 5000 + "}", digit_limit) == str(digit_limit)


def test_the_digit_limit_names_the_number_refused_not_digits_in_a_string():
    text = '{"a": {"eq": "x\\"' + "1" * 5000 + '"}, "b": ' + "2" * 4301 + "}"
    assert error_of(text) == "rule: malformed JSON: a number of 4,301 digits (at most 4,300 are read) " \
                             f"at line 1 column {text.index('2' * 4301) + 1}"
