"""PixelService over a real server on loopback with a real SQLite file."""

import grpc
import pytest

from server.client import Client, error_code, error_info
from server.gen.conversion_matcher.v1 import pixels_pb2 as pb
from tests.service_fixtures import owner, other, rejected, service  # noqa: F401 (fixtures)






def test_create_get_list(owner):
    pixel = owner.create_pixel("act_1", "Checkout pixel", tag="checkout")
    assert pixel.id.isdigit()
    assert (pixel.name, pixel.tag, pixel.creator, pixel.status) == ("Checkout pixel", "CHECKOUT", "act_1", "UNVERIFIED")
    assert not pixel.HasField("last_firing_time")
    assert "fb_param.value = '0.01'" in pixel.js_pixel
    assert owner.get_pixel(pixel.id) == pixel
    listed = owner.call(owner.pixels.ListPixels, pb.ListPixelsRequest(account_id="act_1")).pixels
    assert [p.id for p in listed] == [pixel.id]
    assert owner.call(owner.pixels.ListPixels, pb.ListPixelsRequest(account_id="act_2")).pixels == []


def test_tag_defaults_to_other_and_rejects_unknown(owner):
    assert owner.create_pixel("act_1", "p").tag == "OTHER"
    error = rejected(owner.create_pixel, "act_1", "p", "checkoutt")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100
    assert "tag" in error.details() and "CHECKOUT" in error.details()
    assert len(owner.call(owner.pixels.ListPixels, pb.ListPixelsRequest(account_id="act_1")).pixels) == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 256, "\x00", "shop\npixel", "a\x1b[31m", "\x85"])
def test_bad_name_is_code_100(owner, name):
    error = rejected(owner.create_pixel, "act_1", name)
    assert error_code(error) == 100 and error.details().startswith("name:")
    assert not owner.call(owner.pixels.ListPixels, pb.ListPixelsRequest(account_id="act_1")).pixels


def test_a_name_with_a_control_character_is_refused_naming_it(owner):
    assert rejected(owner.create_pixel, "act_1", "ab\x00").details() == "name: a control character ('\\x00') at index 2"
    pixel = owner.create_pixel("act_1", "caf\u00e9 \u2603 shop")  # other characters are names' own business
    error = rejected(owner.call, owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, name="x\ty"))
    assert error_code(error) == 100 and error.details().startswith("name: a control character ('\\t') at index 1")


def test_update_name_and_tag(owner):
    pixel = owner.create_pixel("act_1", "old", "lead")
    renamed = owner.call(owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, name="new"))
    assert (renamed.name, renamed.tag) == ("new", "LEAD")
    retagged = owner.call(owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, tag="add_to_cart"))
    assert (retagged.name, retagged.tag) == ("new", "ADD_TO_CART")
    error = rejected(owner.call, owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, name="x", tag="nope"))
    assert error_code(error) == 100
    assert owner.get_pixel(pixel.id).name == "new"  # the rejected update changed nothing
    error = rejected(owner.call, owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id))
    assert error_code(error) == 100 and "nothing to update" in error.details()


@pytest.mark.parametrize("tag", [" lead", "lead ", "regi\u017ftration", "key_page_v\u0131ew", "LEAD\n"])
def test_a_tag_is_one_of_the_names_in_ascii_letters_of_either_case(owner, tag):
    # Python's upper() makes REGISTRATION of "regi\u017ftration" and KEY_PAGE_VIEW of a dotless
    # i; strip() took the blanks: each was stored as the tag it only resembles.
    error = rejected(owner.create_pixel, "act_1", "shop", tag)
    assert error_code(error) == 100 and error.details().startswith(f"tag: {tag!r} is not one of CHECKOUT, ")
    pixel = owner.create_pixel("act_1", "shop", "Key_Page_View")
    assert pixel.tag == "KEY_PAGE_VIEW"
    error = rejected(owner.call, owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, tag=tag))
    assert error_code(error) == 100 and owner.get_pixel(pixel.id).tag == "KEY_PAGE_VIEW"


def test_delete(owner):
    pixel = owner.create_pixel("act_1", "gone")
    assert owner.call(owner.pixels.DeletePixel, pb.DeletePixelRequest(pixel_id=pixel.id)).success
    error = rejected(owner.get_pixel, pixel.id)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rejected(owner.call, owner.pixels.DeletePixel, pb.DeletePixelRequest(pixel_id=pixel.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_a_pixel_that_another_accounts_conversion_counts_is_not_deleted(owner, other):
    pixel = owner.create_pixel("act_1", "shared").id
    owner.call(owner.pixels.AddAuthorizedAdAccounts, pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=["act_3"]))
    mine = owner.create_custom_conversion("act_1", "mine", pixel, {"event": "Lead"}).id
    other.create_custom_conversion("act_3", "theirs", pixel, {"event": "Lead"})
    error = rejected(owner.call, owner.pixels.DeletePixel, pb.DeletePixelRequest(pixel_id=pixel))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_code(error) == 100
    details = error.details()
    assert details.startswith(f"pixel_id: pixel {pixel} is the event source of 2 custom conversion(s) "), details
    assert f"({mine} of this access token's ad accounts; 1 of ad account act_3)" in details, details
    assert owner.get_pixel(pixel).id == pixel  # still there


def test_authorised_accounts(owner, other):
    pixel = owner.create_pixel("act_1", "shared")
    listed = owner.call(owner.pixels.ListAuthorizedAdAccounts, pb.ListAuthorizedAdAccountsRequest(pixel_id=pixel.id))
    assert list(listed.account_ids) == ["act_1"]
    error = rejected(other.get_pixel, pixel.id)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200

    added = owner.call(
        owner.pixels.AddAuthorizedAdAccounts, pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_3"])
    )
    assert list(added.account_ids) == ["act_1", "act_3"]
    assert other.get_pixel(pixel.id).id == pixel.id
    shared = other.call(other.pixels.ListPixels, pb.ListPixelsRequest(account_id="act_3")).pixels
    assert [p.id for p in shared] == [pixel.id]
    # An authorised, non-creator account reads but does not manage.
    error = rejected(other.call, other.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, name="mine"))
    assert error_code(error) == 200 and "creator" in error.details()

    error = rejected(
        owner.call, owner.pixels.RemoveAuthorizedAdAccounts,
        pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_1"]),
    )
    assert error_code(error) == 100 and "creator" in error.details()
    error = rejected(
        owner.call, owner.pixels.AddAuthorizedAdAccounts,
        pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_4", "4"]),
    )
    assert error_code(error) == 100 and "account_ids[1]" in error.details()
    removed = owner.call(
        owner.pixels.RemoveAuthorizedAdAccounts, pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_3"])
    )
    assert list(removed.account_ids) == ["act_1"]
    assert error_code(rejected(other.get_pixel, pixel.id)) == 200


def test_snippets_state_dollars_one_per_authorised_account(owner):
    pixel = owner.create_pixel("act_1", "p")
    owner.call(owner.pixels.AddAuthorizedAdAccounts, pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_2"]))
    default = owner.snippets(pixel.id)
    assert [s.account_id for s in default.snippets] == ["act_1", "act_2"]
    assert all("fb_param.value = '0.01'" in s.js for s in default.snippets)
    assert "fb_param.value = '12.50'" in owner.snippets(pixel.id, 1250).snippets[0].js
    assert "value=0.00" in owner.snippets(pixel.id, 0).snippets[0].js
    error = rejected(owner.snippets, pixel.id, -5)
    assert error_code(error) == 100 and error.details().startswith("value:")


def test_pixel_names_cannot_break_out_of_the_snippet(owner):
    pixel = owner.create_pixel("act_1", "--> <script>alert(1)</script>")
    assert "<script>alert" not in pixel.js_pixel and "-->" not in pixel.js_pixel.split("\n")[0][4:-3]


def test_authentication_errors(service):
    target = service[1]
    for token in (None, "no-such-token"):
        with Client(target, token) as client:
            error = rejected(client.create_pixel, "act_1", "p")
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED and error_code(error) == 190
            assert "no-such-token" not in error.details()
            info = error_info(error)
            assert info.reason == "INVALID_ACCESS_TOKEN" and info.domain == "conversion-matcher"


def test_acting_for_an_account_the_token_does_not_hold(other):
    error = rejected(other.create_pixel, "act_1", "p")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_code(error) == 200
    assert "act_1" in error.details()
    error = rejected(other.create_pixel, "account-1", "p")
    assert error_code(error) == 100 and error.details().startswith("account_id:")


def test_status_follows_recorded_firings(service, owner):
    server, target = service
    pixel = owner.create_pixel("act_1", "p")
    now = server.core.now()
    with Client(target, "ingest-token") as ingest:
        ingest.classify_pixel_events([{"pixel_id": pixel.id, "event": "PageView", "event_time": now - 2 * 86400}], record=True)
        fired = owner.get_pixel(pixel.id)
        assert (fired.status, fired.last_firing_time) == ("INACTIVE", now - 2 * 86400)
        ingest.classify_pixel_events([{"pixel_id": pixel.id, "event": "PageView", "event_time": now - 60}], record=True)
        assert owner.get_pixel(pixel.id).status == "ACTIVE"
        # An older event does not move the last firing time back.
        ingest.classify_pixel_events([{"pixel_id": pixel.id, "event": "PageView", "event_time": now - 3600}], record=True)
        assert owner.get_pixel(pixel.id).last_firing_time == now - 60


def test_the_creator_changes_a_pixel_without_its_accounts_being_looked_up(service, owner, other, monkeypatch):  # noqa: F811
    """Who manages a pixel is its creator: that is checked first, and the pixel's authorised
    accounts are read only to tell a caller who is not the creator which refusal applies."""
    pixel = owner.create_pixel("act_1", "shop")
    store = service[0].core.store
    asked = []
    get_pixel = store.get_pixel

    def spied(pixel_id, among=None, **options):
        asked.append(None if among is None else sorted(among))
        return get_pixel(pixel_id, among, **options)

    monkeypatch.setattr(store, "get_pixel", spied)
    owner.call(owner.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, name="renamed"))
    owner.call(owner.pixels.AddAuthorizedAdAccounts,
               pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_3"]))
    assert asked == [[], []]
    # A non-creator: authorised, refused as not the creator; not authorised, as not authorised.
    error = rejected(other.call, other.pixels.UpdatePixel, pb.UpdatePixelRequest(pixel_id=pixel.id, name="mine"))
    assert error_code(error) == 200 and "only the creator account act_1" in error.details()
    assert error.details().startswith("pixel_id: Permissions error: "), error.details()  # the field naming it
    owner.call(owner.pixels.RemoveAuthorizedAdAccounts,
               pb.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel.id, account_ids=["act_3"]))
    error = rejected(other.call, other.pixels.DeletePixel, pb.DeletePixelRequest(pixel_id=pixel.id))
    assert error_code(error) == 200 and "no ad account of this access token is authorised" in error.details()
    assert error.details().startswith("pixel_id: Permissions error: "), error.details()
    assert owner.get_pixel(pixel.id).name == "renamed"
