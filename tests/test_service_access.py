"""Every call that names an object: unknown ids are NOT_FOUND, other accounts' objects are code 200,
missing ids are code 100, and a rejected call changes nothing."""

import grpc
import pytest

from server.client import Client, error_code
from server.gen.conversion_matcher.v1 import ads_pb2, classification_pb2, custom_conversions_pb2 as cc_pb, pixels_pb2
from server.testing import running_server
from tests.service_fixtures import rejected

AD = {"id": "ad1", "account_id": "act_1", "objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P1"}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("access") / "matcher.db") as (_, target):
        with Client(target, "owner-token") as owner, Client(target, "other-token") as other:
            pixel = owner.create_pixel("act_1", "p").id
            conversion = owner.create_custom_conversion("act_1", "c", pixel, {"event": "Lead"}).id
            owner.register_ad(AD)
            yield owner, other, {"pixel": pixel, "conversion": conversion, "ad": "ad1"}


def calls(ids):
    """(name, stub attribute, method, request) for every call naming one object."""
    pixel, conversion, ad = ids["pixel"], ids["conversion"], ids["ad"]
    accounts = pixels_pb2.ChangeAuthorizedAdAccountsRequest
    return [
        ("GetPixel", "pixels", pixels_pb2.GetPixelRequest(pixel_id=pixel)),
        ("UpdatePixel", "pixels", pixels_pb2.UpdatePixelRequest(pixel_id=pixel, name="x")),
        ("DeletePixel", "pixels", pixels_pb2.DeletePixelRequest(pixel_id=pixel)),
        ("ListAuthorizedAdAccounts", "pixels", pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel)),
        ("AddAuthorizedAdAccounts", "pixels", accounts(pixel_id=pixel, account_ids=["act_9"])),
        ("RemoveAuthorizedAdAccounts", "pixels", accounts(pixel_id=pixel, account_ids=["act_9"])),
        ("GetPixelSnippets", "pixels", pixels_pb2.GetPixelSnippetsRequest(pixel_id=pixel)),
        ("GetCustomConversion", "custom_conversions", cc_pb.GetCustomConversionRequest(custom_conversion_id=conversion)),
        ("UpdateCustomConversion", "custom_conversions",
         cc_pb.UpdateCustomConversionRequest(custom_conversion=cc_pb.CustomConversion(id=conversion, name="x"))),
        ("ArchiveCustomConversion", "custom_conversions", cc_pb.ArchiveCustomConversionRequest(custom_conversion_id=conversion)),
        ("DeleteCustomConversion", "custom_conversions", cc_pb.DeleteCustomConversionRequest(custom_conversion_id=conversion)),
        ("GetCustomConversionStats", "custom_conversions", cc_pb.GetCustomConversionStatsRequest(custom_conversion_id=conversion)),
        ("GetAd", "ads", ads_pb2.GetAdRequest(ad_id=ad)),
        ("DeleteAd", "ads", ads_pb2.DeleteAdRequest(ad_id=ad)),
    ]


NAMES = [name for name, _, _ in calls({"pixel": "", "conversion": "", "ad": ""})]


def invoke(client, service, name, request):
    with pytest.raises(grpc.RpcError) as caught:
        client.call(getattr(getattr(client, service), name), request)
    return caught.value


def state(owner, ids):
    """Everything the calls above could change."""
    return (
        owner.get_pixel(ids["pixel"]),
        owner.call(owner.pixels.ListAuthorizedAdAccounts, pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=ids["pixel"])),
        owner.call(owner.custom_conversions.GetCustomConversion, cc_pb.GetCustomConversionRequest(custom_conversion_id=ids["conversion"])),
        owner.call(owner.ads.GetAd, ads_pb2.GetAdRequest(ad_id=ids["ad"])),
    )


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_other_accounts_get_code_200_and_change_nothing(world, index):
    owner, other, ids = world
    before = state(owner, ids)
    name, service, request = calls(ids)[index]
    error = invoke(other, service, name, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200
    assert "act_1" not in error.details()  # the owner's account is not told to others
    # it names the request's field that named the object, as NOT_FOUND does
    conversion_field = "custom_conversion.id" if name == "UpdateCustomConversion" else "custom_conversion_id"
    field = {"pixels": "pixel_id", "custom_conversions": conversion_field, "ads": "ad_id"}[service]
    assert error.details().startswith(f"{field}: Permissions error: "), error.details()
    assert state(owner, ids) == before


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_unknown_ids_are_not_found(world, index):
    owner, _, _ = world
    name, service, request = calls({"pixel": "123", "conversion": "456", "ad": "no-such-ad"})[index]
    error = invoke(owner, service, name, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # each names the request's field that named the object
    conversion_field = "custom_conversion.id" if name == "UpdateCustomConversion" else "custom_conversion_id"
    assert error.details() == {
        "pixels": "pixel_id: pixel '123' does not exist",
        "custom_conversions": f"{conversion_field}: custom conversion '456' does not exist",
        "ads": "ad_id: ad 'no-such-ad' is not registered",
    }[service]


def test_an_ad_replaced_unregistered_or_registered_twice_names_ad_id(world):
    owner, _, _ = world
    ad = ads_pb2.Ad(id="ad-named-twice", account_id="act_1", objective="PAGE_LIKES",
                    creative='{"kind": "page_like", "page_id": "PG1"}')
    error = invoke(owner, "ads", "ReplaceAd", ads_pb2.RegisterAdRequest(ad=ad))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "ad.id: ad 'ad-named-twice' is not registered"
    owner.call(owner.ads.RegisterAd, ads_pb2.RegisterAdRequest(ad=ad))
    error = invoke(owner, "ads", "RegisterAd", ads_pb2.RegisterAdRequest(ad=ad))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details().startswith("ad.id: ad 'ad-named-twice' is already registered")


def test_an_unknown_event_source_names_its_field(world):
    owner, _, _ = world
    request = cc_pb.CreateCustomConversionRequest(account_id="act_1", name="c", event_source_id="999",
                                                  rule='{"url": {"contains": "x"}}', custom_event_type="PURCHASE")
    error = invoke(owner, "custom_conversions", "CreateCustomConversion", request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "event_source_id: pixel '999' does not exist"


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_missing_ids_are_code_100(world, index):
    owner, _, _ = world
    name, service, request = calls({"pixel": "", "conversion": "", "ad": ""})[index]
    error = invoke(owner, service, name, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_no_token_is_code_190(world, index):
    owner, _, ids = world
    name, service, request = calls(ids)[index]
    with Client(owner.target, None) as anonymous:
        error = invoke(anonymous, service, name, request)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error_code(error) == 190


def test_lists_of_another_account_are_code_200(world):
    _, other, _ = world
    for method, request in (
        (other.pixels.ListPixels, pixels_pb2.ListPixelsRequest(account_id="act_1")),
        (other.custom_conversions.ListCustomConversions, cc_pb.ListCustomConversionsRequest(account_id="act_1")),
        (other.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            other.call(method, request)
        assert error_code(caught.value) == 200
        assert caught.value.details().startswith("account_id: Permissions error: "), caught.value.details()
    # an ad (or a pixel, a conversion) created for an account the token does not hold names its field
    error = rejected(other.register_ad, {"id": "ad9", "account_id": "act_1", "objective": "PAGE_LIKES",
                                         "creative": {"kind": "page_like", "page_id": "P1"}})
    assert (error_code(error), error.details()) == (
        200, "ad.account_id: Permissions error: this access token cannot act for ad account act_1")
    error = rejected(other.create_pixel, "act_1", "p")
    assert error_code(error) == 200 and error.details().startswith("account_id: Permissions error: ")
    # replacing another account's ad names the ad's id
    error = rejected(other.register_ad, {**AD, "account_id": "act_3"}, replace=True)
    assert (error_code(error), error.details()) == (
        200, "ad.id: Permissions error: ad ad1 belongs to an ad account this access token cannot act for")


@pytest.mark.parametrize("account, problem", [
    ("act_00001", "an ad account id has no leading zeros (act_1), got 'act_00001'"),
    ("act_0", "an ad account id is act_ and a number from 1 up, got 'act_0'"),
    ("act_000", "an ad account id is act_ and a number from 1 up, got 'act_000'"),
])
def test_an_ad_account_id_with_a_leading_zero_is_code_100_naming_its_field(world, account, problem):
    """``act_00001`` would be stored apart from ``act_1``, the account it means, so it is refused
    wherever an ad account id is given, before the token's accounts are looked at."""
    owner, _, ids = world
    before = state(owner, ids)
    for call, field in (
        (lambda: owner.create_pixel(account, "p"), "account_id"),
        (lambda: owner.call(owner.pixels.ListPixels, pixels_pb2.ListPixelsRequest(account_id=account)), "account_id"),
        (lambda: owner.create_custom_conversion(account, "c", ids["pixel"], {"event": "Lead"}), "account_id"),
        (lambda: owner.register_ad({**AD, "id": "ad-zero", "account_id": account}), "ad.account_id"),
        (lambda: owner.call(owner.pixels.AddAuthorizedAdAccounts, pixels_pb2.ChangeAuthorizedAdAccountsRequest(
            pixel_id=ids["pixel"], account_ids=["act_9", account])), "account_ids[1]"),
    ):
        error = rejected(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100
        assert error.details() == f"{field}: {problem}"
    assert state(owner, ids) == before


def test_a_bad_batch_mid_stream_ends_the_stream_with_its_error(world):
    owner, _, ids = world
    target = owner.target
    good = classification_pb2.ClassifyPixelEventsRequest(events=[classification_pb2.PixelEvent(pixel_id=ids["pixel"], event="Lead")])
    bad = classification_pb2.ClassifyPixelEventsRequest(events=[classification_pb2.PixelEvent(pixel_id="1", custom_data="{")])
    with Client(target, "ingest-token") as ingest:
        replies = ingest.classification.StreamClassifyPixelEvents(iter([good, bad, good]), metadata=ingest.metadata, timeout=10)
        assert list(next(replies).custom_conversion_ids) == [ids["conversion"]]
        with pytest.raises(grpc.RpcError) as caught:
            next(replies)
        assert error_code(caught.value) == 100
        assert caught.value.details().startswith("requests[1].events[0].custom_data: ")  # the second request
        assert ingest.classify_pixel_events([{"pixel_id": ids["pixel"], "event": "Lead"}])[0].conversions


def test_an_error_in_a_later_action_stream_request_names_the_request_and_keeps_its_status(tmp_path):
    from server.core import Limits

    with running_server(tmp_path / "matcher.db", limits=Limits(max_batch_events=2)) as (_, target), \
            Client(target, "ingest-token") as ingest:
        good = classification_pb2.ClassifyActionsRequest(actions=['{"action.type": "like"}'])
        bad_json = classification_pb2.ClassifyActionsRequest(actions=['{"action.type": "like"}', "[1]"])
        too_many = classification_pb2.ClassifyActionsRequest(actions=["{}"] * 3)
        for bad, status, code, message in [
            (bad_json, grpc.StatusCode.INVALID_ARGUMENT, 100, "requests[2].actions[1]: expected a JSON object"),
            (too_many, grpc.StatusCode.RESOURCE_EXHAUSTED, 368, "requests[2].actions: 3 actions, more than the limit"),
        ]:
            replies = ingest.classification.StreamClassifyActions(iter([good, good, bad, good]),
                                                                  metadata=ingest.metadata, timeout=10)
            assert len([next(replies), next(replies)]) == 2
            with pytest.raises(grpc.RpcError) as caught:
                next(replies)
            assert (caught.value.code(), error_code(caught.value)) == (status, code)
            assert caught.value.details().startswith(message)
