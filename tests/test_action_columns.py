"""The columnar answers, ``match_columns`` and ``match_columns_detail``, of the compiled set and
its twin: the same answers as ``match_batch_detail``, as flat ``array('i')`` columns.

(The Hypothesis differential tests in ``test_action_differential.py`` hold both to the
reference on random specs and actions; these are the plain cases and the edges.)
"""

from __future__ import annotations

from array import array

import pytest

from tests.conftest import ACTION_SETS, FrozenMapping as FrozenAction, _actionset_c, pick_action_set

ADS = {
    "post": {"action.type": "post_engagement", "post": "PO1", "page": "P1"},
    "page": [{"action.type": "share", "page": "P2"}, {"action.type": "page_engagement", "page": "P1"}],
    "pixel": {"action.type": "offsite_conversion", "fb_pixel": 1234},
    "event": [{"action.type": "rsvp", "event": "E1"}, {"action.type": "rsvp", "event": "E1", "response": "no"}],
    "many": {"action.type": "like", "page": ["P1", "P2"], "post.wall": ["P1", "P3"]},
}
ACTIONS = [
    {"action.type": "comment", "post": "PO1", "page": "P1"},        # post, page
    {"action.type": "like", "page": "P1", "post.wall": "P3"},       # page, many
    {"action.type": "offsite_conversion", "fb_pixel": "1234"},      # pixel
    {"action.type": "rsvp", "event": "E1", "response": "maybe"},    # event (spec 0)
    {"action.type": "rsvp", "event": "E1", "response": "no"},       # event (spec 1)
    {"action.type": "rsvp", "event": "E1"},                         # nothing: no response
    {},
    {"action.type": "like", "page": "P1", "post.wall": "P2"},       # page only
    {"action.type": "offsite_conversion", "fb_pixel": 1234.0},      # pixel: a number
]
EXPECTED_COUNTS = [2, 2, 1, 1, 1, 0, 0, 1, 1]
EXPECTED_ADS = [0, 1, 1, 4, 2, 3, 3, 1, 2]
EXPECTED_SPECS = [0, 1, 1, 0, 0, 0, 1, 1, 0]

@pytest.fixture(params=list(ACTION_SETS))
def action_set(request):
    return pick_action_set(ACTION_SETS, request.param)


def test_columns_list_counts_then_ad_indexes_in_order(action_set):
    compiled = action_set(ADS)
    counts, ads = compiled.match_columns(ACTIONS)
    assert counts == array("i", EXPECTED_COUNTS)
    assert ads == array("i", EXPECTED_ADS)
    assert compiled.ids == ("post", "page", "pixel", "event", "many")


def test_detail_columns_add_the_first_matching_spec(action_set):
    counts, ads, specs = action_set(ADS).match_columns_detail(ACTIONS)
    assert (counts, ads, specs) == (array("i", EXPECTED_COUNTS), array("i", EXPECTED_ADS),
                                    array("i", EXPECTED_SPECS))


def test_columns_are_the_rows_flattened(action_set):
    compiled = action_set(ADS)
    rows = compiled.match_batch_detail(ACTIONS)
    counts, ads, specs = compiled.match_columns_detail(ACTIONS)
    assert list(counts) == [len(row) for row in rows]
    assert [compiled.ids[ad] for ad in ads] == [ad for row in rows for ad, _ in row]
    assert list(specs) == [spec for row in rows for _, spec in row]


def test_columns_are_int_arrays(action_set):
    columns = action_set(ADS).match_columns_detail(ACTIONS)
    assert all(type(column) is array and column.typecode == "i" for column in columns)
    assert len(action_set(ADS).match_columns(ACTIONS)) == 2


def test_empty_batches_sets_and_iterators(action_set):
    compiled = action_set(ADS)
    assert compiled.match_columns([]) == (array("i"), array("i"))
    assert compiled.match_columns_detail(()) == (array("i"), array("i"), array("i"))
    assert compiled.match_columns(iter(ACTIONS)) == compiled.match_columns(ACTIONS)
    assert compiled.match_columns(tuple(ACTIONS)) == compiled.match_columns(ACTIONS)
    assert action_set({}).match_columns(ACTIONS) == (array("i", [0] * len(ACTIONS)), array("i"))


def test_any_mapping_is_an_action(action_set):
    compiled = action_set(ADS)
    assert compiled.match_columns([FrozenAction(a) for a in ACTIONS]) == compiled.match_columns(ACTIONS)


@pytest.mark.parametrize("not_an_action", [None, "like", 7, ["action.type", "like"]])
def test_non_mapping_action_is_a_type_error(action_set, not_an_action):
    compiled = action_set(ADS)
    with pytest.raises(TypeError, match=r"actions\[1\]"):
        compiled.match_columns([ACTIONS[0], not_an_action])
    with pytest.raises(TypeError, match=r"actions\[1\]"):
        compiled.match_columns_detail([ACTIONS[0], not_an_action])


def test_columns_after_with_changes(action_set):
    old = action_set(ADS)
    new = old.with_changes(add={"late": {"action.type": "like", "page": "P1"}}, remove=["post"])
    counts, ads = new.match_columns([ACTIONS[1]])
    assert [new.ids[ad] for ad in ads] == ["page", "many", "late"] and list(counts) == [3]
    assert old.match_columns([ACTIONS[1]]) == (array("i", [2]), array("i", [1, 4]))


def test_many_actions_in_several_extraction_chunks(action_set):
    """More actions than one extraction round (64) of the compiled kernel, mixed hits and misses."""
    compiled = action_set(ADS)
    actions = [ACTIONS[i % len(ACTIONS)] for i in range(1000)]
    counts, ads, specs = compiled.match_columns_detail(actions)
    assert list(counts) == [EXPECTED_COUNTS[i % len(ACTIONS)] for i in range(1000)]
    assert sum(counts) == len(ads) == len(specs)


class _MutatingKey:
    """A non-string key whose comparisons (run during dict lookups) change another action."""

    def __init__(self, victim):
        self.victim = victim

    def __hash__(self):
        return hash("page")

    def __eq__(self, other):
        self.victim["page"] = "".join(["P", "9"])  # replaces (and frees) the value found before
        return False


@pytest.mark.skipif(_actionset_c is None, reason="compiled kernel not built")
def test_compiled_refuses_an_action_changed_while_matched():
    """The kernel reads found values without holding them; an action changed by Python code
    running in a later lookup is refused, never read after it was freed."""
    compiled = _actionset_c.ActionSpecSet(ADS)
    victim = {"action.type": "like", "page": "".join(["P", "1"])}
    attacker = {"action.type": "like", _MutatingKey(victim): 1}
    with pytest.raises(RuntimeError, match=r"actions\[0\] changed"):
        compiled.match_columns([victim, attacker])
    victim = {"action.type": "like", "page": "".join(["P", "1"])}
    with pytest.raises(RuntimeError, match=r"actions\[0\] changed"):
        compiled.match_batch([victim, {"action.type": "like", _MutatingKey(victim): 1}])
    # Unchanged actions with odd keys are fine.
    assert compiled.match_columns([{"action.type": "like", "page": "P1", 7: "x"}]) == (
        array("i", [1]), array("i", [1]))
