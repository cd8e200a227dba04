"""CustomConversionService over a real server on loopback with a real SQLite file."""

import dataclasses
import json

import grpc
import pytest
from google.protobuf import field_mask_pb2

from server.client import Client, error_code
from server.gen.conversion_matcher.v1 import custom_conversions_pb2 as pb, pixels_pb2
from tests.service_fixtures import ingest, owner, rejected, service  # noqa: F401 (fixtures)

PURCHASE_OVER_100 = {"and": [{"event": {"eq": "Purchase"}}, {"value": {"gt": 100}}]}
THANK_YOU = {"or": [{"url": {"i_contains": "thankyou.html"}}, {"url": {"i_contains": "confirmation.html"}}]}





@pytest.fixture
def pixel(owner):
    return owner.create_pixel("act_1", "site pixel")



def listed(client, account="act_1", archived=None):
    request = pb.ListCustomConversionsRequest(account_id=account)
    if archived is not None:
        request.is_archived = archived
    return [c.id for c in client.call(client.custom_conversions.ListCustomConversions, request).custom_conversions]


def get(client, conversion_id):
    return client.call(client.custom_conversions.GetCustomConversion, pb.GetCustomConversionRequest(custom_conversion_id=conversion_id))


def test_create_with_explicit_type_and_canonical_rule(owner, pixel):
    created = owner.create_custom_conversion(
        "act_1", "URL based", pixel.id, THANK_YOU, custom_event_type="purchase", default_conversion_value=2.5,
        description="thank-you pages",
    )
    assert not created.is_custom_event_type_predicted
    conversion = created.custom_conversion
    assert conversion.id == created.id and conversion.id.isdigit()
    assert (conversion.account_id, conversion.event_source_id, conversion.event_source_type) == ("act_1", pixel.id, "pixel")
    assert conversion.custom_event_type == "PURCHASE" and conversion.default_conversion_value == 2.5
    assert json.loads(conversion.rule) == THANK_YOU
    assert not conversion.is_archived and not conversion.HasField("first_fired_time")
    assert get(owner, created.id) == conversion


def test_retention_days_is_kept_as_given_and_returned(owner, pixel):
    """Decision (docs/service.md): any uint32 is taken, 0 (not given) included; nothing reads it."""
    for days in (0, 180, 2**32 - 1):
        request = pb.CreateCustomConversionRequest(account_id="act_1", name=f"kept {days}", event_source_id=pixel.id,
                                                   rule='{"event": "Lead"}', retention_days=days)
        created = owner.call(owner.custom_conversions.CreateCustomConversion, request)
        assert created.custom_conversion.retention_days == days == get(owner, created.id).retention_days


@pytest.mark.parametrize(
    ("rule", "predicted"),
    [
        (PURCHASE_OVER_100, "PURCHASE"),
        ({"event": "Lead"}, "LEAD"),
        ({"event": {"=": "ViewContent"}}, "CONTENT_VIEW"),
        ({"and": [{"event": {"eq": "item-sold"}}, {"color": {"i_contains": "black"}}]}, "OTHER"),
        ({"or": [{"event": {"eq": "Purchase"}}, {"event": {"eq": "Lead"}}]}, "OTHER"),
        ({"not": {"event": {"eq": "Purchase"}}}, "OTHER"),
        (THANK_YOU, "OTHER"),
    ],
)
def test_custom_event_type_predicted_from_the_rule(owner, pixel, rule, predicted):
    created = owner.create_custom_conversion("act_1", "c", pixel.id, rule)
    assert created.is_custom_event_type_predicted
    assert created.custom_conversion.custom_event_type == predicted


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rule": '{"url": {"gt": "abc"}}'}, "rule.url"),
        ({"rule": "{not json"}, "rule"),
        ({"rule": ""}, "rule: required"),
        ({"name": ""}, "name:"),
        ({"custom_event_type": "BUY"}, "custom_event_type:"),
        ({"custom_event_type": " purchase "}, "custom_event_type: ' purchase ' is not one of"),
        ({"custom_event_type": "\u017fearch"}, "custom_event_type: '\u017fearch' is not one of"),
        ({"default_conversion_value": -1}, "default_conversion_value:"),
        ({"default_conversion_value": float("nan")}, "default_conversion_value:"),
        ({"event_source_id": ""}, "event_source_id:"),
        ({"rule": json.dumps({"event": "x" * 51})}, "custom event name"),
        ({"rule": '{"event": {"eq": ' + "9" * 60 + "}}"}, "custom event name '99999999999999999999'... is 60"),
    ],
)
def test_invalid_create_is_code_100_and_creates_nothing(owner, pixel, changes, message):
    fields = {"account_id": "act_1", "name": "c", "event_source_id": pixel.id, "rule": json.dumps(PURCHASE_OVER_100)}
    fields.update(changes)
    request = pb.CreateCustomConversionRequest(**fields)
    error = rejected(owner.call, owner.custom_conversions.CreateCustomConversion, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100
    assert message in error.details()
    assert listed(owner) == []


def test_create_needs_an_existing_pixel_the_account_may_use(service, owner, pixel):
    error = rejected(owner.create_custom_conversion, "act_1", "c", "123", PURCHASE_OVER_100)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rejected(owner.create_custom_conversion, "act_2", "c", pixel.id, PURCHASE_OVER_100)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200
    assert error.details() == f"event_source_id: Permissions error: ad account act_2 is not authorised on pixel {pixel.id}"
    with Client(service[1], "other-token") as other:
        error = rejected(other.create_custom_conversion, "act_1", "c", pixel.id, PURCHASE_OVER_100)
        assert error_code(error) == 200
    assert listed(owner) == [] and listed(owner, "act_2") == []


def test_an_account_removed_from_the_pixel_meanwhile_is_refused_at_event_source_id(service, owner, pixel, monkeypatch):
    """The store checks the account's access again in the write's transaction; its refusal
    names the field too. (Here the servicer's own check is made to see access the account
    does not have, as when it is removed from the pixel between the two.)"""
    store = service[0].core.store
    get_pixel = store.get_pixel

    def authorised_everywhere(pixel_id, among=None, **options):
        found = get_pixel(pixel_id, among, **options)
        return dataclasses.replace(found, authorized_accounts=(*found.authorized_accounts, *(among or ())))

    monkeypatch.setattr(store, "get_pixel", authorised_everywhere)
    error = rejected(owner.create_custom_conversion, "act_2", "c", pixel.id, PURCHASE_OVER_100)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200
    assert error.details() == f"event_source_id: Permissions error: ad account act_2 is not authorised on pixel {pixel.id}"
    assert listed(owner, "act_2") == []


def test_the_101st_conversion_is_refused(owner, pixel):
    ids = [owner.create_custom_conversion("act_1", f"c{i}", pixel.id, {"event": f"e{i}"}).id for i in range(100)]
    owner.call(owner.custom_conversions.ArchiveCustomConversion, pb.ArchiveCustomConversionRequest(custom_conversion_id=ids[0]))
    error = rejected(owner.create_custom_conversion, "act_1", "c100", pixel.id, {"event": "e100"})
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "100" in error.details()
    assert error_code(error) == 100 and error.details().startswith("account_id: ad account act_1 already has 100 "), \
        error.details()
    assert len(listed(owner)) == 100
    # Another account has its own limit; deleting one frees a place.
    owner.call(owner.pixels.AddAuthorizedAdAccounts, pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_2"]))
    owner.create_custom_conversion("act_2", "elsewhere", pixel.id, {"event": "x"})
    owner.call(owner.custom_conversions.DeleteCustomConversion, pb.DeleteCustomConversionRequest(custom_conversion_id=ids[1]))
    owner.create_custom_conversion("act_1", "c100", pixel.id, {"event": "e100"})


def test_update_changes_only_name_description_and_value(owner, pixel):
    created = owner.create_custom_conversion("act_1", "before", pixel.id, PURCHASE_OVER_100, default_conversion_value=1)
    updated = owner.update_custom_conversion(created.id, name="after", description="d", default_conversion_value=7.5)
    assert (updated.name, updated.description, updated.default_conversion_value) == ("after", "d", 7.5)
    assert updated.rule == created.custom_conversion.rule

    # Without a mask, the fields set in the message are the changes.
    request = pb.UpdateCustomConversionRequest(custom_conversion=pb.CustomConversion(id=created.id, name="inferred"))
    assert owner.call(owner.custom_conversions.UpdateCustomConversion, request).name == "inferred"


def test_names_refuse_control_characters_and_descriptions_keep_their_lines(owner, pixel):
    error = rejected(owner.create_custom_conversion, "act_1", "big\x00", pixel.id, PURCHASE_OVER_100)
    assert error_code(error) == 100 and error.details() == "name: a control character ('\\x00') at index 3"
    error = rejected(owner.create_custom_conversion, "act_1", "big", pixel.id, PURCHASE_OVER_100, description="a\x07")
    assert error_code(error) == 100 and error.details().startswith("description: a control character ('\\x07')")
    assert not listed(owner)
    created = owner.create_custom_conversion("act_1", "big", pixel.id, PURCHASE_OVER_100, description="one\n\ttwo\r\n")
    assert get(owner, created.id).description == "one\n\ttwo\r\n"
    for changes, place in (({"name": "a\nb"}, "custom_conversion.name: "),
                           ({"description": "\x00"}, "custom_conversion.description: ")):
        error = rejected(owner.update_custom_conversion, created.id, **changes)
        assert error_code(error) == 100 and error.details().startswith(place + "a control character")
    assert (get(owner, created.id).name, get(owner, created.id).description) == ("big", "one\n\ttwo\r\n")


@pytest.mark.parametrize(
    "frozen",
    [
        {"rule": '{"event": "Lead"}'},
        {"event_source_id": "1"},
        {"custom_event_type": "LEAD"},
        {"account_id": "act_2"},
        {"is_archived": True},
    ],
)
def test_update_of_a_frozen_field_changes_nothing(owner, pixel, frozen):
    created = owner.create_custom_conversion("act_1", "before", pixel.id, PURCHASE_OVER_100)
    before = get(owner, created.id)
    for with_mask in (True, False):
        request = pb.UpdateCustomConversionRequest(
            custom_conversion=pb.CustomConversion(id=created.id, name="changed", **frozen),
        )
        if with_mask:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=["name", *frozen]))
        error = rejected(owner.call, owner.custom_conversions.UpdateCustomConversion, request)
        assert error_code(error) == 100 and next(iter(frozen)) in error.details()
    assert get(owner, created.id) == before


def test_update_errors(owner, pixel):
    created = owner.create_custom_conversion("act_1", "n", pixel.id, PURCHASE_OVER_100)
    error = rejected(owner.update_custom_conversion, created.id, name="")
    assert error_code(error) == 100
    error = rejected(owner.call, owner.custom_conversions.UpdateCustomConversion,
                     pb.UpdateCustomConversionRequest(custom_conversion=pb.CustomConversion(id=created.id)))
    assert error_code(error) == 100 and "nothing to update" in error.details()
    error = rejected(owner.update_custom_conversion, "999", name="x")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert get(owner, created.id).name == "n"


def test_archive_list_filter_and_delete(owner, pixel):
    kept = owner.create_custom_conversion("act_1", "kept", pixel.id, {"event": "A"}).id
    archived = owner.create_custom_conversion("act_1", "archived", pixel.id, {"event": "B"}).id
    reply = owner.call(owner.custom_conversions.ArchiveCustomConversion, pb.ArchiveCustomConversionRequest(custom_conversion_id=archived))
    assert reply.is_archived
    assert listed(owner) == [kept, archived]
    assert listed(owner, archived=True) == [archived]
    assert listed(owner, archived=False) == [kept]
    assert owner.call(owner.custom_conversions.DeleteCustomConversion, pb.DeleteCustomConversionRequest(custom_conversion_id=kept)).success
    assert listed(owner) == [archived]
    assert rejected(get, owner, kept).code() == grpc.StatusCode.NOT_FOUND


def test_other_accounts_cannot_see_or_change_a_conversion(service, owner, pixel):
    created = owner.create_custom_conversion("act_1", "mine", pixel.id, PURCHASE_OVER_100)
    with Client(service[1], "other-token") as other:
        for call in (
            lambda: get(other, created.id),
            lambda: other.update_custom_conversion(created.id, name="theirs"),
            lambda: other.call(other.custom_conversions.DeleteCustomConversion, pb.DeleteCustomConversionRequest(custom_conversion_id=created.id)),
            lambda: other.stats(created.id),
            lambda: listed(other, "act_1"),
        ):
            assert error_code(rejected(call)) == 200
    assert get(owner, created.id).name == "mine"


def test_deleting_a_pixel_with_conversions_is_refused(owner, pixel):
    created = owner.create_custom_conversion("act_1", "c", pixel.id, PURCHASE_OVER_100)
    error = rejected(owner.call, owner.pixels.DeletePixel, pixels_pb2.DeletePixelRequest(pixel_id=pixel.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    # it names the field, and the caller's conversions that count the pixel by id
    assert error.details() == (f"pixel_id: pixel {pixel.id} is the event source of 1 custom conversion(s) "
                               f"({created.id} of this access token's ad accounts); delete them first")
    assert owner.get_pixel(pixel.id).id == pixel.id


def test_stats_by_hour(service, owner, ingest, pixel):
    server = service[0]
    hour = server.core.now() // 3600 * 3600 - 2 * 3600
    created = owner.create_custom_conversion("act_1", "big", pixel.id, PURCHASE_OVER_100, default_conversion_value=5)
    events = [
        {"pixel_id": pixel.id, "event": "Purchase", "url": "https://shop.example/a?x=1", "device_type": "desktop",
         "custom_data": {"value": 150}, "event_time": hour + 10},
        {"pixel_id": pixel.id, "event": "Purchase", "url": "https://Shop.Example:8080/b", "device_type": "mobile_iphone",
         "custom_data": {"value": "250.5"}, "event_time": hour + 20},
        {"pixel_id": pixel.id, "event": "Purchase", "url": "https://shop.example/c", "custom_data": {"value": 50},
         "event_time": hour + 30},
        {"pixel_id": pixel.id, "event": "PageView", "url": "https://shop.example/", "event_time": hour + 3600 + 5},
    ]
    results = ingest.classify_pixel_events(events, record=True)
    assert [[m.custom_conversion_id for m in r.conversions] for r in results] == [[created.id], [created.id], [], []]
    assert [m.value for m in results[1].conversions] == [250.5]

    def rows(aggregation):
        return [(r.timestamp, r.key, r.value) for r in owner.stats(created.id, aggregation, hour, hour + 7200).rows]

    assert rows("count") == [(hour, "", 2)]
    assert rows("usd_amount") == [(hour, "", 400.5)]
    assert rows("url") == [(hour, "https://Shop.Example:8080/b", 1), (hour, "https://shop.example/a?x=1", 1)]
    assert rows("host") == [(hour, "shop.example", 2)]
    assert rows("device_type") == [(hour, "desktop", 1), (hour, "mobile_iphone", 1)]
    assert rows("pixel_fire") == [(hour, "", 3), (hour + 3600, "", 1)]
    assert rows("unmatched_count") == [(hour, "", 1), (hour + 3600, "", 1)]
    assert rows("unmatched_usd_amount") == [(hour, "", 50), (hour + 3600, "", 0)]
    assert rows("count") == [(r.timestamp, r.key, r.value) for r in owner.stats(created.id).rows]
    conversion = get(owner, created.id)
    assert (conversion.first_fired_time, conversion.last_fired_time) == (hour + 10, hour + 20)

    error = rejected(owner.stats, created.id, "clicks")
    assert error_code(error) == 100 and error.details().startswith("aggregation:")
    error = rejected(owner.stats, created.id, "count", hour + 10, hour)
    assert error_code(error) == 100


def test_a_stats_key_is_recorded_at_most_2048_characters_long(service, owner, ingest, pixel):
    # Unbounded, one event with a 16 MB url wrote 16 MB a matching conversion and made a row
    # no reply could hold, which stopped paging past it.
    hour = service[0].core.now() // 3600 * 3600 - 3600
    created = owner.create_custom_conversion("act_1", "big", pixel.id, PURCHASE_OVER_100)
    long_url = "https://shop.example/" + "a" * 100_000
    host = "h" * 3000 + ".example"
    events = [{"pixel_id": pixel.id, "event": "Purchase", "url": url, "device_type": device,
               "custom_data": {"value": 150}, "event_time": hour + 1}
              for url, device in [(long_url, "d" * 2049), (long_url + "b", "d" * 2048),
                                  (f"https://{host}/x", "mobile"), ("https://shop.example/" + "a" * 2027, "mobile")]]
    ingest.classify_pixel_events(events, record=True)

    def rows(aggregation):
        return [(r.key, r.value) for r in owner.stats(created.id, aggregation, hour, hour + 3600).rows]

    cut = long_url[:2047] + "\u2026"
    assert rows("url") == sorted([(cut, 2), (f"https://{host}/x"[:2047] + "\u2026", 1),
                                  ("https://shop.example/" + "a" * 2027, 1)])  # (2,048 characters: whole)
    assert rows("device_type") == sorted([("d" * 2047 + "\u2026", 1), ("d" * 2048, 1), ("mobile", 2)])
    assert rows("host") == sorted([("shop.example", 3), (host[:2047] + "\u2026", 1)])
