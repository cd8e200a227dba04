"""Hypothesis strategies: valid rules (every operator, nesting, safe regexes) and odd events.

Operands and values are drawn from small overlapping pools so that matches are frequent.
"""

from decimal import Decimal

import numpy as np
from hypothesis import strategies as st

FIELDS = ["url", "URL", "event", "domain", "path", "device_type", "color", "Color", "value", "tags",
          "order.country", "items[*].sku", "items[*].tags", "äpfel", "n"]
TEXTS = ["a", "A", "ab", "thank", "Thank", "1", "10", "1.5", " 10 ", "", "ß", "ẞ", "σ", "Σ", "x.com", "/p",
         "Purchase", "purchase", "true", "\u212a", "k", "-0", "1e1", "é"]
NUMBERS = [0, 1, 1.5, 10, -1, 100, 0.1, 1e20, -0.0]
REGEXES = ["a", "^a", "b$", "(?i)thank", r"\d+", "[a-c]+x?", "a|b", r"x\.com", "^/p", "é", ".", r"^\w+$", "(?i)σ", "1.5"]
URLS = ["https://x.com/p?q=1", "http://Thank.X.com:80/ab", "//user@x.com", "/p/thank", "x.com/a", "ftp://[::1]:21/",
        "https://ß.example/σ#p", "", "not a url", "HTTPS://X.COM"]

texts = st.sampled_from(TEXTS) | st.text(max_size=6)
numbers = st.sampled_from(NUMBERS) | st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False, width=32)
scalars = texts | numbers | st.booleans()
# Events may hold integers of other types, as built from numpy or pandas data: they are numbers.
numpy_integers = st.integers(-1000, 1000).map(np.int64) | st.sampled_from([np.int32(10), np.uint8(1), np.int64(2**62)])


class Code(int):
    """An int subclass with a text of its own (an enum-like code), and a float of its own: rules
    read its value."""

    def __str__(self):
        return f"Code<{int(self)}>"

    def __float__(self):
        return -1.0


class Measure(float):
    """A float subclass with comparisons, a hash, a text and a float of its own (as a unit-aware
    number type might have): rules read its value."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __lt__(self, other):
        return True

    __le__ = __gt__ = __ge__ = __lt__

    def __hash__(self):
        return 7

    def __repr__(self):
        return "Measure"

    __str__ = __repr__

    def __float__(self):
        return -1.0


# Decimals, as batch jobs reading databases hand them: numbers, integers keeping every digit.
DECIMALS = [Decimal("1.5"), Decimal("10.00"), Decimal("1E+1"), Decimal("-0"), Decimal("0.1"), Decimal("1E-7"),
            Decimal("12345678901234567890"), Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), Decimal("1E+400")]
decimals = st.sampled_from(DECIMALS) | st.decimals(allow_nan=True, allow_infinity=True) | st.integers(-1000, 1000).map(Decimal)
event_scalars = (scalars | numpy_integers | decimals | st.integers(-20, 20).map(Code)
                 | st.sampled_from(NUMBERS + [2.0, -1.0]).map(Measure))


def leaves():
    field = st.sampled_from(FIELDS)
    scalar_op = st.tuples(field, st.sampled_from(["eq", "neq", "==", "!="]), scalars)
    string_op = st.tuples(field, st.sampled_from(["contains", "not_contains", "i_contains", "i_not_contains",
                                                  "starts_with", "i_starts_with"]), texts)
    list_op = st.tuples(field, st.sampled_from(["is_any", "is_not_any", "i_is_any", "i_is_not_any", "in"]),
                        st.lists(texts, min_size=1, max_size=3))
    number_op = st.tuples(field, st.sampled_from(["lt", "lte", "gt", "gte", ">="]),
                          numbers | st.sampled_from(["10", " 1.5", "1e1", "-0"]))
    regex_op = st.tuples(field, st.just("regex_match"), st.sampled_from(REGEXES))
    exists_op = st.tuples(field, st.just("exists"), st.booleans())
    ops = scalar_op | string_op | list_op | number_op | regex_op | exists_op
    return ops.map(lambda t: {t[0]: {t[1]: t[2]}}) | st.tuples(field, scalars).map(lambda t: {t[0]: t[1]})


rules = st.recursive(
    leaves(),
    lambda children: (
        st.lists(children, min_size=1, max_size=4).map(lambda c: {"and": c})
        | st.lists(children, min_size=1, max_size=4).map(lambda c: {"or": c})
        | children.map(lambda c: {"not": c})
        | st.lists(children, min_size=1, max_size=3).map(lambda c: {"not": c})
    ),
    max_leaves=12,
)

values = st.recursive(
    event_scalars | st.none(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["country", "sku", "tags", "x"]), inner, max_size=3),
    max_leaves=5,
)
custom_data = st.dictionaries(
    st.sampled_from(["color", "Color", "COLOR", "value", "tags", "order", "items", "Äpfel", "äpfel", "n"]), values, max_size=5,
) | st.just({"order": {"country": "ab"}, "items": [{"sku": "a", "tags": ["x", "thank"]}, {"sku": 10}]}) | st.none() | st.just("odd")

events = st.fixed_dictionaries({}, optional={
    "event": st.sampled_from(["Purchase", "purchase", "Lead", "1e1"]) | texts | st.none() | numbers | numpy_integers
             | decimals,
    "url": st.sampled_from(URLS) | st.text(max_size=12) | st.none() | st.lists(st.sampled_from(URLS), max_size=2),
    "device_type": st.sampled_from(["desktop", "mobile_iphone", "K"]) | st.none(),
    "custom_data": custom_data,
    "pixel_id": st.sampled_from(["P1", "P2", "P3", 1, True, np.int64(1), 1.0, 1.5, float("nan"), Decimal("1.0"),
                                 Decimal("1.5"), Code(1), -0.0, 1e20, float("inf"), -2.0**63]),
})
