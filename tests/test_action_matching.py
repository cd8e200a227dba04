"""Matching semantics of action specs, run against every implementation.

Each behavioural test runs three times through the ``action_set`` fixture: the compiled kernel,
its pure-Python twin, and the reference matcher applied ad by ad.  The guard test at the end
fails when the compiled kernel silently did not load.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import pytest

import matcher
from matcher import _actionset, _actionset_py
from matcher.action_reference import action_matches, matching_spec_indices, spec_matches
from matcher.actionspecs import META_SPECS, parse_ads, parse_action_specs
from tests.conftest import ACTION_SETS, FrozenMapping as FrozenAction, _actionset_c, pick_action_set


class ReferenceSet:
    """The reference matcher over many ads, with the compiled set's API."""

    def __init__(self, ads, *, max_length=4096):
        self._ads = parse_ads(ads, max_length=max_length)
        self._max_length = max_length

    @property
    def ids(self):
        return tuple(ad_id for ad_id, _ in self._ads)

    def match_detail(self, action):
        found = []
        for ad_id, specs in self._ads:
            indices = matching_spec_indices(specs, action)
            if indices:
                found.append((ad_id, indices[0]))
        return found

    def match(self, action):
        return [ad_id for ad_id, specs in self._ads if action_matches(specs, action)]

    def match_batch(self, actions):
        return [self.match(_checked(action, i)) for i, action in enumerate(actions)]

    def match_batch_detail(self, actions):
        return [self.match_detail(_checked(action, i)) for i, action in enumerate(actions)]

    def with_changes(self, add=None, remove=()):
        new = object.__new__(ReferenceSet)
        new._max_length = self._max_length
        new._ads = _actionset_py._apply_changes(self._ads, add, remove, self._max_length)
        return new


def _checked(action, index):
    if not isinstance(action, Mapping):
        raise TypeError(f"actions[{index}]: an action must be a mapping")
    return action


IMPLEMENTATIONS = {**ACTION_SETS, "reference": ReferenceSet}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def action_set(request):
    """A factory ``ads -> compiled set`` for one implementation."""
    return pick_action_set(IMPLEMENTATIONS, request.param)


def matches(action_set, specs, action) -> bool:
    """Whether one ad with ``specs`` is reported for ``action``."""
    return action_set({"ad": specs}).match(action) == ["ad"]


# -- OR within a key, AND across keys ----------------------------------------------------------


def test_or_within_a_selector(action_set):
    spec = {"action.type": "like", "page": ["P1", "P2"]}
    assert matches(action_set, spec, {"action.type": "like", "page": "P2"})
    assert not matches(action_set, spec, {"action.type": "like", "page": "P3"})


def test_and_across_selectors(action_set):
    spec = {"action.type": "comment", "post": "PO1", "post.wall": "P1"}
    assert matches(action_set, spec, {"action.type": "comment", "post": "PO1", "post.wall": "P1"})
    assert not matches(action_set, spec, {"action.type": "comment", "post": "PO1", "post.wall": "P2"})
    assert not matches(action_set, spec, {"action.type": "comment", "post": "PO1"})


def test_unnamed_selectors_are_free(action_set):
    spec = {"action.type": "like", "page": "P1"}
    action = {"action.type": "like", "page": "P1", "post": "X", "anything.else": "Y"}
    assert matches(action_set, spec, action)


def test_type_must_match_and_types_are_or(action_set):
    spec = {"action.type": ["like", "comment"], "page": "P1"}
    assert matches(action_set, spec, {"action.type": "comment", "page": "P1"})
    assert not matches(action_set, spec, {"action.type": "share", "page": "P1"})
    assert not matches(action_set, spec, {"page": "P1"})


def test_string_and_array_notation_match_the_same(action_set):
    action = {"action.type": "app_install", "application": "APP1"}
    assert matches(action_set, {"action.type": "app_install", "application": "APP1"}, action)
    assert matches(action_set, {"action.type": ["app_install"], "application": ["APP1"]}, action)


# -- meta specs ------------------------------------------------------------------------------


@pytest.mark.parametrize("action_type", sorted(META_SPECS["page_engagement"]))
def test_page_engagement_covers(action_set, action_type):
    spec = {"action.type": "page_engagement", "page": "P1"}
    assert matches(action_set, spec, {"action.type": action_type, "page": "P1"})
    assert not matches(action_set, spec, {"action.type": action_type, "page": "P2"})


@pytest.mark.parametrize("action_type", sorted(META_SPECS["post_engagement"]))
def test_post_engagement_covers(action_set, action_type):
    spec = {"action.type": "post_engagement", "post": "PO1", "page": "P1"}
    assert matches(action_set, spec, {"action.type": action_type, "post": "PO1", "page": "P1"})
    assert not matches(action_set, spec, {"action.type": action_type, "post": "PO2", "page": "P1"})


@pytest.mark.parametrize("action_type", ["app_story", "app_use", "app_install", "credit_spent"])
def test_app_engagement_covers(action_set, action_type):
    spec = {"action.type": ["app_engagement"], "application": ["A1"]}
    assert matches(action_set, spec, {"action.type": action_type, "application": "A1"})


@pytest.mark.parametrize(
    ("meta", "outside"),
    [
        ("page_engagement", ["rsvp", "receive_offer", "tab_view", "app_install", "page_engagement"]),
        ("post_engagement", ["checkin", "mention", "post", "rsvp", "post_engagement"]),
        ("app_engagement", ["app_custom_event", "like", "mobile_app_install", "app_engagement"]),
    ],
)
def test_meta_specs_cover_nothing_else(action_set, meta, outside):
    spec = {"action.type": meta, "page": "P1", "post": "PO1", "application": "A1"}
    for action_type in outside:
        action = {"action.type": action_type, "page": "P1", "post": "PO1", "application": "A1"}
        assert not matches(action_set, spec, action), action_type


def test_meta_and_plain_types_mix(action_set):
    spec = {"action.type": ["app_engagement", "app_custom_event"], "application": "A1"}
    assert matches(action_set, spec, {"action.type": "app_custom_event", "application": "A1"})
    assert matches(action_set, spec, {"action.type": "credit_spent", "application": "A1"})


# -- rsvp ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("response", "counted"), [("yes", True), ("maybe", True), ("no", False)])
def test_rsvp_without_response_counts_yes_and_maybe(action_set, response, counted):
    spec = {"action.type": "rsvp", "event": "E1"}
    action = {"action.type": "rsvp", "event": "E1", "response": response}
    assert matches(action_set, spec, action) is counted


def test_rsvp_action_without_response_is_not_counted_by_default(action_set):
    assert not matches(action_set, {"action.type": "rsvp", "event": "E1"},
                       {"action.type": "rsvp", "event": "E1"})


def test_rsvp_with_explicit_response(action_set):
    spec = {"action.type": "rsvp", "response": "no", "event": "E1"}
    assert matches(action_set, spec, {"action.type": "rsvp", "event": "E1", "response": "no"})
    assert not matches(action_set, spec, {"action.type": "rsvp", "event": "E1", "response": "yes"})
    every = {"action.type": "rsvp", "response": ["yes", "maybe", "no"], "event": "E1"}
    assert matches(action_set, every, {"action.type": "rsvp", "event": "E1", "response": "no"})


def test_rsvp_default_only_applies_to_rsvp_actions(action_set):
    spec = {"action.type": ["rsvp", "like"], "event": "E1"}
    assert matches(action_set, spec, {"action.type": "like", "event": "E1"})
    assert not matches(action_set, spec, {"action.type": "rsvp", "event": "E1", "response": "no"})


# -- custom Open Graph types and seed 001's examples ----------------------------------------


def test_namespaced_verb_with_application(action_set):
    spec = {"action.type": ["flightsim:fly"], "application": [174829001234]}
    assert matches(action_set, spec, {"action.type": "flightsim:fly", "application": "174829001234"})
    assert matches(action_set, spec, {"action.type": "flightsim:fly", "application": 174829001234})
    assert not matches(action_set, spec, {"action.type": "flightsim:land", "application": "174829001234"})


def test_integers_of_other_types_are_their_decimal_text(action_set):
    """Actions built from numpy or pandas data hold numpy.int64 and the like: the int they
    are, as rules read them (they once matched nothing, and specs refused them)."""
    import numpy as np

    spec = {"action.type": ["flightsim:fly"], "application": [np.int64(174829001234)]}
    assert parse_action_specs(spec)[0].values("application") == ("174829001234",)
    assert matches(action_set, spec, {"action.type": "flightsim:fly", "application": np.int64(174829001234)})
    assert matches(action_set, spec, {"action.type": "flightsim:fly", "application": np.uint64(174829001234)})
    assert not matches(action_set, spec, {"action.type": "flightsim:fly", "application": np.int64(1)})
    flag = {"action.type": ["flightsim:fly"], "application": ["1"]}
    assert not matches(action_set, flag, {"action.type": "flightsim:fly", "application": np.bool_(True)})


def test_open_graph_object_selector(action_set):
    spec = {"action.type": ["flightsim:fly"], "plane": [68764758347]}
    assert matches(action_set, spec, {"action.type": "flightsim:fly", "plane": "68764758347"})
    assert not matches(action_set, spec, {"action.type": "flightsim:fly", "plane": "1"})


def test_many_types_objects_and_apps(action_set):
    spec = {
        "action.type": ["flightsim:fly", "flightsim:land", "flightsim:crash"],
        "plane": [68764758347, 68764712345, 68764723424],
        "application": [174829001234, 174829001234],
    }
    hit = {"action.type": "flightsim:crash", "plane": 68764712345, "application": "174829001234"}
    assert matches(action_set, spec, hit)
    assert not matches(action_set, spec, {**hit, "application": "1"})
    assert not matches(action_set, spec, {**hit, "plane": "68764758348"})


def test_seed_001_measurement_examples(action_set):
    ads = {
        "installs": {"action.type": "app_install", "application": 12345},
        "post_likes": {"action.type": "like", "post": "456", "post.wall": "123"},
        "page_likes": {"action.type": "like", "page": "123"},
        "page_likes_array": {"action.type": ["like"], "page": "123"},
        "listens": {"action.type": "music.listens", "application": "777"},
    }
    compiled = action_set(ads)
    assert compiled.match({"action.type": "app_install", "application": "12345"}) == ["installs"]
    assert compiled.match({"action.type": "like", "post": "456", "post.wall": "123", "page": "123"}) == [
        "post_likes", "page_likes", "page_likes_array"]
    assert compiled.match({"action.type": "like", "page": "123"}) == ["page_likes", "page_likes_array"]
    assert compiled.match({"action.type": "music.listens", "application": 777}) == ["listens"]


# -- seed 000's custom tracking spec table ---------------------------------------------------

CUSTOM_TABLE_CASES = [
    # (spec, matching action, non-matching action)
    ({"action.type": "app_custom_event", "application": "A1"},
     {"action.type": "app_custom_event", "application": "A1", "event_name": "x"},
     {"action.type": "app_custom_event", "application": "A2"}),
    ({"action.type": "app_install", "application": "A1"},
     {"action.type": "app_install", "application": "A1"},
     {"action.type": "app_use", "application": "A1"}),
    ({"action.type": "app_use", "application": "A1"},
     {"action.type": "app_use", "application": "A1"},
     {"action.type": "app_use", "application": "A9"}),
    ({"action.type": "checkin", "page": "P1"},
     {"action.type": "checkin", "page": "P1"},
     {"action.type": "checkin", "page": "P2"}),
    ({"action.type": "checkin", "page.parent": "P1"},
     {"action.type": "checkin", "page": "P7", "page.parent": "P1"},
     {"action.type": "checkin", "page": "P1"}),
    ({"action.type": "comment", "post": "PO1", "post.wall": "P1"},
     {"action.type": "comment", "post": "PO1", "post.wall": "P1"},
     {"action.type": "comment", "post": "PO2", "post.wall": "P1"}),
    ({"action.type": "credit_spent", "application": "A1"},
     {"action.type": "credit_spent", "application": "A1"},
     {"action.type": "credit_spent"}),
    ({"action.type": "vote", "question": "Q1", "question.creator": "P1"},
     {"action.type": "vote", "question": "Q1", "question.creator": "P1"},
     {"action.type": "follow", "question": "Q1", "question.creator": "P1"}),
    ({"action.type": "follow", "question": "Q1", "question.creator": "P1"},
     {"action.type": "follow", "question": "Q1", "question.creator": "P1"},
     {"action.type": "follow", "question": "Q1", "question.creator": "P2"}),
    ({"action.type": "leadgen_quality_conversion", "fb_pixel": "PX1"},
     {"action.type": "leadgen_quality_conversion", "fb_pixel": "PX1"},
     {"action.type": "offsite_conversion", "fb_pixel": "PX1"}),
    ({"action.type": "leadgen_quality_conversion", "dataset": "OES1"},
     {"action.type": "leadgen_quality_conversion", "dataset": "OES1"},
     {"action.type": "leadgen_quality_conversion", "fb_pixel": "OES1"}),
    ({"action.type": "like", "page": "P1"},
     {"action.type": "like", "page": "P1"},
     {"action.type": "like", "post": "P1"}),
    ({"action.type": "like", "post": "PO1", "post.wall": "P1"},
     {"action.type": "like", "post": "PO1", "post.wall": "P1"},
     {"action.type": "like", "post": "PO1"}),
    ({"action.type": "link_click", "object": "https://example.com/"},
     {"action.type": "link_click", "object": "https://example.com/"},
     {"action.type": "link_click", "object": "https://example.com"}),
    ({"action.type": "link_click", "object.domain": "example.com"},
     {"action.type": "link_click", "object": "https://example.com/a", "object.domain": "example.com"},
     {"action.type": "link_click", "object.domain": "other.com"}),
    ({"action.type": "link_click", "post.wall": "P1"},
     {"action.type": "link_click", "post": "PO1", "post.wall": "P1"},
     {"action.type": "link_click", "post.wall": "P2"}),
    ({"action.type": "mention", "page": "P1"},
     {"action.type": "mention", "page": "P1"},
     {"action.type": "mention", "page": "P2"}),
    ({"action.type": "offsite_conversion", "fb_pixel": ["1", "2", "3"]},
     {"action.type": "offsite_conversion", "fb_pixel": "2", "event_name": "Purchase"},
     {"action.type": "offsite_conversion", "fb_pixel": "4"}),
    ({"action.type": "photo_view", "post.wall": "P1"},
     {"action.type": "photo_view", "post": "PO1", "post.wall": "P1"},
     {"action.type": "photo_view", "post": "PO1"}),
    ({"action.type": "photo_view", "post": "PO1", "post.wall": "P1"},
     {"action.type": "photo_view", "post": "PO1", "post.wall": "P1"},
     {"action.type": "photo_view", "post": "PO2", "post.wall": "P1"}),
    ({"action.type": "post", "page": "P1"},
     {"action.type": "post", "page": "P1"},
     {"action.type": "share", "page": "P1"}),
    ({"action.type": "receive_offer", "offer": "O1", "offer.creator": "P1"},
     {"action.type": "receive_offer", "offer": "O1", "offer.creator": "P1"},
     {"action.type": "receive_offer", "offer": "O1", "offer.creator": "P2"}),
    ({"action.type": "tab_view", "page": "P1", "page.tab.name": "shop"},
     {"action.type": "tab_view", "page": "P1", "page.tab.name": "shop"},
     {"action.type": "tab_view", "page": "P1", "page.tab.name": "about"}),
    ({"action.type": "tab_view", "page": "P1"},
     {"action.type": "tab_view", "page": "P1", "page.tab.name": "about"},
     {"action.type": "tab_view", "page.tab.name": "about"}),
    ({"action.type": "video_play", "post.wall": "P1"},
     {"action.type": "video_play", "post": "PO1", "post.wall": "P1"},
     {"action.type": "video_view", "post.wall": "P1"}),
    ({"action.type": "video_play", "post": "PO1", "post.wall": "P1"},
     {"action.type": "video_play", "post": "PO1", "post.wall": "P1"},
     {"action.type": "video_play", "post": "PO1", "post.wall": "P9"}),
]


@pytest.mark.parametrize(("spec", "hit", "miss"), CUSTOM_TABLE_CASES)
def test_custom_tracking_spec_table(action_set, spec, hit, miss):
    assert matches(action_set, spec, hit)
    assert not matches(action_set, spec, miss)


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["42", 42, 42.0])
def test_numbers_are_their_decimal_text(action_set, value):
    assert matches(action_set, {"action.type": "like", "page": 42}, {"action.type": "like", "page": value})
    assert matches(action_set, {"action.type": "like", "page": "42"}, {"action.type": "like", "page": value})


def test_fractional_numbers(action_set):
    assert matches(action_set, {"action.type": "x", "price": 12.5}, {"action.type": "x", "price": "12.5"})
    assert not matches(action_set, {"action.type": "x", "price": 12.5}, {"action.type": "x", "price": 12})


@pytest.mark.parametrize("garbage", [None, True, False, [], ["P1"], {"P1": 1}, float("nan"),
                                     float("inf"), object(), b"P1"])
def test_garbage_action_values_match_nothing(action_set, garbage):
    spec = {"action.type": "like", "page": "P1"}
    assert not matches(action_set, spec, {"action.type": "like", "page": garbage})
    assert not matches(action_set, spec, {"action.type": garbage, "page": "P1"})


def test_true_is_not_one(action_set):
    assert not matches(action_set, {"action.type": "x", "n": 1}, {"action.type": "x", "n": True})


def test_values_are_case_and_space_sensitive(action_set):
    spec = {"action.type": "like", "page": "Page"}
    assert not matches(action_set, spec, {"action.type": "like", "page": "page"})
    assert not matches(action_set, spec, {"action.type": "like", "page": "Page "})
    assert not matches(action_set, spec, {"action.type": "Like", "page": "Page"})


def test_non_string_keys_are_ignored(action_set):
    compiled = action_set({"ad": {"action.type": "like", "page": "P1"}})
    assert compiled.match({"action.type": "like", "page": "P1", 7: "x", None: "y"}) == ["ad"]


def test_any_mapping_is_an_action(action_set):
    compiled = action_set({"ad": {"action.type": "like", "page": "P1"}})
    assert compiled.match(FrozenAction({"action.type": "like", "page": "P1"})) == ["ad"]


@pytest.mark.parametrize("not_an_action", [None, "like", 7, ["action.type", "like"], (("a", "b"),)])
def test_non_mapping_action_is_a_type_error(action_set, not_an_action):
    compiled = action_set({"ad": {"action.type": "like", "page": "P1"}})
    with pytest.raises(TypeError, match="mapping"):
        compiled.match(not_an_action)
    with pytest.raises(TypeError, match=r"actions\[1\]"):
        compiled.match_batch([{"action.type": "like", "page": "P1"}, not_an_action])


# -- many ads --------------------------------------------------------------------------------


def test_ids_in_the_order_given(action_set):
    spec = {"action.type": "like", "page": "P1"}
    compiled = action_set({"z": spec, "a": spec, "m": [{"action.type": "share", "page": "P1"}, spec]})
    assert compiled.match({"action.type": "like", "page": "P1"}) == ["z", "a", "m"]
    assert compiled.match_detail({"action.type": "like", "page": "P1"}) == [("z", 0), ("a", 0), ("m", 1)]


def test_detail_reports_the_first_matching_spec_once(action_set):
    specs = [
        {"action.type": "comment", "page": "P2"},
        {"action.type": "post_engagement", "post": "PO1", "page": "P1"},
        {"action.type": "page_engagement", "page": "P1"},
        {"action.type": "comment", "post": "PO1"},
    ]
    compiled = action_set({"ad": specs})
    assert compiled.match_detail({"action.type": "comment", "post": "PO1", "page": "P1"}) == [("ad", 1)]
    assert compiled.match_detail({"action.type": "checkin", "page": "P1"}) == [("ad", 2)]
    assert compiled.match({"action.type": "comment", "post": "PO1", "page": "P1"}) == ["ad"]


def test_batch_equals_single_matches(action_set):
    ads = {
        "post": {"action.type": "post_engagement", "post": "PO1", "page": "P1"},
        "page": {"action.type": "page_engagement", "page": "P1"},
        "pixel": [{"action.type": "offsite_conversion", "fb_pixel": "PX"}],
        "event": {"action.type": "rsvp", "event": "E1"},
    }
    actions = [
        {"action.type": "comment", "post": "PO1", "page": "P1"},
        {"action.type": "checkin", "page": "P1"},
        {"action.type": "offsite_conversion", "fb_pixel": "PX"},
        {"action.type": "rsvp", "event": "E1", "response": "maybe"},
        {"action.type": "rsvp", "event": "E1", "response": "no"},
        {},
        {"action.type": "unknown_type", "page": "P1"},
    ]
    compiled = action_set(ads)
    expected = [["post", "page"], ["page"], ["pixel"], ["event"], [], [], []]
    assert compiled.match_batch(actions) == expected
    assert [compiled.match(a) for a in actions] == expected
    assert compiled.match_batch_detail(actions) == [[(i, 0) for i in row] for row in expected]
    assert compiled.match_batch([]) == []
    assert compiled.match_batch(iter(actions)) == expected


def test_empty_set(action_set):
    compiled = action_set({})
    assert compiled.match({"action.type": "like", "page": "P1"}) == []
    assert compiled.match_batch([{"action.type": "like"}]) == [[]]


def test_ads_given_as_json_text(action_set):
    compiled = action_set({"ad": '[{"action.type":"like","page":"P1"},{"action.type":"rsvp","event":7}]'})
    assert compiled.match_detail({"action.type": "rsvp", "event": "7", "response": "yes"}) == [("ad", 1)]


def test_bad_specs_name_the_ad(action_set):
    with pytest.raises(matcher.SpecError, match=r'ads\["ad2"\]\[1\]\.response'):
        action_set({"ad1": {"action.type": "like", "page": "P"},
                    "ad2": [{"action.type": "like", "page": "P"},
                            {"action.type": "rsvp", "event": "E", "response": "perhaps"}]})
    with pytest.raises(matcher.SpecError, match=r"ad id"):
        action_set({7: {"action.type": "like", "page": "P"}})
    with pytest.raises(TypeError):
        action_set([("ad", {"action.type": "like", "page": "P"})])


def test_length_limit_is_configurable(action_set):
    spec = {"action.type": "like", "page": ["P" * 50 + str(i) for i in range(10)]}
    action_set({"ad": spec})
    with pytest.raises(matcher.SpecError, match="limit of 100"):
        action_set({"ad": spec}, max_length=100)


# -- snapshots -------------------------------------------------------------------------------


def test_with_changes_builds_a_new_set(action_set):
    like = {"action.type": "like", "page": "P1"}
    old = action_set({"a": like, "b": like, "c": {"action.type": "share", "page": "P1"}})
    action = {"action.type": "like", "page": "P1"}
    new = old.with_changes(
        add={"b": {"action.type": "share", "page": "P1"}, "d": like, "a": like},
        remove=["c", "never-there"],
    )
    assert old.match(action) == ["a", "b"]
    assert new.match(action) == ["a", "d"]
    assert new.match({"action.type": "share", "page": "P1"}) == ["b"]
    assert old.match({"action.type": "share", "page": "P1"}) == ["c"]
    assert new.ids == ("a", "b", "d")
    readded = new.with_changes(add={"a": like}, remove=["a"])
    assert readded.ids == ("b", "d", "a")
    assert readded.match(action) == ["d", "a"]


def test_with_changes_validates(action_set):
    old = action_set({"a": {"action.type": "like", "page": "P1"}})
    with pytest.raises(matcher.SpecError, match=r'ads\["x"\]'):
        old.with_changes(add={"x": {"action.type": "like"}})
    with pytest.raises(TypeError, match="single string"):
        old.with_changes(remove="a")
    assert old.match({"action.type": "like", "page": "P1"}) == ["a"]


def test_concurrent_readers_agree(action_set):
    ads = {f"ad{i}": {"action.type": "page_engagement", "page": f"P{i % 7}"} for i in range(200)}
    compiled = action_set(ads)
    actions = [{"action.type": "like", "page": f"P{i % 9}"} for i in range(300)]
    expected = compiled.match_batch(actions)
    results = [None] * 4

    def read(slot):
        results[slot] = compiled.match_batch(actions)

    threads = [threading.Thread(target=read, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


# -- the reference's own helpers and the package API ----------------------------------------


def test_reference_helpers():
    specs = parse_action_specs([{"action.type": "like", "page": "P1"},
                                {"action.type": "page_engagement", "page": "P1"}])
    action = {"action.type": "like", "page": "P1"}
    assert matching_spec_indices(specs, action) == [0, 1]
    assert spec_matches(specs[1], action)
    assert action_matches('{"action.type": "like", "page": "P1"}', action)
    assert matcher.action_matches([{"action.type": "share", "page": "P1"}], action) is False
    with pytest.raises(TypeError):
        action_matches(specs, None)


def test_package_api():
    compiled = matcher.compile_action_specs({"ad1": [{"action.type": "like", "page": "P1"}]})
    assert compiled.match({"action.type": "like", "page": "P1"}) == ["ad1"]
    assert len(compiled) == 1 and "ad1" in compiled and compiled.ids == ("ad1",)
    assert compiled.specs("ad1") == tuple(parse_action_specs({"action.type": "like", "page": "P1"}))
    with pytest.raises(KeyError):
        compiled.specs("nope")
    assert isinstance(compiled, matcher.ActionSpecSet)


def test_compiled_kernel_loaded():
    """Guard: the compiled kernel must be what runs, unless the twin is forced."""
    if os.environ.get("MATCHER_NO_EXTENSIONS", "") not in ("", "0"):
        assert _actionset.USING_EXTENSION is False
        return
    assert _actionset_c is not None, "matcher._actionset_c did not import: build it"
    assert _actionset.USING_EXTENSION is True
    assert matcher.ActionSpecSet is _actionset_c.ActionSpecSet
