"""Requests an audit found the service mishandled: each is now code 100 (or the status the spec
names) naming its place, changes nothing, and leaves the server able to restart."""

import json
import sqlite3

import grpc
import pytest

from server.classification import number_value
from server.client import Client, error_code
from server.errors import MAX_MESSAGE_BYTES
from server.gen.conversion_matcher.v1 import ads_pb2, classification_pb2, custom_conversions_pb2 as cc_pb, pixels_pb2
from server.testing import running_server
from tests.service_fixtures import ingest, other, owner, rejected, service  # noqa: F401 (fixtures)

AD = {"id": "ad1", "account_id": "act_1", "objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P1"}}


def invalid(error: grpc.RpcError, place: str) -> str:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100, error.details()
    assert error.details().startswith(place), error.details()
    return error.details()


@pytest.mark.parametrize("fields, place", [
    ({"tracking_specs": '[{"action.type":"like","page":"\\ud800"}]'}, "ad.tracking_specs[0].page: \\ud800"),
    ({"creative": '{"kind":"page_like","page_id":"\\udfff"}'}, "ad.creative.page_id: \\udfff"),
    ({"creative": '{"kind":"page_like","page_id":' + "9" * 5000 + "}"}, "ad.creative: not JSON"),
    ({"promoted_object": '{"page_id": ' + "1" * 4400 + "}"}, "ad.promoted_object: not JSON (a number of 4,400 digits (at most 4,300 are read) at line 1 column 13)"),
    # Decimal's normalize() overflowed (INTERNAL before).
    ({"tracking_specs": '[{"action.type":"like","page":1e1000000}]'},
     "ad.tracking_specs[0].page: number is not finite or has too many digits"),
])
def test_an_ad_that_cannot_be_text_is_rejected_and_not_stored(owner, ingest, fields, place):  # noqa: F811
    # Before: validation passed, the ad was stored and live, and only the reply failed (INTERNAL).
    invalid(rejected(owner.register_ad, {**AD, **fields}), place)
    error = rejected(owner.call, owner.ads.GetAd, ads_pb2.GetAdRequest(ad_id="ad1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert not owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1")).ads
    assert ingest.classify_actions([{"action.type": "like", "page": "P1"}]) == [[]]


@pytest.mark.parametrize("custom_data, place", [
    ('{"value": ' + "1" * 5000 + "}", "events[0].custom_data: not JSON"),
    ('{"note": ["a", "\\ud800"]}', "events[0].custom_data.note[1]: \\ud800 is a lone surrogate"),
])
def test_custom_data_that_is_no_json_value_is_code_100(ingest, custom_data, place):  # noqa: F811
    request = classification_pb2.ClassifyPixelEventsRequest(
        events=[classification_pb2.PixelEvent(pixel_id="1", event="Purchase", custom_data=custom_data)])
    invalid(rejected(ingest.call, ingest.classification.ClassifyPixelEvents, request), place)


def test_custom_data_may_hold_nan_and_infinity(owner, ingest):  # noqa: F811
    """Decision (docs/service.md, Classification): Python's json writes NaN, Infinity and
    -Infinity, so custom data holding them is read, not refused. The parameter is there, no
    number comparison holds on it, and as ``value`` it is no conversion value."""
    pixel = owner.create_pixel("act_1", "p").id
    there = owner.create_custom_conversion("act_1", "there", pixel, {"value": {"exists": True}},
                                           default_conversion_value=5).id
    owner.create_custom_conversion("act_1", "over", pixel, {"value": {"gt": 1}})
    owner.create_custom_conversion("act_1", "under", pixel, {"value": {"lt": 1}})
    for literal in ("NaN", "Infinity", "-Infinity"):
        event = classification_pb2.PixelEvent(pixel_id=pixel, event="Purchase", custom_data=f'{{"value": {literal}}}')
        reply = ingest.call(ingest.classification.ClassifyPixelEvents,
                            classification_pb2.ClassifyPixelEventsRequest(events=[event]))
        assert (list(reply.custom_conversion_ids), list(reply.conversion_values)) == ([there], [5.0]), literal


def test_an_action_number_past_any_text_is_no_value(owner, ingest):  # noqa: F811
    # INTERNAL before (Decimal overflow); now the value counts as absent, as NaN does.
    owner.register_ad(AD)
    assert ingest.classify_actions([{"action.type": "like", "page": "P1"}]) != [[]]
    request = classification_pb2.ClassifyActionsRequest(actions=['{"action.type":"like","page":1e1000000}'])
    assert ingest.action_results(ingest.call(ingest.classification.ClassifyActions, request)) == [[]]


@pytest.mark.parametrize("text, value", [
    (" 7 ", 7.0), ("1e3", 1000.0), ("-2.5", -2.5),
    # float() takes these; a rule's numeric operators do not, so neither does a conversion value.
    ("1_000", None), ("\u0661\u0662", None), ("\uff11\uff12", None), ("\u2003 7", None), ("inf", None),
])
def test_a_conversion_value_is_numeric_text_as_rules_read_it(text, value):
    assert number_value(text) == value


def test_a_conversion_value_is_a_number_as_rules_read_one():
    # One reading for the value a rule compares and the value a conversion reports.
    import numpy

    class Text(str):
        pass

    assert number_value(numpy.int64(12)) == 12.0 and number_value(numpy.float64(2.5)) == 2.5
    assert number_value(Text("3.5")) == 3.5 and number_value(7) == 7.0
    assert [number_value(v) for v in (True, 10**400, float("nan"), numpy.float64("inf"), None, [1])] == [None] * 6


def test_firings_longer_than_any_real_one_are_not_cached(tmp_path):
    # One ingest caller sent 8 MiB pixel ids: each was kept in the per-snapshot cache.
    with running_server(tmp_path / "db.sqlite") as (server, target):
        with Client(target, "owner-token") as owner, Client(target, "ingest-token") as ingest:
            owner.register_ad({**AD, "tracking_specs": [{"action.type": "offsite_conversion", "fb_pixel": "PX1"}]})
            long_id = "9" * 100_000
            results = ingest.classify_pixel_events([{"pixel_id": "PX1", "event": "Purchase"}, {"pixel_id": long_id}])
            assert [[a.ad_id for a in r.ads] for r in results] == [["ad1"], []]
            cache = server.core.registry.snapshot.firing_ad_cache
            # (keyed by pixel alone: no spec reads PX1's event names)
            assert ("PX1", None) in cache and all(len(pixel) < 1000 for pixel, _ in cache)


def test_action_numbers_are_their_decimal_text_as_in_specs(owner, ingest):  # noqa: F811
    owner.register_ad({**AD, "tracking_specs": [{"action.type": "like", "object": ["0.30000000000000001"]}]})
    request = classification_pb2.ClassifyActionsRequest(actions=['{"action.type":"like","object":0.30000000000000001}'])
    reply = ingest.action_results(ingest.call(ingest.classification.ClassifyActions, request))
    assert [a.ad_id for a in reply[0]] == ["ad1"]
    request = classification_pb2.ClassifyActionsRequest(actions=['{"action.type":"like","object":"\\udc00"}'])
    invalid(rejected(ingest.call, ingest.classification.ClassifyActions, request), "actions[0].object: \\udc00")


def test_a_rule_over_the_limit_written_canonically_is_rejected(owner):  # noqa: F811
    pixel = owner.create_pixel("act_1", "p").id
    rule = json.dumps({"or": [{"f": "x" * 643}] * 100}, separators=(",", ":"))
    invalid(rejected(owner.create_custom_conversion, "act_1", "c", pixel, rule), "rule: rule is 65908 bytes")
    listed = owner.call(owner.custom_conversions.ListCustomConversions, cc_pb.ListCustomConversionsRequest(account_id="act_1"))
    assert not listed.custom_conversions


def test_a_stored_rule_that_no_longer_parses_does_not_keep_the_server_from_starting(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db) as (_, target), Client(target, "owner-token") as owner:
        pixel = owner.create_pixel("act_1", "p").id
        big = owner.create_custom_conversion("act_1", "big", pixel, {"event": "Purchase"}).id
        bad = owner.create_custom_conversion("act_1", "bad", pixel, {"event": "Lead"}).id
        good = owner.create_custom_conversion("act_1", "good", pixel, {"event": "Lead"}).id
    # As a database written before a limit or a check: canonical JSON over 64 KiB, and a rule
    # that no longer parses.
    with sqlite3.connect(db) as raw:
        leaves = [{"event": {"eq": "Purchase"}}] + [{"f": {"eq": "x" * 700}}] * 99
        raw.execute("UPDATE custom_conversions SET rule = ? WHERE id = ?", (json.dumps({"or": leaves}), big))
        raw.execute("UPDATE custom_conversions SET rule = ? WHERE id = ?", ('{"and":{"eq":"x"}}', bad))
    with running_server(db) as (_, target), Client(target, "ingest-token") as ingest:
        results = ingest.classify_pixel_events([{"pixel_id": pixel, "event": "Purchase"},
                                                {"pixel_id": pixel, "event": "Lead"}])
        assert [[m.custom_conversion_id for m in r.conversions] for r in results] == [[big], [good]]


def accounts_of(client, pixel):
    reply = client.call(client.pixels.ListAuthorizedAdAccounts, pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel))
    return list(reply.account_ids)


def test_an_account_with_conversions_on_a_pixel_cannot_be_removed_from_it(owner, other):  # noqa: F811
    # Removed, it kept matching and reading the pixel's events through its conversion's stats.
    pixel = owner.create_pixel("act_1", "shared").id
    change = pixels_pb2.ChangeAuthorizedAdAccountsRequest
    owner.call(owner.pixels.AddAuthorizedAdAccounts, change(pixel_id=pixel, account_ids=["act_2", "act_3"]))
    conversion = other.create_custom_conversion("act_3", "theirs", pixel, {"event": "Lead"}).id
    error = rejected(owner.call, owner.pixels.RemoveAuthorizedAdAccounts,
                     change(pixel_id=pixel, account_ids=["act_2", "act_3"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details().startswith("account_ids[1]: ad account act_3 has 1 custom conversion(s)"), error.details()
    assert {"act_2", "act_3"} <= set(accounts_of(owner, pixel))  # unchanged: act_2 not removed either
    other.call(other.custom_conversions.DeleteCustomConversion,
               cc_pb.DeleteCustomConversionRequest(custom_conversion_id=conversion))
    owner.call(owner.pixels.RemoveAuthorizedAdAccounts, change(pixel_id=pixel, account_ids=["act_3"]))
    assert "act_3" not in accounts_of(owner, pixel)
    error = rejected(other.create_custom_conversion, "act_3", "again", pixel, {"event": "Lead"})
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200


def test_stats_times_before_1970_are_code_100_and_huge_sums_stay_finite(owner, ingest):  # noqa: F811
    pixel = owner.create_pixel("act_1", "p").id
    conversion = owner.create_custom_conversion("act_1", "c", pixel, {"event": "Purchase"}).id
    for time_field in ("start_time", "end_time"):
        invalid(rejected(owner.stats, conversion, **{time_field: -2 ** 63}), f"{time_field}: ")
    # +1e308 twice overflows an hour's sum to +inf; -1e308 twice after it made NaN (NULL in
    # SQLite: the batch failed INTERNAL and was not recorded). Sums are held at the largest double.
    for value in (1e308, -1e308, -1e308, -1e308):
        events = [{"pixel_id": pixel, "event": "Purchase", "custom_data": {"value": value}, "event_time": 1_700_000_000}] * 2
        ingest.classify_pixel_events(events, record=True)
    rows = owner.stats(conversion, "usd_amount", start_time=1_699_999_000, end_time=1_700_003_600).rows
    assert [row.value for row in rows] == [-1.7976931348623157e308]
    assert [row.value for row in owner.stats(conversion, "count", 1_699_999_000, 1_700_003_600).rows] == [8]


def test_an_error_quoting_a_long_input_is_cut_to_a_readable_length(owner):  # noqa: F811
    # The whole id twice in the headers passed the client's metadata limit: RESOURCE_EXHAUSTED.
    error = rejected(owner.get_pixel, "9" * 8000)
    assert error.code() == grpc.StatusCode.NOT_FOUND and error_code(error) == 100
    assert len(error.details().encode()) <= MAX_MESSAGE_BYTES and error.details().endswith("...")


def test_a_request_that_is_not_valid_protobuf_is_code_100_and_changes_nothing(service, owner, ingest):  # noqa: F811
    # gRPC used to refuse these while decoding, before any handler: INTERNAL, no details.
    channel = owner.channel
    register = channel.unary_unary("/conversion_matcher.v1.AdService/RegisterAd")
    good = ads_pb2.RegisterAdRequest(ad=ads_pb2.Ad(id="ad1", account_id="act_1", objective="PAGE_LIKES",
                                                   creative='{"kind":"page_like","page_id":"P1"}')).SerializeToString()
    bad_utf8 = good.replace(b"P1", b"\xff\xfe")  # the creative's text is no longer UTF-8
    for payload in (bad_utf8, b"\x0a\xff\xff\xff"):  # and a length running past the end
        error = rejected(register, payload, metadata=owner.metadata)
        details = invalid(error, "request: not a valid conversion_matcher.v1.RegisterAdRequest message")
        assert "Error parsing" in details
    assert not owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1")).ads
    stream = channel.stream_stream("/conversion_matcher.v1.ClassificationService/StreamClassifyActions")
    ok = classification_pb2.ClassifyActionsRequest(actions=['{"action.type":"like","page":"P1"}']).SerializeToString()
    replies = stream(iter([ok, ok.replace(b"P1", b"\xc3\x28"), ok]), metadata=ingest.metadata)
    assert classification_pb2.ClassifyActionsResponse.FromString(next(replies)).ad_counts == [0]
    with pytest.raises(grpc.RpcError) as caught:
        next(replies)
    invalid(caught.value, "requests[1]: not a valid conversion_matcher.v1.ClassifyActionsRequest message")
    assert register(good, metadata=owner.metadata)  # the server goes on serving
    assert [a.ad.id for a in owner.list_ads("act_1")] == ["ad1"]


def test_an_ad_cannot_name_a_registered_pixel_its_account_is_not_authorised_on(owner, other):  # noqa: F811
    # The spec: using a pixel the account is not authorised on is PERMISSION_DENIED, code 200.
    theirs = other.create_pixel("act_3", "act_3's shop").id
    mine = owner.create_pixel("act_1", "mine").id
    named = [
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": [theirs]}])},
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "offsite_pixel": [int(theirs)]}])},
        {"conversion_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": [mine, theirs]}])},
        {"objective": "CONVERSIONS", "optimization_goal": "OFFSITE_CONVERSIONS",
         "creative": {"kind": "domain", "url": "http://shop.example", "page_id": "P1"},
         "promoted_object": {"pixel_id": theirs}},
        # one spec, not a list, naming it by itself; a placeholder the promoted object fills
        {"tracking_specs": json.dumps({"action.type": "offsite_conversion", "fb_pixel": theirs})},
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": "FACEBOOK_PIXEL_ID"}]),
         "promoted_object": {"page_id": "P1", "pixel_id": int(theirs)}},
        # a placeholder takes PAGE_ID from the creative before the promoted object; a field no
        # placeholder reads holds no id the specs use
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": "PAGE_ID"}]),
         "creative": {"kind": "page_like", "page_id": theirs},
         "promoted_object": {"product_set_id": theirs, "page_id": theirs}},
        # a page id the creative gives only in its object_story_id (PAGEID_POSTID)
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": "PAGE_ID"}]),
         "creative": {"kind": "page_post", "object_story_id": f"{theirs}_7"}},
        # the placeholder's own source, not another field holding the same id
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": "APPLICATION_ID"}]),
         "creative": {"kind": "page_like", "page_id": theirs, "application_id": theirs}},
        {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": "APPLICATION_ID"}]),
         "creative": {"kind": "page_like", "page_id": theirs},
         "promoted_object": {"application_id": theirs}},
    ]
    # the refusal names the request's field that named the pixel
    places = ["ad.tracking_specs[0].fb_pixel[0]", "ad.tracking_specs[0].offsite_pixel[0]",
              "ad.conversion_specs[0].fb_pixel[1]", "ad.promoted_object.pixel_id", "ad.tracking_specs.fb_pixel",
              "ad.promoted_object.pixel_id", "ad.creative.page_id", "ad.creative.object_story_id",
              "ad.creative.application_id", "ad.promoted_object.application_id"]
    for fields, place in zip(named, places, strict=True):
        error = rejected(owner.register_ad, {**AD, **fields})
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200, error.details()
        assert f"pixel {theirs}" in error.details() and "act_1" in error.details()
        assert error.details().startswith(f"{place}: Permissions error: "), error.details()
    assert not owner.list_ads("act_1")
    # Its own pixel, and ids no one registered, are fine; so is theirs once shared with act_1.
    unregistered = {"tracking_specs": json.dumps([{"action.type": "offsite_conversion", "fb_pixel": [mine, "42"]}])}
    owner.register_ad({**AD, **unregistered})
    error = rejected(owner.register_ad, {**AD, **named[0]}, replace=True)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details().startswith("ad.tracking_specs[0].fb_pixel[0]: Permissions error: "), error.details()
    assert json.loads(owner.list_ads("act_1")[0].ad.tracking_specs)[0]["fb_pixel"] == [mine, "42"]  # unchanged
    other.call(other.pixels.AddAuthorizedAdAccounts,
               pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=theirs, account_ids=["act_1"]))
    assert owner.register_ad({**AD, **named[0]}, replace=True).ad.tracking_specs == named[0]["tracking_specs"]


def test_a_stored_ad_whose_specs_no_longer_derive_does_not_keep_the_server_from_starting(tmp_path):
    """An ad row written before a check was added (here: objective NONE takes no app creative,
    now also when custom specs replace the defaults) once made the server fail at start."""
    db = tmp_path / "matcher.db"
    page_like = {"kind": "page_like", "page_id": "P1"}
    with running_server(db) as (_, target), Client(target, "owner-token") as owner:
        for ad_id in ("good", "old"):
            owner.register_ad({"id": ad_id, "account_id": "act_1", "objective": "PAGE_LIKES", "creative": page_like})
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE ads SET objective = 'NONE', creative = ?, tracking_specs = ? WHERE id = 'old'",
                    ('{"kind": "mobile_app", "application_id": "7"}',
                     '[{"action.type": "mobile_app_install", "application": "7"}]'))
    with running_server(db) as (_, target), Client(target, "owner-token") as owner:
        invalid(rejected(owner.call, owner.ads.GetAd, ads_pb2.GetAdRequest(ad_id="old")), "ad.creative.kind: ")
        assert [a.ad.id for a in owner.list_ads("act_1")] == ["good"]
        owner.register_ad({"id": "old", "account_id": "act_1", "objective": "PAGE_LIKES", "creative": page_like},
                          replace=True)
        assert [a.ad.id for a in owner.list_ads("act_1")] == ["good", "old"]


def test_a_stored_ad_whose_objects_repeat_a_key_still_loads(tmp_path):
    """Repeated keys in ``creative`` / ``promoted_object`` are refused when a client sends them,
    not when a row stored before that check is read: it stays in classification and listings,
    the last of the repeated keys winning, as JSON reads it."""
    db = tmp_path / "matcher.db"
    page_like = {"kind": "page_like", "page_id": "P1"}
    with running_server(db) as (_, target), Client(target, "owner-token") as owner:
        owner.register_ad({"id": "old", "account_id": "act_1", "objective": "PAGE_LIKES", "creative": page_like})
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE ads SET creative = ? WHERE id = 'old'",
                    ('{"kind": "page_like", "page_id": "P0", "page_id": "P1"}',))
    with running_server(db) as (_, target), Client(target, "owner-token") as owner, \
            Client(target, "ingest-token") as ingest:
        assert [a.ad.id for a in owner.list_ads("act_1")] == ["old"]
        assert owner.call(owner.ads.GetAd, ads_pb2.GetAdRequest(ad_id="old")).ad.id == "old"
        assert [[m.ad_id for m in ads] for ads in ingest.classify_actions([{"action.type": "like", "page": "P1"}])] \
            == [["old"]]
