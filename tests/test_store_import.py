"""Bulk import into the SQLite store: what benchmarks and migrations fill a database with."""

from server.store import CustomConversionRecord, SQLiteStore


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
