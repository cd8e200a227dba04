"""Every operator, alias, coercion and field rule of the rule-language spec, on every implementation."""

from decimal import Decimal

import pytest

from tests.strategies import Code

URL = "https://Shop.Example.com:8443/checkout/ThankYou.html?order=42#top"


def ev(**custom):
    """An event with the given custom parameters."""
    return {"event": "Purchase", "url": URL, "custom_data": custom, "pixel_id": "PX1"}


# -- seed 003 examples -------------------------------------------------------------------------
def test_seed_url_based_conversion(holds):
    rule = '{"or":[{"url":{"i_contains": "thankyou.html"}},{"url":{"i_contains":"confirmation.html"}}]}'
    assert holds(rule, {"url": "https://x.com/THANKYOU.HTML"})
    assert holds(rule, {"url": "https://x.com/Confirmation.html?x=1"})
    assert not holds(rule, {"url": "https://x.com/cart.html"})


def test_seed_high_value_purchase(holds):
    rule = '{"and":[{"event":{"eq": "Purchase"}},{"value":{"gt":100}}]}'
    assert holds(rule, {"event": "Purchase", "custom_data": {"value": 150}})
    assert holds(rule, {"event": "Purchase", "custom_data": {"value": "100.5"}})
    assert not holds(rule, {"event": "Purchase", "custom_data": {"value": 100}})
    assert not holds(rule, {"event": "purchase", "custom_data": {"value": 150}})


def test_seed_item_sold_in_black(holds):
    rule = '{"and":[{"event":{"eq": "item-sold"}},{"color":{"i_contains":"black"}}]}'
    assert holds(rule, {"event": "item-sold", "custom_data": {"color": "Jet BLACK", "value": 1.0, "currency": "USD"}})
    assert not holds(rule, {"event": "item-sold", "custom_data": {"color": "white"}})


def test_seed_regex_example(holds):
    rule = {"url": {"regex_match": r"example\.com.*purchase$"}}
    assert holds(rule, {"url": "https://www.example.com/shop/purchase"})
    assert not holds(rule, {"url": "https://www.example.com/shop/purchase?x"})


# -- operators -----------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["eq", "=", "=="])
def test_eq_and_aliases(holds, op):
    assert holds({"event": {op: "Purchase"}}, ev())
    assert not holds({"event": {op: "purchase"}}, ev())


@pytest.mark.parametrize("op", ["neq", "!=", "ne"])
def test_neq_and_aliases(holds, op):
    assert holds({"event": {op: "Lead"}}, ev())
    assert not holds({"event": {op: "Purchase"}}, ev())


def test_shorthand_is_eq(holds):
    assert holds({"event": "Purchase"}, ev())
    assert holds({"qty": 3}, ev(qty="3"))
    assert holds({"vip": True}, ev(vip=True))
    assert not holds({"vip": True}, ev(vip=False))


def test_contains_family(holds):
    assert holds({"url": {"contains": "ThankYou"}}, ev())
    assert not holds({"url": {"contains": "thankyou"}}, ev())
    assert holds({"url": {"i_contains": "THANKYOU"}}, ev())
    assert holds({"url": {"not_contains": "cart"}}, ev())
    assert not holds({"url": {"not_contains": "ThankYou"}}, ev())
    assert holds({"url": {"i_not_contains": "cart"}}, ev())
    assert not holds({"url": {"i_not_contains": "THANKYOU"}}, ev())


def test_starts_with(holds):
    assert holds({"url": {"starts_with": "https://Shop"}}, ev())
    assert not holds({"url": {"starts_with": "https://shop"}}, ev())
    assert holds({"url": {"i_starts_with": "HTTPS://SHOP"}}, ev())
    assert not holds({"url": {"starts_with": "Shop"}}, ev())


@pytest.mark.parametrize("op", ["is_any", "in"])
def test_is_any(holds, op):
    assert holds({"event": {op: ["Lead", "Purchase"]}}, ev())
    assert not holds({"event": {op: ["Lead", "purchase"]}}, ev())


@pytest.mark.parametrize("op", ["is_not_any", "not_in"])
def test_is_not_any(holds, op):
    assert holds({"event": {op: ["Lead", "Search"]}}, ev())
    assert not holds({"event": {op: ["Lead", "Purchase"]}}, ev())


def test_case_insensitive_lists(holds):
    assert holds({"event": {"i_is_any": ["lead", "PURCHASE"]}}, ev())
    assert not holds({"event": {"i_is_not_any": ["lead", "PURCHASE"]}}, ev())
    assert holds({"event": {"i_is_not_any": ["lead"]}}, ev())


@pytest.mark.parametrize(("op", "bound", "expected"), [
    ("lt", 10, False), ("<", 10.5, True), ("lte", 10, True), ("<=", 9.99, False), ("le", "10", True),
    ("gt", 9, True), (">", 10, False), ("gte", 10, True), (">=", "10.01", False), ("ge", " 1e1 ", True),
])
def test_numeric_comparisons_and_aliases(holds, op, bound, expected):
    assert holds({"value": {op: bound}}, ev(value=10)) is expected


def test_numeric_strings_compare_as_numbers(holds):
    assert holds({"value": {"gt": 9}}, ev(value="10"))  # never "10" < "9" as strings
    assert holds({"value": {"gt": "9"}}, ev(value=" 99.90 "))
    assert holds({"value": {"gte": 1000}}, ev(value="1e3"))


def test_numeric_on_non_numbers_is_false(holds):
    for value in ["abc", "", "1,000", "0x10", "inf", "nan", "1_000", True, {"a": 1}, None]:
        assert not holds({"value": {"gt": 0}}, ev(value=value)), value
        assert not holds({"value": {"lte": 0}}, ev(value=value)), value


def test_regex(holds):
    assert holds({"url": {"regex_match": r"/checkout/\w+\.html"}}, ev())
    assert not holds({"url": {"regex_match": "thankyou"}}, ev())
    assert holds({"url": {"regex_match": "(?i)thankyou"}}, ev())
    assert holds({"url": {"regex_match": "^https://"}}, ev())
    assert not holds({"url": {"regex_match": "^Shop"}}, ev())


def test_regex_digit_class_is_ascii(holds):
    # RE2's \d is ASCII; pyre2 would widen it to Unicode for str patterns unless told not to.
    assert not holds({"sku": {"regex_match": r"^\d+$"}}, ev(sku="\u0663\u0664"))
    assert holds({"sku": {"regex_match": r"^\d+$"}}, ev(sku="34"))


def test_exists(holds):
    assert holds({"color": {"exists": True}}, ev(color="red"))
    assert not holds({"color": {"exists": True}}, ev())
    assert holds({"color": {"exists": False}}, ev())
    assert holds({"color": {"exists": False}}, ev(color=None))
    assert holds({"color": {"exists": False}}, ev(color=[]))
    assert not holds({"color": {"exists": False}}, ev(color=""))


# -- combinators ---------------------------------------------------------------------------------
def test_and_or_not(holds):
    assert holds({"and": [{"event": "Purchase"}, {"url": {"contains": "Thank"}}]}, ev())
    assert not holds({"and": [{"event": "Purchase"}, {"url": {"contains": "cart"}}]}, ev())
    assert holds({"or": [{"event": "Lead"}, {"url": {"contains": "Thank"}}]}, ev())
    assert not holds({"or": [{"event": "Lead"}, {"url": {"contains": "cart"}}]}, ev())
    assert holds({"not": {"event": "Lead"}}, ev())
    assert not holds({"not": {"event": "Purchase"}}, ev())


def test_not_with_a_list_is_nor(holds):
    assert holds({"not": [{"event": "Lead"}, {"event": "Search"}]}, ev())
    assert not holds({"not": [{"event": "Lead"}, {"event": "Purchase"}]}, ev())


def test_filter_syntax_means_the_same(holds):
    rule = {"operator": "and", "filters": [
        {"field": "event", "operator": "eq", "value": "Purchase"},
        {"operator": "or", "filters": [
            {"field": "url", "operator": "i_contains", "value": "thankyou"},
            {"field": "value", "operator": ">", "value": 1000},
        ]},
    ]}
    assert holds(rule, ev())
    assert not holds(rule, {**ev(), "event": "Lead"})


# -- values --------------------------------------------------------------------------------------
def test_missing_field_fails_negative_operators_too(holds):
    for op, operand in [("neq", "x"), ("not_contains", "x"), ("i_not_contains", "x"),
                        ("is_not_any", ["x"]), ("i_is_not_any", ["x"]), ("eq", "x"), ("gt", 1)]:
        assert not holds({"color": {op: operand}}, ev()), op
        assert not holds({"color": {op: operand}}, ev(color=None)), op
        assert not holds({"color": {op: operand}}, ev(color=[])), op


def test_not_of_missing_field_is_true(holds):
    assert holds({"not": {"color": {"i_contains": "black"}}}, ev())


def test_lists_positive_any_negative_none(holds):
    assert holds({"tags": {"eq": "sale"}}, ev(tags=["new", "sale"]))
    assert not holds({"tags": {"neq": "sale"}}, ev(tags=["new", "sale"]))
    assert holds({"tags": {"neq": "old"}}, ev(tags=["new", "sale"]))
    assert holds({"tags": {"i_contains": "SAL"}}, ev(tags=["new", "sale"]))
    assert not holds({"tags": {"not_contains": "ne"}}, ev(tags=["new", "sale"]))
    assert holds({"prices": {"gt": 50}}, ev(prices=[10, "60"]))
    assert holds({"tags": {"is_not_any": ["x"]}}, ev(tags=["new", None]))


def test_numbers_as_text(holds):
    assert holds({"value": {"eq": "100"}}, ev(value=100.0))
    assert holds({"value": {"contains": "0.5"}}, ev(value=10.5))
    assert holds({"value": {"eq": "1e-07"}}, ev(value=1e-7))
    assert holds({"value": {"starts_with": "100000000000000000000"}}, ev(value=1e20))
    assert holds({"flag": {"eq": "true"}}, ev(flag=True))
    assert not holds({"flag": {"eq": "True"}}, ev(flag=True))


def test_eq_with_number_operand_compares_numerically(holds):
    assert holds({"value": {"eq": 100}}, ev(value="100.0"))
    assert holds({"value": {"eq": 100}}, ev(value=" 1e2"))
    assert holds({"value": {"eq": 0}}, ev(value="-0"))
    assert not holds({"value": {"eq": 100}}, ev(value="abc"))
    assert holds({"value": {"neq": 100}}, ev(value="abc"))
    assert not holds({"value": {"eq": 1}}, ev(value=True))  # booleans are not numbers


def test_mappings_never_match_string_operators(holds):
    assert not holds({"item": {"contains": "a"}}, ev(item={"a": 1}))
    assert not holds({"item": {"eq": "a"}}, ev(item={"a": 1}))
    assert holds({"item": {"neq": "a"}}, ev(item={"a": 1}))  # present, and no item equals "a"
    assert holds({"item": {"exists": True}}, ev(item={"a": 1}))


def test_unicode_case_folding(holds):
    assert holds({"city": {"i_contains": "straße"}}, ev(city="STRAẞE"))  # U+1E9E folds to ß
    assert holds({"name": {"i_is_any": ["σοφία"]}}, ev(name="ΣΟΦΊΑ"))
    assert holds({"unit": {"i_contains": "k"}}, ev(unit="\u212a"))  # KELVIN SIGN
    assert not holds({"city": {"i_contains": "strasse"}}, ev(city="straße"))  # simple folding only


# -- fields --------------------------------------------------------------------------------------
def test_field_names_are_case_insensitive(holds):
    assert holds({"URL": {"contains": "Thank"}}, ev())
    assert holds({"Event": "Purchase"}, ev())
    assert holds({"COLOR": "red"}, ev(color="red"))
    assert holds({"color": "red"}, ev(Color="red"))
    assert holds({"straße": 1}, ev(STRAẞE=1))
    assert not holds({"color": "red"}, ev(colour="red", COLOUR="red"))


def test_exact_custom_key_wins(holds):
    assert holds({"Color": "blue"}, ev(color="red", Color="blue"))
    assert holds({"color": "red"}, ev(Color="blue", color="red"))
    assert holds({"COLOR": "blue"}, ev(Color="blue", color="red"))  # first case-insensitive key


def test_domain_and_path(holds):
    assert holds({"domain": "shop.example.com"}, ev())
    assert holds({"path": "/checkout/ThankYou.html"}, ev())
    assert holds({"path": "/"}, {"url": "https://example.com?x=1"})
    assert holds({"domain": "example.com"}, {"url": "//user:pw@EXAMPLE.com:80"})
    assert holds({"domain": "[::1]"}, {"url": "http://[::1]:8080/x"})
    assert holds({"domain": "example.com"}, {"url": "example.com/landing"})
    assert not holds({"domain": {"exists": True}}, {"url": "/relative/only"})
    assert holds({"path": "/relative/only"}, {"url": "/relative/only#frag"})


def test_device_type(holds):
    assert holds({"device_type": {"i_starts_with": "mobile"}}, {"device_type": "mobile_iphone"})


def test_nested_and_list_paths(holds):
    event = ev(order={"shipping": {"country": "FR"}}, items=[{"sku": "A1", "tags": ["x", "y"]}, {"sku": "B2"}])
    assert holds({"order.shipping.country": "FR"}, event)
    assert holds({"ORDER.Shipping.COUNTRY": "FR"}, event)
    assert holds({"items[*].sku": "B2"}, event)
    assert holds({"items[*].tags": "y"}, event)
    assert not holds({"items.sku": "B2"}, event)  # a list is only entered with [*]
    assert not holds({"order.shipping.zip": {"exists": True}}, event)


def test_scoping_by_pixel(match_all):
    rules = {"scoped": {"event": "Purchase"}, "everywhere": {"event": "Purchase"}}
    sources = {"scoped": "PX1"}
    events = [{"event": "Purchase", "pixel_id": "PX1"}, {"event": "Purchase", "pixel_id": "PX2"},
              {"event": "Purchase"}, {"event": "Purchase", "pixel_id": 1}]
    assert match_all(rules, events, sources) == [["scoped", "everywhere"], ["everywhere"], ["everywhere"], ["everywhere"]]
    assert match_all({"n": {"event": "Purchase"}}, [{"event": "Purchase", "pixel_id": 123}], {"n": 123}) == [["n"]]


def test_results_keep_the_order_given(match_all):
    rules = {f"r{i}": {"event": "Purchase"} for i in (5, 1, 4, 2, 3)}
    sources = {"r1": "PX1", "r2": "PX1"}
    assert match_all(rules, [{"event": "Purchase", "pixel_id": "PX1"}], sources) == [["r5", "r1", "r4", "r2", "r3"]]


def test_integers_of_other_types_are_numbers_and_their_decimal_text(holds, match_all):
    """Events built from numpy or pandas data hold numpy.int64 and the like (numbers.Integral):
    they read as the int they are, once neither a number nor text. numpy.float64 is a float."""
    import numpy as np

    assert holds({"n": {"gt": 5}}, ev(n=np.int64(6)))
    assert holds({"n": {"eq": "12"}}, ev(n=np.int32(12)))
    assert holds({"n": {"i_contains": "3"}}, ev(n=[np.uint8(3)]))
    assert holds({"n": {"is_any": ["7", "8"]}}, ev(n=np.int16(8)))
    assert holds({"n": {"lt": 2.5}}, ev(n=np.float64(2.25)))
    assert not holds({"n": {"gt": 5}}, ev(n=np.int64(5)))
    assert not holds({"n": {"eq": "true"}}, ev(n=np.bool_(True)))  # not an integer: no text
    events = [{"pixel_id": np.int64(7), "event": "Lead"}, {"pixel_id": 7, "event": "Lead"},
              {"pixel_id": True, "event": "Lead"}]
    assert match_all({"r": {"event": {"eq": "Lead"}}}, events, {"r": "7"}) == [["r"], ["r"], []]


def test_an_int_subclass_is_read_as_its_value(holds):
    """Text and number of an int subclass are its integer's, as action specs read it (its own
    __str__ and __float__ decide nothing); booleans stay true/false and no number."""
    assert holds({"n": {"eq": "7"}}, ev(n=Code(7)))
    assert holds({"n": {"is_any": ["7"]}}, ev(n=[Code(7)]))
    assert not holds({"n": {"contains": "Code"}}, ev(n=Code(7)))
    assert holds({"n": {"gt": 6}}, ev(n=Code(7)))
    assert holds({"n": {"eq": 7}}, ev(n=Code(7)))
    assert not holds({"n": {"lt": 0}}, ev(n=Code(7)))
    assert holds({"n": {"neq": "Code<7>"}}, ev(n=Code(7)))
    assert holds({"flag": {"eq": "true"}}, ev(flag=True))
    assert holds({"flag": {"eq": "false"}}, ev(flag=False))
    assert not holds({"flag": {"gte": 0}}, ev(flag=False))


class _Half(float):
    def __str__(self):
        return "half"

    def __float__(self):
        return 9.0


def test_a_number_subclass_operand_is_read_as_its_value(holds):
    """A rule's int or float subclass operand is the number it is, as its canonical JSON says
    (its own __str__ and __float__ decide nothing), in lists too; a bool stays a bool."""
    from matcher.rules import parse_rule

    assert holds({"x": {"eq": Code(5)}}, ev(x=5)) and holds({"x": {"eq": Code(5)}}, ev(x="5"))
    assert not holds({"x": {"eq": Code(5)}}, ev(x=-1)) and not holds({"x": {"eq": Code(5)}}, ev(x="Code<5>"))
    assert holds({"x": {"gt": Code(5)}}, ev(x=5.5)) and not holds({"x": {"gt": Code(5)}}, ev(x=5))
    assert holds({"x": {"eq": _Half(0.5)}}, ev(x=0.5)) and not holds({"x": {"eq": _Half(0.5)}}, ev(x=9))
    assert not holds({"x": {"eq": _Half(0.5)}}, ev(x="half"))
    assert holds({"x": {"lt": _Half(0.5)}}, ev(x=0.25)) and not holds({"x": {"lt": _Half(0.5)}}, ev(x=1))
    assert holds({"x": {"eq": True}}, ev(x=True)) and not holds({"x": {"eq": True}}, ev(x=1))
    rule = parse_rule({"and": [{"x": {"eq": Code(5)}}, {"y": {"lt": _Half(0.5)}}, {"z": {"eq": True}}]})
    assert rule.to_json() == '{"and":[{"x":{"eq":5}},{"y":{"lt":0.5}},{"z":{"eq":true}}]}'
    assert parse_rule(rule.to_json()).to_json() == rule.to_json()
    operands = [leaf.operand for leaf in rule.leaves()]
    assert [type(o) for o in operands] == [int, float, bool]


def test_an_int_subclass_pixel_id_is_its_value(match_all):
    events = [{"event": "Lead", "pixel_id": Code(7)}, {"event": "Lead", "pixel_id": Code(8)}]
    assert match_all({"r": {"event": "Lead"}}, events, {"r": "7"}) == [["r"], []]


@pytest.mark.parametrize("value, text, number", [
    (Decimal("19.90"), "19.9", 19.9),
    (Decimal("100.00"), "100", 100.0),
    (Decimal("1.2E+3"), "1200", 1200.0),
    (Decimal("-0.00"), "0", 0.0),
    (Decimal("1E-7"), "1e-07", 1e-7),  # as the float 1e-07 is written
    (Decimal("0.1234567890123456789"), "0.12345678901234568", 0.12345678901234568),  # its double's text
    # An integer keeps every digit, as an int (a NUMERIC id), where its double would not.
    (Decimal("12345678901234567890"), "12345678901234567890", 1.2345678901234567e19),
    (Decimal("1E+23"), "1" + "0" * 23, 1e23),
    (Decimal("1E+400"), "1" + "0" * 400, None),  # past a double: text, no number (as 10**400)
    (Decimal("1E-400"), "0", 0.0),  # as "1e-400" and the float it is read as
])
def test_a_decimal_is_a_number_with_the_text_of_that_number(holds, value, text, number):
    assert holds({"v": {"eq": text}}, ev(v=value))
    assert holds({"v": {"is_any": [text]}}, ev(v=[value]))
    assert not holds({"v": {"neq": text}}, ev(v=value))
    if number is None:
        assert not holds({"v": {"gt": -1}}, ev(v=value))
        assert not holds({"v": {"lte": 0}}, ev(v=value))
        return
    assert holds({"v": {"gte": number}}, ev(v=value)) and holds({"v": {"lte": number}}, ev(v=value))
    assert not holds({"v": {"gt": number}}, ev(v=value)) and not holds({"v": {"lt": number}}, ev(v=value))
    assert holds({"v": {"eq": number}}, ev(v=value))


@pytest.mark.parametrize("value, text", [
    (Decimal("NaN"), "nan"), (Decimal("-NaN"), "nan"), (Decimal("sNaN"), "nan"),
    (Decimal("Infinity"), "inf"), (Decimal("-Infinity"), "-inf"),
    (Decimal("1E+999999999"), None),  # more digits than Python writes an int: no text (nor number)
    (Decimal("1" * 400 + ".5"), None),  # a fraction past a double: neither
])
def test_a_decimal_that_is_no_number_reads_as_a_float_that_is_none(holds, value, text):
    """NaN and the infinities as float's (text, no number); nothing past what is written."""
    assert not holds({"v": {"gt": 0}}, ev(v=value)) and not holds({"v": {"lte": 0}}, ev(v=value))
    assert not holds({"v": {"eq": 0}}, ev(v=value))
    if text is None:
        assert not holds({"v": {"contains": ""}}, ev(v=value))
        assert holds({"v": {"exists": True}}, ev(v=value))
    else:
        assert holds({"v": {"eq": text}}, ev(v=value))


@pytest.mark.parametrize("pixel_id, found", [
    (1234.0, True), (Decimal("1234"), True), (Decimal("1.234E+3"), True), (Decimal("1234.00"), True),
    (1234.5, False), (Decimal("1234.5"), False), (float("nan"), False), (float("inf"), False),
    (Decimal("NaN"), False), (Decimal("Infinity"), False), (1234, True), ("1234", True), ("1234.0", False),
])
def test_an_integral_float_or_decimal_pixel_id_is_its_integer(match_all, pixel_id, found):
    """A number that is an integer is the pixel of that integer's text (as action specs read
    174829001234.0); a fraction, NaN or an infinity finds only unscoped rules."""
    rules = {"scoped": {"event": "Lead"}, "unscoped": {"event": "Lead"}}
    expected = ["scoped", "unscoped"] if found else ["unscoped"]
    assert match_all(rules, [{"event": "Lead", "pixel_id": pixel_id}], {"scoped": "1234"}) == [expected]


def test_integral_float_pixel_ids_past_64_bits_and_zero(match_all):
    sources = {"big": "9223372036854775808", "zero": "0", "e20": "100000000000000000000", "neg": "-9223372036854775808"}
    rules = {rule_id: {"event": "Lead"} for rule_id in sources}
    events = [{"event": "Lead", "pixel_id": p} for p in (2.0**63, -0.0, 1e20, -2.0**63, Decimal("1E+20"), 2.0**64)]
    assert match_all(rules, events, sources) == [["big"], ["zero"], ["e20"], ["neg"], ["e20"], []]


class _Whole(float):
    """A float subclass whose own is_integer, __int__ and __repr__ are not its value's."""

    def is_integer(self):
        return True

    def __int__(self):
        return 7

    def __repr__(self):
        return "whole"


@pytest.mark.parametrize("pixel_id, key", [
    (-0.0, "0"), (0.0, "0"), (1e20, "100000000000000000000"), (2.0**53, "9007199254740992"),
    (2.0**53 + 2, "9007199254740994"), (-2.0**63, "-9223372036854775808"),
    (1.7976931348623157e308, str(2**1024 - 2**971)),  # the largest double, all 309 digits
    (0.1, None), (5e-324, None), (1234.5, None), (float("inf"), None), (float("-inf"), None), (float("nan"), None),
    (_Whole(12.0), "12"), (_Whole(0.5), None),
])
def test_a_float_pixel_id_is_the_number_text_of_an_integral_float(pixel_id, key):
    """An integral float's id is its ``number_text`` (the text an item of it has), its int's
    digits; no other float is an id; a subclass is its value (its own methods decide nothing)."""
    import numpy as np

    from matcher.values import number_text, source_key

    assert source_key(pixel_id) == key
    assert source_key(np.float64(pixel_id)) == key
    if key is not None:
        assert key == number_text(pixel_id) == str(int(float.__float__(pixel_id)))
