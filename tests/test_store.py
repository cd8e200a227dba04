"""The SQLite store itself: bulk import, several processes opening one new file at once, and
reading hourly stats after a key."""

import dataclasses
import itertools
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from server.errors import FailedPrecondition, NotFound, PermissionDenied
from server.store import _LOOKUPS_OVER_A_READ, AdRecord, CustomConversionRecord, Recording, SQLiteStore

OPEN_WHEN_TOLD = """
import os, sys, time
from server.store import SQLiteStore
while not os.path.exists(sys.argv[2]):
    time.sleep(0.001)
SQLiteStore(sys.argv[1]).close()
"""


def conversion(cid, account, pixel):
    """A conversion of a Lead on ``pixel`` named by its id."""
    return CustomConversionRecord(id=cid, account_id=account, name=cid, description="", rule='{"event":"Lead"}',
                                  event_source_id=pixel, event_source_type="pixel", custom_event_type="LEAD",
                                  default_conversion_value=0, creation_time=0)


def test_processes_opening_one_new_file_together_all_get_it(tmp_path):
    """Switching a new file to WAL needs it to itself; SQLite may say "locked" at once to
    the others (two --processes workers starting together): they wait and retry."""
    for round_ in range(5):
        path, go = tmp_path / f"db{round_}.sqlite", tmp_path / f"go{round_}"
        opening = [subprocess.Popen([sys.executable, "-c", OPEN_WHEN_TOLD, str(path), str(go)],
                                    stderr=subprocess.PIPE, text=True) for _ in range(3)]
        time.sleep(0.3)  # every process imported and waiting
        go.touch()
        for process in opening:
            _, errors = process.communicate(timeout=60)
            assert process.returncode == 0, errors[-2000:]


def test_import_custom_conversions_stores_them_in_one_go_without_logging_changes(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        pixel = store.create_pixel("p", "OTHER", "act_1", 0).id
        position = store.change_position()
        records = [
            CustomConversionRecord(id=f"{10**14 + i}", account_id="act_1", name=f"cc {i}", description="",
                                   rule='{"event":"Lead"}', event_source_id=pixel, event_source_type="pixel",
                                   custom_event_type="LEAD", default_conversion_value=2.5, creation_time=7)
            for i in range(150)  # past the 100-per-account limit: an import does not check it
        ]
        store.import_custom_conversions(records)
        assert store.tracked_custom_conversions() == records
        assert store.change_position() == position
    finally:
        store.close()


def test_list_pixels_reads_a_fixed_number_of_statements_whatever_the_page_size(tmp_path):
    """Listing once read each pixel's accounts with a query of its own (N+1), then all of them
    in one query though no reply carries them; now it reads the pixels alone, in one statement
    for one pixel as for many, and the result is what get_pixel gives less the accounts."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        lone = store.create_pixel("lone", "OTHER", "act_9", 0)
        created = []
        for i in range(80):  # created by several accounts, shared with act_1 and with others
            creator = f"act_{100 + i % 7}"
            pixel = store.create_pixel(f"p{i}", "LEAD", creator, i)
            store.add_authorized_accounts(pixel.id, ["act_1", *[f"act_{200 + j}" for j in range(i % 5)]])
            created.append(pixel.id)
        store.create_pixel("not shared", "OTHER", "act_2", 0)  # act_1 must not see it

        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        listed_one = store.list_pixels("act_9")
        one = len(statements)
        statements.clear()
        listed = store.list_pixels("act_1")
        many = len(statements)
        store._db.set_trace_callback(None)

        def without_accounts(pixel_id):
            return dataclasses.replace(store.get_pixel(pixel_id), authorized_accounts=None)

        assert listed_one == [without_accounts(lone.id)]
        assert [p.id for p in listed] == sorted(created)
        assert listed == [without_accounts(pixel_id) for pixel_id in sorted(created)]
        assert many == one <= 2, statements
        assert not any("pixel_accounts AS a" in s or "account_id FROM pixel_accounts" in s for s in statements)
        assert store.list_pixels("act_404") == []
        middle = sorted(created)[10:15]  # a page: after a key, at most a limit
        assert store.list_pixels("act_1", after=sorted(created)[9], limit=5) == [without_accounts(p) for p in middle]
        assert store.list_pixels("act_1", after=sorted(created)[-1]) == []
    finally:
        store.close()


def test_a_pixels_accounts_read_a_page_at_a_time_or_only_those_asked_about(tmp_path):
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        pixel = store.create_pixel("p", "OTHER", "act_1", 0).id
        others = [f"act_{n}" for n in range(500, 700)]
        store.add_authorized_accounts(pixel, others)
        everything = sorted(["act_1", *others])
        assert store.authorized_accounts(pixel) == everything
        assert store.authorized_accounts(pixel, after="act_1", limit=3) == everything[1:4]
        assert store.authorized_accounts(pixel, after=everything[-1]) == []
        assert store.get_pixel(pixel).authorized_accounts == tuple(everything)
        few = ["act_9", "act_600", "act_1", "act_600"]  # one not authorised, one twice
        many = [f"act_{n}" for n in range(650, 650 + 2 * _LOOKUPS_OVER_A_READ)]  # read, not looked up
        assert store.get_pixel(pixel, among=few).authorized_accounts == ("act_1", "act_600")
        assert store.get_pixel(pixel, among=many).authorized_accounts == tuple(a for a in many if a in others)
        assert store.get_pixel(pixel, among=[]).authorized_accounts == ()
        for read in (store.authorized_accounts, store.get_pixel):
            with pytest.raises(NotFound):
                read("404")
    finally:
        store.close()


def test_only_changes_a_registry_compiles_are_logged(tmp_path):
    """Pixel names, tags, authorised accounts and conversion names/descriptions are read from
    the store on every call, so they log no change row (a follower has nothing to apply);
    creates, deletes and a new default conversion value do."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        pixel = store.create_pixel("p", "OTHER", "act_1", 0).id
        conversion = CustomConversionRecord(
            id="100000000000000001", account_id="act_1", name="c", description="", rule='{"event":"Lead"}',
            event_source_id=pixel, event_source_type="pixel", custom_event_type="LEAD",
            default_conversion_value=1.0, creation_time=0)
        store.create_custom_conversion(conversion, 100)
        position = store.change_position()
        store.update_pixel(pixel, "renamed", "LEAD")
        store.add_authorized_accounts(pixel, ["act_2", "act_3"])
        store.remove_authorized_accounts(pixel, ["act_3"])
        store.update_custom_conversion(conversion.id, {"name": "c2", "description": "d"})
        assert store.last_change_seq() is None
        assert store.change_position() == position and store.changes_since(position).changes == ()
        assert store.get_pixel(pixel).authorized_accounts == ("act_1", "act_2")
        store.update_custom_conversion(conversion.id, {"default_conversion_value": 2.0})
        assert store.changes_since(position).changes == (("custom_conversion", conversion.id),)
    finally:
        store.close()


def test_an_ad_is_replaced_or_deleted_only_for_its_owners_inside_the_write(tmp_path):
    # The handler checks ownership before the write; between the two, the ad can be deleted and
    # registered again by another account. The write checks again in its transaction.
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        theirs = AdRecord("X", "act_3", "PAGE_LIKES", '{"kind": "page_like", "page_id": "P1"}', "", "", "", "")
        store.put_ad(theirs, replace_existing=False)
        mine = dataclasses.replace(theirs, account_id="act_1")
        # each refusal names the request's field that named the ad, as the handler's check does
        with pytest.raises(PermissionDenied, match="belongs to an ad account this access token cannot act for") as caught:
            store.delete_ad("X", owners={"act_1", "act_2"})
        assert caught.value.message.startswith("ad_id: Permissions error: ad X belongs to"), caught.value.message
        with pytest.raises(PermissionDenied) as caught:
            store.put_ad(mine, replace_existing=True, owners={"act_1"})
        assert caught.value.message.startswith("ad.id: Permissions error: ad X belongs to"), caught.value.message
        assert store.get_ad("X") == theirs
        store.put_ad(dataclasses.replace(theirs, objective="NONE"), replace_existing=True, owners={"act_3"})
        store.delete_ad("X", owners={"act_3"})
        with pytest.raises(NotFound):
            store.get_ad("X")
    finally:
        store.close()


def test_a_pixel_that_conversions_count_is_not_deleted_and_the_refusal_names_them(tmp_path):
    """The refusal names ``pixel_id`` and what counts the pixel: the caller's conversions by id
    (the first few, in creation order), other accounts' as a count per account (the most first),
    the accounts past the first three summed."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        pixel = store.create_pixel("p", "OTHER", "act_1", 0).id
        store.add_authorized_accounts(pixel, [f"act_{n}" for n in range(2, 8)])
        owned = {"act_1": 5, "act_2": 1, "act_3": 2, "act_4": 1, "act_5": 1, "act_6": 1}
        ids = {account: [] for account in owned}
        numbers = itertools.count(10**17)
        for round_ in range(5):  # the accounts' conversions interleaved
            for account, count in owned.items():
                if round_ < count:
                    cid = str(next(numbers))
                    store.create_custom_conversion(conversion(cid, account, pixel), 100)
                    ids[account].append(cid)
        with pytest.raises(FailedPrecondition) as caught:
            store.delete_pixel(pixel, among={"act_1", "act_9"})
        first = ", ".join(ids["act_1"][:3])
        assert caught.value.message == (
            f"pixel_id: pixel {pixel} is the event source of 11 custom conversion(s) ({first} and 2 more of this "
            "access token's ad accounts; 2 of ad account act_3; 1 of ad account act_2; 1 of ad account act_4; "
            "2 of 2 other ad accounts); delete them first")
        with pytest.raises(FailedPrecondition) as caught:  # the caller's own are named: act_2's one
            store.delete_pixel(pixel, among={"act_2", "act_3"})
        assert caught.value.message.startswith(
            f"pixel_id: pixel {pixel} is the event source of 11 custom conversion(s) ({ids['act_2'][0]}, "
            f"{ids['act_3'][0]}, {ids['act_3'][1]} of this access token's ad accounts; 5 of ad account act_1; ")
        with pytest.raises(FailedPrecondition, match=r"\(5 of ad account act_1; 2 of ad account act_3; 1 of ad account act_2; "):
            store.delete_pixel(pixel)  # no caller: no ids
        assert store.get_pixel(pixel).id == pixel
    finally:
        store.close()


def test_a_pixel_delete_refusal_names_only_authorised_accounts_most_conversions_then_by_number_first(tmp_path):
    """Accounts with as many conversions come by number (act_2 before act_10, not as text); an
    account no longer authorised on the pixel (an older database kept its conversions) is never
    named, only summed with the accounts past the first three."""
    store = SQLiteStore(tmp_path / "db.sqlite")
    try:
        pixel = store.create_pixel("p", "OTHER", "act_1", 0).id
        store.add_authorized_accounts(pixel, ["act_2", "act_10", "act_11", "act_300"])
        owned = {"act_10": 1, "act_300": 2, "act_2": 1, "act_11": 1, "act_7": 4}  # act_7: not authorised
        numbers = itertools.count(1)
        store.import_custom_conversions(conversion(str(next(numbers)), account, pixel)
                                        for account, count in owned.items() for _ in range(count))
        with pytest.raises(FailedPrecondition) as caught:
            store.delete_pixel(pixel, among={"act_1"})
        assert caught.value.message == (
            f"pixel_id: pixel {pixel} is the event source of 9 custom conversion(s) (2 of ad account act_300; "
            "1 of ad account act_2; 1 of ad account act_10; 5 of 2 other ad accounts); delete them first")
        assert "act_7" not in caught.value.message
        with pytest.raises(FailedPrecondition) as caught:  # act_7 alone in the sum: "1 other ad account"
            store.delete_pixel(pixel, among={"act_300", "act_2"})
        assert caught.value.message == (
            f"pixel_id: pixel {pixel} is the event source of 9 custom conversion(s) (2, 3, 4 of this access "
            "token's ad accounts; 1 of ad account act_10; 1 of ad account act_11; "
            "4 of 1 other ad account); delete them first")
        assert store.get_pixel(pixel).id == pixel
    finally:
        store.close()


HOURLY_KEYS = ["", "a", "b", "bb", "c", "é"]
HOURLY_ROWS = sorted((hour * 3600, key) for hour in range(5) for key in HOURLY_KEYS if (hour + len(key)) % 3 != 1)
TOTAL_HOURS = [0, 3600, 7200, 14400]  # dimension "" (the total): one row an hour, key ""


@pytest.fixture(scope="module")
def hourly_store(tmp_path_factory):
    store = SQLiteStore(tmp_path_factory.mktemp("hourly") / "db.sqlite")
    pixel = store.create_pixel("p", "OTHER", "act_1", 0).id
    store.import_custom_conversions([conversion(cid, "act_1", pixel) for cid in ("c1", "c2")])
    recording = Recording(conversion_hourly={("c1", hour, "url", key): [1, float(hour), 0.0] for hour, key in HOURLY_ROWS})
    recording.conversion_hourly[("c2", 3600, "url", "a")] = [1, 0.0, 0.0]  # another conversion: never read
    recording.conversion_hourly.update({("c1", hour, "", ""): [1, float(hour), 0.0] for hour in TOTAL_HOURS})
    store.record(recording)
    yield store
    store.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after=st.none() | st.tuples(st.integers(-1, 5).map(lambda h: h * 3600), st.sampled_from(HOURLY_KEYS + ["ba", "d"])),
       limit=st.integers(-1, 7), start=st.integers(-1, 5).map(lambda h: h * 3600), hours=st.integers(0, 6))
def test_hourly_rows_after_a_key_come_in_hour_and_key_order(hourly_store, after, limit, start, hours):
    end = start + hours * 3600
    rows = hourly_store.conversion_hourly("c1", "url", start, end, after=after, limit=limit)
    expected = [row for row in HOURLY_ROWS if start <= row[0] < end and (after is None or row > after)]
    assert [(hour, key) for hour, key, *_ in rows] == (expected if limit < 0 else expected[:limit])
    assert all(matches == 1 and amount == hour for hour, _, matches, amount, _ in rows)


def test_hourly_totals_after_a_token_are_read_in_one_statement(hourly_store):
    """Dimension "" has only the key "": after a token's (hour, "") its hour has no row left, so
    the read skips the seek for the rest of that hour (the url dimension, which can have keys
    after "", still takes it)."""
    statements: list[str] = []
    hourly_store._db.set_trace_callback(statements.append)
    try:
        reads = []
        for after in [None, *((hour, "") for hour in range(-3600, 5 * 3600, 3600)), (3600, "x")]:
            statements.clear()
            rows = hourly_store.conversion_hourly("c1", "", 0, 5 * 3600, after=after)
            expected = [(hour, "") for hour in TOTAL_HOURS if after is None or (hour, "") > after]
            assert [(hour, key) for hour, key, *_ in rows] == expected, after
            assert all(amount == hour for hour, _, _, amount, _ in rows)
            reads.append(len(statements))
        statements.clear()
        urls = hourly_store.conversion_hourly("c1", "url", 0, 5 * 3600, after=(3600, ""))
    finally:
        hourly_store._db.set_trace_callback(None)
    assert reads == [1] * len(reads), statements
    assert urls[0][:2] == (3600, "a") and len(statements) == 2, statements
