"""Several server processes on one SQLite file: registrations made through one reach
classification in the others (the store's change log, followed by every registry), limits
hold across processes, recordings from all of them add up, and ``--processes N`` runs,
stops and fails as a unit. Real processes on loopback, a real file, no mocks; the only
timing in here is a generous deadline for "eventually visible"."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from server.client import Client, error_code
from server.errors import NotFound
from server.gen.conversion_matcher.v1 import ads_pb2, custom_conversions_pb2 as cc_pb, pixels_pb2
from server.store import SQLiteStore
from server.testing import ServerProcess, running_server

DEADLINE = 5.0  # seconds for a change to become visible elsewhere (the design bound is ~0.05 s)
ACCOUNTS = [f"act_{i}" for i in range(1, 31)]
TOKENS = {
    "tokens": {
        "owner-token": {"accounts": ACCOUNTS},
        "ingest-token": {"accounts": [], "ingest": True},
    }
}

_next_account = iter(ACCOUNTS)


def fresh_account() -> str:
    """An ad account no other test in this module uses (the module shares its servers)."""
    return next(_next_account)


def eventually(check, deadline: float = DEADLINE):
    """Poll ``check()`` until it returns something truthy; fail with its last value at the deadline."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not visible within {deadline} s; last seen: {value!r}")
        time.sleep(0.01)


def matched(ingest: Client, pixel_id: str, event: dict | None = None) -> list[tuple[str, float]]:
    [result] = ingest.classify_pixel_events([{"pixel_id": pixel_id, "event": "Lead", **(event or {})}])
    return sorted((m.custom_conversion_id, m.value) for m in result.conversions)


def ads_for(ingest: Client, action: dict) -> list[str]:
    return sorted(a.ad_id for a in ingest.classify_actions([action])[0])


class Node:
    """One server process with an owner and an ingest client."""

    def __init__(self, directory, *args: str) -> None:
        self.process = ServerProcess(directory, "--sync-interval", "0.05", *args, tokens_file=TOKENS)
        self.owner = Client(self.process.target, "owner-token")
        self.ingest = Client(self.process.target, "ingest-token")

    def close(self) -> None:
        self.owner.close()
        self.ingest.close()
        self.process.kill()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    """Two ``python -m server`` processes on different ports sharing one database file."""
    directory = tmp_path_factory.mktemp("shared")
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: Node(directory), range(2))
    yield a, b, directory
    a.close()
    b.close()


# -- propagation between two processes -------------------------------------------------------

def test_conversion_created_on_one_process_matches_on_the_other(nodes):
    a, b, _ = nodes
    account = fresh_account()
    pixel = a.owner.create_pixel(account, "shop").id
    created = a.owner.create_custom_conversion(account, "leads", pixel, {"event": "Lead"}, default_conversion_value=3)
    assert matched(a.ingest, pixel) == [(created.id, 3)]  # at once where it was created
    assert eventually(lambda: matched(b.ingest, pixel)) == [(created.id, 3)]
    # and the other way round
    other = b.owner.create_custom_conversion(account, "big", pixel, {"value": {"gt": 100}})
    assert eventually(lambda: len(matched(a.ingest, pixel, {"custom_data": {"value": 150}})) == 2)


def test_update_archive_and_delete_reach_the_other_process(nodes):
    a, b, _ = nodes
    account = fresh_account()
    pixel = a.owner.create_pixel(account, "shop").id
    first = a.owner.create_custom_conversion(account, "one", pixel, {"event": "Lead"}, default_conversion_value=1).id
    second = a.owner.create_custom_conversion(account, "two", pixel, {"event": "Lead"}, default_conversion_value=2).id
    eventually(lambda: len(matched(b.ingest, pixel)) == 2)

    a.owner.update_custom_conversion(first, default_conversion_value=7.5)
    eventually(lambda: matched(b.ingest, pixel) == sorted([(first, 7.5), (second, 2)]))

    a.owner.call(a.owner.custom_conversions.ArchiveCustomConversion, cc_pb.ArchiveCustomConversionRequest(custom_conversion_id=first))
    eventually(lambda: matched(b.ingest, pixel) == [(second, 2)])

    b.owner.call(b.owner.custom_conversions.DeleteCustomConversion, cc_pb.DeleteCustomConversionRequest(custom_conversion_id=second))
    assert matched(b.ingest, pixel) == []
    eventually(lambda: matched(a.ingest, pixel) == [])


def test_ads_reach_the_other_process(nodes):
    a, b, _ = nodes
    account = fresh_account()
    ad_id = f"ad-{uuid.uuid4().hex[:12]}"
    page_like = {"id": ad_id, "account_id": account, "objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "PG1"}}
    a.owner.register_ad(page_like)
    assert eventually(lambda: ads_for(b.ingest, {"action.type": "like", "page": "PG1"})) == [ad_id]
    # replaced on B (tracking specs now name another page), seen on A
    b.owner.register_ad({**page_like, "creative": {"kind": "page_like", "page_id": "PG2"}}, replace=True)
    eventually(lambda: ads_for(a.ingest, {"action.type": "like", "page": "PG2"}) == [ad_id])
    assert ads_for(a.ingest, {"action.type": "like", "page": "PG1"}) == []
    a.owner.call(a.owner.ads.DeleteAd, ads_pb2.DeleteAdRequest(ad_id=ad_id))
    eventually(lambda: ads_for(b.ingest, {"action.type": "like", "page": "PG2"}) == [])


def test_pixels_reach_the_other_process(nodes):
    a, b, directory = nodes
    account, partner = fresh_account(), fresh_account()
    pixel = a.owner.create_pixel(account, "shop").id
    # B records the new pixel's events once it follows the create (UNVERIFIED until then)
    eventually(lambda: b.ingest.classify_pixel_events([{"pixel_id": pixel, "event": "x"}], record=True)
               and b.owner.get_pixel(pixel).status == "ACTIVE")
    # authorised accounts are read from the store on every call: consistent at once
    a.owner.call(a.owner.pixels.AddAuthorizedAdAccounts, pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=[partner]))
    created = b.owner.create_custom_conversion(partner, "shared", pixel, {"event": "Lead"})
    assert eventually(lambda: matched(a.ingest, pixel)) == [(created.id, 0)]
    b.owner.call(b.owner.custom_conversions.DeleteCustomConversion, cc_pb.DeleteCustomConversionRequest(custom_conversion_id=created.id))
    # deleted on A; B records at once, before it may have followed: no orphan counters either way
    a.owner.call(a.owner.pixels.DeletePixel, pixels_pb2.DeletePixelRequest(pixel_id=pixel))
    b.ingest.classify_pixel_events([{"pixel_id": pixel, "event": "x"}] * 3, record=True)
    with sqlite3.connect(directory / "matcher.db") as db:
        assert db.execute("SELECT COUNT(*) FROM pixel_hourly WHERE pixel_id = ?", (pixel,)).fetchone() == (0,)
    with pytest.raises(grpc.RpcError) as caught:
        b.owner.get_pixel(pixel)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_concurrent_creates_on_both_processes_respect_the_account_limit(nodes):
    a, b, _ = nodes
    account = fresh_account()
    pixel = a.owner.create_pixel(account, "shop").id

    def create(i: int):
        node = (a, b)[i % 2]
        try:
            return node.owner.create_custom_conversion(account, f"c{i}", pixel, {"event": "Lead"}).id
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(130)))
    created = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if not isinstance(o, str)]
    assert len(created) == 100 and len(set(created)) == 100
    assert {(e.code(), error_code(e)) for e in refused} == {(grpc.StatusCode.FAILED_PRECONDITION, 100)}
    listed = a.owner.call(a.owner.custom_conversions.ListCustomConversions, cc_pb.ListCustomConversionsRequest(account_id=account))
    assert sorted(c.id for c in listed.custom_conversions) == sorted(created)
    for node in (a, b):
        assert eventually(lambda: sorted(cid for cid, _ in matched(node.ingest, pixel)) == sorted(created))


def test_recorded_stats_from_both_processes_add_up(nodes):
    a, b, _ = nodes
    account = fresh_account()
    pixel = a.owner.create_pixel(account, "shop").id
    conversion = a.owner.create_custom_conversion(account, "leads", pixel, {"event": "Lead"}).id
    eventually(lambda: matched(b.ingest, pixel))
    batch = [{"pixel_id": pixel, "event": "Lead", "custom_data": {"value": 2}}] * 10 + [{"pixel_id": pixel, "event": "View"}] * 5

    def produce(node: Node) -> int:
        with Client(node.process.target, "ingest-token") as ingest:
            for _ in range(20):
                ingest.classify_pixel_events(batch, record=True)
        return 20

    with ThreadPoolExecutor(4) as pool:
        batches = sum(pool.map(produce, (a, b, a, b)))

    def total(aggregation: str) -> float:
        return sum(row.value for row in a.owner.stats(conversion, aggregation, 1, 2 * 10**9).rows)

    assert total("count") == 10 * batches
    assert total("usd_amount") == 20 * batches
    assert total("pixel_fire") == 15 * batches
    assert total("unmatched_count") == 5 * batches


def test_a_process_started_later_loads_everything(nodes):
    a, b, directory = nodes
    account = fresh_account()
    pixel = a.owner.create_pixel(account, "shop").id
    kept = a.owner.create_custom_conversion(account, "kept", pixel, {"event": "Lead"}, default_conversion_value=4).id
    archived = b.owner.create_custom_conversion(account, "archived", pixel, {"event": "Lead"}).id
    b.owner.call(b.owner.custom_conversions.ArchiveCustomConversion, cc_pb.ArchiveCustomConversionRequest(custom_conversion_id=archived))
    b.owner.update_custom_conversion(kept, default_conversion_value=5)
    ad_id = f"ad-{uuid.uuid4().hex[:12]}"
    b.owner.register_ad({"id": ad_id, "account_id": account, "objective": "PAGE_LIKES",
                         "creative": {"kind": "page_like", "page_id": "LATE"}})
    late = Node(directory)
    try:
        assert matched(late.ingest, pixel) == [(kept, 5)]
        assert ads_for(late.ingest, {"action.type": "like", "page": "LATE"}) == [ad_id]
        # and it follows from there
        newer = a.owner.create_custom_conversion(account, "newer", pixel, {"event": "Lead"}).id
        eventually(lambda: [cid for cid, _ in matched(late.ingest, pixel)] == sorted([kept, newer]))
    finally:
        late.close()


def metric(node: Node, name: str) -> float:
    """One unlabelled gauge from the node's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{node.process.metrics_port}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    [value] = [line.split()[1] for line in lines if line.startswith(name + " ")]
    return float(value)


def test_renames_and_account_changes_wake_no_follower_yet_every_process_serves_them(tmp_path):
    """Pixel names, tags, authorised accounts and conversion names are read from the
    database by every call that uses them, so they log no change and move no process's
    change-log position; the other process still answers with them at once."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: Node(tmp_path, "--metrics-port", "0"), range(2))
    try:
        account, partner = fresh_account(), fresh_account()
        pixel = a.owner.create_pixel(account, "shop").id
        cid = a.owner.create_custom_conversion(account, "leads", pixel, {"event": "Lead"}, default_conversion_value=1).id
        eventually(lambda: matched(b.ingest, pixel) == [(cid, 1)])
        position = eventually(lambda: metric(a, "cm_change_log_position") == metric(b, "cm_change_log_position")
                              and metric(a, "cm_change_log_position"))

        a.owner.call(a.owner.pixels.UpdatePixel, pixels_pb2.UpdatePixelRequest(pixel_id=pixel, name="renamed", tag="lead"))
        a.owner.call(a.owner.pixels.AddAuthorizedAdAccounts,
                     pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=[partner, "act_999"]))
        a.owner.call(a.owner.pixels.RemoveAuthorizedAdAccounts,
                     pixels_pb2.ChangeAuthorizedAdAccountsRequest(pixel_id=pixel, account_ids=["act_999"]))
        a.owner.update_custom_conversion(cid, name="leads, renamed", description="now described")
        # B answers with all of it at once, before any poll could have run
        shown = b.owner.get_pixel(pixel)
        assert (shown.name, shown.tag) == ("renamed", "LEAD")
        listed = b.owner.call(b.owner.pixels.ListPixels, pixels_pb2.ListPixelsRequest(account_id=partner)).pixels
        assert [(p.id, p.name) for p in listed] == [(pixel, "renamed")]
        authorised = b.owner.call(b.owner.pixels.ListAuthorizedAdAccounts,
                                  pixels_pb2.ListAuthorizedAdAccountsRequest(pixel_id=pixel)).account_ids
        assert sorted(authorised) == sorted([account, partner])
        got = b.owner.call(b.owner.custom_conversions.GetCustomConversion,
                           cc_pb.GetCustomConversionRequest(custom_conversion_id=cid))
        assert (got.name, got.description) == ("leads, renamed", "now described")
        # ...and none of it went through the change log: no process has anything to apply
        time.sleep(0.3)  # several poll intervals
        with sqlite3.connect(tmp_path / "matcher.db") as db:
            assert db.execute("SELECT MAX(seq) FROM changes").fetchone() == (position,)
        assert [metric(n, "cm_change_log_position") for n in (a, b)] == [position, position]
        assert [metric(n, "cm_change_log_reloads") for n in (a, b)] == [0, 0]

        # the new authorisation holds on B at once; what classification uses still propagates
        shared = b.owner.create_custom_conversion(partner, "shared", pixel, {"event": "Lead"}).id
        a.owner.update_custom_conversion(cid, default_conversion_value=4)
        eventually(lambda: matched(b.ingest, pixel) == sorted([(cid, 4), (shared, 0)]))
        eventually(lambda: matched(a.ingest, pixel) == sorted([(cid, 4), (shared, 0)]))
        assert eventually(lambda: metric(a, "cm_change_log_position") == metric(b, "cm_change_log_position")
                          and metric(b, "cm_change_log_position")) == position + 2
    finally:
        a.close()
        b.close()


# -- the follower, step by step (in-process servers, following by hand) ----------------------

def test_applying_a_change_twice_or_ones_own_change_is_harmless(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db, sync_interval=0) as (one, target_one), running_server(db, sync_interval=0) as (two, _):
        with Client(target_one, "owner-token") as owner:
            pixel = owner.create_pixel("act_1", "p").id
            cid = owner.create_custom_conversion("act_1", "c", pixel, {"event": "Lead"}).id
        # its own registrations: the position moved with them, nothing to re-read
        assert one.core.registry.position == one.core.store.change_position()
        before = one.core.registry.snapshot
        assert not one.core.registry.sync() and one.core.registry.snapshot is before
        assert two.core.registry.sync() and two.core.registry.snapshot.default_values == {cid: 0.0}
        snapshot = two.core.registry.snapshot
        assert not two.core.registry.sync() and two.core.registry.snapshot is snapshot
        # re-reading the same rows again (as after an interrupted round) changes nothing
        two.core.registry.position = 0
        two.core.registry._pending = True
        assert not two.core.registry.sync() and two.core.registry.snapshot is snapshot


def test_a_follower_behind_pruned_rows_reloads_everything(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db, sync_interval=0) as (one, target_one), running_server(db, sync_interval=0) as (two, _):
        store = one.core.store
        store.KEEP_CHANGES, store.KEEP_CHANGE_SECONDS, store.PRUNE_EVERY = 0, -10, 1  # prune on every change
        with Client(target_one, "owner-token") as owner:
            pixel = owner.create_pixel("act_1", "p").id
            cids = {owner.create_custom_conversion("act_1", f"c{i}", pixel, {"event": "Lead"}).id for i in range(3)}
        assert two.core.registry.sync()
        assert two.core.registry.reloads == 1
        assert set(two.core.registry.snapshot.default_values) == cids
        assert two.core.registry.position == store.change_position()


def test_a_stored_object_that_does_not_compile_is_skipped_not_fatal(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db, sync_interval=0) as (one, target_one), running_server(db, sync_interval=0) as (two, _):
        with Client(target_one, "owner-token") as owner:
            pixel = owner.create_pixel("act_1", "p").id
            with sqlite3.connect(db) as raw:  # e.g. written by another version of the service
                raw.execute(
                    "INSERT INTO custom_conversions (id, account_id, name, description, rule, event_source_id, "
                    "event_source_type, custom_event_type, default_conversion_value, creation_time, retention_days) "
                    "VALUES ('999', 'act_1', 'bad', '', '{\"url\": {\"gt\": \"abc\"}}', ?, 'pixel', 'OTHER', 0, 1, 0)",
                    (pixel,),
                )
                raw.execute("INSERT INTO changes (kind, object_id, at) VALUES ('custom_conversion', '999', 1)")
            good = owner.create_custom_conversion("act_1", "good", pixel, {"event": "Lead"}).id
        assert two.core.registry.sync()
        assert set(two.core.registry.snapshot.default_values) == {good}


def test_a_store_change_that_fails_logs_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "matcher.db")
    try:
        pixel = store.create_pixel("p", "OTHER", "act_1", 1)
        position = store.change_position()
        with pytest.raises(NotFound):
            store.delete_custom_conversion("404")
        assert store.last_change_seq() is None
        assert store.change_position() == position
        assert store.changes_since(0).changes == (("pixel", pixel.id),)
    finally:
        store.close()


# -- python -m server --processes N -------------------------------------------------------------

def test_processes_serve_one_port_and_stop_together(tmp_path):
    service = ServerProcess(tmp_path, "--processes", "2", "--metrics-port", "0", tokens_file=TOKENS)
    try:
        serving = service.serving
        assert serving["processes"] == 2 and len(serving["pids"]) == 2 and len(set(serving["metrics_ports"])) == 2
        workers = {line["worker"] for line in service.log_lines if line.get("msg") == "serving" and "worker" in line}
        assert workers == {0, 1}
        account = fresh_account()
        with Client(service.target, "owner-token") as owner:
            pixel = owner.create_pixel(account, "p").id
            cid = owner.create_custom_conversion(account, "c", pixel, {"event": "Lead"}).id

        def seen_on_a_new_connection():  # each new channel may land on either worker
            with Client(service.target, "ingest-token") as ingest:
                return matched(ingest, pixel) == [(cid, 0)]

        for _ in range(6):
            eventually(seen_on_a_new_connection)

        def positions():  # both workers' snapshots reflect the same change-log position
            values = set()
            for port in serving["metrics_ports"]:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    lines = response.read().decode().splitlines()
                values |= {line.split()[1] for line in lines if line.startswith("cm_change_log_position ")}
            return values if len(values) == 1 else None

        eventually(positions)
        assert service.terminate() == 0
        stopped = [line for line in service.log_lines if line.get("msg") == "stopped"]
        assert {line.get("worker") for line in stopped} == {0, 1, None}
        for pid in serving["pids"]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        service.kill()


def test_a_dying_worker_stops_the_service_with_an_error(tmp_path):
    service = ServerProcess(tmp_path, "--processes", "2", tokens_file=TOKENS)
    try:
        victim, survivor = service.serving["pids"]
        os.kill(victim, signal.SIGKILL)
        assert service.process.wait(60) != 0
        failure = service.wait_for_log("worker exited unexpectedly; stopping the others and exiting")
        assert failure["worker_index"] == 0 and failure["exit_status"] == -signal.SIGKILL
        with pytest.raises(ProcessLookupError):
            os.kill(survivor, 0)
    finally:
        service.kill()


def test_processes_refuse_a_port_already_served(tmp_path):
    first = ServerProcess(tmp_path, tokens_file=TOKENS)
    try:
        second = tmp_path / "second"
        second.mkdir()
        (second / "tokens.json").write_text(json.dumps(TOKENS))
        result = subprocess.run(
            [sys.executable, "-m", "server", "--processes", "2", "--port", str(first.port),
             "--db", str(second / "matcher.db"), "--tokens", str(second / "tokens.json")],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2 and "cannot bind the listen port" in result.stderr
    finally:
        first.kill()


@pytest.mark.parametrize("first_args", [(), ("--processes", "2")], ids=["one-process", "workers"])
def test_one_process_refuses_a_port_already_served(tmp_path, first_args):
    """Without --processes, a second server on a served port exits 2; it used to share the
    port (SO_REUSEPORT) and take half the connections, on another database."""
    first = ServerProcess(tmp_path, *first_args, tokens_file=TOKENS)
    try:
        second = tmp_path / "second"
        second.mkdir()
        (second / "tokens.json").write_text(json.dumps(TOKENS))
        result = subprocess.run(
            [sys.executable, "-m", "server", "--port", str(first.port),
             "--db", str(second / "matcher.db"), "--tokens", str(second / "tokens.json")],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2 and "cannot start" in result.stderr and "cannot bind" in result.stderr
    finally:
        first.kill()


def test_workers_that_never_sync_are_refused(tmp_path):
    result = subprocess.run([sys.executable, "-m", "server", "--processes", "2", "--sync-interval", "0",
                             "--db", str(tmp_path / "m.db")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--sync-interval 0 never reads what other processes register" in result.stderr


@pytest.mark.slow
def test_soak_two_processes_registering_and_recording_at_once(tmp_path):
    """Half a minute of recordings from both processes while both register: every call
    succeeds (no "database is locked"), the counters add up, and both end with the same rules."""
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: Node(tmp_path), range(2))
    try:
        account = fresh_account()
        pixel = a.owner.create_pixel(account, "shop").id
        conversion = a.owner.create_custom_conversion(account, "leads", pixel, {"event": "Lead"}).id
        eventually(lambda: matched(b.ingest, pixel))
        stop = threading.Event()
        recorded = []
        created = []

        def record(node: Node) -> None:
            with Client(node.process.target, "ingest-token") as ingest:
                while not stop.is_set():
                    ingest.classify_pixel_events([{"pixel_id": pixel, "event": "Lead"}] * 50, record=True)
                    recorded.append(50)

        def register(node: Node) -> None:
            with Client(node.process.target, "owner-token") as owner:
                for i in range(45):
                    created.append(owner.create_custom_conversion(account, f"r{i}", pixel, {"event": f"E{i}"}).id)
                    time.sleep(0.05)

        with ThreadPoolExecutor(6) as pool:
            recorders = [pool.submit(record, node) for node in (a, b, a, b)]
            registrars = [pool.submit(register, node) for node in (a, b)]
            for future in registrars:
                future.result()
            time.sleep(20)
            stop.set()
            for future in recorders:
                future.result()
        assert sum(row.value for row in a.owner.stats(conversion, "count", 1, 2 * 10**9).rows) == sum(recorded)
        events = [{"pixel_id": pixel, "event": f"E{i}"} for i in range(45)]
        for node in (a, b):
            eventually(lambda: sorted(
                m.custom_conversion_id for r in node.ingest.classify_pixel_events(events) for m in r.conversions
            ) == sorted(created))
        assert not [line for node in (a, b) for line in node.process.log_lines if line.get("level") == "error"]
    finally:
        a.close()
        b.close()
