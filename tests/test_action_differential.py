"""Differential tests: compiled set == pure-Python twin == reference, on random specs and actions.

Generators draw from small pools of types, selectors and values so that random actions often
hit random specs (and often just miss them), including meta types, ``rsvp`` with and without
``response``, numbers written as ints, floats and text, and action values no spec allows.
"""

from __future__ import annotations

import random
from array import array
from collections import UserDict
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher import _actionset_py
from matcher.actionspecs import META_SPECS
from tests.conftest import _actionset_c
from tests.test_action_matching import IMPLEMENTATIONS, ReferenceSet

CONCRETE_TYPES = ["like", "comment", "share", "checkin", "rsvp", "link_click", "app_install",
                  "app_use", "offsite_conversion", "flightsim:fly", "music.listens"]
TYPES = CONCRETE_TYPES + sorted(META_SPECS)
SELECTORS = ["page", "post", "post.wall", "application", "event", "fb_pixel", "plane"]
RESPONSES = ["yes", "maybe", "no"]

text_values = st.sampled_from(["P1", "P2", "P3", "PO1", "PO2", "A1", "10", "11", "12.5"])
number_values = st.sampled_from([10, 11, 10.0, 12.5])
spec_values = st.one_of(text_values, number_values)


def one_or_many(values):
    return st.one_of(values, st.lists(values, min_size=1, max_size=3))


@st.composite
def specs(draw):
    spec = {"action.type": draw(one_or_many(st.sampled_from(TYPES)))}
    selectors = draw(st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=3, unique=True))
    for selector in selectors:
        spec[selector] = draw(one_or_many(spec_values))
    if draw(st.booleans()) and draw(st.booleans()):
        spec["response"] = draw(one_or_many(st.sampled_from(RESPONSES)))
    return spec


garbage = st.sampled_from([None, True, [], {"x": 1}, float("nan"), "", "p1"])
action_values = st.one_of(text_values, number_values, garbage)


@st.composite
def actions(draw):
    action = {}
    if draw(st.integers(0, 9)):
        action["action.type"] = draw(st.one_of(st.sampled_from(CONCRETE_TYPES + ["vote"]), garbage))
    for selector in draw(st.lists(st.sampled_from(SELECTORS + ["response", "other"]), max_size=4,
                                  unique=True)):
        if selector == "response" and draw(st.booleans()):
            action[selector] = draw(st.sampled_from(RESPONSES))
        else:
            action[selector] = draw(action_values)
    return action


@st.composite
def actions_near(draw, the_ads):
    """An action built to satisfy one of ``the_ads``' specs, then often perturbed a little:
    random actions alone rarely line up a type, several selectors and an rsvp response."""
    if not the_ads:
        return draw(actions())
    specs = draw(st.sampled_from(sorted(the_ads.items())))[1]
    spec = draw(st.sampled_from(specs)) if isinstance(specs, list) else specs
    types = spec["action.type"] if isinstance(spec["action.type"], list) else [spec["action.type"]]
    concrete = sorted(set().union(*(META_SPECS.get(t, {t}) for t in types)))
    action = {"action.type": draw(st.sampled_from(concrete))}
    for key, value in spec.items():
        if key != "action.type":
            action[key] = draw(st.sampled_from(value)) if isinstance(value, list) else value
    if action["action.type"] == "rsvp" and "response" not in action:
        action["response"] = draw(st.sampled_from(RESPONSES + [None]))
    perturbation = draw(st.integers(0, 4))
    if perturbation == 1 and len(action) > 1:  # drop a selector
        del action[draw(st.sampled_from(sorted(k for k in action if k != "action.type")))]
    elif perturbation == 2:  # change a value
        key = draw(st.sampled_from(sorted(action)))
        action[key] = draw(action_values)
    elif perturbation == 3:  # numbers in another form
        action = {k: (float(v) if isinstance(v, int) else str(v) if isinstance(v, float) else v)
                  for k, v in action.items()}
    return action


ads = st.dictionaries(
    st.text(alphabet="abcdefgh", min_size=1, max_size=4),
    st.one_of(specs(), st.lists(specs(), min_size=1, max_size=4)),
    max_size=12,
)


def implementations():
    built = [factory for factory in IMPLEMENTATIONS.values() if factory is not None]
    assert _actionset_c is None or len(built) == 3
    return built


def expected_columns(ids, rows):
    """``match_columns_detail``'s answer, from ``match_batch_detail``'s rows."""
    index_of = {ad_id: index for index, ad_id in enumerate(ids)}
    return (array("i", [len(row) for row in rows]),
            array("i", [index_of[ad] for row in rows for ad, _ in row]),
            array("i", [spec for row in rows for _, spec in row]))


def assert_agree(the_ads, the_actions, singles=None):
    """Every implementation gives the reference's answers; ``singles`` caps how many actions
    are also matched one by one (``match``/``match_detail``)."""
    *others, reference = [factory(the_ads) for factory in implementations()]
    expected = reference.match_batch_detail(the_actions)
    columns = expected_columns(reference.ids, expected)
    for compiled in others:
        assert compiled.match_batch_detail(the_actions) == expected, type(compiled)
        assert compiled.match_batch(the_actions) == [[ad for ad, _ in row] for row in expected]
        assert compiled.match_columns_detail(the_actions) == columns, type(compiled)
        assert compiled.match_columns(the_actions) == columns[:2], type(compiled)
    for compiled in [*others, reference]:
        for action, row in list(zip(the_actions, expected))[:singles]:
            assert compiled.match_detail(action) == row
            assert compiled.match(action) == [ad for ad, _ in row]
    return expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ads, st.data())
def test_implementations_agree(the_ads, data):
    the_actions = data.draw(st.lists(st.one_of(actions(), actions_near(the_ads)), max_size=20))
    assert_agree(the_ads, the_actions)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ads, ads, st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=4), max_size=6),
       st.lists(actions(), min_size=1, max_size=10))
def test_with_changes_equals_a_fresh_build(before, added, removed, the_actions):
    expected_ads = {ad_id: specs for ad_id, specs in before.items() if ad_id not in removed}
    for ad_id, specs in added.items():
        expected_ads[ad_id] = specs
    for factory in implementations():
        changed = factory(before).with_changes(add=added, remove=removed)
        fresh = factory(expected_ads)
        assert changed.ids == fresh.ids
        assert changed.match_batch_detail(the_actions) == fresh.match_batch_detail(the_actions)
        if hasattr(changed, "match_columns_detail"):  # the reference has no columnar form
            assert changed.match_columns_detail(the_actions) == fresh.match_columns_detail(the_actions)


@st.composite
def many_ads(draw, counts):
    """Thousands of ads from a seed: shapes like real ads, values from shared skewed pools."""
    count = draw(counts)
    # One drawn seed drives the bulk: drawing each of ~10,000 choices from Hypothesis would
    # overflow its input buffer, and shrinking thousands of ads is not useful anyway.
    rng = random.Random(draw(st.integers(0, 2**32)))
    pages = [f"P{i}" for i in range(200)]
    result = {}
    for index in range(count):
        page = pages[int(len(pages) * rng.random() ** 2)]
        post = f"PO{rng.randrange(3000)}"
        shape = rng.randrange(5)
        if shape == 0:
            specs = [{"action.type": "post_engagement", "post": post, "page": page},
                     {"action.type": "page_engagement", "page": page}]
        elif shape == 1:
            specs = [{"action.type": "offsite_conversion", "fb_pixel": rng.randrange(50)},
                     {"action.type": "like", "page": [page, rng.choice(pages)]}]
        elif shape == 2:
            specs = [{"action.type": "rsvp", "event": f"E{rng.randrange(100)}"},
                     {"action.type": ["rsvp", "like"], "event": f"E{rng.randrange(100)}",
                      "response": rng.choice(RESPONSES)}]
        elif shape == 3:
            specs = [{"action.type": rng.choice(TYPES), rng.choice(SELECTORS): rng.choice(pages + [post]),
                      rng.choice(SELECTORS): [rng.choice(pages), post]}]
        else:
            specs = [{"action.type": ["app_engagement", "app_custom_event"],
                      "application": rng.randrange(300)}]
        result[f"ad{index}"] = specs
    return result, pages


@st.composite
def many_ads_and_actions(draw, ad_counts, action_count):
    the_ads, pages = draw(many_ads(ad_counts))
    rng = random.Random(draw(st.integers(0, 2**32)))
    the_actions = []
    for _ in range(action_count):
        the_actions.append({
            "action.type": rng.choice(CONCRETE_TYPES + ["vote", "photo_view"]),
            "page": rng.choice(pages), "post.wall": rng.choice(pages),
            "post": f"PO{rng.randrange(3000)}", "fb_pixel": rng.randrange(60),
            "event": f"E{rng.randrange(120)}", "response": rng.choice(RESPONSES),
            "application": str(rng.randrange(350)),
        } if rng.random() < 0.5 else {
            key: value for key, value in (
                ("action.type", rng.choice(CONCRETE_TYPES)),
                ("page", rng.choice(pages)),
                ("post", f"PO{rng.randrange(3000)}"),
                ("event", f"E{rng.randrange(120)}"),
                ("response", rng.choice(RESPONSES)),
            ) if rng.random() < 0.8
        })
    return the_ads, the_actions


@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(many_ads_and_actions(ad_counts=st.integers(1000, 3000), action_count=200))
def test_thousands_of_ads_in_one_set(case):
    the_ads, the_actions = case
    expected = assert_agree(the_ads, the_actions, singles=20)
    assert sum(map(len, expected)) > 0  # the workload really exercises matching


@pytest.mark.slow
@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(many_ads_and_actions(ad_counts=st.integers(5000, 20000), action_count=500))
def test_tens_of_thousands_of_ads_in_one_set(case):
    the_ads, the_actions = case
    assert sum(map(len, assert_agree(the_ads, the_actions, singles=50))) > 0


def test_reference_adapter_is_the_reference():
    """The reference row in these tests is ``action_matches`` applied ad by ad."""
    from matcher.action_reference import action_matches

    the_ads = {"a": {"action.type": "like", "page": "P1"}, "b": {"action.type": "share", "page": "P1"}}
    action = {"action.type": "like", "page": "P1"}
    assert ReferenceSet(the_ads).match(action) == [
        ad for ad, specs in the_ads.items() if action_matches(specs, action)]
    assert _actionset_py.ActionSpecSet(the_ads).match(action) == ["a"]


class Overriding(dict):
    """A dict subclass whose ``get`` answers other than its storage, as a subclass computing
    values might: the reference reads an action through ``get``, so must every implementation
    (the compiled set once copied such an action with ``dict(action)`` and read the storage)."""

    def __init__(self, stored, shown):
        super().__init__(stored)
        self.shown = shown

    def get(self, key, default=None):
        return self.shown.get(key, default)


MAPPING_KINDS = [Overriding, lambda stored, shown: UserDict(shown), lambda stored, shown: MappingProxyType(shown)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ads, st.data())
def test_any_mapping_is_read_through_get(the_ads, data):
    shown = data.draw(st.lists(st.one_of(actions(), actions_near(the_ads)), max_size=8))
    stored = data.draw(st.lists(actions(), min_size=len(shown), max_size=len(shown)))
    kinds = data.draw(st.lists(st.sampled_from(MAPPING_KINDS), min_size=len(shown), max_size=len(shown)))
    wrapped = [kind(s, h) for kind, s, h in zip(kinds, stored, shown)]
    assert assert_agree(the_ads, wrapped) == assert_agree(the_ads, shown)
