"""AdService and action classification over a real server with a real SQLite file."""

import json

import grpc
import pytest

from server.client import AdMatch, Client, error_code
from server.gen.conversion_matcher.v1 import ads_pb2 as pb, classification_pb2, custom_conversions_pb2 as cc_pb
from server.testing import running_server
from tests.service_fixtures import ingest, owner, rejected, service  # noqa: F401 (fixtures)

CONVERSION_AD = {
    "id": "ad1",
    "account_id": "act_1",
    "objective": "CONVERSIONS",
    "optimization_goal": "OFFSITE_CONVERSIONS",
    "creative": {"kind": "page_post_link", "object_story_id": "P1_PO1"},
    "promoted_object": {"pixel_id": "PX1"},
}
PAGE_LIKE_AD = {
    "id": "ad2",
    "account_id": "act_1",
    "objective": "PAGE_LIKES",
    "creative": {"kind": "page_like", "page_id": "P1"},
    "tracking_specs": [{"action.type": "offsite_conversion", "offsite_pixel": "PX2"}],
}






def test_register_returns_effective_specs(owner):
    registration = owner.register_ad(CONVERSION_AD)
    tracking = json.loads(registration.effective_tracking_specs)
    conversion = json.loads(registration.effective_conversion_specs)
    assert {"action.type": ["offsite_conversion"], "fb_pixel": ["PX1"]} in tracking
    assert conversion == [{"action.type": ["offsite_conversion"], "fb_pixel": ["PX1"]}]
    assert registration.ad.id == "ad1" and json.loads(registration.ad.creative) == CONVERSION_AD["creative"]
    fetched = owner.call(owner.ads.GetAd, pb.GetAdRequest(ad_id="ad1"))
    assert fetched == registration


def test_register_replace_list_delete(owner):
    owner.register_ad(CONVERSION_AD)
    error = rejected(owner.register_ad, CONVERSION_AD)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    error = rejected(owner.register_ad, PAGE_LIKE_AD, replace=True)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    owner.register_ad(PAGE_LIKE_AD)
    replaced = owner.register_ad({**PAGE_LIKE_AD, "tracking_specs": ""}, replace=True)
    assert "PX2" not in replaced.effective_tracking_specs
    listed = owner.call(owner.ads.ListAds, pb.ListAdsRequest(account_id="act_1")).ads
    assert [a.ad.id for a in listed] == ["ad1", "ad2"]
    assert owner.call(owner.ads.DeleteAd, pb.DeleteAdRequest(ad_id="ad1")).success
    assert rejected(owner.call, owner.ads.GetAd, pb.GetAdRequest(ad_id="ad1")).code() == grpc.StatusCode.NOT_FOUND
    assert [a.ad.id for a in owner.call(owner.ads.ListAds, pb.ListAdsRequest(account_id="act_1")).ads] == ["ad2"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"objective": "WIN"}, "ad.objective: unknown objective"),
        ({"creative": {"kind": "hologram"}}, "ad.creative.kind: unknown creative kind"),
        ({"creative": "{not json"}, "ad.creative: not JSON"),
        ({"creative": {"kind": "domain", "url": ""}}, "ad.creative.url: empty string"),
        ({"tracking_specs": [{"action.type": "like"}]}, "ad.tracking_specs[0]: "),
        ({"conversion_specs": [{"action.type": "rsvp", "event": "E", "response": "perhaps"}]},
         "ad.conversion_specs[0].response: "),
        ({"promoted_object": {}}, "ad.promoted_object.pixel_id: "),
        ({"id": ""}, "ad.id: required"),
        # Checked as other text fields are (Core.text): blank, too long.
        ({"id": "   "}, "ad.id: required and must not be blank"),
        ({"id": "a" * 65}, "ad.id: 65 characters, more than the limit of 64"),
        # Ids are compared exactly: " 123" would be another ad than "123".
        ({"id": " ad1"}, "ad.id: ' ad1' has blanks at its start or end"),
        ({"id": "ad1\u00a0"}, "ad.id: 'ad1\\xa0' has blanks at its start or end"),
        ({"id": "ad\x001"}, "ad.id: a control character ('\\x00') at index 2"),
        ({"id": "ad\n1"}, "ad.id: a control character ('\\n') at index 2"),
        # A key given twice is refused, as in specs (JSON alone would keep the last one).
        ({"creative": '{"kind": "domain", "url": "http://x", "url": "y"}'}, 'ad.creative: not JSON (duplicate key "url"'),
        ({"promoted_object": '{"pixel_id": "PX1", "pixel_id": "PX2"}'}, "ad.promoted_object: not JSON (duplicate key"),
    ],
)
def test_invalid_ads_are_code_100_and_register_nothing(owner, changes, message):
    error = rejected(owner.register_ad, {**CONVERSION_AD, **changes})
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100
    assert error.details().startswith(message), error.details()  # every place starts at the request's ad
    assert owner.call(owner.ads.ListAds, pb.ListAdsRequest(account_id="act_1")).ads == []


def test_an_ad_id_with_a_blank_inside_is_an_id(owner):
    assert owner.register_ad({**CONVERSION_AD, "id": "ad 1"}).ad.id == "ad 1"


def test_ads_of_other_accounts(service, owner):
    owner.register_ad(CONVERSION_AD)
    with Client(service[1], "other-token") as other:
        assert error_code(rejected(other.register_ad, {**CONVERSION_AD, "id": "x"})) == 200
        assert error_code(rejected(other.call, other.ads.GetAd, pb.GetAdRequest(ad_id="ad1"))) == 200
        assert error_code(rejected(other.call, other.ads.DeleteAd, pb.DeleteAdRequest(ad_id="ad1"))) == 200
        assert error_code(rejected(other.register_ad, {**CONVERSION_AD, "account_id": "act_3"}, replace=True)) == 200
    assert owner.call(owner.ads.GetAd, pb.GetAdRequest(ad_id="ad1")).ad.account_id == "act_1"


def test_actions_match_tracked_and_conversion_specs(owner, ingest):
    owner.register_ad(CONVERSION_AD)
    owner.register_ad(PAGE_LIKE_AD)
    results = ingest.classify_actions(
        [
            {"action.type": "offsite_conversion", "fb_pixel": "PX1"},
            {"action.type": "like", "page": "P1"},
            {"action.type": "comment", "post": "PO1", "page": "P1"},
            {"action.type": "offsite_conversion", "offsite_pixel": "PX2"},
            {"action.type": "rsvp", "event": "E1"},
        ]
    )
    # ad2's default page_engagement spec counts a comment in the context of page P1.
    assert [[a.ad_id for a in r] for r in results] == [["ad1"], ["ad1", "ad2"], ["ad1", "ad2"], ["ad2"], []]
    first = results[0][0]
    assert first.tracking_spec_index >= 0 and first.conversion_spec_index == 0
    assert results[3] == [AdMatch("ad2", results[3][0].tracking_spec_index, -1)]


def test_numbers_in_the_creative_are_read_as_specs_and_actions_read_them(owner, ingest):
    # As decimals: a double made the placeholder page ...67000, so the ad's own default
    # spec missed a like of page 12345678901234567891 that its tracking spec would count.
    page = "12345678901234567891.0"
    registration = owner.register_ad({**PAGE_LIKE_AD, "creative": f'{{"kind": "page_like", "page_id": {page}}}',
                                      "tracking_specs": f'{{"action.type": "comment", "page": {page}}}'})
    assert {"action.type": ["page_engagement"], "page": ["12345678901234567891"]} in json.loads(
        registration.effective_tracking_specs)
    results = ingest.classify_actions([{"action.type": "like", "page": 12345678901234567891},
                                       {"action.type": "comment", "page": "12345678901234567891"}])
    assert [[a.ad_id for a in r] for r in results] == [["ad2"], ["ad2"]]


def test_pixel_events_report_ads_tracking_the_pixel(owner, ingest):
    owner.register_ad(CONVERSION_AD)
    owner.register_ad(PAGE_LIKE_AD)
    results = ingest.classify_pixel_events([{"pixel_id": "PX1", "event": "Purchase"}, {"pixel_id": "PX2"}, {"pixel_id": "PX3"}])
    assert [[a.ad_id for a in r.ads] for r in results] == [["ad1"], ["ad2"], []]
    assert results[0].ads[0].conversion_spec_index == 0
    owner.call(owner.ads.DeleteAd, pb.DeleteAdRequest(ad_id="ad1"))
    assert ingest.classify_pixel_events([{"pixel_id": "PX1"}])[0].ads == ()


@pytest.mark.parametrize("form", ["rows", "columns", "buffers"])
def test_a_pixel_firing_carries_its_event_name(owner, ingest, form):
    # The spec's own example action: {"action.type": "offsite_conversion", "fb_pixel": "PX1",
    # "event_name": "Purchase"}. An ad tracking only purchases counts no other firing of PX1.
    owner.register_ad({**PAGE_LIKE_AD, "id": "purchases", "tracking_specs": [
        {"action.type": "offsite_conversion", "fb_pixel": "PX1", "event_name": "Purchase"}]})
    owner.register_ad({**PAGE_LIKE_AD, "id": "any_firing", "tracking_specs": [
        {"action.type": "offsite_conversion", "fb_pixel": "PX1"}]})
    events = [{"pixel_id": "PX1", "event": "Purchase"}, {"pixel_id": "PX1", "event": "PageView"},
              {"pixel_id": "PX1"}, {"pixel_id": "PX2", "event": "Purchase"}, {"pixel_id": "PX1", "event": "Purchase"}]
    if form == "rows":
        request = classification_pb2.ClassifyPixelEventsRequest(events=[classification_pb2.PixelEvent(**e) for e in events])
        results = ingest.event_results(ingest.call(ingest.classification.ClassifyPixelEvents, request))
    else:
        results = ingest.classify_pixel_events(events, form=form)
    assert [sorted(a.ad_id for a in r.ads) for r in results] == [
        ["any_firing", "purchases"], ["any_firing"], ["any_firing"], [], ["any_firing", "purchases"]]
    assert ingest.classify_actions([{"action.type": "offsite_conversion", "fb_pixel": "PX1", "event_name": "Purchase"}]) \
        == [[a for a in results[0].ads]]


@pytest.mark.parametrize("form", ["columns", "buffers"])
def test_the_firing_cache_keys_a_pixel_by_event_name_only_where_a_spec_reads_it(service, owner, ingest, form):  # noqa: F811
    """A pixel whose firings no spec tells apart by name has one cache entry, not one per name
    (every name, and none, match the same ads); the answers are those of the firings' actions."""
    def tracking(ad_id, *specs):
        owner.register_ad({**PAGE_LIKE_AD, "id": ad_id, "tracking_specs": list(specs)})

    def check(expected_keys):
        results = ingest.classify_pixel_events(events, form=form)
        actions = [{"action.type": "offsite_conversion", "fb_pixel": e["pixel_id"], "offsite_pixel": e["pixel_id"],
                    **({"event_name": e["event"]} if e.get("event") else {})} for e in events]
        assert [list(r.ads) for r in results] == ingest.classify_actions(actions)
        assert set(service[0].core.registry.snapshot.firing_ad_cache) == expected_keys
        return [sorted(a.ad_id for a in r.ads) for r in results]

    events = [{"pixel_id": pixel, **({"event": name} if name else {})}
              for pixel in ("PX1", "PX2", "PX3") for name in ("Purchase", "PageView", "", "Lead")]
    tracking("px1", {"action.type": "offsite_conversion", "fb_pixel": "PX1"})
    assert check({("PX1", None), ("PX2", None), ("PX3", None)}) == [["px1"]] * 4 + [[]] * 8
    tracking("px2_purchases", {"action.type": "offsite_conversion", "offsite_pixel": "PX2", "event_name": "Purchase"})
    names = {"Purchase", "PageView", None, "Lead"}
    assert check({("PX1", None), ("PX3", None)} | {("PX2", name) for name in names}) == \
        [["px1"]] * 4 + [["px2_purchases"]] + [[]] * 7
    # A spec naming event_name and no pixel counts that event of every pixel: every pixel by name.
    tracking("leads", {"action.type": "offsite_conversion", "event_name": "Lead"})
    assert check({(pixel, name) for pixel in ("PX1", "PX2", "PX3") for name in names}) == \
        [["px1"]] * 3 + [["leads", "px1"], ["px2_purchases"], [], [], ["leads"], [], [], [], ["leads"]]


def test_a_publish_that_keeps_the_ads_keeps_their_event_name_pixels(tmp_path):
    """``Snapshot.event_name_pixels`` is derived from every ad's specs: a publish that leaves the
    ads alone (pixels, conversions; here or from another process) carries it over, the same
    object; one that changes an ad derives it again."""
    db = tmp_path / "matcher.db"
    purchases = {"action.type": "offsite_conversion", "fb_pixel": "PX1", "event_name": "Purchase"}
    with running_server(db, sync_interval=0) as (one, a), running_server(db, sync_interval=0) as (two, _), \
            Client(a, "owner-token") as owner:
        owner.register_ad({**PAGE_LIKE_AD, "tracking_specs": [purchases]})
        assert two.core.registry.sync()
        named = {server: server.core.registry.snapshot.event_name_pixels for server in (one, two)}
        assert named[one] == named[two] == {"PX1"}

        def kept_over(change):
            before = {server: server.core.registry.snapshot for server in (one, two)}
            result = change()
            assert two.core.registry.sync()
            for server in (one, two):
                assert server.core.registry.snapshot is not before[server]
                assert server.core.registry.snapshot.event_name_pixels is named[server]
            return result

        pixel = kept_over(lambda: owner.create_pixel("act_1", "p")).id
        conversion = kept_over(lambda: owner.create_custom_conversion("act_1", "c", pixel, {"event": "Lead"})).id
        kept_over(lambda: owner.update_custom_conversion(conversion, default_conversion_value=2.0))
        kept_over(lambda: owner.call(owner.custom_conversions.ArchiveCustomConversion,
                                     cc_pb.ArchiveCustomConversionRequest(custom_conversion_id=conversion)))
        # An ad registered again with the same specs: derived again, equal (the follower sees no
        # change to publish); then another ad: derived again, more.
        owner.register_ad({**PAGE_LIKE_AD, "tracking_specs": [purchases]}, replace=True)
        again = one.core.registry.snapshot.event_name_pixels
        assert again == {"PX1"} and again is not named[one]
        assert not two.core.registry.sync()
        owner.register_ad({**PAGE_LIKE_AD, "id": "ad3", "tracking_specs": [{**purchases, "fb_pixel": "PX2"}]})
        assert two.core.registry.sync()
        assert one.core.registry.snapshot.event_name_pixels == two.core.registry.snapshot.event_name_pixels \
            == {"PX1", "PX2"}


def test_actions_stream_and_bad_actions(ingest, owner):
    owner.register_ad(PAGE_LIKE_AD)
    requests = [
        classification_pb2.ClassifyActionsRequest(actions=['{"action.type": "like", "page": "P1"}']),
        classification_pb2.ClassifyActionsRequest(actions=['{"action.type": "like", "page": "P9"}']),
    ]
    replies = list(ingest.classification.StreamClassifyActions(iter(requests), metadata=ingest.metadata, timeout=10))
    assert [list(r.ad_ids) for r in replies] == [["ad2"], []]
    for text, place in (("{oops", "actions[1]"), ("[1, 2]", "actions[1]"),
                        ('{"action.type": "like", "page": "P1", "page": "P2"}', 'actions[1]: not JSON (duplicate key "page"')):
        error = rejected(ingest.call, ingest.classification.ClassifyActions,
                         classification_pb2.ClassifyActionsRequest(actions=["{}", text]))
        assert error_code(error) == 100 and place in error.details()
