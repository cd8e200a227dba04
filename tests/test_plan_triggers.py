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


def _gated(plan, table) -> set[tuple[str, str]]:
    """(gate, gated field): the gate as "field=value" (its lookup key), the group by its field."""
    return {(_pred_text(plan, table, pred), table.fields[plan.groups[gid].field].text)
            for pred, groups in enumerate(plan.gates) for gid in groups}


def _pred_text(plan, table, pred) -> str:
    group = plan.groups[plan.pred_group[pred]]
    keys = sorted(k for k, preds in group.text_eq.items() if pred in preds)
    return f"{table.fields[group.field].text}={'|'.join(keys)}"


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
    """70 rules on one event name each with its own category: the category lookup runs only
    for AddToCart events (gated by the event name, not eager: read for every event), and an
    AddToCart event no longer makes all 70 candidates, only those of its category."""
    plan, table = _plan(_cart_rules(70, 4))
    fields = _trigger_fields(plan, table)
    assert fields[:70] == [{"category"}] * 70
    assert fields[70:74] == [{"event"}] * 4  # no lookup but the event name
    assert _eager_fields(plan, table) == {"event", "url"}
    assert _gated(plan, table) == {("event=AddToCart", "category")}


def test_a_custom_parameter_is_gated_for_eight_rules():
    """17 such rules (the bench's pixels) save more candidates on each AddToCart event than
    reading its category costs (8 x ~80 against ~560 instructions); 7 do not."""
    plan, table = _plan(_cart_rules(17, 4))
    assert _trigger_fields(plan, table)[:17] == [{"category"}] * 17
    assert _eager_fields(plan, table) == {"event", "url"}
    assert _gated(plan, table) == {("event=AddToCart", "category")}
    plan, table = _plan(_cart_rules(8, 4))
    assert _trigger_fields(plan, table)[:8] == [{"category"}] * 8
    assert _gated(plan, table) == {("event=AddToCart", "category")}
    plan, table = _plan(_cart_rules(7, 4))
    assert _trigger_fields(plan, table)[:7] == [{"event"}] * 7
    assert _gated(plan, table) == set()
    assert _eager_fields(plan, table) == {"event", "url"}


def test_rules_moving_to_different_parameters_make_none_eager():
    """40 rules sharing an event name, each with a custom parameter of its own: moving each
    would read 40 parameters of every event."""
    plan, table = _plan(_cart_rules(0, 0, n_params=40))
    assert _trigger_fields(plan, table)[:40] == [{"event"}] * 40
    assert _eager_fields(plan, table) == {"event", "url"}


def test_an_event_column_is_worth_gating_for_fewer_rules():
    """An event column (device type) is read from the event directly, at half a custom
    parameter's cost: 4 rules moving to it pay for its lookup when the gate holds (a
    parameter would need 8); 3 do not. A group enough rules would move to to make it eager
    (40) is gated instead: then it is read only when its gate holds."""
    plan, table = _plan(_cart_rules(0, 4, n_device=40))
    assert _trigger_fields(plan, table)[4:44] == [{"device_type"}] * 40
    assert _eager_fields(plan, table) == {"event", "url"}
    assert _gated(plan, table) == {("event=AddToCart", "device_type")}
    plan, table = _plan(_cart_rules(0, 4, n_device=4))
    assert _trigger_fields(plan, table)[4:8] == [{"device_type"}] * 4
    assert _gated(plan, table) == {("event=AddToCart", "device_type")}
    plan, table = _plan(_cart_rules(0, 4, n_device=3))
    assert _trigger_fields(plan, table)[4:7] == [{"event"}] * 3
    assert _gated(plan, table) == set()
    assert _eager_fields(plan, table) == {"event", "url"}


def test_a_group_eager_anyway_is_not_gated():
    """A rule triggering on the category alone makes its group eager: the cart rules trigger
    on their category there, with no gate."""
    rules = _cart_rules(17, 0)
    rules["alone"] = {"category": {"eq": "cat-70"}}
    plan, table = _plan(rules)
    assert _trigger_fields(plan, table)[:17] == [{"category"}] * 17
    assert _eager_fields(plan, table) == {"category", "url"}  # (no rule triggers on the event name now)
    assert _gated(plan, table) == set()
    assert not any(plan.gates)


def test_gates_per_event_name_and_rules_that_do_not_move():
    """Rules on two event names sharing categories: the category is gated by both names; an
    OR of categories under one name moves as a whole; an OR spanning two groups and a lone
    event rule keep theirs."""
    rules = _cart_rules(8, 0)
    rules.update({f"buy{i}": {"and": [{"event": "Purchase"}, {"category": {"eq": CATEGORIES[i]}}]} for i in range(8)})
    rules["either"] = {"and": [{"event": "Purchase"}, {"or": [{"category": {"eq": "cat-1"}}, {"category": {"eq": "cat-9"}}]}]}
    rules["span"] = {"and": [{"event": "Purchase"}, {"or": [{"category": {"eq": "cat-1"}}, {"brand": {"eq": "acme"}}]}]}
    rules["lone"] = {"event": "Purchase"}
    plan, table = _plan(rules)
    names = list(rules)
    fields = _trigger_fields(plan, table)
    assert [fields[i] for i, n in enumerate(names) if n.startswith(("cat", "buy"))] == [{"category"}] * 16
    assert fields[names.index("either")] == {"category"}
    assert [fields[names.index(n)] for n in ("span", "lone")] == [{"event"}] * 2
    assert _gated(plan, table) == {("event=AddToCart", "category"), ("event=Purchase", "category")}
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


FOLDED = ["Straße", "ÉTÉ", "çà", "Ǆemal", "ΣΊΣΥΦΟΣ", "ﬁne", "İstanbul", "K"]


def _gated_rules() -> dict:
    """Rules gated in every way the kernel handles: a category gated by two event names (the
    same categories under both), rules reading a third field (a parameter, a number, a
    column, a presence test), an OR of categories, non-ASCII values and a case-folded group
    (``i_is_any``) on another parameter, each group gated by enough rules."""
    rules = {f"cart{i}": {"and": [{"event": "AddToCart"}, {"category": {"eq": CATEGORIES[i]}}]} for i in range(8)}
    rules.update({f"buy{i}": {"and": [{"event": "Purchase"}, {"category": {"eq": CATEGORIES[i]}}]} for i in range(8)})
    rules["third_brand"] = {"and": [{"event": "AddToCart"}, {"category": {"eq": "cat-1"}}, {"brand": {"eq": "acme"}}]}
    rules["third_value"] = {"and": [{"event": "Purchase"}, {"category": {"eq": "cat-2"}}, {"value": {"gt": 10}}]}
    rules["third_first"] = {"and": [{"event": "AddToCart"}, {"brand": {"neq": "acme"}}, {"category": {"eq": "cat-3"}}]}
    rules["third_missing"] = {"and": [{"event": "Purchase"}, {"category": {"eq": "cat-4"}}, {"coupon": {"exists": False}}]}
    rules["third_device"] = {"and": [{"event": "Purchase"}, {"category": {"eq": "cat-5"}}, {"device_type": "mobile_iphone"}]}
    rules["either"] = {"and": [{"event": "AddToCart"}, {"or": [{"category": {"eq": "cat-6"}}, {"category": {"eq": "Straße"}}]}]}
    rules.update({f"u{i}": {"and": [{"event": "Lead"}, {"category": {"eq": value}}]} for i, value in enumerate(FOLDED)})
    rules.update({f"f{i}": {"and": [{"event": "ViewContent"}, {"style": {"i_is_any": [value, "x"]}}]}
                  for i, value in enumerate(FOLDED)})
    rules["always"] = {"not": {"event": "PageView"}}
    rules["plain"] = {"event": "AddToCart"}
    return rules


def _gated_events(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    spellings = FOLDED + [v.upper() for v in FOLDED] + [v.lower() for v in FOLDED] + ["strasse", "STRASSE"]
    events = []
    for _ in range(n):
        custom = {}
        if rng.random() < 0.7:
            custom["category"] = rng.choice(CATEGORIES[:8] + FOLDED + ["other", 3, "cat-1 "])
        if rng.random() < 0.1:
            custom["category"] = [rng.choice(CATEGORIES[:8]), rng.choice(FOLDED)]
        for key, values in (("brand", ["acme", "other"]), ("value", [0, 5, 15, "20"]), ("coupon", ["c"]),
                            ("style", spellings)):
            if rng.random() < 0.5:
                custom[key] = rng.choice(values)
        event = {"event": rng.choice(["AddToCart", "Purchase", "Lead", "ViewContent", "PageView"])}
        if rng.random() < 0.9:
            event["custom_data"] = custom
        if rng.random() < 0.7:
            event["device_type"] = rng.choice(["desktop", "mobile_iphone"])
        events.append(event)
    return events


def test_gated_rules_plan():
    plan, table = _plan(_gated_rules())
    assert _gated(plan, table) == {("event=AddToCart", "category"), ("event=Purchase", "category"),
                                   ("event=Lead", "category"), ("event=ViewContent", "style")}
    names = list(_gated_rules())
    fields = _trigger_fields(plan, table)
    moved = [n for n in names if n.startswith(("cart", "buy", "third", "either", "u", "f"))]
    assert [fields[names.index(n)] for n in moved] == [{"category"}] * (len(moved) - 8) + [{"style"}] * 8
    assert _eager_fields(plan, table) == {"event"}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.__name__)
def test_gated_groups_match_as_the_reference(engine, seed):
    """Compiled, twin and reference agree, in batches (the compiled matcher's phases) and one
    by one; the gated rules do match (each rule kind at least once over the seeds)."""
    rules = _gated_rules()
    events = _gated_events(2000, seed)
    expected = [sorted(m) for m in match_rules(rules, events)]
    matched = {r for m in expected for r in m}
    assert {"cart1", "buy2", "third_brand", "third_value", "third_first", "third_missing", "third_device",
            "either", "u0", "f1"} <= matched
    compiled = compile_rules(rules, engine=engine)
    assert [sorted(m) for m in compiled.match_batch(events)] == expected
    assert [sorted(compiled.match_batch([e])[0]) for e in events[:100]] == expected[:100]
