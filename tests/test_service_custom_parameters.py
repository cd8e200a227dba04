"""Custom parameters as typed columns (``PixelEventColumns.custom_parameters``): the same
answers as the JSON forms, the errors, and the client's choice between the two forms."""

import json
import math

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from server.classification import ClassificationServicer
from server.client import error_code, pixel_event_columns
from server.gen.conversion_matcher.v1 import classification_pb2 as pb
from tests.service_fixtures import ingest, owner, rejected, service  # noqa: F401 (fixtures)

HOURS = (0, 2 * 10**9)


def column(name, texts=(), numbers=()):
    return pb.CustomParameterColumn(name=name, texts=texts, numbers=numbers)


def classify(client, **request):
    return client.call(client.classification.ClassifyPixelEvents, pb.ClassifyPixelEventsRequest(**request))


def as_rows(events):
    return [
        pb.PixelEvent(pixel_id=e["pixel_id"], event=e.get("event", ""), url=e.get("url", ""),
                      custom_data=json.dumps(e["custom_data"]) if e.get("custom_data") is not None else "")
        for e in events
    ]


@pytest.fixture
def conversions(owner):
    """A pixel and conversions reading custom parameters: (pixel id, {name: conversion id})."""
    px = owner.create_pixel("act_1", "p").id
    rules = {
        "big": {"and": [{"event": "Purchase"}, {"value": {"gt": 100}}]},
        "red": {"COLOR": {"eq": "red"}},  # folded: an event's `Color` or `color`
        "has value": {"value": {"eq": "150"}},  # text: "150" and the number 150 both read as 150
        "large": {"size": {"gte": 3}},
        "lead": {"event": "Lead"},
    }
    ids = {name: owner.create_custom_conversion("act_1", name, px, rule, default_conversion_value=2).id
           for name, rule in rules.items()}
    return px, ids


def test_rows_json_columns_and_typed_columns_get_identical_replies(service, conversions, ingest):
    px, ids = conversions
    events = [
        {"pixel_id": px, "event": "Purchase", "custom_data": {"value": 150, "Color": "red"}},
        {"pixel_id": px, "event": "Purchase", "custom_data": {"value": "150", "size": 3}},  # numeric text
        {"pixel_id": px, "event": "Lead", "custom_data": {"value": " 4.5 ", "Color": "red"}},
        {"pixel_id": px, "event": "Lead"},
        {"pixel_id": px, "event": "Lead", "custom_data": {"size": 2.5, "value": None}},
        {"pixel_id": "404", "event": "Lead", "custom_data": {"value": 7}},
        {"pixel_id": px, "event": "Purchase", "custom_data": {"value": 101.25, "Color": "blue"}},
        {"pixel_id": px, "event": "PageView", "custom_data": {"value": 40}},  # matches nothing, recorded
    ]
    typed = pixel_event_columns(events)
    assert not typed.custom_data and [c.name for c in typed.custom_parameters] == ["value", "Color", "size"]
    as_json = pixel_event_columns(events, custom="json")
    assert as_json.custom_data and not as_json.custom_parameters
    store = service[0].core.store
    for record in (False, True):
        replies = [classify(ingest, events=as_rows(events), record=record),
                   classify(ingest, columns=as_json, record=record),
                   classify(ingest, columns=typed, record=record)]
        assert replies[0] == replies[1] == replies[2]
        results = ingest.event_results(replies[2])
        assert [[m.custom_conversion_id for m in r.conversions] for r in results] == [
            [ids["big"], ids["red"], ids["has value"]], [ids["big"], ids["has value"], ids["large"]],
            [ids["red"], ids["lead"]], [ids["lead"]], [ids["lead"]], [], [ids["big"]], []]
        assert [[m.value for m in r.conversions] for r in results] == [
            [150] * 3, [150] * 3, [4.5] * 2, [2], [2], [], [101.25], []]
    # Recorded three times (once per form): every event's own value, not only the matching ones'.
    [(_, recorded, amount)] = store.pixel_hourly(px, *HOURS)
    assert recorded == 3 * 7 and amount == 3 * (150 + 150 + 4.5 + 101.25 + 40)


def test_a_nan_number_or_an_empty_text_is_an_absent_parameter(conversions, ingest):
    px, ids = conversions
    count = 4
    as_json = pb.PixelEventColumns(pixel_id=[px] * count, event=["Purchase"] * count,
                                   custom_data='[{"value": 150, "Color": "red"}, {"Color": "red"}, {"value": "150"}, null]')
    typed = pb.PixelEventColumns(pixel_id=[px] * count, event=["Purchase"] * count, custom_parameters=[
        # Texts and numbers in one column: the text where non-empty, else the number where not NaN.
        column("value", texts=["", "", "150", ""], numbers=[150, math.nan, 99, math.nan]),
        column("Color", texts=["red", "red", "", ""]),
        column("size", numbers=[math.nan] * count),  # no event has it
        column("unused"),  # neither texts nor numbers: no event has it
    ])
    reply = classify(ingest, columns=typed)
    assert reply == classify(ingest, columns=as_json)
    assert list(reply.conversion_counts) == [3, 1, 2, 0]
    assert list(reply.custom_conversion_ids) == [ids["big"], ids["red"], ids["has value"], ids["red"], ids["big"], ids["has value"]]
    assert list(reply.conversion_values) == [150, 150, 150, 2, 150, 150]


def test_a_value_column_in_another_case_holds_the_conversion_value(conversions, ingest):
    px, ids = conversions
    # Event i's parameters are its non-NaN entries: `value` when it has one, else the first
    # column named `value` in another case, as the rule `value gt 100` ("big") reads it.
    typed = pb.PixelEventColumns(pixel_id=[px] * 4, event=["Purchase"] * 4, custom_parameters=[
        column("value", numbers=[math.nan, 7, math.nan, math.nan]), column("VALUE", numbers=[150, 4.5, math.nan, math.nan]),
        column("Value", numbers=[1, 2, 8, math.nan])])
    as_json = pb.PixelEventColumns(pixel_id=[px] * 4, event=["Purchase"] * 4, custom_data=json.dumps(
        [{"VALUE": 150, "Value": 1}, {"value": 7, "VALUE": 4.5, "Value": 2}, {"Value": 8}, None]))
    for record in (False, True):
        for reply_as_buffers in (False, True):
            reply = classify(ingest, columns=typed, record=record, reply_as_buffers=reply_as_buffers)
            assert reply == classify(ingest, columns=as_json, record=record, reply_as_buffers=reply_as_buffers)
            results = ingest.event_results(reply)
            assert [[m.custom_conversion_id for m in r.conversions] for r in results] == [
                [ids["big"], ids["has value"]], [], [], []]
            assert [[m.value for m in r.conversions] for r in results] == [[150, 150], [], [], []]
    # Alone, a column named in another case is read as `value` is (in place, when numbers).
    lead = pb.PixelEventColumns(pixel_id=[px] * 2, event=["Lead"] * 2,
                                custom_parameters=[column("VALUE", numbers=[5, math.nan])])
    for reply_as_buffers in (False, True):
        results = ingest.event_results(classify(ingest, columns=lead, reply_as_buffers=reply_as_buffers))
        assert [[(m.custom_conversion_id, m.value) for m in r.conversions] for r in results] == [
            [(ids["lead"], 5)], [(ids["lead"], 2)]]


def test_numbers_only_and_texts_only_columns_with_gaps(conversions, ingest):
    px, ids = conversions
    typed = pb.PixelEventColumns(pixel_id=[px] * 3, event=["Purchase"] * 3, custom_parameters=[
        column("value", numbers=[math.nan, 200, math.inf]), column("color", texts=["", "red", "red"])])
    as_json = pb.PixelEventColumns(pixel_id=[px] * 3, event=["Purchase"] * 3,
                                   custom_data='[null, {"value": 200, "color": "red"}, {"value": 1e999, "color": "red"}]')
    for record in (False, True):
        reply = classify(ingest, columns=typed, record=record)
        assert reply == classify(ingest, columns=as_json, record=record)
        # An infinite value is no number (so not `gt 100`) and no conversion value: the default.
        assert list(reply.conversion_counts) == [0, 2, 1] and list(reply.conversion_values) == [200, 200, 2]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (pb.PixelEventColumns(pixel_id=["1", "2"], custom_data="[null, null]", custom_parameters=[column("a", ["x", "y"])]),
         "columns: give custom parameters as custom_data (JSON) or as custom_parameters, not both"),
        (pb.PixelEventColumns(pixel_id=["1", "2"], custom_parameters=[column("a", ["x", "y"]), column("")]),
         "columns.custom_parameters[1].name: empty"),
        (pb.PixelEventColumns(pixel_id=["1", "2"], custom_parameters=[
            column("a"), column("color"), column("Color"), column("color", numbers=[1, 2])]),
         'columns.custom_parameters[3].name: "color" given twice (first at [1])'),
        (pb.PixelEventColumns(pixel_id=["1", "2", "3", "4"], custom_parameters=[
            column("a"), column("b"), column("c"), column("d", texts=["x", "y"])]),
         "columns.custom_parameters[3].texts: 2 values, expected 4 (one per pixel_id)"),
        (pb.PixelEventColumns(pixel_id=["1", "2"], custom_parameters=[column("n", ["x", "y"], numbers=[1, 2, 3])]),
         "columns.custom_parameters[0].numbers: 3 values, expected 2 (one per pixel_id)"),
    ],
)
def test_bad_parameter_columns_are_rejected_naming_the_place(ingest, columns, message):
    error = rejected(classify, ingest, columns=columns)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100
    assert error.details() == message


def test_a_rejected_batch_records_nothing(service, conversions, owner, ingest):
    px, ids = conversions
    # The bad column comes after good ones, and the events would match and carry values.
    bad = pb.PixelEventColumns(pixel_id=[px] * 2, event=["Purchase"] * 2, custom_parameters=[
        column("value", numbers=[150, 150]), column("color", texts=["red", "red"]), column("size", numbers=[1])])
    error = rejected(classify, ingest, columns=bad, record=True)
    assert "columns.custom_parameters[2].numbers" in error.details()
    assert owner.get_pixel(px).status == "UNVERIFIED"
    assert service[0].core.store.pixel_hourly(px, *HOURS) == []
    assert all(owner.stats(cid).rows == [] for cid in ids.values())


# -- the client's choice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [True, False, "", math.nan, 2**53 + 1, -(10**400), [1], {"a": 1}, "\ud800"],
    ids=["true", "false", "empty text", "nan", "int a double rounds", "int past a double", "list", "object", "lone surrogate"],
)
def test_the_client_falls_back_to_json_for_values_columns_cannot_carry(value):
    events = [{"pixel_id": "1", "custom_data": {"color": "red"}}, {"pixel_id": "1", "custom_data": {"value": value}}]
    columns = pixel_event_columns(events)
    assert not columns.custom_parameters
    assert columns.custom_data == json.dumps([e["custom_data"] for e in events], separators=(",", ":"))


@pytest.mark.parametrize(
    "data",
    [[{"Color": "red"}, {"color": "blue"}], [{"ΣIZE": 1, "σize": 2}], [{"": "x"}], [{1: "x"}], ["not a mapping"]],
    ids=["fold-equal across events", "fold-equal in one event", "empty name", "int name", "not a mapping"],
)
def test_the_client_falls_back_to_json_for_names_columns_cannot_carry(data):
    columns = pixel_event_columns([{"pixel_id": "1", "custom_data": d} for d in data])
    assert not columns.custom_parameters and columns.custom_data


def test_the_client_sends_flat_parameters_as_typed_columns():
    events = [
        {"pixel_id": "1", "custom_data": {"value": 9, "color": "red"}},
        {"pixel_id": "2", "custom_data": None},
        {"pixel_id": "3", "custom_data": {"value": "x", "size": 1.5, "color": None, "big": 2**60, "inf": -math.inf}},
        {"pixel_id": "4", "custom_data": {}},
    ]
    columns = pixel_event_columns(events)
    assert not columns.custom_data
    got = {c.name: (list(c.texts), list(c.numbers)) for c in columns.custom_parameters}
    assert list(got) == ["value", "color", "size", "big", "inf"]  # first appearance
    nan = math.nan
    expected = {
        "value": (["", "", "x", ""], [9.0, nan, nan, nan]),
        "color": (["red", "", "", ""], []),
        "size": ([], [nan, nan, 1.5, nan]),
        "big": ([], [nan, nan, 2.0**60, nan]),
        "inf": ([], [nan, nan, -math.inf, nan]),
    }
    assert got.keys() == expected.keys()
    for name, (texts, numbers) in expected.items():
        assert got[name][0] == texts
        assert [repr(n) for n in got[name][1]] == [repr(n) for n in numbers], name
    # Forced JSON; no custom data at all: neither field.
    assert not pixel_event_columns(events, custom="json").custom_parameters
    empty = pixel_event_columns([{"pixel_id": "1"}, {"pixel_id": "2", "custom_data": {}}])
    assert not empty.custom_parameters and not empty.custom_data
    with pytest.raises(ValueError):
        pixel_event_columns(events, custom="yaml")


# -- differential: typed columns vs JSON on random flat parameters ------------------------------

NAMES = ["value", "Color", "size", "Straße", "n"]
FLAT_VALUES = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=6),
    st.sampled_from(["150", " 4.5 ", "-0", "1e3", "red", "RED", "nan", "inf", "0x10", "ss", "STRASSE"]),
    st.floats(allow_nan=False),
    st.integers(-10**6, 10**6),
    st.integers(-2**20, 2**20).map(lambda x: x * 2**40),
)
EVENTS = st.lists(
    st.fixed_dictionaries({
        "event": st.sampled_from(["Purchase", "Lead"]),
        "custom_data": st.one_of(st.none(), st.dictionaries(st.sampled_from(NAMES), FLAT_VALUES, max_size=5)),
    }),
    min_size=1, max_size=12,
)
DIFFERENTIAL_RULES = {
    "value gt": {"value": {"gt": 100}},
    "value text": {"value": {"eq": "150"}},
    "value lt": {"VALUE": {"lt": 0}},
    "color": {"color": {"i_contains": "re"}},
    "color eq": {"COLOR": {"eq": "RED"}},
    "size": {"size": {"gte": 3}},
    "size text": {"SIZE": {"starts_with": "1"}},
    "strasse": {"STRASSE": {"contains": "s"}},
    "n": {"n": {"neq": "x"}},
    "n any": {"N": {"is_any": ["1", "red", "150"]}},
}


def test_typed_columns_and_json_give_the_same_reply(service, owner):
    px = owner.create_pixel("act_1", "p").id
    for name, rule in DIFFERENTIAL_RULES.items():
        owner.create_custom_conversion("act_1", name, px, rule, default_conversion_value=1)
    servicer = ClassificationServicer(service[0].core)  # in-process: the handler itself, many examples

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(EVENTS, st.booleans())
    def check(events, record):
        events = [{"pixel_id": px, **e} for e in events]
        typed = pixel_event_columns(events)
        as_json = pixel_event_columns(events, custom="json")
        if any(e["custom_data"] for e in events):
            assert typed.custom_parameters and not typed.custom_data  # the generator keeps to flat values
        typed_reply = servicer.classify_pixel_events(pb.ClassifyPixelEventsRequest(columns=typed, record=record))
        json_reply = servicer.classify_pixel_events(pb.ClassifyPixelEventsRequest(columns=as_json, record=record))
        assert typed_reply == json_reply

    check()
