"""Parsing, validation (code 100 with the place), normalisation and canonical JSON."""

import json

import pytest

import matcher
from matcher import Limits, RuleError, parse_rule


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


def test_limits_are_configurable():
    limits = Limits(max_depth=2, max_leaves=2, max_json_bytes=100)
    parse_rule({"and": [{"a": 1}, {"b": 2}]}, limits=limits)
    assert "deeper than 2" in error_of({"and": [{"not": {"a": 1}}]}, limits=limits)
    assert "more than 2 conditions" in error_of({"or": [{"a": 1}, {"b": 1}, {"c": 1}]}, limits=limits)


def test_hostile_nesting_is_an_error_not_a_crash():
    assert "malformed JSON" in error_of("[" * 60000)
    assert "nested" in error_of('{"not":' * 5000 + '{"a":1}' + "}" * 5000)
    assert "nested" in error_of('{"not":' * 200 + '{"a":1}' + "}" * 200)


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
