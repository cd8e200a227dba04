"""Ids of created objects: one generator (server.ids) for pixels and custom conversions, one
format, and ids stored by earlier versions (15-digit pixel ids) still served. Real server on
loopback, real SQLite file."""

import re
import sqlite3

from server.client import Client
from server.gen.conversion_matcher.v1 import pixels_pb2
from server.ids import ID_DIGITS, new_id
from server.store import SQLiteStore
from server.testing import running_server

ID_FORMAT = re.compile(r"[1-9][0-9]{17}")


def test_pixels_and_custom_conversions_get_ids_of_one_format(tmp_path):
    assert ID_DIGITS == 18 and ID_FORMAT.fullmatch(new_id())
    with running_server(tmp_path / "matcher.db") as (_, target), Client(target, "owner-token") as owner:
        pixels = [owner.create_pixel("act_1", f"p{i}").id for i in range(5)]
        conversions = [owner.create_custom_conversion("act_1", f"c{i}", pixels[i], {"event": "Lead"}).id
                       for i in range(5)]
    ids = pixels + conversions
    assert all(ID_FORMAT.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_a_pixel_id_stored_by_an_earlier_version_keeps_working(tmp_path):
    db = tmp_path / "matcher.db"
    SQLiteStore(db).close()
    old = "123456789012345"  # 15 digits, as pixels were created before
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO pixels (id, name, tag, creator, creation_time) VALUES (?, 'old', 'OTHER', 'act_1', 1)", (old,))
        raw.execute("INSERT INTO pixel_accounts (pixel_id, account_id) VALUES (?, 'act_1')", (old,))
    with running_server(db) as (_, target), Client(target, "owner-token") as owner, \
            Client(target, "ingest-token") as ingest:
        assert owner.get_pixel(old).name == "old"
        new = owner.create_pixel("act_1", "new").id
        listed = owner.call(owner.pixels.ListPixels, pixels_pb2.ListPixelsRequest(account_id="act_1")).pixels
        assert sorted(p.id for p in listed) == sorted([old, new])
        conversion = owner.create_custom_conversion("act_1", "leads", old, {"event": "Lead"}).id
        [result] = ingest.classify_pixel_events([{"pixel_id": old, "event": "Lead"}], record=True)
        assert [m.custom_conversion_id for m in result.conversions] == [conversion]
        assert owner.get_pixel(old).status == "ACTIVE"
        assert sum(row.value for row in owner.stats(conversion, "count", 1, 2 * 10**9).rows) == 1
