"""Parsing, validation and the canonical form of action specs."""

from __future__ import annotations

import copy
import json
import pickle
from decimal import Decimal

import pytest

import matcher
from matcher import ActionSpec, SpecError, parse_action_specs, specs_to_json
from matcher.actionspecs import META_SPECS, action_value_text, canonical_length


def one(spec, **kwargs) -> ActionSpec:
    (parsed,) = parse_action_specs(spec, **kwargs)
    return parsed


def error_of(spec, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_action_specs(spec, **kwargs)
    return caught.value


# -- shapes ----------------------------------------------------------------------------------


def test_one_spec_or_a_list():
    spec = {"action.type": "like", "page": "P1"}
    assert parse_action_specs(spec) == parse_action_specs([spec])
    assert parse_action_specs(json.dumps(spec)) == parse_action_specs(json.dumps([spec]))
    assert parse_action_specs(json.dumps(spec).encode()) == parse_action_specs([spec])


def test_string_or_array_notation():
    assert one({"action.type": "app_install", "application": "A"}) == one(
        {"action.type": ["app_install"], "application": ["A"]}
    )


def test_fields_are_normalised():
    spec = one({"action.type": ["share", "like", "like"], "post.wall": "P", "page": ["b", "a", "b"]})
    assert spec.types == ("like", "share")
    assert spec.constraints == (("page", ("a", "b")), ("post.wall", ("P",)))
    assert spec.values("page") == ("a", "b")
    assert spec.values("post") is None
    assert spec.expanded_types == frozenset({"like", "share"})


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (174829001234, "174829001234"),
        (-5, "-5"),
        (0, "0"),
        (12.0, "12"),
        (12.5, "12.5"),
        (Decimal("12.50"), "12.5"),
        (Decimal("1E+2"), "100"),
        (-0.0, "0"),
        (10**30, "1000000000000000000000000000000"),
        # every digit as written (not rounded to decimal's 28), up to 64 each side of the point
        (Decimal("123456789012345678901234567890123.0"), "123456789012345678901234567890123"),
        (Decimal("0.1234567890123456789012345678901234"), "0.1234567890123456789012345678901234"),
        (Decimal("1e-64"), "0." + "0" * 63 + "1"),
        (Decimal("1e63"), "1" + "0" * 63),
    ],
)
def test_numbers_become_decimal_text(raw, text):
    assert one({"action.type": "x", "n": raw}).values("n") == (text,)
    assert one({"action.type": "x", "n": [raw]}).values("n") == (text,)
    assert action_value_text(raw) == text


@pytest.mark.parametrize(
    ("json_number", "text"),
    [("174829001234", "174829001234"), ("1.0", "1"), ("1e3", "1000"), ("0.10", "0.1"), ("-0", "0")],
)
def test_json_numbers_keep_their_decimal_value(json_number, text):
    spec = one(f'{{"action.type": "x", "n": {json_number}}}')
    assert spec.values("n") == (text,)


def test_seed_001_examples_parse():
    specs = parse_action_specs(
        """[
        {"action.type":["flightsim:fly"], "application":[174829001234]},
        {"action.type":["flightsim:fly"], "plane":[68764758347]},
        {"action.type":["flightsim:fly","flightsim:land","flightsim:crash"],
         "plane":[68764758347,68764712345,68764723424],
         "application":[174829001234, 174829001234]},
        {"action.type":"app_install","application":"12345"},
        {"action.type":"like","post":"456","post.wall":"123"},
        {"action.type":["like"],"page":"123"},
        {"action.type":"music.listens","application":"777"}
        ]"""
    )
    assert specs[0].values("application") == ("174829001234",)
    assert specs[2].types == ("flightsim:crash", "flightsim:fly", "flightsim:land")
    assert specs[2].values("application") == ("174829001234",)
    assert specs[2].values("plane") == ("68764712345", "68764723424", "68764758347")
    assert specs[6].types == ("music.listens",)


@pytest.mark.parametrize(
    "action_type", ["like", "flightsim:fly", "og.likes", "music.listens", "my-app:read", "og:watch",
                    "app_custom_event", "a1:b2.c3"],
)
def test_valid_action_types(action_type):
    assert one({"action.type": action_type, "page": "P"}).types == (action_type,)


@pytest.mark.parametrize(
    "action_type", ["", " like", "like ", "a::b", ":like", "like:", "a:b:c", "a b", "-x", "x-",
                    "like!", "a..b", ".a", "é"],
)
def test_invalid_action_types(action_type):
    error = error_of({"action.type": action_type, "page": "P"}, field="tracking_specs")
    assert error.path.startswith('tracking_specs["action.type"]')
    assert error.code == 100


# -- validation errors name the place -------------------------------------------------------


def test_missing_action_type():
    error = error_of([{"action.type": "like", "page": "P"}, {"page": "P"}], field="tracking_specs")
    assert str(error) == 'tracking_specs[1]: missing "action.type"'
    assert isinstance(error, ValueError) and error.code == 100


def test_needs_an_object_reference():
    assert "object reference" in str(error_of({"action.type": "like"}))
    error = error_of({"action.type": "rsvp", "response": "yes"})
    assert "object reference" in str(error)


def test_response_values():
    error = error_of([{"action.type": "like", "page": "P"},
                      {"action.type": "rsvp", "event": "E", "response": "perhaps"}],
                     field="tracking_specs")
    assert error.path == "tracking_specs[1].response"
    assert "yes, maybe or no" in error.reason
    error = error_of({"action.type": "rsvp", "event": "E", "response": ["yes", "sure"]})
    assert error.path == "specs.response"
    assert one({"action.type": "rsvp", "event": "E", "response": ["no", "yes"]}).values("response") == (
        "no", "yes")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "empty list"),
        ("", "empty string"),
        (None, "string or a number"),
        (True, "string or a number"),
        ({"a": 1}, "got an object"),
        ([["nested"]], "string or a number"),
        ([1, None], "string or a number"),
        (float("nan"), "not finite"),
        (float("inf"), "not finite"),
        (10**400, "too many digits"),
        (Decimal("1e999999"), "too many digits"),
        (Decimal("1e999999999"), "too many digits"),
        (Decimal("1e-65"), "too many digits"),
        (Decimal("1e-999999999"), "too many digits"),  # not 0: decimal's context would round it so
        (b"bytes", "string or a number"),
    ],
)
def test_bad_values(value, message):
    error = error_of([{"action.type": "like", "post.wall": value}], field="tracking_specs")
    assert error.path.startswith('tracking_specs[0]["post.wall"]')
    assert message in error.reason


def test_bad_value_inside_a_list_names_its_index():
    error = error_of({"action.type": "like", "page": ["P1", "", "P3"]})
    assert error.path == "specs.page[1]"


@pytest.mark.parametrize("key", ["", "bad key", 7, "a..b", "x\n"])
def test_bad_selectors(key):
    error = error_of([{"action.type": "like", "page": "P", key: "v"}])
    assert error.path == "specs[0]" and "selector" in error.reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON"),
        ('{"action.type": "like", "page": NaN}', "invalid JSON"),
        ('{"action.type": "like", "page": "P", "page": "Q"}', "duplicate key"),
        ("[]", "empty list"),
        ("42", "expected a spec"),
        ('"like"', "expected a spec"),
        ("null", "expected a spec"),
        ("[1]", "expected an object"),
    ],
)
def test_bad_json(text, message):
    assert message in str(error_of(text))


def test_json_python_cannot_read_is_named_without_pythons_words():
    assert str(error_of('{"action.type": "like", "page": ' + "1" * 4301 + "}", max_length=5000)) == (
        "specs: invalid JSON: a number of 4,301 digits (at most 4,300 are read) at line 1 column 33")
    assert str(error_of("[" * 100_000 + "]" * 100_000, max_length=300_000)) == (
        "specs: invalid JSON: nested too deeply")


def test_bad_utf8():
    assert "UTF-8" in str(error_of(b'{"action.type": "like", "page": "\xff"}'))


def test_not_specs_at_all():
    assert "expected a spec" in str(error_of(42))
    assert "expected a spec" in str(error_of(None))
    assert "empty list" in str(error_of([]))


# -- limits and hostile input ---------------------------------------------------------------


def test_length_limit_on_text():
    base = '[{"action.type":"like","page":"%s"}]'
    exact = base % ("P" * (4096 - len(base % "")))
    assert len(exact) == 4096
    parse_action_specs(exact)
    error = error_of(base % ("P" * (4097 - len(base % ""))))
    assert "4097 characters" in str(error) and "4096" in str(error)
    assert "limit of 50" in str(error_of('{"action.type":"like","page":"%s"}' % ("P" * 40),
                                         max_length=50))


def test_length_limit_on_decoded_specs():
    spec = {"action.type": "like", "page": "P" * 5000}
    assert "limit of 4096" in str(error_of(spec))
    many = [{"action.type": "like", "page": f"P{i}"} for i in range(200)]
    assert "limit of 4096" in str(error_of(many))
    assert len(parse_action_specs(many, max_length=10**6)) == 200


def test_hostile_input_is_a_clean_error():
    assert "longer than" in str(error_of("[" * 100_000))
    assert "invalid JSON" in str(error_of("[" * 3000 + "]" * 3000, max_length=10**6))
    deep: object = "x"
    for _ in range(10_000):
        deep = [deep]
    assert isinstance(error_of({"action.type": "like", "page": deep}), SpecError)
    assert "more than" in str(error_of([{"action.type": "like", "page": "P"}] * 100_000))
    assert "more than" in str(error_of({"action.type": "like", "page": list(range(100_000))}))


# -- canonical form --------------------------------------------------------------------------


def test_canonical_json():
    spec = one({"page": ["b", 2, "a"], "action.type": "like", "object.domain": "x.com"})
    assert spec.to_json() == (
        '{"action.type":["like"],"object.domain":["x.com"],"page":["2","a","b"]}'
    )
    assert spec.to_dict() == {"action.type": ["like"], "object.domain": ["x.com"], "page": ["2", "a", "b"]}
    assert specs_to_json([spec, spec]) == f"[{spec.to_json()},{spec.to_json()}]"
    assert canonical_length(spec) == len(spec.to_json())


def test_canonical_json_round_trips():
    specs = parse_action_specs([
        {"action.type": ["post_engagement"], "post": ["PO1"], "page": ["P1"]},
        {"action.type": "rsvp", "event": "E\"1\\é\n", "response": ["yes", "no"]},
    ])
    assert parse_action_specs(specs_to_json(specs)) == specs
    for spec in specs:
        assert canonical_length(spec) == len(spec.to_json())
        assert ActionSpec(spec.to_json()) == spec


def test_equality_and_hashing():
    first = one({"action.type": "like", "page": ["a", "b"]})
    second = one({"action.type": ["like"], "page": ["b", "a", "a"]})
    other = one({"action.type": "like", "page": "a"})
    assert first == second and hash(first) == hash(second)
    assert first != other
    assert len({first, second, other}) == 2
    assert first != tuple(first)


def test_action_spec_is_immutable_and_picklable():
    spec = ActionSpec({"action.type": "rsvp", "event": "E"})
    with pytest.raises(AttributeError):
        spec.types = ("like",)  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert copy.deepcopy(spec) == spec
    assert repr(spec) == 'ActionSpec({"action.type":["rsvp"],"event":["E"]})'


def test_action_spec_constructor_validates():
    assert ActionSpec('{"action.type": "like", "page": 1}').values("page") == ("1",)
    with pytest.raises(SpecError, match=r"^spec: missing"):
        ActionSpec({"page": "P"})


def test_already_parsed_specs_pass_through():
    specs = parse_action_specs([{"action.type": "like", "page": "P"}])
    assert parse_action_specs(specs) == specs
    assert parse_action_specs(specs[0]) == specs


# -- meta specs and rsvp ---------------------------------------------------------------------


def test_meta_specs_expand():
    assert one({"action.type": "page_engagement", "page": "P"}).expanded_types == frozenset({
        "checkin", "comment", "follow", "like", "mention", "post", "share", "vote", "link_click",
        "photo_view", "video_play"})
    assert one({"action.type": "post_engagement", "post": "P"}).expanded_types == frozenset({
        "comment", "follow", "like", "share", "vote", "receive_offer", "link_click", "photo_view",
        "video_play"})
    assert one({"action.type": "app_engagement", "application": "A"}).expanded_types == frozenset({
        "app_story", "app_use", "app_install", "credit_spent"})
    mixed = one({"action.type": ["app_engagement", "app_custom_event"], "application": "A"})
    assert mixed.expanded_types == META_SPECS["app_engagement"] | {"app_custom_event"}
    assert mixed.types == ("app_custom_event", "app_engagement")


def test_rsvp_default_flag():
    assert one({"action.type": "rsvp", "event": "E"}).rsvp_default is True
    assert one({"action.type": ["rsvp", "like"], "event": "E"}).rsvp_default is True
    assert one({"action.type": "rsvp", "event": "E", "response": "no"}).rsvp_default is False
    assert one({"action.type": "like", "event": "E"}).rsvp_default is False


def test_package_exports():
    for name in ("ActionSpec", "parse_action_specs", "specs_to_json", "action_matches",
                 "compile_action_specs", "effective_specs", "SpecError"):
        assert name in matcher.__all__ and hasattr(matcher, name)


@pytest.mark.parametrize("text, place", [
    ('[{"action.type":"like","page":"\\ud800"}]', "specs[0].page"),
    ('[{"action.type":"like","page":["1","a\\udc00"]}]', "specs[0].page[1]"),
])
def test_an_escaped_lone_surrogate_in_json_is_not_text(text, place):
    # No UTF-8 holds one: the specs could not be written back or sent in a reply.
    error = error_of(text)
    assert str(error).startswith(f"{place}: \\u") and "lone surrogate" in str(error)
    assert parse_action_specs('[{"action.type":"like","page":"\\ud83d\\ude00"}]')[0].to_dict()["page"] == ["\U0001f600"]


def test_a_tuple_of_parsed_specs_is_taken_as_is_and_a_list_is_measured():
    """docs/action-specs.md: effective specs (defaults added) may pass the limit the caller's
    fields are held to, so a tuple of ActionSpecs compiles as is; a list is measured."""
    from matcher import compile_action_specs
    long = parse_action_specs({"action.type": "like", "page": [str(n) for n in range(40)]})
    assert len(specs_to_json(long)) > 200
    for compiled in (compile_action_specs({"ad": tuple(long)}, max_length=200),
                     compile_action_specs({}, max_length=200).with_changes(add={"ad": tuple(long)})):
        assert compiled.match({"action.type": "like", "page": "39"}) == ["ad"]
    with pytest.raises(SpecError, match="longer than the limit of 200"):
        compile_action_specs({"ad": list(long)}, max_length=200)



@pytest.mark.parametrize("listed", [False, True])
def test_decoded_specs_are_held_to_the_limit_as_their_canonical_text_is(listed):
    # One spec's canonical JSON has no brackets: a decoded spec of exactly the limit was refused
    # as two characters longer. In a list they count, as in the text.
    def specs(length):
        one = {"action.type": ["like"], "page": ["x" * (length - len('{"action.type":["like"],"page":[""]}'))]}
        return [one] if listed else one

    limit = matcher.actionspecs.DEFAULT_MAX_LENGTH
    fits = limit - (2 if listed else 0)
    assert len(json.dumps(specs(fits), separators=(",", ":"))) == limit
    for given in (specs(fits), json.dumps(specs(fits), separators=(",", ":"))):
        assert len(specs_to_json(parse_action_specs(given))) - (0 if listed else 2) == limit
    for given in (specs(fits + 1), json.dumps(specs(fits + 1), separators=(",", ":"))):
        with pytest.raises(SpecError, match=f"specs: .* longer than the limit of {limit}"):
            parse_action_specs(given)


def test_parsed_specs_are_held_to_the_limit_alone_without_brackets_and_listed_with_them():
    # A parsed ActionSpec (itself a tuple) given alone is one spec, measured as its canonical
    # JSON; a list or tuple of them is a list, its brackets and commas counted.
    spec = parse_action_specs({"action.type": "like", "page": "x" * 100})[0]
    size = len(spec.to_json())
    assert parse_action_specs(spec, max_length=size) == [spec]
    with pytest.raises(SpecError, match=f"specs: canonical JSON is {size} characters, longer than the limit of {size - 1}"):
        parse_action_specs(spec, max_length=size - 1)
    for listed in ([spec], (spec,), [spec, spec]):
        length = len(specs_to_json(listed))
        assert parse_action_specs(listed, max_length=length) == list(listed)
        with pytest.raises(SpecError, match=f"canonical JSON is {length} characters, longer than the limit of {length - 1}"):
            parse_action_specs(listed, max_length=length - 1)


def test_one_spec_made_from_a_mapping_is_held_to_the_limit_as_its_text_is():
    limit = matcher.actionspecs.DEFAULT_MAX_LENGTH
    long = {"action.type": "like", "page": "x" * limit}
    for given in (long, json.dumps(long)):
        with pytest.raises(SpecError, match=f"spec: .* longer than the limit of {limit}"):
            ActionSpec(given)
    assert ActionSpec({"action.type": "like", "page": "x" * 4000}).values("page") == ("x" * 4000,)


def test_number_subclasses_are_their_values_in_action_values():
    class Code(int):
        def __int__(self):
            return 99

        def __str__(self):
            return "Code"

    class Money(float):
        def __float__(self):
            return 99.0

        def __repr__(self):
            return "Money"

        def is_integer(self):
            return False

    assert action_value_text(Code(7)) == "7"
    assert action_value_text(Money(7.0)) == "7" and action_value_text(Money(7.5)) == "7.5"
    assert matcher.values.number_text(Money(7.0)) == "7" and matcher.values.number_text(Money(7.5)) == "7.5"
