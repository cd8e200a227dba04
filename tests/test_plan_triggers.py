"""The planner's trigger choice: which predicate each rule triggers on, and that the choice
never changes what matches."""

import random

import pytest

from matcher import compile_rules, parse_rule
from matcher.plan import FieldTable, plan_partition
from matcher.reference import match_rules
from tests.conftest import ENGINES

CATEGORIES = [f"cat-{i}" for i in range(80)]
DEVICES = ["desktop", "mobile_iphone", "mobile_android"] + [f"tv-{i}" for i in range(40)]


def _plan(rules: dict):
    table = FieldTable()
    plan = plan_partition([(i, parse_rule(rule)) for i, rule in enumerate(rules.values())], table)
    return plan, table


def _trigger_fields(plan, table) -> list[set[str]]:
    """Per rule, the fields of the predicates it triggers on."""
    fields: list[set[str]] = [set() for _ in plan.rules]
    for pred, rules in enumerate(plan.triggers):
        for local in rules:
            fields[local].add(table.fields[plan.groups[plan.pred_group[pred]].field].text)
    return fields


def _eager_fields(plan, table) -> set[str]:
    return {table.fields[plan.groups[gid].field].text for gid in plan.eager}


def _cart_rules(n_category: int, n_value: int, n_device: int = 0, n_params: int = 0) -> dict:
    """Rules on one event name, ``event = AddToCart AND ...``: ``n_category`` with ``category
    = X`` (one X each), ``n_value`` with ``value > N`` (no hash lookup to trigger on but the
    event), ``n_device`` with ``device_type = X`` (an event column), ``n_params`` each with
    a custom parameter of its own; and one URL rule."""
    rules = {f"cat{i}": {"and": [{"event": "AddToCart"}, {"category": {"eq": CATEGORIES[i]}}]}
             for i in range(n_category)}
    rules.update({f"val{i}": {"and": [{"event": "AddToCart"}, {"value": {"gt": 10 * i}}]} for i in range(n_value)})
    rules.update({f"dev{i}": {"and": [{"event": "AddToCart"}, {"device_type": DEVICES[i]}]} for i in range(n_device)})
    rules.update({f"par{i}": {"and": [{"event": "AddToCart"}, {f"p{i}": "x"}]} for i in range(n_params)})
    rules["url"] = {"url": {"contains": "/thankyou"}}
    return rules


def test_many_rules_sharing_an_event_name_trigger_on_their_rarer_category():
    """70 rules on one event name each with its own category: the category lookup runs for
    every event (one more eager group, a custom parameter read for every event), and an
    AddToCart event no longer makes all 70 candidates, only those of its category."""
    plan, table = _plan(_cart_rules(70, 4))
    fields = _trigger_fields(plan, table)
    assert fields[:70] == [{"category"}] * 70
    assert fields[70:74] == [{"event"}] * 4  # no lookup but the event name
    assert _eager_fields(plan, table) == {"event", "category", "url"}


def test_a_custom_parameter_is_read_for_every_event_only_for_many_rules():
    """17 such rules (the bench's pixels) would save fewer candidates than reading the
    category of every event costs: they keep the event name, run anyway."""
    plan, table = _plan(_cart_rules(17, 4))
    assert _trigger_fields(plan, table)[:17] == [{"event"}] * 17
    assert _eager_fields(plan, table) == {"event", "url"}


def test_rules_moving_to_different_parameters_make_none_eager():
    """40 rules sharing an event name, each with a custom parameter of its own: moving each
    would read 40 parameters of every event."""
    plan, table = _plan(_cart_rules(0, 0, n_params=40))
    assert _trigger_fields(plan, table)[:40] == [{"event"}] * 40
    assert _eager_fields(plan, table) == {"event", "url"}


def test_an_event_column_is_worth_a_lookup_for_fewer_rules():
    """An event column (device type) is read from the event directly, at half a custom
    parameter's cost: 40 rules moving to it pay for its lookup (a parameter would need 64);
    12 do not."""
    plan, table = _plan(_cart_rules(0, 4, n_device=40))
    fields = _trigger_fields(plan, table)
    assert fields[4:44] == [{"device_type"}] * 40
    assert _eager_fields(plan, table) == {"event", "device_type", "url"}
    plan, table = _plan(_cart_rules(40, 4))
    assert _trigger_fields(plan, table)[:40] == [{"event"}] * 40
    assert _eager_fields(plan, table) == {"event", "url"}
    plan, table = _plan(_cart_rules(0, 4, n_device=12))
    assert _trigger_fields(plan, table)[4:16] == [{"event"}] * 12
    assert _eager_fields(plan, table) == {"event", "url"}


def test_an_or_of_lookups_moves_only_when_all_its_groups_are_eager():
    """A rule whose rarer set spans a group that stays lazy keeps the event name."""
    rules = _cart_rules(70, 0)
    rules["both"] = {"and": [{"event": "AddToCart"},
                             {"or": [{"category": {"eq": "cat-0"}}, {"brand": {"eq": "acme"}}]}]}
    plan, table = _plan(rules)
    fields = _trigger_fields(plan, table)
    assert fields[:70] == [{"category"}] * 70
    assert fields[list(rules).index("both")] == {"event"}
    assert "brand" not in _eager_fields(plan, table)


@pytest.mark.parametrize("counts", [(3, 0, 0), (17, 0, 3), (40, 12, 0), (70, 40, 0), (70, 0, 40)])
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_trigger_choice_matches_as_the_reference(engine, counts):
    n_category, n_device, n_params = counts
    rules = _cart_rules(n_category, 6, n_device, n_params)
    rules["both"] = {"and": [{"event": "AddToCart"},
                             {"or": [{"category": {"eq": "cat-0"}}, {"brand": {"eq": "acme"}}]}]}
    rules["neg"] = {"and": [{"event": "AddToCart"}, {"category": {"neq": "cat-1"}}]}
    rng = random.Random(7)
    events = []
    for _ in range(400):
        custom = {}
        for key, values in (("category", CATEGORIES[:20] + ["other"]), ("value", [0, 5, 15, 35, 99]),
                            ("brand", ["acme", "other"]), ("p1", ["x", "y"]), ("P2", ["x"])):
            if rng.random() < 0.6:
                custom[key] = rng.choice(values)
        if rng.random() < 0.1:
            custom["category"] = [rng.choice(CATEGORIES[:20]), "other"]
        event = {"event": rng.choice(["AddToCart", "PageView", "Purchase"]), "custom_data": custom,
                 "device_type": rng.choice(DEVICES[:5])}
        if rng.random() < 0.5:
            event["url"] = rng.choice(["https://x.example/thankyou", "https://x.example/"])
        events.append(event)
    expected = [sorted(m) for m in match_rules(rules, events)]
    assert sum(map(len, expected)) > 100  # the events do match
    got = compile_rules(rules, engine=engine).match_batch(events)
    assert [sorted(m) for m in got] == expected
