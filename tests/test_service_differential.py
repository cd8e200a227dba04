"""End to end: what the service answers over gRPC equals the reference evaluator's answers.

Random rules (the generator of the rule differential tests) are registered as custom
conversions on three pixels through the API, random events are classified through the API,
and each event's conversions must be exactly the reference's, in registration order.
"""

import random

from matcher.reference import match_rules
from server.client import custom_parameter_columns, pixel_event_buffers
from tests.service_fixtures import ingest, owner, service  # noqa: F401 (fixtures)
from tests.test_rule_differential import _random_event, _random_rule


def test_service_answers_equal_the_reference(owner, ingest):
    rng = random.Random(20261122)
    pixels = [owner.create_pixel("act_1", f"pixel {i}").id for i in range(3)]
    rules, sources, names = {}, {}, {}
    for i in range(90):  # under the 100 conversions an account may hold
        rule, pixel = _random_rule(rng), pixels[i % 3]
        created = owner.create_custom_conversion("act_1", f"cc {i}", pixel, rule,
                                                 default_conversion_value=rng.choice([0, 2.5, 7])).id
        rules[created], sources[created], names[created] = rule, pixel, i
    events = []
    for _ in range(400):
        event = _random_event(rng)
        event["pixel_id"] = rng.choice(pixels + ["404"])
        events.append(event)
    expected = match_rules(rules, events, sources)
    assert sum(map(len, expected)) > 100  # the workload really matches
    got = [[m.custom_conversion_id for m in result.conversions] for result in ingest.classify_pixel_events(events)]
    assert got == expected
    # As buffers: a batch of the events whose custom data typed columns carry together (the
    # buffer form has no JSON).
    flat: list[int] = []
    for i, event in enumerate(events):
        data = [events[k].get("custom_data") for k in flat] + [event.get("custom_data")]
        if not any(data) or custom_parameter_columns(data) is not None:
            flat.append(i)
    assert len(flat) > 100 and sum(len(expected[i]) for i in flat) > 50
    got = ingest.classify_pixel_events([events[i] for i in flat], form="buffers")
    assert [[m.custom_conversion_id for m in result.conversions] for result in got] == [expected[i] for i in flat]
    # The matches as buffers (the matcher's, values included) are the same answers as the lists'
    # (the events' own values as JSON, as texts and numbers, and as float64 buffers).
    subset = [events[i] for i in flat]
    numeric = [{**e, "custom_data": {**{k: v for k, v in e["custom_data"].items() if k != "value"},
                                     **({"value": rng.choice([1.0, 2.5, 1e300, -0.0])} if rng.random() < 0.7 else {})}}
               for e in subset]
    [value] = [p for p in pixel_event_buffers(numeric).custom_parameters if p.name == "value"]
    assert value.HasField("numbers") and not value.HasField("texts")  # read by the matcher in place
    for batch, form in ((events, "columns"), (subset, "buffers"), (numeric, "buffers"), (numeric, "columns")):
        lists = ingest.classify_pixel_events(batch, form=form)
        assert sum(len(r.conversions) for r in lists) > 50
        assert ingest.classify_pixel_events(batch, form=form, reply_as_buffers=True) == lists, form
