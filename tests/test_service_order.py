"""The order of matches in replies: stored, so every process on one database and a restarted
server answer a request with the same matches in the same order (creation order; an ad
keeps its place when replaced)."""

from __future__ import annotations

import random
import sqlite3

from server.client import Client
from server.gen.conversion_matcher.v1 import ads_pb2, custom_conversions_pb2 as cc_pb
from server.store import CustomConversionRecord, SQLiteStore
from server.testing import running_server

LEAD = {"event": "Lead"}
LIKE = {"action.type": "like", "page": "PG1"}


def conversion_order(target: str, pixel: str) -> list[str]:
    with Client(target, "ingest-token") as ingest:
        [result] = ingest.classify_pixel_events([{"pixel_id": pixel, "event": "Lead"}])
        return [m.custom_conversion_id for m in result.conversions]


def ad_order(target: str) -> list[str]:
    with Client(target, "ingest-token") as ingest:
        return [m.ad_id for m in ingest.classify_actions([LIKE])[0]]


def page_like(ad_id: str, page: str = "PG1") -> dict:
    return {"id": ad_id, "account_id": "act_1", "objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": page}}


def test_conversions_match_in_creation_order_before_and_after_a_restart(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db) as (_, target), Client(target, "owner-token") as owner:
        pixel = owner.create_pixel("act_1", "p").id
        created = [owner.create_custom_conversion("act_1", f"c{i}", pixel, LEAD).id for i in range(8)]
        assert conversion_order(target, pixel) == created
    with running_server(db) as (_, target):  # ids are random: id order is not creation order
        assert conversion_order(target, pixel) == created


def test_ads_match_in_registration_order_a_replaced_ad_keeps_its_place(tmp_path):
    db = tmp_path / "matcher.db"
    ids = ["z", "a", "m", "b"]  # not in id order
    with running_server(db) as (_, target), Client(target, "owner-token") as owner:
        for ad_id in ids:
            owner.register_ad(page_like(ad_id))
        owner.register_ad(page_like("z", "PG2"), replace=True)
        owner.register_ad(page_like("z"), replace=True)
        assert ad_order(target) == ids
        owner.call(owner.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id="a"))
        owner.register_ad(page_like("a"))  # registered again: last
        assert ad_order(target) == ["z", "m", "b", "a"]
    with running_server(db) as (_, target):
        assert ad_order(target) == ["z", "m", "b", "a"]


def test_two_processes_registering_in_turn_agree_on_the_order(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db, sync_interval=0) as (one, a), running_server(db, sync_interval=0) as (two, b), \
            Client(a, "owner-token") as owner_a, Client(b, "owner-token") as owner_b:
        pixel = owner_a.create_pixel("act_1", "p").id
        two.core.registry.sync()
        # each process registers before it has seen the other's last registration
        first = owner_a.create_custom_conversion("act_1", "first", pixel, LEAD).id
        second = owner_b.create_custom_conversion("act_1", "second", pixel, LEAD).id
        third = owner_a.create_custom_conversion("act_1", "third", pixel, LEAD).id
        owner_b.register_ad(page_like("y"))
        owner_a.register_ad(page_like("x"))
        owner_b.register_ad(page_like("w"))
        assert one.core.registry.sync() and two.core.registry.sync()
        assert conversion_order(a, pixel) == conversion_order(b, pixel) == [first, second, third]
        assert ad_order(a) == ad_order(b) == ["y", "x", "w"]
        # deleted and registered again on one process, unseen by the other, which still has
        # the ad in its first place: the other moves it last
        owner_b.call(owner_b.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id="y"))
        owner_b.register_ad(page_like("y"))
        assert one.core.registry.sync()
        assert ad_order(a) == ad_order(b) == ["x", "w", "y"]
        # replaced on the process that has not seen it registered again: stays where the store has it
        owner_b.call(owner_b.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id="x"))
        owner_b.register_ad(page_like("x"))
        owner_a.register_ad(page_like("x"), replace=True)
        assert two.core.registry.sync() is not None
        assert ad_order(a) == ad_order(b) == ["w", "y", "x"]


def test_random_interleavings_of_two_processes_match_a_fresh_load(tmp_path):
    """Creates, deletes, registrations, replacements and syncs in random order on two
    processes: once both have synced, both answer as a server started afresh does."""
    db = tmp_path / "matcher.db"
    rng = random.Random(20261124)
    with running_server(db, sync_interval=0) as (one, a), running_server(db, sync_interval=0) as (two, b), \
            Client(a, "owner-token") as owner_a, Client(b, "owner-token") as owner_b:
        pixels = [owner_a.create_pixel("act_1", f"p{i}").id for i in range(2)]
        two.core.registry.sync()
        servers = [(one, a, owner_a), (two, b, owner_b)]
        conversions: list[str] = []
        ads: set[str] = set()
        for _ in range(120):
            server, _, owner = rng.choice(servers)
            action = rng.random()
            if action < 0.25:
                conversions.append(owner.create_custom_conversion("act_1", "c", rng.choice(pixels), LEAD).id)
            elif action < 0.35 and conversions:
                victim = conversions.pop(rng.randrange(len(conversions)))
                owner.call(owner.custom_conversions.DeleteCustomConversion,
                           cc_pb.DeleteCustomConversionRequest(custom_conversion_id=victim))
            elif action < 0.6:
                ad_id = rng.choice("abcdefgh")
                if ad_id in ads and rng.random() < 0.3:
                    owner.call(owner.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id=ad_id))
                    ads.discard(ad_id)
                else:
                    owner.register_ad(page_like(ad_id, rng.choice(["PG1", "PG1", "PG2"])), replace=ad_id in ads)
                    ads.add(ad_id)
            else:
                server.core.registry.sync()
        one.core.registry.sync()
        two.core.registry.sync()
        def answers(target: str) -> tuple:
            return tuple(conversion_order(target, pixel) for pixel in pixels), ad_order(target)

        seen = [answers(t) for _, t, _ in servers]
    with running_server(db) as (_, fresh):
        assert seen == [answers(fresh)] * 2
        assert sorted(sum(seen[0][0], [])) == sorted(conversions)
        assert min(map(len, seen[0][0])) > 3 and len(seen[0][1]) > 3  # the run built something to order


def test_a_database_written_before_positions_gets_them_in_insertion_order(tmp_path):
    db = tmp_path / "old.db"
    store = SQLiteStore(db)
    pixel = store.create_pixel("p", "", "act_1", 0).id
    records = [CustomConversionRecord(id=cid, account_id="act_1", name="c", description="", rule='{"event":{"eq":"Lead"}}',
                                      event_source_id=pixel, event_source_type="pixel", custom_event_type="LEAD",
                                      default_conversion_value=0.0, creation_time=0) for cid in ("9", "3", "5")]
    store.import_custom_conversions(records)
    store._db.close()
    with sqlite3.connect(db) as old:  # as an earlier version left it: no position column
        for table in ("custom_conversions", "ads"):
            old.execute(f"DROP INDEX {table}_by_position")
            old.execute(f"ALTER TABLE {table} DROP COLUMN position")
    old.close()
    store = SQLiteStore(db)
    assert [(c.id, c.position) for c in store.tracked_custom_conversions()] == [("9", 1), ("3", 2), ("5", 3)]
    store._db.close()
