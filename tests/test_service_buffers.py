"""Events as buffers (``PixelEventBuffers``, Arrow's layouts): the same answers as the other
forms, an empty text kept apart from an absent one, ads and recording, and the errors."""

import json
import math
import struct

import grpc
import pytest

from server.classification import PixelBatch
from server.client import (Client, error_code, match_lists, number_buffer, pixel_event_buffers, pixel_event_columns,
                           text_buffer)
from server.core import Limits
from server.gen.conversion_matcher.v1 import classification_pb2 as pb
from server.testing import running_server
from tests.service_fixtures import ingest, owner, rejected, service  # noqa: F401 (fixtures)
from tests.test_service_ads import CONVERSION_AD
from tests.test_service_custom_parameters import HOURS, as_rows, classify, conversions  # noqa: F401 (fixture)

EVENTS = [
    {"pixel_id": "PX", "event": "Purchase", "url": "https://shop.example/thanks", "custom_data": {"value": 150, "Color": "red"}},
    {"pixel_id": "PX", "event": "Purchase", "custom_data": {"value": "150", "size": 3}},  # numeric text
    {"pixel_id": "PX", "event": "Lead", "device_type": "mobile", "custom_data": {"value": " 4.5 ", "Color": "rouge é"}},
    {"pixel_id": "PX", "event": "Lead"},
    {"pixel_id": "PX", "event": "Lead", "custom_data": {"size": 2.5, "value": None}},
    {"pixel_id": "404", "event": "Lead", "custom_data": {"value": 7}},
    {"pixel_id": "PX", "event": "Purchase", "url": "https://shop.example/é", "custom_data": {"value": 101.25, "Color": "blue"}},
    {"pixel_id": "PX", "event": "PageView", "custom_data": {"value": 40}},  # matches nothing, recorded
]


def events_of(px):
    return [{**e, "pixel_id": px if e["pixel_id"] == "PX" else e["pixel_id"]} for e in EVENTS]


def texts(values):
    """A TextBuffer built by hand: (data, [offsets], validity)."""
    data, offsets, validity = values
    return pb.TextBuffer(data=data, offsets=struct.pack(f"<{len(offsets)}i", *offsets), validity=validity)


def test_buffers_get_the_replies_of_rows_and_columns(service, conversions, owner, ingest):
    px, ids = conversions
    events = events_of(px)
    buffers = pixel_event_buffers(events)
    assert buffers.count == 8 and [p.name for p in buffers.custom_parameters] == ["value", "Color", "size"]
    store = service[0].core.store
    for record in (False, True):
        replies = [classify(ingest, events=as_rows(events), record=record),
                   classify(ingest, columns=pixel_event_columns(events), record=record),
                   classify(ingest, buffers=buffers, record=record)]
        assert replies[0] == replies[1] == replies[2]
        assert list(replies[2].conversion_counts) == [3, 3, 1, 1, 1, 0, 1, 0]
        assert list(replies[2].conversion_values) == [150] * 6 + [4.5, 2, 2, 101.25]
    [(_, recorded, amount)] = store.pixel_hourly(px, *HOURS)  # once per form
    assert recorded == 3 * 7 and amount == 3 * (150 + 150 + 4.5 + 101.25 + 40)
    assert {row.key for row in owner.stats(ids["big"], "url").rows} == {"https://shop.example/thanks", "https://shop.example/é"}


def test_every_form_can_ask_for_the_matches_as_buffers(service, conversions, owner, ingest):
    # The matcher builds the buffers (values included) unless the batch is recorded: then they
    # are built from the lists the recording reads. Both are the same answers as fields 1-3.
    px, ids = conversions
    events = events_of(px) + [{"pixel_id": px, "event": "Lead", "custom_data": {"value": 1e400}},  # inf: none
                              {"pixel_id": px, "event": "Lead", "custom_data": {"value": "-inf"}}]
    owner.register_ad({**CONVERSION_AD, "conversion_specs": json.dumps([{"action.type": "offsite_conversion",
                                                                        "fb_pixel": px}])})
    forms = {"events": as_rows(events), "columns": pixel_event_columns(events, custom="json"),
             "buffers": pixel_event_buffers(events)}
    for form, batch in forms.items():
        for record in (False, True):
            lists = classify(ingest, **{form: batch}, record=record)
            reply = classify(ingest, **{form: batch}, record=record, reply_as_buffers=True)
            assert reply.HasField("buffers") and not lists.HasField("buffers"), form
            assert not (reply.conversion_counts or reply.custom_conversion_ids or reply.conversion_values)
            count = len(lists.conversion_counts)
            assert reply.buffers.count == count == len(events)
            assert match_lists(reply.buffers) == (list(lists.conversion_counts), list(lists.custom_conversion_ids),
                                                  list(lists.conversion_values)), (form, record)
            # The ad fields are the same in both.
            assert list(reply.ad_counts) == list(lists.ad_counts) and list(reply.ad_ids) == list(lists.ad_ids)
            assert sum(reply.ad_counts) == count - 1  # every event of the pixel (one is of pixel 404)
            assert Client.event_results(reply) == Client.event_results(lists)
    # Infinite values are no values: the two leads get the conversion's default (2).
    reply = classify(ingest, events=as_rows(events[-2:]), reply_as_buffers=True)
    assert match_lists(reply.buffers)[2] == [2.0, 2.0]
    assert ingest.classify_pixel_events(events, reply_as_buffers=True) == ingest.classify_pixel_events(events)


def test_an_empty_text_is_an_empty_text_and_a_clear_bit_is_absent(owner, ingest):
    px = owner.create_pixel("act_1", "p").id
    empty = owner.create_custom_conversion("act_1", "empty url", px, {"url": {"eq": ""}}).id
    events = [{"pixel_id": px, "url": ""}, {"pixel_id": px}, {"pixel_id": px, "url": None}]
    assert [[m.custom_conversion_id for m in r.conversions] for r in ingest.classify_pixel_events(events, form="buffers")] \
        == [[empty], [], []]
    # The other forms cannot tell "" from absent (proto3): both are absent there.
    assert all(r.conversions == () for r in ingest.classify_pixel_events(events))


def test_a_parameter_with_texts_and_numbers_reads_the_text_first(conversions, ingest):
    px, ids = conversions
    buffers = pb.PixelEventBuffers(count=4, pixel_id=text_buffer([px] * 4), event=text_buffer(["Purchase"] * 4))
    value = buffers.custom_parameters.add(name="value")
    value.texts.CopyFrom(text_buffer([None, None, "150", None]))
    value.numbers.CopyFrom(number_buffer([150.0, None, 99.0, None]))
    buffers.custom_parameters.add(name="Color").texts.CopyFrom(text_buffer(["red", "red", None, None]))
    buffers.custom_parameters.add(name="unused")  # neither: no event has it
    reply = classify(ingest, buffers=buffers)
    assert list(reply.conversion_counts) == [3, 1, 2, 0]
    assert list(reply.custom_conversion_ids) == [ids["big"], ids["red"], ids["has value"], ids["red"], ids["big"], ids["has value"]]
    assert list(reply.conversion_values) == [150, 150, 150, 2, 150, 150]


def test_ads_tracking_the_pixels_and_pixels_without_an_id(owner, ingest):
    owner.register_ad(CONVERSION_AD)  # tracks pixel PX1
    buffers = pb.PixelEventBuffers(count=3, pixel_id=text_buffer(["PX1", None, "PX2"]))
    reply = classify(ingest, buffers=buffers)
    assert list(reply.ad_counts) == [1, 0, 0] and list(reply.ad_ids) == ["ad1"]
    assert reply == classify(ingest, columns=pb.PixelEventColumns(pixel_id=["PX1", "", "PX2"]))


def test_buffers_padded_past_their_values_are_read_from_the_start(conversions, ingest):
    # Arrow pads buffers (to 8 or 64 bytes in IPC and Parquet readers): the bytes past count's
    # values are not read.
    px, ids = conversions
    plain = pixel_event_buffers(events_of(px))
    padded = pb.ClassifyPixelEventsRequest(buffers=plain)
    for buffer in (padded.buffers.pixel_id, padded.buffers.url, padded.buffers.custom_parameters[0].texts):
        buffer.offsets += b"\x07" * 12
        if buffer.validity:  # (an empty one: every event has a value)
            buffer.validity += b"\x00" * 7
    padded.buffers.custom_parameters[0].numbers.values += struct.pack("<d", math.nan)
    padded.buffers.event_time += b"\xff" * 8
    reply = classify(ingest, buffers=padded.buffers)
    assert reply == classify(ingest, buffers=plain) and sum(reply.conversion_counts) == 10


def test_a_recorded_batch_of_buffers_counts_each_event_at_its_time(service, conversions, ingest):
    px, _ = conversions
    at = 10**9 + 5  # (the event times are read in place from the request's bytes)
    events = [{"pixel_id": px, "event": "Purchase", "event_time": t, "custom_data": {"value": 150}} for t in (at, at + 7200)]
    classify(ingest, buffers=pixel_event_buffers(events), record=True)
    hour = at - at % 3600
    assert service[0].core.store.pixel_hourly(px, *HOURS) == [(hour, 1, 150.0), (hour + 7200, 1, 150.0)]


def test_the_decoded_batch_holds_the_events():
    events = [{"pixel_id": "1", "event": "é", "url": "", "event_time": 7, "custom_data": {"a": 1.5, "b": "x"}},
              {"pixel_id": "2", "device_type": "mobile", "custom_data": {"b": "y"}}]
    batch = PixelBatch(pb.ClassifyPixelEventsRequest(buffers=pixel_event_buffers(events)), 10)
    columns = batch.matcher_columns()
    assert len(batch) == 2 and batch.pixel_ids == ["1", "2"] and list(batch.times) == [7, 0]
    assert [list(columns[k]) for k in ("event", "url", "device_type")] == [["é", None], ["", None], [None, "mobile"]]
    assert {k: list(v) for k, v in columns["custom_data"].items()} == {"a": [1.5, None], "b": ["x", "y"]}


def test_the_client_refuses_custom_data_buffers_cannot_carry():
    with pytest.raises(ValueError, match="typed columns cannot carry"):
        pixel_event_buffers([{"pixel_id": "1", "custom_data": {"nested": {"a": 1}}}])
    with pytest.raises(ValueError, match='form: "columns" or "buffers"'), Client("127.0.0.1:1") as client:
        client.classify_pixel_events([], form="rows")


GOOD = text_buffer(["a", "b"])


@pytest.mark.parametrize(
    ("buffers", "message"),
    [
        (pb.PixelEventBuffers(count=2, pixel_id=pb.TextBuffer(data=b"ab", offsets=b"\0" * 8)),
         "buffers.pixel_id.offsets: 8 bytes, fewer than the 12 of 3 values of 4 bytes"),
        (pb.PixelEventBuffers(count=2, url=texts((b"abc", [0, 2, 1], b""))),
         "buffers.url.offsets: offset 2 (1) is less than offset 1 (2)"),
        (pb.PixelEventBuffers(count=2, event=texts((b"abc", [0, 2, 9], b""))),
         "buffers.event.offsets: the values run from 0 to 9, outside data's 0 to 3"),
        (pb.PixelEventBuffers(count=2, device_type=texts((b"a\xffc", [0, 1, 3], b""))),
         "buffers.device_type.data: not UTF-8 at byte 1"),
        (pb.PixelEventBuffers(count=2, url=texts(("aé".encode(), [0, 2, 3], b""))),
         "buffers.url.offsets: offset 1 (2) falls inside a UTF-8 character"),
        (pb.PixelEventBuffers(count=9, url=texts((b"abcdefghi", list(range(10)), b"\xff"))),
         "buffers.url.validity: 1 bytes hold fewer than 9 bits"),
        (pb.PixelEventBuffers(count=9, pixel_id=text_buffer(["p"] * 9), custom_parameters=[pb.CustomParameterBuffer(
            name="v", numbers=pb.NumberBuffer(values=struct.pack("<9d", *range(9)), validity=b"\xff"))]),
         "buffers.custom_parameters[0].numbers.validity: 1 bytes hold fewer than 9 bits"),
        (pb.PixelEventBuffers(count=2, pixel_id=GOOD, event_time=b"\0" * 8),
         "buffers.event_time: 8 bytes, fewer than the 16 of 2 values of 8 bytes"),
        (pb.PixelEventBuffers(count=2, pixel_id=GOOD, custom_parameters=[
            pb.CustomParameterBuffer(name="a", texts=GOOD),
            pb.CustomParameterBuffer(name="v", numbers=pb.NumberBuffer(values=struct.pack("<2d", 1, math.nan)))]),
         "buffers.custom_parameters[1].numbers.values[1]: NaN (an absent value is a clear bit in validity)"),
        (pb.PixelEventBuffers(count=2, pixel_id=GOOD, custom_parameters=[
            pb.CustomParameterBuffer(name="v", numbers=pb.NumberBuffer(values=struct.pack("<d", 1)))]),
         "buffers.custom_parameters[0].numbers.values: 8 bytes, fewer than the 16 of 2 values of 8 bytes"),
        (pb.PixelEventBuffers(count=2, pixel_id=GOOD, custom_parameters=[pb.CustomParameterBuffer(name="")]),
         "buffers.custom_parameters[0].name: empty"),
        (pb.PixelEventBuffers(count=2, pixel_id=GOOD, custom_parameters=[
            pb.CustomParameterBuffer(name="c", texts=GOOD), pb.CustomParameterBuffer(name="c", texts=GOOD)]),
         'buffers.custom_parameters[1].name: "c" given twice (first at [0])'),
        (pb.PixelEventBuffers(count=2, pixel_id=GOOD, custom_parameters=[
            pb.CustomParameterBuffer(name="t", texts=texts((b"x", [0, 1], b"")))]),
         "buffers.custom_parameters[0].texts.offsets: 8 bytes, fewer than the 12 of 3 values of 4 bytes"),
    ],
)
def test_bad_buffers_are_rejected_naming_the_place(ingest, buffers, message):
    error = rejected(classify, ingest, buffers=buffers)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100
    assert error.details() == message
    assert ingest.classify_pixel_events([{"pixel_id": "1"}], form="buffers")[0].conversions == ()


def test_a_nan_under_a_clear_bit_and_both_infinities_are_accepted(service, conversions, ingest):
    # Only a NaN whose bit is set is an error: under a clear bit the value is absent, and an
    # infinity is no value (+inf and -inf together sum to NaN: that must not reject them).
    px, _ = conversions
    values = [math.nan, math.inf, -math.inf, 150.0]
    buffers = pb.PixelEventBuffers(count=4, pixel_id=text_buffer([px] * 4), event=text_buffer(["Purchase"] * 4),
                                   custom_parameters=[pb.CustomParameterBuffer(name="value", numbers=pb.NumberBuffer(
                                       values=struct.pack("<4d", *values), validity=bytes([0b1110])))])
    rows = [{"pixel_id": px, "event": "Purchase", "custom_data": {"value": v}} for v in (None, 1e400, -1e400, 150.0)]
    reply = classify(ingest, buffers=buffers)
    assert reply == classify(ingest, events=as_rows(rows))
    assert list(reply.conversion_counts) == [0, 0, 0, 2]  # 150: "big" and "has value"


def test_limits_and_one_form_per_request(tmp_path, ingest):
    with running_server(tmp_path / "limited.db", limits=Limits(max_batch_events=50)) as (_, target):
        with Client(target, "ingest-token") as client:
            error = rejected(classify, client, buffers=pb.PixelEventBuffers(count=51))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and error_code(error) == 368
            assert error.details() == "buffers.count: 51 events, more than the limit of 50 per batch"
            assert client.classify_pixel_events([{"pixel_id": "1"}] * 50, form="buffers")[0].conversions == ()
    error = rejected(classify, ingest, columns=pb.PixelEventColumns(pixel_id=["1"]),
                     buffers=pb.PixelEventBuffers(count=1, pixel_id=text_buffer(["1"])))
    assert error_code(error) == 100 and "not both columns and buffers" in error.details()


def test_a_rejected_batch_records_nothing(service, conversions, owner, ingest):
    px, ids = conversions
    bad = pixel_event_buffers(events_of(px))
    bad.custom_parameters[2].numbers.values = bad.custom_parameters[2].numbers.values[:8]  # after good columns
    error = rejected(classify, ingest, buffers=bad, record=True)
    assert "buffers.custom_parameters[2].numbers.values" in error.details()
    assert owner.get_pixel(px).status == "UNVERIFIED"
    assert service[0].core.store.pixel_hourly(px, *HOURS) == []
    assert all(owner.stats(cid).rows == [] for cid in ids.values())
