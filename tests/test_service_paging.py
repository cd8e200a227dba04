"""Paged lists (ListAds, ListPixels, ListAuthorizedAdAccounts, GetPixelSnippets, GetCustomConversionStats) against a real server on loopback: every
item exactly once across pages, pages within the reply limit, tokens bound to their call."""

import base64
import json

import grpc
import pytest
from hypothesis import given, settings, strategies as st

from server.client import Client, error_code
from server.core import Limits
from server.gen.conversion_matcher.v1 import ads_pb2, custom_conversions_pb2 as pb, pixels_pb2
from server.paging import MAX_PAGE_SIZE, MAX_READ_CHUNK, READ_CHUNK, REPLY_RESERVE_BYTES, Page, _after, fill, page_request, read_on, text_key
from server.testing import running_server
from tests.service_fixtures import other, owner, rejected, service  # noqa: F401 (fixtures)


def ad(ad_id: str, account: str = "act_1", creative_bytes: int = 0) -> dict:
    creative = {"kind": "page_like", "page_id": "P1", "note": "x" * creative_bytes}
    return {"id": ad_id, "account_id": account, "objective": "PAGE_LIKES", "creative": creative}


def invalid(error: grpc.RpcError, place: str) -> str:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(error) == 100, error.details()
    assert error.details().startswith(place), error.details()
    return error.details()


def test_ads_come_in_pages_of_page_size_in_id_order(owner):  # noqa: F811
    ids = [f"ad{i:02d}" for i in range(25)]
    for ad_id in reversed(ids):
        owner.register_ad(ad(ad_id))
    owner.register_ad(ad("other-account", account="act_2"))
    request = ads_pb2.ListAdsRequest(account_id="act_1", page_size=10)
    replies = list(owner.pages(owner.ads.ListAds, request))
    assert [[a.ad.id for a in r.ads] for r in replies] == [ids[:10], ids[10:20], ids[20:]]
    assert [bool(r.next_page_token) for r in replies] == [True, True, False]
    assert request.page_token == ""  # pages() leaves the caller's request alone
    whole = owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1"))
    assert [a.ad.id for a in whole.ads] == ids and whole.next_page_token == ""
    assert [a.ad.id for a in owner.list_ads("act_1")] == ids


def test_a_page_that_fills_its_page_size_exactly_may_be_followed_by_an_empty_last_one(owner):  # noqa: F811
    for i in range(4):
        owner.register_ad(ad(f"ad{i}"))
    first = owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=4))
    assert len(first.ads) == 4 and first.next_page_token == ""  # the store said there were no more


def test_changes_between_pages_neither_repeat_nor_drop_the_other_items(owner):  # noqa: F811
    for i in range(0, 20, 2):
        owner.register_ad(ad(f"ad{i:02d}"))
    first = owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=4))
    assert [a.ad.id for a in first.ads] == ["ad00", "ad02", "ad04", "ad06"]
    owner.call(owner.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id="ad02"))  # already listed
    owner.call(owner.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id="ad10"))  # not yet listed
    owner.register_ad(ad("ad01"))  # before the token: belongs to a page already read
    owner.register_ad(ad("ad11"))  # after it: listed
    rest = owner.pages(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=4,
                                                                 page_token=first.next_page_token))
    assert [a.ad.id for r in rest for a in r.ads] == ["ad08", "ad11", "ad12", "ad14", "ad16", "ad18"]


def test_a_page_ends_before_the_reply_passes_the_message_limit(tmp_path):
    """The audit's case: an account's ads outgrew one reply and ListAds failed with
    RESOURCE_EXHAUSTED (no error code). Now the pages stay under the limit and hold them all."""
    limit = 256 * 1024
    with running_server(tmp_path / "db.sqlite", limits=Limits(max_message_bytes=limit)) as (_, target):
        with Client(target, "owner-token") as owner:
            for i in range(60):
                owner.register_ad(ad(f"ad{i:02d}", creative_bytes=15_000))  # ~15 KB per listed ad
            replies = list(owner.pages(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1")))
    assert [a.ad.id for r in replies for a in r.ads] == [f"ad{i:02d}" for i in range(60)]
    assert len(replies) == 4
    budget = limit - REPLY_RESERVE_BYTES
    for reply, following in zip(replies, replies[1:]):
        items = ads_pb2.ListAdsResponse(ads=reply.ads).ByteSize()
        assert items <= budget < items + ads_pb2.ListAdsResponse(ads=following.ads[:1]).ByteSize()  # full
    assert ads_pb2.ListAdsResponse(ads=replies[-1].ads).ByteSize() <= budget


def test_pixels_come_in_pages(owner, other):  # noqa: F811
    created = sorted(owner.create_pixel("act_1", f"p{i}").id for i in range(7))
    owner.create_pixel("act_2", "not act_1's")
    shared = other.create_pixel("act_3", "shared with act_1")
    other.call(other.pixels.AddAuthorizedAdAccounts,
               pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=shared.id, account_ids=["act_1"]))
    replies = list(owner.pages(owner.pixels.ListPixels, pixels_pb2.ListPixelsRequest(account_id="act_1", page_size=3)))
    assert [len(r.pixels) for r in replies] == [3, 3, 2]
    assert [p.id for r in replies for p in r.pixels] == sorted([*created, shared.id])
    assert [p.id for p in owner.list_pixels("act_1")] == sorted([*created, shared.id])


def test_snippets_come_in_pages_in_account_order(owner):  # noqa: F811
    pixel = owner.create_pixel("act_1", "shop").id
    accounts = [f"act_{n}" for n in (5, 10, 7, 42, 300)]
    owner.call(owner.pixels.AddAuthorizedAdAccounts,
               pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=accounts))
    request = pixels_pb2.GetPixelSnippetsRequest(pixel_id=pixel, value=250, page_size=2)
    replies = list(owner.pages(owner.pixels.GetPixelSnippets, request))
    listed = [s.account_id for r in replies for s in r.snippets]
    assert listed == sorted(["act_1", *accounts]) and [len(r.snippets) for r in replies] == [2, 2, 2]
    assert all(r.pixel_id == pixel and "'2.50'" in s.js for r in replies for s in r.snippets)
    assert [s.account_id for s in owner.snippets(pixel).snippets] == listed


def test_authorised_accounts_come_in_pages_and_changes_answer_the_first(owner):  # noqa: F811
    """A pixel's account list may pass what a reply holds (older databases have no cap on it):
    it is listed a page at a time, and Add/Remove answer with its first page."""
    pixel = owner.create_pixel("act_1", "shop").id
    accounts = [f"act_{n}" for n in range(1000, 2100)]

    def change(method, accounts):
        request = pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=accounts)
        return owner.call(method, request)

    for i in range(0, len(accounts), 100):
        added = change(owner.pixels.AddAuthorizedAdAccounts, accounts[i:i + 100])
    everything = sorted(["act_1", *accounts])  # 1,101 accounts, in id (text) order
    assert list(added.account_ids) == everything[:MAX_PAGE_SIZE] and added.next_page_token
    rest = owner.call(owner.pixels.ListAuthorizedAdAccounts,
                      pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel, page_token=added.next_page_token))
    assert list(rest.account_ids) == everything[MAX_PAGE_SIZE:] and rest.next_page_token == ""
    request = pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel, page_size=300)
    replies = list(owner.pages(owner.pixels.ListAuthorizedAdAccounts, request))
    assert [len(r.account_ids) for r in replies] == [300, 300, 300, 201]
    assert all(r.pixel_id == pixel for r in replies)
    assert owner.authorized_accounts(pixel) == everything

    change(owner.pixels.RemoveAuthorizedAdAccounts, accounts[:100])
    removed = change(owner.pixels.RemoveAuthorizedAdAccounts, accounts[100:200])
    left = sorted(["act_1", *accounts[200:]])
    assert list(removed.account_ids) == left and removed.next_page_token == ""  # 901: one page
    other_pixel = owner.create_pixel("act_1", "other").id
    invalid(rejected(owner.call, owner.pixels.ListAuthorizedAdAccounts,
                     pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=other_pixel, page_token=added.next_page_token)),
            "page_token: returned by ListAuthorizedAdAccounts for")
    invalid(rejected(owner.call, owner.pixels.GetPixelSnippets,
                     pixels_pb2.GetPixelSnippetsRequest(pixel_id=pixel, page_token=added.next_page_token)),
            "page_token: returned by ListAuthorizedAdAccounts for")


def test_a_token_belongs_to_its_call_and_scope(owner):  # noqa: F811
    for i in range(3):
        owner.register_ad(ad(f"ad{i}"))
        owner.register_ad(ad(f"ad2-{i}", account="act_2"))
    token = owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=1)).next_page_token
    details = invalid(rejected(owner.call, owner.ads.ListAds,
                               ads_pb2.ListAdsRequest(account_id="act_2", page_token=token)), "page_token: ")
    assert "act_1" in details and "act_2" in details
    invalid(rejected(owner.call, owner.pixels.ListPixels,
                     pixels_pb2.ListPixelsRequest(account_id="act_1", page_token=token)), "page_token: returned by ListAds")
    # W10 = [], the next ["a","b"], the last ["ListAds","act_1","\ud800"]: a lone surrogate, which
    # SQLite could not bind (INTERNAL before).
    surrogate = base64.urlsafe_b64encode(b'["ListAds","act_1","\\ud800"]').decode().rstrip("=")
    for garbage in ("x", "not a token!", "W10", "WyJhIiwiYiJd", surrogate):
        invalid(rejected(owner.call, owner.ads.ListAds,
                         ads_pb2.ListAdsRequest(account_id="act_1", page_token=garbage)), "page_token: not a ")
    invalid(rejected(owner.call, owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=-1)),
            "page_size: -1 is negative")


def test_a_page_size_over_the_largest_is_taken_as_the_largest(owner):  # noqa: F811
    owner.register_ad(ad("ad1"))
    reply = owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=2**31 - 1))
    assert [a.ad.id for a in reply.ads] == ["ad1"] and reply.next_page_token == ""


def test_a_pixel_has_at_most_its_limit_of_accounts(tmp_path):
    with running_server(tmp_path / "db.sqlite", limits=Limits(max_accounts_per_pixel=3)) as (_, target):
        with Client(target, "owner-token") as owner:
            pixel = owner.create_pixel("act_1", "shop").id

            def add(*accounts):
                request = pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=list(accounts))
                return owner.call(owner.pixels.AddAuthorizedAdAccounts, request).account_ids

            assert list(add("act_5", "act_6")) == ["act_1", "act_5", "act_6"]
            error = rejected(add, "act_7", "act_5")
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and error_code(error) == 100
            assert "4 authorised ad accounts, more than the limit of 3" in error.details()
            assert list(add("act_5")) == ["act_1", "act_5", "act_6"]  # already there: no growth
            listed = owner.call(owner.pixels.ListAuthorizedAdAccounts, pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel))
            assert list(listed.account_ids) == ["act_1", "act_5", "act_6"]  # the refused call added nothing


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), max_size=40),
    left_out=st.sets(st.integers(0, 39)),
    page_size=st.integers(1, 12),
    reply_bytes=st.integers(REPLY_RESERVE_BYTES + 3010, REPLY_RESERVE_BYTES + 12_000),
    text=st.booleans(),
)
def test_fill_pages_hold_every_item_once_within_both_bounds(sizes, left_out, page_size, reply_bytes, text):
    """Items are messages (snippets) or strings (account ids), as the paged calls list them."""
    def item(n):
        return "é" * (n // 2) if text else pixels_pb2.PixelSnippet(js="x" * n)  # é: 2 bytes

    def reply(messages):
        return (pixels_pb2.AuthorizedAdAccounts(account_ids=messages) if text
                else pixels_pb2.PixelSnippets(snippets=messages))

    items = [(f"k{i:02d}", item(n) if i not in left_out else None) for i, n in enumerate(sizes)]
    after, seen, pages = None, [], 0
    while True:
        page = Page("Call", "scope", page_size, after)
        rest = [item for item in items if after is None or item[0] > after]
        messages, token = fill(page, iter(rest), reply_bytes=reply_bytes, what="item")
        assert len(messages) <= page_size
        assert reply(messages).ByteSize() <= reply_bytes - REPLY_RESERVE_BYTES
        seen += messages
        pages += 1
        assert pages <= len(items) + 1
        if not token:
            break
        after = _after(token, "Call", "scope", text_key)
    assert seen == [m for _, m in items if m is not None]


def test_page_size_zero_means_the_largest_page():
    request = ads_pb2.ListAdsRequest(account_id="act_1")
    assert page_request(request, "ListAds", "act_1").size == MAX_PAGE_SIZE


def test_read_on_reads_the_store_a_chunk_at_a_time_as_a_page_needs_it():
    rows = [f"k{i:03d}" for i in range(200)]
    reads = []

    def read(after, limit):
        reads.append(after)
        return [r for r in rows if after is None or r > after][:limit]

    items = read_on(read, str, None)
    first = [next(items) for _ in range(READ_CHUNK)]
    assert reads == [None]  # one chunk holds the first rows: nothing more is read yet
    first.append(next(items))
    assert reads == [None, rows[READ_CHUNK - 1]]  # the next chunk starts after the last row read
    assert first + list(items) == rows and len(reads) == 3  # 64, then 128 (136 left: 128 + 8)


def test_read_on_doubles_its_chunk_up_to_a_bound():
    """A long page takes few reads (each one two SELECTs for stats), and reads at most about
    as many rows past its end as it took."""
    limits = []

    def read(after, limit):
        limits.append(limit)
        start = 0 if after is None else after + 1
        return list(range(start, min(start + limit, 20_000)))

    assert list(read_on(read, int, None)) == list(range(20_000))
    assert limits[:4] == [READ_CHUNK, 2 * READ_CHUNK, 4 * READ_CHUNK, 8 * READ_CHUNK]
    assert max(limits) == MAX_READ_CHUNK and limits[-2:] == [MAX_READ_CHUNK] * 2
    assert sum(limits[:-1]) < 20_000 <= sum(limits)


# -- GetCustomConversionStats ---------------------------------------------------------------------

STATS_AGGREGATIONS = ("count", "url", "host", "device_type", "pixel_fire", "usd_amount", "unmatched_count",
                      "unmatched_usd_amount")


def stats_rows(reply) -> list[tuple]:
    return [(r.timestamp, r.key, r.value) for r in reply.rows]


def record_url_events(client, pixel_id: str, hours: list[int], urls_per_hour: int, url_bytes: int = 0) -> None:
    """Purchases over 100 on ``urls_per_hour`` distinct urls in each hour, and a PageView per hour."""
    for hour in hours:
        events = [{"pixel_id": pixel_id, "event": "Purchase", "url": f"https://shop.example/{i:03d}/" + "p" * url_bytes,
                   "device_type": f"device{i % 3}", "custom_data": {"value": 100 + i + 1}, "event_time": hour + i}
                  for i in range(urls_per_hour)]
        events.append({"pixel_id": pixel_id, "event": "PageView", "event_time": hour + 59})
        for start in range(0, len(events), 40):
            client.classify_pixel_events(events[start:start + 40], record=True)


def test_stats_come_in_pages_of_page_size_in_hour_and_key_order_for_every_aggregation(service, owner):  # noqa: F811
    pixel = owner.create_pixel("act_1", "shop")
    created = owner.create_custom_conversion("act_1", "big", pixel.id, {"value": {"gt": 100}})
    now = service[0].core.now()
    hours = [now // 3600 * 3600 - k * 3600 for k in (5, 3, 2)]
    quiet = now // 3600 * 3600 - 4 * 3600  # a PageView only: the pixel fired, the conversion matched nothing
    with Client(service[1], "ingest-token") as ingest:
        record_url_events(ingest, pixel.id, hours, urls_per_hour=7)
        record_url_events(ingest, pixel.id, [quiet], urls_per_hour=0)
    request = dict(custom_conversion_id=created.id, start_time=hours[0], end_time=now + 1)
    for aggregation in STATS_AGGREGATIONS:
        whole = owner.call(owner.custom_conversions.GetCustomConversionStats,
                           pb.GetCustomConversionStatsRequest(aggregation=aggregation, **request))
        assert whole.next_page_token == "" and whole.rows, aggregation  # page_size 0: all that fit
        expected = stats_rows(whole)
        assert expected == sorted(expected, key=lambda row: row[:2])
        for size in (1, 2, 5):
            replies = list(owner.pages(owner.custom_conversions.GetCustomConversionStats,
                                       pb.GetCustomConversionStatsRequest(aggregation=aggregation, page_size=size,
                                                                         **request)))
            assert all(len(r.rows) == size and r.next_page_token for r in replies[:-1]), (aggregation, size)
            assert len(replies[-1].rows) <= size and replies[-1].next_page_token == ""
            assert [row for r in replies for row in stats_rows(r)] == expected, (aggregation, size)
            assert {(r.custom_conversion_id, r.aggregation) for r in replies} == {(created.id, aggregation)}
    assert len(stats_rows(owner.stats(created.id, "url", hours[0], now + 1, page_size=4))) == 21
    assert [row[0] for row in stats_rows(owner.stats(created.id, "count", hours[0], now + 1))] == hours
    assert stats_rows(owner.stats(created.id, "unmatched_count", hours[0], now + 1, page_size=1)) == [
        (hour, "", 1) for hour in sorted([*hours, quiet])]


def test_stats_rows_recorded_between_pages_neither_repeat_nor_drop_the_others(service, owner):  # noqa: F811
    pixel = owner.create_pixel("act_1", "shop")
    created = owner.create_custom_conversion("act_1", "big", pixel.id, {"value": {"gt": 100}})
    hour = service[0].core.now() // 3600 * 3600 - 3600
    with Client(service[1], "ingest-token") as ingest:
        record_url_events(ingest, pixel.id, [hour], urls_per_hour=6)
        first = owner.call(owner.custom_conversions.GetCustomConversionStats, pb.GetCustomConversionStatsRequest(
            custom_conversion_id=created.id, aggregation="url", start_time=hour, end_time=hour + 3600, page_size=3))
        assert [r.key[:24] for r in first.rows] == [f"https://shop.example/{i:03d}" for i in range(3)]
        # One level of encoding: the token is [call, scope, [hour, key]], its key no JSON string.
        token = first.next_page_token
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        assert decoded == ["GetCustomConversionStats", f"{created.id}/url", [hour, first.rows[-1].key]]
        # a url before the token (a page already read) and two after it
        ingest.classify_pixel_events([{"pixel_id": pixel.id, "event": "Purchase", "url": url, "event_time": hour + 1,
                                       "custom_data": {"value": 500}}
                                      for url in ("https://shop.example/000a", "https://shop.example/001/p",
                                                  "https://shop.example/999")], record=True)
    rest = owner.pages(owner.custom_conversions.GetCustomConversionStats, pb.GetCustomConversionStatsRequest(
        custom_conversion_id=created.id, aggregation="url", start_time=hour, end_time=hour + 3600, page_size=3,
        page_token=first.next_page_token))
    assert [row[1][21:] for r in rest for row in stats_rows(r)] == ["003/", "004/", "005/", "999"]


def test_stats_past_the_message_limit_come_in_pages_that_each_fit(tmp_path):
    """The audit's case: an hour of url stats with thousands of long distinct urls passed the
    message limit, and GetCustomConversionStats failed with RESOURCE_EXHAUSTED (no code) for
    good. Now a page ends before the limit and the pages hold every row."""
    limit = 64 * 1024
    with running_server(tmp_path / "db.sqlite", limits=Limits(max_message_bytes=limit)) as (server, target):
        with Client(target, "owner-token") as owner, Client(target, "ingest-token") as ingest:
            pixel = owner.create_pixel("act_1", "shop")
            created = owner.create_custom_conversion("act_1", "big", pixel.id, {"value": {"gt": 100}})
            hour = server.core.now() // 3600 * 3600 - 3600
            record_url_events(ingest, pixel.id, [hour], urls_per_hour=150, url_bytes=1000)
            request = pb.GetCustomConversionStatsRequest(custom_conversion_id=created.id, aggregation="url",
                                                         start_time=hour, end_time=hour + 3600)
            replies = list(owner.pages(owner.custom_conversions.GetCustomConversionStats, request))
            merged = owner.stats(created.id, "url", hour, hour + 3600)
    keys = [row.key for r in replies for row in r.rows]
    assert keys == [f"https://shop.example/{i:03d}/" + "p" * 1000 for i in range(150)]
    assert [row.key for row in merged.rows] == keys and merged.next_page_token == ""
    assert len(replies) == 3
    budget = limit - REPLY_RESERVE_BYTES
    for reply, following in zip(replies, replies[1:] + [None]):
        rows = pb.CustomConversionStats(rows=reply.rows).ByteSize()
        assert reply.ByteSize() <= limit and rows <= budget
        if following is not None:  # full: the next row would not have fit
            assert budget < rows + pb.CustomConversionStats(rows=following.rows[:1]).ByteSize()


def test_stats_tokens_are_bound_to_their_conversion_and_aggregation(service, owner):  # noqa: F811
    pixel = owner.create_pixel("act_1", "shop")
    created = owner.create_custom_conversion("act_1", "big", pixel.id, {"value": {"gt": 100}})
    second = owner.create_custom_conversion("act_1", "other", pixel.id, {"value": {"gt": 100}})
    hour = service[0].core.now() // 3600 * 3600 - 3600
    with Client(service[1], "ingest-token") as ingest:
        record_url_events(ingest, pixel.id, [hour], urls_per_hour=3)

    def stats(conversion_id=created.id, aggregation="url", **paging):
        return owner.call(owner.custom_conversions.GetCustomConversionStats, pb.GetCustomConversionStatsRequest(
            custom_conversion_id=conversion_id, aggregation=aggregation, start_time=hour, end_time=hour + 3600,
            **paging))

    token = stats(page_size=1).next_page_token
    assert token
    invalid(rejected(stats, aggregation="host", page_token=token), "page_token: returned by GetCustomConversionStats")
    invalid(rejected(stats, conversion_id=second.id, page_token=token), "page_token: returned by")
    owner.register_ad(ad("ad1"))
    owner.register_ad(ad("ad2"))
    list_token = owner.call(owner.ads.ListAds, ads_pb2.ListAdsRequest(account_id="act_1", page_size=1)).next_page_token
    invalid(rejected(stats, page_token=list_token), "page_token: returned by ListAds")
    scope = f"{created.id}/url"

    def forge(scope: str, key: str) -> str:
        """A token holding ``key``, JSON text, as its key: ``[call, scope, key]``, one level of JSON."""
        text = f'["GetCustomConversionStats",{json.dumps(scope)},{key}]'
        return base64.urlsafe_b64encode(text.encode()).decode()

    for key in ("[1]", "[\"1\", \"x\"]", "{\"a\": 1, \"b\": 2}", "[true, \"\"]", "7", "[1e400, \"\"]",
                f"[{2**63}, \"\"]", "[1, \"\\ud800\"]"):
        invalid(rejected(stats, page_token=forge(scope, key)), "page_token: not a ")
        # nor the key as a JSON string inside the token's JSON (tokens before one level of encoding)
        invalid(rejected(stats, page_token=forge(scope, json.dumps(key))), "page_token: not a ")
    # A page after SQLite's last hour (a forged token, or one past the range): an empty page,
    # in every aggregation, though the next hour is past what SQLite can bind.
    for aggregation in ("url", "count", "pixel_fire", "unmatched_count"):
        forged = forge(f"{created.id}/{aggregation}", json.dumps([2**63 - 1, ""]))
        assert list(stats(aggregation=aggregation, page_token=forged).rows) == []
    invalid(rejected(stats, page_size=-1), "page_size: -1 is negative (0 asks for as many as fit)")
    assert [row.key[21:24] for row in stats(page_size=2**31 - 1).rows] == ["000", "001", "002"]
