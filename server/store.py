"""Durable state: pixels, custom conversions, ads and recorded stats.

:class:`Store` is the small interface the servicers use; :class:`SQLiteStore` is the
embedded default (WAL journal, ``synchronous=FULL``, one transaction per call), so a
registration or a recording is durable when the call returns. Another backend (e.g.
PostgreSQL) implements the same methods.

Concurrency: one connection guarded by a lock. Writes are serialised anyway (the
registry holds its writer lock around store write + compiled swap), and reads are
short primary-key or per-account lookups; classification never touches the store
unless it records.

Several processes may share one file (``python -m server --processes N``, or separate
servers on one database). Every write is a ``BEGIN IMMEDIATE`` transaction, so limits
checked inside it (100 custom conversions per account, unique ids, a pixel still
counted by conversions) hold across processes, and ``busy_timeout`` makes a writer wait
for another process's transaction instead of failing. Every write that changes what a
registry compiles also appends a row to the **change log** (``changes``) in the same
transaction; each process's registry follows that log (:meth:`Store.changes_since`) to
apply the other processes' registrations. Writes no registry holds in memory (pixel names
and tags, authorised accounts, conversion names and descriptions: every process reads them
from the store on each call) log nothing, so they wake no follower.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Collection, Iterable, Iterator, Mapping

from server.errors import (AlreadyExists, FailedPrecondition, NotFound, PixelNotAuthorised, account_not_on_pixel,
                           not_the_owner)
from server.ids import new_id

__all__ = [
    "AdRecord",
    "ChangeBatch",
    "CustomConversionRecord",
    "PixelRecord",
    "Recording",
    "SQLiteStore",
    "Store",
]


@dataclass(frozen=True)
class PixelRecord:
    id: str
    name: str
    tag: str
    creator: str
    creation_time: int
    last_firing_time: int | None = None
    # The authorised accounts read with the record, in id order: all of them (get_pixel), only
    # those asked about (get_pixel(among=...)), or None when not read (list_pixels).
    authorized_accounts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CustomConversionRecord:
    id: str
    account_id: str
    name: str
    description: str
    rule: str
    event_source_id: str
    event_source_type: str
    custom_event_type: str
    default_conversion_value: float
    creation_time: int
    retention_days: int = 0
    first_fired_time: int | None = None
    last_fired_time: int | None = None
    is_archived: bool = False
    # Where the conversion stands in classification's order (see ``Store``); set by the store.
    position: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AdRecord:
    id: str
    account_id: str
    objective: str
    creative: str
    optimization_goal: str
    promoted_object: str
    tracking_specs: str
    conversion_specs: str
    # Where the ad stands in classification's order (see ``Store``); set by the store.
    position: int | None = field(default=None, compare=False)


@dataclass
class Recording:
    """What one recorded batch adds, already aggregated (one row per key, not per event)."""

    # pixel_id -> (earliest, latest) firing time in the batch
    pixel_firings: dict[str, tuple[int, int]] = field(default_factory=dict)
    # custom conversion id -> (earliest, latest) match time
    conversion_firings: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (pixel_id, hour) -> [events, usd amount]
    pixel_hourly: dict[tuple[str, int], list] = field(default_factory=dict)
    # (custom conversion id, hour, dimension, key) -> [matches, usd amount (conversion values),
    # event value (the events' own numeric `value`, for unmatched amounts)]; dimension "" is the total
    conversion_hourly: dict[tuple[str, int, str, str], list] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangeBatch:
    """Change-log rows after a position: ``changes`` are ``(kind, object_id)`` in log order
    (kind: ``pixel``, ``custom_conversion``, ``ad``); ``position`` is the last seq read;
    ``gap`` is True when rows after the asked position were pruned (the reader must reload
    everything instead)."""

    position: int
    changes: tuple[tuple[str, str], ...]
    gap: bool = False


class Store(ABC):
    """The persistence interface of the service. Methods raise NotFound / AlreadyExists /
    FailedPrecondition from ``server.errors``; a method that raises changed nothing.

    Order: every custom conversion and every ad has a stored ``position``, larger than any
    other of its kind had when it was created (an ad keeps its position when replaced).
    Classification lists matches in position order, so every process on one database, and
    a restarted one, answers a request with the same matches in the same order."""

    @abstractmethod
    def create_pixel(self, name: str, tag: str, creator: str, now: int) -> PixelRecord:
        """Insert a pixel under a new id; its creator is its first authorised account."""

    @abstractmethod
    def get_pixel(self, pixel_id: str, among: Iterable[str] | None = None, *, field: str = "pixel_id") -> PixelRecord:
        """The pixel with its authorised accounts, or with only those of ``among`` that are
        authorised (an access check reads no more than it asks about); NotFound at ``field``
        (the request's field that named the pixel)."""

    @abstractmethod
    def list_pixels(self, account_id: str, after: str | None = None, limit: int | None = None) -> list[PixelRecord]:
        """Pixels ``account_id`` is authorised on (created or shared), in id order: the first
        ``limit`` (None: all) of those with an id after ``after``; their accounts are not read."""

    @abstractmethod
    def authorized_accounts(self, pixel_id: str, after: str | None = None, limit: int | None = None) -> list[str]:
        """A pixel's authorised accounts in id order: the first ``limit`` (None: all) of those
        after ``after``; NotFound."""

    @abstractmethod
    def pixel_ids(self) -> list[str]:
        """Ids of every pixel (loaded at start)."""

    @abstractmethod
    def update_pixel(self, pixel_id: str, name: str | None, tag: str | None) -> PixelRecord:
        """Change name and/or tag (None: unchanged); NotFound."""

    @abstractmethod
    def delete_pixel(self, pixel_id: str, among: Collection[str] = ()) -> None:
        """Delete a pixel and its counters; FailedPrecondition at ``pixel_id`` while conversions
        count it, naming a few of those of the accounts ``among`` (the caller's) by id and
        counting the others' per account."""

    @abstractmethod
    def add_authorized_accounts(self, pixel_id: str, accounts: Iterable[str], limit: int | None = None) -> None:
        """Authorise more accounts (already authorised ones are ignored); FailedPrecondition
        when the pixel would have more than ``limit`` (None: no limit)."""

    @abstractmethod
    def remove_authorized_accounts(self, pixel_id: str, accounts: Iterable[str]) -> None:
        """De-authorise accounts (the caller keeps the creator out of the list); FailedPrecondition
        at ``account_ids[i]`` (``accounts`` in the request's order) for one with conversions on it."""

    @abstractmethod
    def create_custom_conversion(self, record: CustomConversionRecord, limit: int) -> CustomConversionRecord:
        """Insert ``record`` (its id chosen by the caller); FailedPrecondition at ``limit``."""

    @abstractmethod
    def import_custom_conversions(self, records: Iterable[CustomConversionRecord]) -> None:
        """Load many conversions at once, with no limit check or change log (offline filling)."""

    @abstractmethod
    def get_custom_conversion(self, conversion_id: str, *, field: str = "custom_conversion_id") -> CustomConversionRecord:
        """One custom conversion; NotFound at ``field`` (the request's field that named it)."""

    @abstractmethod
    def list_custom_conversions(self, account_id: str, archived: bool | None) -> list[CustomConversionRecord]:
        """An account's conversions in creation order; ``archived`` None means all."""

    @abstractmethod
    def tracked_custom_conversions(self) -> list[CustomConversionRecord]:
        """Every conversion that is not archived, in position order (loaded at start)."""

    @abstractmethod
    def update_custom_conversion(self, conversion_id: str, changes: Mapping[str, object], *,
                                 field: str = "custom_conversion_id") -> CustomConversionRecord:
        """Set name / description / default_conversion_value; NotFound at ``field``."""

    @abstractmethod
    def archive_custom_conversion(self, conversion_id: str) -> CustomConversionRecord:
        """Mark archived (idempotent); NotFound."""

    @abstractmethod
    def delete_custom_conversion(self, conversion_id: str) -> None:
        """Delete a conversion and its counters; NotFound."""

    @abstractmethod
    def put_ad(self, record: AdRecord, *, replace_existing: bool, pixels: Collection[str] = (),
               owners: Collection[str] | None = None) -> AdRecord:
        """Insert (AlreadyExists when taken) or, with ``replace_existing``, replace (NotFound when
        absent). ``pixels``: the pixel ids the ad's specs name; PermissionDenied when one is a
        registered pixel the ad's account is not authorised on (unregistered ids are allowed).
        ``owners``: the accounts the replaced ad must belong to (PermissionDenied otherwise),
        checked in the write's transaction."""

    @abstractmethod
    def get_ad(self, ad_id: str, *, field: str = "ad_id") -> AdRecord:
        """One ad; NotFound at ``field`` (the request's field that named it)."""

    @abstractmethod
    def list_ads(self, account_id: str, after: str | None = None, limit: int | None = None) -> list[AdRecord]:
        """An account's ads in id order: the first ``limit`` (None: all) of those with an id
        after ``after``."""

    @abstractmethod
    def all_ads(self) -> list[AdRecord]:
        """Every ad, in position order (loaded at start)."""

    @abstractmethod
    def delete_ad(self, ad_id: str, owners: Collection[str] | None = None) -> None:
        """Delete an ad; NotFound; PermissionDenied when ``owners`` is given and the ad belongs
        to none of them (checked in the write's transaction)."""

    @abstractmethod
    def record(self, recording: Recording) -> None:
        """Apply one recorded batch in one transaction (conversions deleted meanwhile are skipped)."""

    @abstractmethod
    def conversion_hourly(self, conversion_id: str, dimension: str, start: int, end: int, *,
                          after: tuple[int, str] | None = None, limit: int = -1) -> list[tuple[int, str, int, float, float]]:
        """(hour, key, matches, usd amount, matched events' own value) rows of one dimension with
        ``start <= hour < end``, in (hour, key) order: the first ``limit`` (-1: all) after ``after``."""

    @abstractmethod
    def pixel_hourly(self, pixel_id: str, start: int, end: int, *, after: int | None = None,
                     limit: int = -1) -> list[tuple[int, int, float]]:
        """(hour, events, usd amount) rows of a pixel with ``start <= hour < end``, in hour order:
        the first ``limit`` (-1: all) after the hour ``after``."""

    # -- change log (followed by every process's registry) ---------------------------------

    @abstractmethod
    def pixel_exists(self, pixel_id: str) -> bool:
        """Whether the pixel is registered."""

    @abstractmethod
    def change_position(self) -> int:
        """The seq of the last change ever logged (0 when none); read it *before* loading
        the state a follower starts from."""

    @abstractmethod
    def others_wrote(self) -> bool:
        """Cheap poll: False only when no other connection can have committed anything since
        the previous call (a follower then skips reading the log). True is always safe."""

    @abstractmethod
    def changes_since(self, position: int) -> ChangeBatch:
        """Logged changes with seq > ``position``, in order (see :class:`ChangeBatch`)."""

    @abstractmethod
    def last_change_seq(self) -> int | None:
        """The seq of the change the calling thread's last write logged (None: none)."""

    @abstractmethod
    def close(self) -> None:
        """Checkpoint and close; the store is unusable afterwards."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS pixels (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tag TEXT NOT NULL,
    creator TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    last_firing_time INTEGER
);
CREATE TABLE IF NOT EXISTS pixel_accounts (
    pixel_id TEXT NOT NULL REFERENCES pixels(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    PRIMARY KEY (pixel_id, account_id)
);
CREATE INDEX IF NOT EXISTS pixel_accounts_by_account ON pixel_accounts(account_id);
CREATE TABLE IF NOT EXISTS custom_conversions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    rule TEXT NOT NULL,
    event_source_id TEXT NOT NULL REFERENCES pixels(id),
    event_source_type TEXT NOT NULL,
    custom_event_type TEXT NOT NULL,
    default_conversion_value REAL NOT NULL,
    creation_time INTEGER NOT NULL,
    retention_days INTEGER NOT NULL,
    first_fired_time INTEGER,
    last_fired_time INTEGER,
    is_archived INTEGER NOT NULL DEFAULT 0,
    position INTEGER
);
CREATE INDEX IF NOT EXISTS custom_conversions_by_account ON custom_conversions(account_id);
CREATE TABLE IF NOT EXISTS ads (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    objective TEXT NOT NULL,
    creative TEXT NOT NULL,
    optimization_goal TEXT NOT NULL,
    promoted_object TEXT NOT NULL,
    tracking_specs TEXT NOT NULL,
    conversion_specs TEXT NOT NULL,
    position INTEGER
);
CREATE INDEX IF NOT EXISTS ads_by_account ON ads(account_id);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS change_log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL
);
INSERT OR IGNORE INTO change_log_state (id, pruned_through) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS pixel_hourly (
    pixel_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    events INTEGER NOT NULL,
    usd_amount REAL NOT NULL,
    PRIMARY KEY (pixel_id, hour)
);
CREATE TABLE IF NOT EXISTS conversion_hourly (
    conversion_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    dimension TEXT NOT NULL,
    key TEXT NOT NULL,
    matches INTEGER NOT NULL,
    usd_amount REAL NOT NULL,
    event_value REAL NOT NULL,
    PRIMARY KEY (conversion_id, dimension, hour, key)
);
"""

_CC_COLUMNS = (
    "id, account_id, name, description, rule, event_source_id, event_source_type, custom_event_type, "
    "default_conversion_value, creation_time, retention_days, first_fired_time, last_fired_time, is_archived"
)
_AD_COLUMNS = "id, account_id, objective, creative, optimization_goal, promoted_object, tracking_specs, conversion_specs"
# What a read selects: the written columns and the position the store assigns.
_CC_READ = f"{_CC_COLUMNS}, position"
_AD_READ = f"{_AD_COLUMNS}, position"


def _next_position(table: str) -> str:
    """SQL for a new row's position: one past the largest (in the write's transaction, so no
    other process takes it meanwhile; indexed, so a lookup, not a scan)."""
    return f"(SELECT COALESCE(MAX(position), 0) + 1 FROM {table})"


_CC_INSERT = (f"INSERT INTO custom_conversions ({_CC_COLUMNS}, position) "
              f"VALUES ({', '.join('?' * 14)}, {_next_position('custom_conversions')})")
_AD_INSERT = f"INSERT INTO ads ({_AD_COLUMNS}, position) VALUES ({', '.join('?' * 8)}, {_next_position('ads')})"
_AD_UPDATE = f"UPDATE ads SET ({_AD_COLUMNS}) = ({', '.join('?' * 8)}) WHERE id = ?"


def _add_positions(db: sqlite3.Connection) -> None:
    """Databases written before positions were stored: the column, filled in rowid order
    (the order rows were inserted, for ads the order they were last registered or
    replaced), and its index."""
    for table in ("custom_conversions", "ads"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "position" not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN position INTEGER")
            db.execute(f"UPDATE {table} SET position = rowid")
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_by_position ON {table}(position)")


def _finite(amount: float) -> float:
    """A sum of finite values that overflowed, held at the largest double: stored amounts stay
    finite, so adding to them never gives NaN (+inf plus -inf), which SQLite stores as NULL."""
    return max(-sys.float_info.max, min(amount, sys.float_info.max))


def _finite_sum(column: str) -> str:
    """SQL adding a row's new amount to ``column``, held finite as ``_finite`` does."""
    return f"MIN(MAX({column} + excluded.{column}, -{sys.float_info.max!r}), {sys.float_info.max!r})"


def _registered(db: sqlite3.Connection, pixel_id: str) -> bool:
    return db.execute("SELECT 1 FROM pixels WHERE id = ?", (pixel_id,)).fetchone() is not None


def _require_ad_owner(account_id: str, owners: Collection[str] | None, ad_id: str, field: str) -> None:
    # The handler checked ownership before; this sees an ad deleted and registered again by
    # another account between that check and the write. ``field``: the request's field naming
    # the ad, as the handler's refusal names it (``ad.id`` in ReplaceAd, ``ad_id`` in DeleteAd).
    if owners is not None and account_id not in owners:
        raise not_the_owner(f"ad {ad_id}", field)


_NAMED = 3  # conversion ids, or other accounts, a refusal names at most


def _counting_conversions(db: sqlite3.Connection, pixel_id: str, among: Collection[str]) -> str | None:
    """Why the pixel cannot be deleted, or None when no custom conversion counts it: the
    conversions of the accounts ``among`` (the caller's) by id (the first few, in position
    order); the other accounts' as a count per account, naming only accounts authorised on the
    pixel (those its creator can list), the most conversions first, then by account number, at
    most a few; the rest summed as ``N of M other ad accounts``. An older database can hold
    conversions of accounts since removed from the pixel: those are only ever in that sum."""
    counts = db.execute(
        "SELECT c.account_id, COUNT(*), a.account_id IS NOT NULL FROM custom_conversions AS c "
        "LEFT JOIN pixel_accounts AS a ON a.pixel_id = c.event_source_id AND a.account_id = c.account_id "
        "WHERE c.event_source_id = ? GROUP BY c.account_id "
        "ORDER BY COUNT(*) DESC, LENGTH(c.account_id), c.account_id", (pixel_id,)).fetchall()
    if not counts:
        return None
    among = frozenset(among)
    parts = []
    mine = [account for account, _, _ in counts if account in among]  # (at most the pixel's accounts)
    own = sum(n for account, n, _ in counts if account in among)
    if own:
        marks = ", ".join("?" * len(mine))
        ids = [cid for (cid,) in db.execute(f"SELECT id FROM custom_conversions WHERE event_source_id = ? AND "
                                            f"account_id IN ({marks}) ORDER BY position LIMIT {_NAMED}",
                                            (pixel_id, *mine))]
        more = f" and {own - len(ids)} more" if own > len(ids) else ""
        parts.append(f"{', '.join(ids)}{more} of this access token's ad accounts")
    others = [(account, n) for account, n, authorised in counts if account not in among and authorised]
    parts += [f"{n} of ad account {account}" for account, n in others[:_NAMED]]
    rest = others[_NAMED:] + [(account, n) for account, n, authorised in counts
                              if account not in among and not authorised]
    if rest:
        accounts = "ad account" if len(rest) == 1 else "ad accounts"
        parts.append(f"{sum(n for _, n in rest)} of {len(rest)} other {accounts}")
    total = sum(n for _, n, _ in counts)
    return (f"pixel_id: pixel {pixel_id} is the event source of {total} custom conversion(s) "
            f"({'; '.join(parts)}); delete them first")


def _require_registered(db: sqlite3.Connection, pixel_id: str, field: str = "pixel_id") -> None:
    """NotFound at ``field`` (the request's field that named the pixel) unless it is registered."""
    if not _registered(db, pixel_id):
        raise NotFound(f"{field}: pixel {pixel_id!r} does not exist")


def _authorised(db: sqlite3.Connection, pixel_id: str, account_id: str) -> bool:
    return db.execute("SELECT 1 FROM pixel_accounts WHERE pixel_id = ? AND account_id = ?",
                      (pixel_id, account_id)).fetchone() is not None


_LOOKUPS_OVER_A_READ = 64  # accounts asked about past which get_pixel reads all the pixel's accounts


def _accounts_after(db: sqlite3.Connection, pixel_id: str, after: str | None, limit: int | None) -> list[str]:
    return [a for (a,) in db.execute(
        "SELECT account_id FROM pixel_accounts WHERE pixel_id = ? AND account_id > ? ORDER BY account_id LIMIT ?",
        (pixel_id, after or "", -1 if limit is None else limit))]


def _conversion_row(record: CustomConversionRecord) -> tuple:
    """``record`` in ``_CC_COLUMNS`` order."""
    return (
        record.id, record.account_id, record.name, record.description, record.rule, record.event_source_id,
        record.event_source_type, record.custom_event_type, record.default_conversion_value,
        record.creation_time, record.retention_days, record.first_fired_time, record.last_fired_time,
        int(record.is_archived),
    )


class SQLiteStore(Store):
    """The embedded store: one SQLite file in WAL mode."""

    SYNC_MODES = ("FULL", "NORMAL", "OFF")
    #: Change-log pruning: every PRUNE_EVERY changes, rows that are both older than
    #: KEEP_CHANGE_SECONDS and not among the last KEEP_CHANGES are deleted. A follower that
    #: was further behind finds the gap and reloads everything.
    KEEP_CHANGES = 10_000
    KEEP_CHANGE_SECONDS = 3600
    PRUNE_EVERY = 256
    #: How long a writer waits for another process's transaction before "database is locked".
    BUSY_TIMEOUT_MS = 10_000

    def __init__(self, path: str | Path, synchronous: str = "FULL") -> None:
        """Open (creating when missing) the database at ``path``.

        ``synchronous``: FULL (default) fsyncs every commit, so a returned call survives a
        power cut; NORMAL survives a process crash but may lose the last commits on power
        loss; OFF is for bulk loading only.
        """
        if synchronous not in self.SYNC_MODES:
            raise ValueError(f"synchronous must be one of {self.SYNC_MODES}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # The busy timeout first: several processes may open (and switch to WAL) one new file at once.
        self._db.execute(f"PRAGMA busy_timeout={self.BUSY_TIMEOUT_MS}")
        self._switch_to_wal()
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._local = threading.local()  # .seq: the change the thread's last write logged
        self._data_version: int | None = None
        with self._transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            _add_positions(db)

    def _switch_to_wal(self) -> None:
        """``journal_mode=WAL``, retried: the switch needs the file to itself, and SQLite may
        answer "database is locked" at once, without waiting out the busy timeout, while
        another process opening the same new file holds it (two workers starting together)."""
        deadline = time.monotonic() + self.BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._local.seq = None
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._local.seq = None  # the logged change (if any) did not happen
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one state of the database (one read transaction)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            # Fold the WAL back into the main file so the database is one file at rest. When
            # other processes still use the file the checkpoint may stay partial (it reports
            # busy rather than failing); waiting for them is bounded to a second.
            self._db.execute("PRAGMA busy_timeout=1000")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()

    # -- change log -------------------------------------------------------------------------

    def _log_change(self, db: sqlite3.Connection, kind: str, object_id: str) -> None:
        """Append a change row inside the caller's transaction (so it commits or rolls back
        with the change itself); now and then prune old rows."""
        now = int(time.time())
        seq = db.execute("INSERT INTO changes (kind, object_id, at) VALUES (?, ?, ?)", (kind, object_id, now)).lastrowid
        self._local.seq = seq
        if seq % self.PRUNE_EVERY == 0:
            (through,) = db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE seq <= ? AND at < ?",
                (seq - self.KEEP_CHANGES, now - self.KEEP_CHANGE_SECONDS),
            ).fetchone()
            if through:
                db.execute("DELETE FROM changes WHERE seq <= ?", (through,))
                db.execute(
                    "UPDATE change_log_state SET pruned_through = MAX(pruned_through, ?) WHERE id = 1", (through,)
                )

    def last_change_seq(self) -> int | None:
        return getattr(self._local, "seq", None)

    def change_position(self) -> int:
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return rows[0][0] if rows else 0

    def others_wrote(self) -> bool:
        # data_version changes when another connection (another process) commits; this
        # connection's own commits do not change it.
        with self._lock:
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
            changed = version != self._data_version
            self._data_version = version
            return changed

    def changes_since(self, position: int) -> ChangeBatch:
        with self._snapshot() as db:  # the rows and the prune mark agree
            rows = db.execute("SELECT seq, kind, object_id FROM changes WHERE seq > ? ORDER BY seq", (position,)).fetchall()
            (pruned,) = db.execute("SELECT pruned_through FROM change_log_state WHERE id = 1").fetchone()
        last = rows[-1][0] if rows else position
        return ChangeBatch(position=last, changes=tuple((kind, oid) for _, kind, oid in rows), gap=pruned > position)

    def pixel_exists(self, pixel_id: str) -> bool:
        with self._lock:
            return _registered(self._db, pixel_id)

    # -- pixels -------------------------------------------------------------------------

    def _pixel(self, db: sqlite3.Connection, pixel_id: str, among: Iterable[str] | None = None,
               field: str = "pixel_id") -> PixelRecord:
        row = db.execute(
            "SELECT id, name, tag, creator, creation_time, last_firing_time FROM pixels WHERE id = ?", (pixel_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"{field}: pixel {pixel_id!r} does not exist")
        if among is None:
            accounts = tuple(_accounts_after(db, pixel_id, None, None))
        else:  # one lookup per account asked about; past a few, one read of the pixel's accounts
            among = set(among)
            if len(among) > _LOOKUPS_OVER_A_READ:
                accounts = tuple(a for a in _accounts_after(db, pixel_id, None, None) if a in among)
            else:
                accounts = tuple(sorted(a for a in among if _authorised(db, pixel_id, a)))
        return PixelRecord(*row, authorized_accounts=accounts)

    def create_pixel(self, name: str, tag: str, creator: str, now: int) -> PixelRecord:
        with self._transaction() as db:
            while True:
                pixel_id = new_id()  # retried on the rare id already taken
                if not _registered(db, pixel_id):
                    break
            db.execute(
                "INSERT INTO pixels (id, name, tag, creator, creation_time) VALUES (?, ?, ?, ?, ?)",
                (pixel_id, name, tag, creator, now),
            )
            db.execute("INSERT INTO pixel_accounts (pixel_id, account_id) VALUES (?, ?)", (pixel_id, creator))
            self._log_change(db, "pixel", pixel_id)
            return self._pixel(db, pixel_id, among=())

    def get_pixel(self, pixel_id: str, among: Iterable[str] | None = None, *, field: str = "pixel_id") -> PixelRecord:
        with self._snapshot() as db:  # the accounts belong to the pixel read
            return self._pixel(db, pixel_id, among, field)

    def list_pixels(self, account_id: str, after: str | None = None, limit: int | None = None) -> list[PixelRecord]:
        rows = self._read(
            "SELECT p.id, p.name, p.tag, p.creator, p.creation_time, p.last_firing_time "
            "FROM pixel_accounts AS mine JOIN pixels AS p ON p.id = mine.pixel_id "
            "WHERE mine.account_id = ? AND p.id > ? ORDER BY p.id LIMIT ?",
            (account_id, after or "", -1 if limit is None else limit),
        )
        return [PixelRecord(*row) for row in rows]

    def authorized_accounts(self, pixel_id: str, after: str | None = None, limit: int | None = None) -> list[str]:
        with self._snapshot() as db:
            _require_registered(db, pixel_id)
            return _accounts_after(db, pixel_id, after, limit)

    def pixel_ids(self) -> list[str]:
        return [pixel_id for (pixel_id,) in self._read("SELECT id FROM pixels")]

    def update_pixel(self, pixel_id: str, name: str | None, tag: str | None) -> PixelRecord:
        with self._transaction() as db:
            _require_registered(db, pixel_id)
            if name is not None:
                db.execute("UPDATE pixels SET name = ? WHERE id = ?", (name, pixel_id))
            if tag is not None:
                db.execute("UPDATE pixels SET tag = ? WHERE id = ?", (tag, pixel_id))
            # No change-log row: no registry compiles names or tags (they are read from here).
            return self._pixel(db, pixel_id, among=())

    def delete_pixel(self, pixel_id: str, among: Collection[str] = ()) -> None:
        with self._transaction() as db:
            _require_registered(db, pixel_id)
            refusal = _counting_conversions(db, pixel_id, among)
            if refusal is not None:
                raise FailedPrecondition(refusal)
            db.execute("DELETE FROM pixel_hourly WHERE pixel_id = ?", (pixel_id,))
            db.execute("DELETE FROM pixels WHERE id = ?", (pixel_id,))
            self._log_change(db, "pixel", pixel_id)

    def add_authorized_accounts(self, pixel_id: str, accounts: Iterable[str], limit: int | None = None) -> None:
        with self._transaction() as db:
            _require_registered(db, pixel_id)
            db.executemany(
                "INSERT OR IGNORE INTO pixel_accounts (pixel_id, account_id) VALUES (?, ?)",
                [(pixel_id, account) for account in accounts],
            )
            (count,) = db.execute("SELECT COUNT(*) FROM pixel_accounts WHERE pixel_id = ?", (pixel_id,)).fetchone()
            if limit is not None and count > limit:
                raise FailedPrecondition(
                    f"account_ids: pixel {pixel_id} would have {count} authorised ad accounts, "
                    f"more than the limit of {limit}; remove some first"
                )  # raised inside the transaction: nothing was added
            # No change-log row: access checks read the accounts from here, no registry holds them.

    def remove_authorized_accounts(self, pixel_id: str, accounts: Iterable[str]) -> None:
        accounts = list(accounts)
        with self._transaction() as db:
            _require_registered(db, pixel_id)
            # An account's custom conversions on the pixel read its events; the account keeps
            # its access while it has any (archived ones too: their stats are the pixel's data).
            for index, account in enumerate(accounts):
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM custom_conversions WHERE event_source_id = ? AND account_id = ?",
                    (pixel_id, account),
                ).fetchone()
                if count:
                    raise FailedPrecondition(
                        f"account_ids[{index}]: ad account {account} has {count} custom conversion(s) counting "
                        f"pixel {pixel_id}'s events; it must delete them before it can be removed"
                    )
            db.executemany(
                "DELETE FROM pixel_accounts WHERE pixel_id = ? AND account_id = ?",
                [(pixel_id, account) for account in accounts],
            )
            # No change-log row (as when adding).

    # -- custom conversions --------------------------------------------------------------

    @staticmethod
    def _conversion_from_row(row: tuple) -> CustomConversionRecord:
        (cid, account, name, description, rule, source, source_type, event_type, value, created, retention, first, last,
         archived, position) = row
        return CustomConversionRecord(
            id=cid, account_id=account, name=name, description=description, rule=rule, event_source_id=source,
            event_source_type=source_type, custom_event_type=event_type, default_conversion_value=value,
            creation_time=created, retention_days=retention, first_fired_time=first, last_fired_time=last,
            is_archived=bool(archived), position=position,
        )

    def _conversion(self, db: sqlite3.Connection, conversion_id: str,
                    field: str = "custom_conversion_id") -> CustomConversionRecord:
        row = db.execute(f"SELECT {_CC_READ} FROM custom_conversions WHERE id = ?", (conversion_id,)).fetchone()
        if row is None:
            raise NotFound(f"{field}: custom conversion {conversion_id!r} does not exist")
        return self._conversion_from_row(row)

    def create_custom_conversion(self, record: CustomConversionRecord, limit: int) -> CustomConversionRecord:
        with self._transaction() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM custom_conversions WHERE account_id = ?", (record.account_id,)).fetchone()
            if count >= limit:
                raise FailedPrecondition(
                    f"account_id: ad account {record.account_id} already has {count} custom conversions, the limit is {limit} "
                    "(archived ones count; delete one first)"
                )
            _require_registered(db, record.event_source_id, "event_source_id")
            # Checked again here, in the transaction: an account removed meanwhile has no access.
            if not _authorised(db, record.event_source_id, record.account_id):
                raise account_not_on_pixel(record.account_id, record.event_source_id)
            if db.execute("SELECT 1 FROM custom_conversions WHERE id = ?", (record.id,)).fetchone() is not None:
                raise AlreadyExists(f"custom conversion id {record.id} is taken")
            db.execute(_CC_INSERT, _conversion_row(record))
            self._log_change(db, "custom_conversion", record.id)
            return self._conversion(db, record.id)

    def import_custom_conversions(self, records: Iterable[CustomConversionRecord]) -> None:
        """Load many conversions in one transaction, without the per-account limit or the
        change log: for filling a database no server is serving yet (benchmarks, migrations);
        servers compile them when they start."""
        with self._transaction() as db:
            db.executemany(_CC_INSERT, (_conversion_row(r) for r in records))

    def get_custom_conversion(self, conversion_id: str, *, field: str = "custom_conversion_id") -> CustomConversionRecord:
        with self._lock:
            return self._conversion(self._db, conversion_id, field)

    def list_custom_conversions(self, account_id: str, archived: bool | None) -> list[CustomConversionRecord]:
        sql = f"SELECT {_CC_READ} FROM custom_conversions WHERE account_id = ?"
        args: tuple = (account_id,)
        if archived is not None:
            sql += " AND is_archived = ?"
            args += (int(archived),)
        return [self._conversion_from_row(row) for row in self._read(sql + " ORDER BY creation_time, rowid", args)]

    def tracked_custom_conversions(self) -> list[CustomConversionRecord]:
        rows = self._read(f"SELECT {_CC_READ} FROM custom_conversions WHERE is_archived = 0 ORDER BY position")
        return [self._conversion_from_row(row) for row in rows]

    def update_custom_conversion(self, conversion_id: str, changes: Mapping[str, object], *,
                                 field: str = "custom_conversion_id") -> CustomConversionRecord:
        allowed = {"name", "description", "default_conversion_value"}
        if not set(changes) <= allowed:
            raise ValueError(f"not updatable: {sorted(set(changes) - allowed)}")
        with self._transaction() as db:
            self._conversion(db, conversion_id, field)
            for column, value in changes.items():
                db.execute(f"UPDATE custom_conversions SET {column} = ? WHERE id = ?", (value, conversion_id))
            if "default_conversion_value" in changes:  # the one updatable field classification uses
                self._log_change(db, "custom_conversion", conversion_id)
            return self._conversion(db, conversion_id)

    def archive_custom_conversion(self, conversion_id: str) -> CustomConversionRecord:
        with self._transaction() as db:
            self._conversion(db, conversion_id)
            db.execute("UPDATE custom_conversions SET is_archived = 1 WHERE id = ?", (conversion_id,))
            self._log_change(db, "custom_conversion", conversion_id)
            return self._conversion(db, conversion_id)

    def delete_custom_conversion(self, conversion_id: str) -> None:
        with self._transaction() as db:
            self._conversion(db, conversion_id)
            db.execute("DELETE FROM conversion_hourly WHERE conversion_id = ?", (conversion_id,))
            db.execute("DELETE FROM custom_conversions WHERE id = ?", (conversion_id,))
            self._log_change(db, "custom_conversion", conversion_id)

    # -- ads ------------------------------------------------------------------------------

    def put_ad(self, record: AdRecord, *, replace_existing: bool, pixels: Collection[str] = (),
               owners: Collection[str] | None = None) -> AdRecord:
        with self._transaction() as db:
            owner = db.execute("SELECT account_id FROM ads WHERE id = ?", (record.id,)).fetchone()
            if owner is not None and not replace_existing:
                raise AlreadyExists(f"ad.id: ad {record.id!r} is already registered; use ReplaceAd to change it")
            if replace_existing and owner is None:
                raise NotFound(f"ad.id: ad {record.id!r} is not registered")
            if replace_existing:
                _require_ad_owner(owner[0], owners, record.id, "ad.id")
            # In the write's transaction, like a conversion's authorisation: an unshare cannot slip in.
            for pixel_id in sorted(pixels):
                if _registered(db, pixel_id) and not _authorised(db, pixel_id, record.account_id):
                    raise PixelNotAuthorised(pixel_id, record.account_id)
            row = (record.id, record.account_id, record.objective, record.creative, record.optimization_goal,
                   record.promoted_object, record.tracking_specs, record.conversion_specs)
            if owner is None:
                db.execute(_AD_INSERT, row)
            else:  # in place: a replaced ad keeps its position
                db.execute(_AD_UPDATE, (*row, record.id))
            self._log_change(db, "ad", record.id)
            (position,) = db.execute("SELECT position FROM ads WHERE id = ?", (record.id,)).fetchone()
            return replace(record, position=position)

    def get_ad(self, ad_id: str, *, field: str = "ad_id") -> AdRecord:
        rows = self._read(f"SELECT {_AD_READ} FROM ads WHERE id = ?", (ad_id,))
        if not rows:
            raise NotFound(f"{field}: ad {ad_id!r} is not registered")
        return AdRecord(*rows[0])

    def list_ads(self, account_id: str, after: str | None = None, limit: int | None = None) -> list[AdRecord]:
        page = (after or "", -1 if limit is None else limit)  # SQLite: LIMIT -1 is no limit
        return [
            AdRecord(*row)
            for row in self._read(
                f"SELECT {_AD_READ} FROM ads WHERE account_id = ? AND id > ? ORDER BY id LIMIT ?",
                (account_id, *page))
        ]

    def all_ads(self) -> list[AdRecord]:
        return [AdRecord(*row) for row in self._read(f"SELECT {_AD_READ} FROM ads ORDER BY position")]

    def delete_ad(self, ad_id: str, owners: Collection[str] | None = None) -> None:
        with self._transaction() as db:
            owner = db.execute("SELECT account_id FROM ads WHERE id = ?", (ad_id,)).fetchone()
            if owner is None:
                raise NotFound(f"ad_id: ad {ad_id!r} is not registered")
            _require_ad_owner(owner[0], owners, ad_id, "ad_id")
            db.execute("DELETE FROM ads WHERE id = ?", (ad_id,))
            self._log_change(db, "ad", ad_id)

    # -- recorded events -----------------------------------------------------------------

    def record(self, recording: Recording) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE pixels SET last_firing_time = MAX(COALESCE(last_firing_time, 0), ?) WHERE id = ?",
                [(latest, pixel_id) for pixel_id, (_, latest) in recording.pixel_firings.items()],
            )
            db.executemany(
                "UPDATE custom_conversions SET first_fired_time = MIN(COALESCE(first_fired_time, ?), ?), "
                "last_fired_time = MAX(COALESCE(last_fired_time, 0), ?) WHERE id = ?",
                [(earliest, earliest, latest, cid) for cid, (earliest, latest) in recording.conversion_firings.items()],
            )
            # Only pixels and conversions still registered get counters: one deleted meanwhile
            # (by this process or, not yet followed, by another) is skipped, leaving no orphan rows.
            db.executemany(
                "INSERT INTO pixel_hourly (pixel_id, hour, events, usd_amount) "
                "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM pixels WHERE id = ?) "
                "ON CONFLICT (pixel_id, hour) DO UPDATE SET events = events + excluded.events, "
                f"usd_amount = {_finite_sum('usd_amount')}",
                [(pixel_id, hour, n, _finite(amount), pixel_id)
                 for (pixel_id, hour), (n, amount) in recording.pixel_hourly.items()],
            )
            db.executemany(
                "INSERT INTO conversion_hourly (conversion_id, hour, dimension, key, matches, usd_amount, event_value) "
                "SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM custom_conversions WHERE id = ?) "
                "ON CONFLICT (conversion_id, dimension, hour, key) DO UPDATE SET matches = matches + excluded.matches, "
                f"usd_amount = {_finite_sum('usd_amount')}, event_value = {_finite_sum('event_value')}",
                [
                    (cid, hour, dim, key, n, _finite(amount), _finite(value), cid)
                    for (cid, hour, dim, key), (n, amount, value) in recording.conversion_hourly.items()
                ],
            )

    def conversion_hourly(self, conversion_id: str, dimension: str, start: int, end: int, *,
                          after: tuple[int, str] | None = None, limit: int = -1) -> list[tuple[int, str, int, float, float]]:
        select = ("SELECT hour, key, matches, usd_amount, event_value FROM conversion_hourly "
                  "WHERE conversion_id = ? AND dimension = ? AND ")
        hour, key = after if after is not None else (start - 1, "")
        rows = []
        # The rest of the token's hour, then the later hours. As one `(hour, key) > (?, ?)` range
        # SQLite seeks on the hour only and walks past the hour's earlier keys (1.7 ms a read at
        # the end of a 10,000-url hour, 0.03 ms for this seek); given the range too, it walks
        # the range instead. Dimension "" (the total) has one row an hour, key "": a token's
        # hour has nothing after it, so its reads (each page of count and usd_amount, every
        # read of the unmatched aggregations) skip the seek.
        if after is not None and dimension and start <= hour < end:
            rows = self._read(select + "hour = ? AND key > ? ORDER BY key LIMIT ?",
                              (conversion_id, dimension, hour, key, limit))
        lowest = max(hour + 1, start)  # (past SQLite's integers after the last hour it holds: nothing later)
        if (limit < 0 or len(rows) < limit) and lowest < end:
            rows += self._read(select + "hour >= ? AND hour < ? ORDER BY hour, key LIMIT ?",
                               (conversion_id, dimension, lowest, end, limit - len(rows) if limit >= 0 else -1))
        return rows

    def pixel_hourly(self, pixel_id: str, start: int, end: int, *, after: int | None = None,
                     limit: int = -1) -> list[tuple[int, int, float]]:
        lowest = start if after is None else max(after + 1, start)
        if lowest >= end:  # (after the last hour SQLite holds, lowest is past its integers)
            return []
        return self._read("SELECT hour, events, usd_amount FROM pixel_hourly WHERE pixel_id = ? AND hour >= ? "
                          "AND hour < ? ORDER BY hour LIMIT ?", (pixel_id, lowest, end, limit))
