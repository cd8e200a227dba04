"""The compiled state classification reads, and the one writer that changes it.

Concurrency contract: :attr:`Registry.snapshot` is an immutable :class:`Snapshot`.
Classification reads the attribute once per batch and uses that snapshot throughout,
without locks, so it never waits for a registration and never sees half of one. A
registration takes the writer lock, builds the next snapshot with ``with_changes``
(only the changed pixel's rules, or the changed ads, are recompiled; the rest is
shared), commits to the store, and only then swaps the reference. A rejected or failed
registration therefore changes neither the store nor what classification sees.

Several processes on one database: every store write that changes what a registry
compiles appends a row to the store's change log in the same transaction. Each
registry remembers the log position its snapshot reflects; its own registrations
advance it (when nothing from elsewhere came in between), and a follower thread
(:meth:`Registry.start_following`) polls the store every ``interval`` seconds, reads
the rows after that position, re-reads the objects they name and applies their
*current* state with the same incremental ``with_changes``, under the writer lock. So
applying a change twice (one's own, or two rows for one object) is harmless, and
re-reading the current state after reading the rows means the snapshot reflects at
least every change up to the new position. A follower that finds pruned rows after its
position reloads everything.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from operator import itemgetter
from typing import Any, Callable, Collection, Iterable, Mapping, TypeVar

import matcher

from server.errors import InvalidArgument, NotFound, ServiceError, parse_json
from server.ids import new_id
from server.store import AdRecord, CustomConversionRecord, PixelRecord, Store

T = TypeVar("T")
log = logging.getLogger("server.registry")


@dataclass(frozen=True)
class AdSpecs:
    """An ad's effective specs, parsed, with their canonical JSON text."""

    tracking: tuple
    conversion: tuple
    tracking_json: str
    conversion_json: str

    @cached_property
    def event_name_pixels(self) -> frozenset[str] | None:
        """The pixels whose firings these specs tell apart by event name: those a spec naming
        ``event_name`` names; None when such a spec names no pixel (it counts that event of
        every pixel)."""
        pixels: set[str] = set()
        for spec in (*self.tracking, *self.conversion):
            if spec.values("event_name") is not None:
                named = _spec_pixels(spec)
                if not named:
                    return None
                pixels.update(named)
        return frozenset(pixels)


@dataclass(frozen=True)
class Snapshot:
    """Everything one classification batch reads. Never mutated after publication
    (the per-firing ad cache and the cached properties only memoise pure functions of it)."""

    rules: Any  # matcher.CompiledRules over tracked custom conversions, scoped to their pixel
    default_values: Mapping[str, float]  # custom conversion id -> default_conversion_value
    pixel_ids: frozenset[str]  # registered pixels (only their events are recorded)
    tracking: Any  # compiled effective tracking specs of every ad, or None when no ads
    conversion: Any  # compiled effective conversion specs, or None
    ad_specs: Mapping[str, AdSpecs] = field(default_factory=dict)
    # The stored positions (see ``Store``) of the tracked conversions and of the ads, each in
    # ascending order: the compiled sets hold their members in this order.
    positions: Mapping[str, int] = field(default_factory=dict)
    ad_positions: Mapping[str, int] = field(default_factory=dict)
    firing_ad_cache: dict = field(default_factory=dict, compare=False)

    @property
    def rule_count(self) -> int:
        return len(self.default_values)

    @cached_property
    def event_name_pixels(self) -> frozenset[str] | None:
        """The pixels whose firings some ad's specs tell apart by event name (None: every
        pixel's). Any other pixel's firings match the same ads whatever their event name."""
        pixels: set[str] = set()
        for specs in self.ad_specs.values():
            named = specs.event_name_pixels
            if named is None:
                return None
            pixels |= named
        return frozenset(pixels)

    def keep_derived(self, previous: Snapshot) -> None:
        """Before publication: take ``previous``'s ``event_name_pixels`` when it is computed
        and this snapshot has the same ads (the same mapping, as a publish that changed only
        conversions or pixels leaves it), rather than derive it again from every ad's specs."""
        if self.ad_specs is previous.ad_specs and "event_name_pixels" in vars(previous):
            vars(self)["event_name_pixels"] = previous.event_name_pixels  # where cached_property keeps it


class Registry:
    """Owns the current snapshot and serialises the writers that replace it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._writer = threading.Lock()
        self.snapshot = Snapshot(
            rules=matcher.compile_rules({}),
            default_values={},
            pixel_ids=frozenset(),
            tracking=None,
            conversion=None,
        )
        # Called with every published snapshot (under the writer lock), e.g. to update gauges.
        self.listeners: list[Callable[[Snapshot], None]] = []
        self.position = 0  # the change-log seq the snapshot reflects (every change up to it)
        self.reloads = 0  # full reloads after a gap in the change log
        self._pending = True  # the follower must read the log even if the store says nothing changed
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    # -- start-up ---------------------------------------------------------------------------

    def load(self) -> None:
        """Compile everything the store holds (at start)."""
        with self._writer:
            self._load()

    def _load(self) -> None:
        # Position first, state second: state read later is at least as new as the position,
        # and the follower re-applies (idempotently) whatever was logged after it.
        self.store.others_wrote()
        position = self.store.change_position()
        tracked = {c.id: c for c in self.store.tracked_custom_conversions()}
        parsed = {cid: rule for cid, c in tracked.items() if (rule := _stored_rule(c)) is not None}
        conversions = [tracked[cid] for cid in parsed]  # those whose rule loaded
        rules = matcher.compile_rules(parsed, sources={c.id: c.event_source_id for c in conversions})
        stored_ads = [(ad, specs) for ad in self.store.all_ads() if (specs := _stored_ad_specs(ad)) is not None]
        ads = {ad.id: specs for ad, specs in stored_ads}
        ad_positions = {ad.id: ad.position for ad, _ in stored_ads}
        tracking, conversion = _compile_ads(ads, ad_positions)
        self._publish(
            Snapshot(
                rules=rules,
                default_values={c.id: c.default_conversion_value for c in conversions},
                pixel_ids=frozenset(self.store.pixel_ids()),
                tracking=tracking,
                conversion=conversion,
                ad_specs=ads,
                positions={c.id: c.position for c in conversions},
                ad_positions=ad_positions,
            )
        )
        self.position = position

    def _publish(self, snapshot: Snapshot) -> None:
        snapshot.keep_derived(self.snapshot)
        self.snapshot = snapshot  # one reference assignment: readers see old or new, never half
        for listener in self.listeners:
            listener(snapshot)

    # -- writers ----------------------------------------------------------------------------

    def _wrote(self) -> None:
        """After a store write under the writer lock: the snapshot now reflects the change it
        logged; when that is the next change of the log, the position moves past it (else
        another process wrote in between, and the follower applies both)."""
        seq = self.store.last_change_seq()
        if seq is not None and seq == self.position + 1:
            self.position = seq

    def add_pixel(self, create: Callable[[], PixelRecord]) -> PixelRecord:
        """Run the store's create; its events are recorded from now on."""
        with self._writer:
            pixel = create()
            self._wrote()
            current = self.snapshot
            self._publish(replace(current, pixel_ids=current.pixel_ids | {pixel.id}))
            return pixel

    def remove_pixel(self, pixel_id: str, delete: Callable[[str], None]) -> None:
        """Run the store's delete; its events are no longer recorded."""
        with self._writer:
            delete(pixel_id)
            self._wrote()
            current = self.snapshot
            self._publish(replace(current, pixel_ids=current.pixel_ids - {pixel_id}))

    def add_custom_conversion(self, record: CustomConversionRecord, rule: Any, limit: int) -> CustomConversionRecord:
        """Store a new conversion under a fresh id and make it visible to classification."""
        with self._writer:
            current = self.snapshot
            record = replace(record, id=new_id())
            while record.id in current.default_values:
                record = replace(record, id=new_id())
            # Compiled last in the order (as the store puts a new conversion), before the write,
            # so a rule that fails to compile changes nothing.
            change = {record.id: (rule, record.event_source_id)}
            rules = _place_rules(current, change, _positioned(current.positions, new={record.id: _LAST}))
            stored = self.store.create_custom_conversion(record, limit)
            self._wrote()
            positions = _positioned(current.positions, new={stored.id: stored.position})
            if _after(positions, stored.position):  # not last after all (deleted elsewhere, not yet seen)
                rules = _place_rules(current, change, positions)
            self._publish(
                replace(
                    current,
                    rules=rules,
                    default_values={**current.default_values, stored.id: stored.default_conversion_value},
                    positions=positions,
                )
            )
            return stored

    def update_custom_conversion(self, conversion_id: str, changes: Mapping[str, object], *,
                                 field: str = "custom_conversion_id") -> CustomConversionRecord:
        """Apply an update (NotFound at ``field``); a new default value applies to the next batch."""
        with self._writer:
            stored = self.store.update_custom_conversion(conversion_id, changes, field=field)
            self._wrote()
            current = self.snapshot
            if "default_conversion_value" in changes and conversion_id in current.default_values:
                values = {**current.default_values, conversion_id: stored.default_conversion_value}
                self._publish(replace(current, default_values=values))
            return stored

    def untrack_custom_conversion(self, conversion_id: str, store_change: Callable[[str], T]) -> T:
        """Archive or delete: the store change, then the rule leaves classification."""
        with self._writer:
            current = self.snapshot
            tracked = conversion_id in current.default_values
            rules = current.rules.with_changes(remove=[conversion_id]) if tracked else current.rules
            result = store_change(conversion_id)
            self._wrote()
            if tracked:
                values = {k: v for k, v in current.default_values.items() if k != conversion_id}
                positions = _positioned(current.positions, gone={conversion_id})
                self._publish(replace(current, rules=rules, default_values=values, positions=positions))
            return result

    def put_ad(self, record: AdRecord, *, replace_existing: bool,
               owners: Collection[str] | None = None) -> tuple[AdRecord, AdSpecs]:
        """Register or replace an ad (``owners``: as ``Store.put_ad``); returns it with its
        effective specs, now in classification."""
        with self._writer:
            specs = effective_ad_specs(record, sent=True)
            current = self.snapshot
            ads = {**current.ad_specs, record.id: specs}
            # Compiled before the write (invalid specs change nothing), where the store puts the
            # ad: in its place when replaced, else last.
            expected = _positioned(current.ad_positions, new={record.id: current.ad_positions.get(record.id, _LAST)})
            tracking, conversion = _compile_ads(ads, expected, current, changed=[record.id])
            stored = self.store.put_ad(record, replace_existing=replace_existing, pixels=named_pixels(specs),
                                       owners=owners)
            self._wrote()
            positions = _positioned(current.ad_positions, new={record.id: stored.position})
            if _after(positions, stored.position) != _after(expected, expected[record.id]):
                # Its place moved meanwhile (deleted and registered again elsewhere, not yet seen).
                tracking, conversion = _compile_ads(ads, positions, current, changed=[record.id])
            self._publish(replace(current, tracking=tracking, conversion=conversion, ad_specs=ads,
                                  ad_positions=positions, firing_ad_cache={}))
            return stored, specs

    def delete_ad(self, ad_id: str, owners: Collection[str] | None = None) -> None:
        """Delete an ad (``owners``: as ``Store.delete_ad``); its specs leave classification."""
        with self._writer:
            current = self.snapshot
            ads = {k: v for k, v in current.ad_specs.items() if k != ad_id}
            positions = _positioned(current.ad_positions, gone={ad_id})
            tracking, conversion = _compile_ads(ads, positions, current, changed=[ad_id])
            self.store.delete_ad(ad_id, owners)
            self._wrote()
            self._publish(replace(current, tracking=tracking, conversion=conversion, ad_specs=ads,
                                  ad_positions=positions, firing_ad_cache={}))

    # -- following other processes' changes ---------------------------------------------------

    def sync(self) -> bool:
        """Apply the changes other processes logged since :attr:`position`; True when a new
        snapshot was published. Cheap when nothing changed (one ``PRAGMA`` on SQLite)."""
        if not self._pending and not self.store.others_wrote():
            return False
        self._pending = True  # until this round succeeds: a failed round is retried next poll
        with self._writer:
            batch = self.store.changes_since(self.position)
            if batch.gap:
                log.warning(
                    "change log pruned past this process's position; reloading everything",
                    extra={"position": self.position, "now_at": batch.position},
                )
                return self._reload()
            try:
                changed = self._apply(batch.changes) if batch.changes else False
            except Exception:  # noqa: BLE001 - a bug or a stored object this version cannot compile
                log.exception("change not applied incrementally; reloading everything", extra={"position": self.position})
                return self._reload()
            self.position = batch.position
            self._pending = False
            return changed

    def _reload(self) -> bool:
        """Everything from the store again (under the writer lock): a new snapshot."""
        self._load()
        self.reloads += 1
        self._pending = False
        return True

    def _apply(self, changes: Iterable[tuple[str, str]]) -> bool:
        """Bring the named objects to their current stored state in one new snapshot."""
        current = self.snapshot
        pixel_ids = set(current.pixel_ids)
        values = dict(current.default_values)
        add: dict[str, tuple[Any, str]] = {}  # new conversions: (rule, event source)
        new_positions: dict[str, int] = {}
        remove: list[str] = []
        ads = dict(current.ad_specs)
        ad_positions: dict[str, int] = {}
        changed_ads: list[str] = []
        for kind, object_id in dict.fromkeys(changes):
            if kind == "pixel":
                if self.store.pixel_exists(object_id):
                    pixel_ids.add(object_id)
                else:
                    pixel_ids.discard(object_id)
            elif kind == "custom_conversion":
                record = _get(self.store.get_custom_conversion, object_id)
                if record is not None and not record.is_archived:
                    if object_id not in current.default_values:  # rules never change: only new ones compile
                        rule = _stored_rule(record)
                        if rule is None:
                            continue
                        add[object_id] = (rule, record.event_source_id)
                        new_positions[object_id] = record.position
                    values[object_id] = record.default_conversion_value
                elif object_id in current.default_values:
                    remove.append(object_id)
                    del values[object_id]
            elif kind == "ad":
                ad = _get(self.store.get_ad, object_id)
                specs = _stored_ad_specs(ad) if ad is not None else None
                old = current.ad_specs.get(object_id)
                if specs is None and old is not None:
                    del ads[object_id]
                    changed_ads.append(object_id)
                elif specs is not None and (
                    old is None or (old.tracking_json, old.conversion_json) != (specs.tracking_json, specs.conversion_json)
                    or current.ad_positions.get(object_id) != ad.position  # deleted and registered again
                ):
                    ads[object_id] = specs
                    ad_positions[object_id] = ad.position
                    changed_ads.append(object_id)
            else:
                log.warning("unknown change kind ignored", extra={"kind": kind, "object_id": object_id})
        if not (add or remove or changed_ads) and values == current.default_values and pixel_ids == current.pixel_ids:
            return False
        rules, positions = current.rules, current.positions
        if add or remove:
            positions = _positioned(positions, gone=set(remove), new=new_positions)
            rules = _place_rules(current, add, positions, remove)
        tracking, conversion, placed = current.tracking, current.conversion, current.ad_positions
        if changed_ads:
            placed = _positioned(placed, gone={a for a in changed_ads if a not in ads}, new=ad_positions)
            tracking, conversion = _compile_ads(ads, placed, current, changed=changed_ads)
        self._publish(
            replace(
                current,
                rules=rules,
                default_values=values,
                pixel_ids=frozenset(pixel_ids),
                tracking=tracking,
                conversion=conversion,
                ad_specs=ads if changed_ads else current.ad_specs,  # the same mapping: see keep_derived
                positions=positions,
                ad_positions=placed,
                firing_ad_cache={} if changed_ads else current.firing_ad_cache,
            )
        )
        return True

    def start_following(self, interval: float) -> None:
        """Poll the change log every ``interval`` seconds in a daemon thread (0: never)."""
        if interval <= 0 or self._follower is not None:
            return
        self._stop.clear()
        self._follower = threading.Thread(target=self._follow, args=(interval,), name="registry-follower", daemon=True)
        self._follower.start()

    def stop_following(self) -> None:
        """Stop the follower thread (waits for a round in progress)."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(60)
            self._follower = None

    def _follow(self, interval: float) -> None:
        failing_since: float | None = None
        wait = interval
        while not self._stop.wait(wait):
            try:
                self.sync()
            except Exception:  # noqa: BLE001 - keep following; the round is retried, backing off to 5 s
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.exception("change log not applied; retrying")
                wait = min(max(wait * 2, interval), 5.0)
                continue
            wait = interval
            if failing_since is not None:
                log.info("change log applied again", extra={"failed_seconds": round(time.monotonic() - failing_since, 3)})
                failing_since = None


# A stored rule was checked when it was created, and is canonical JSON: loaded without the
# size limit, so a rule stored before a limit changed (or grew canonically) still loads.
_STORED_RULE_LIMITS = replace(matcher.DEFAULT_LIMITS, max_json_bytes=1 << 30)


def _stored_rule(record: CustomConversionRecord) -> matcher.Rule | None:
    """The conversion's rule parsed, or None (logged) when it cannot be: one bad row must not
    keep a server from starting, nor a follower from applying the rest of the log."""
    try:
        return matcher.parse_rule(record.rule, limits=_STORED_RULE_LIMITS)
    except ValueError as error:
        log.error("stored rule not loaded", extra={"custom_conversion": record.id, "error": str(error)})
        return None


def _stored_ad_specs(ad: AdRecord) -> AdSpecs | None:
    """The ad's effective specs, or None (logged) when they cannot be derived (a row written
    by a version that checked less): as for rules, the server starts and the row stays."""
    try:
        return effective_ad_specs(ad)
    except (ValueError, ServiceError) as error:
        log.error("stored ad not loaded", extra={"ad": ad.id, "error": str(error)})
        return None


def _get(read: Callable[[str], T], object_id: str) -> T | None:
    try:
        return read(object_id)
    except NotFound:
        return None


# -- ads: effective specs and their compiled sets ------------------------------------------

def _json_object(text: str, field_name: str, unique_keys: bool) -> dict:
    if not text:
        return {}
    # Numbers as decimals, as specs and actions read them: a page id written 12345678901234567891.0
    # is the page 12345678901234567891 there, so here too (a double would make it ...67000).
    value = parse_json(text, field_name, decimals=True, unique_keys=unique_keys)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field_name}: expected a JSON object")
    return value


# The selectors a pixel firing fills (``classification.pixel_firing_action``); an ad's specs
# name a pixel under one of them (``promoted_object.pixel_id`` fills ``fb_pixel``).
PIXEL_SELECTORS = ("fb_pixel", "offsite_pixel")


def _spec_pixels(spec: matcher.ActionSpec) -> list[str]:
    """The pixel ids one spec names, under any of ``PIXEL_SELECTORS`` (empty: it names none;
    a selector a spec gives has at least one value)."""
    return [value for selector, values in spec.constraints if selector in PIXEL_SELECTORS for value in values]


def named_pixels(specs: AdSpecs) -> frozenset[str]:
    """The pixel ids an ad's effective specs name."""
    return frozenset(value for spec in (*specs.tracking, *specs.conversion) for value in _spec_pixels(spec))


def ad_fields(ad: AdRecord, *, sent: bool = False) -> dict[str, Any]:
    """The ad as ``matcher.effective_specs`` reads it: ``creative`` and ``promoted_object``
    parsed (InvalidArgument at ``ad.creative`` or ``ad.promoted_object``), the specs as text.
    ``sent``: a client's new ad, whose objects may not give a key twice; a stored ad is read as
    it was accepted (rows written before that check load, the last of a repeated key winning)."""
    return {
        "objective": ad.objective,
        "creative": _json_object(ad.creative, "ad.creative", unique_keys=sent),
        "optimization_goal": ad.optimization_goal,
        "promoted_object": _json_object(ad.promoted_object, "ad.promoted_object", unique_keys=sent),
        "tracking_specs": ad.tracking_specs or None,
        "conversion_specs": ad.conversion_specs or None,
    }


def effective_ad_specs(ad: AdRecord, *, sent: bool = False) -> AdSpecs:
    """Parse an ad's fields (``ad_fields``) and derive the specs in effect (SpecError /
    InvalidArgument: code 100, at a path from the request's ``ad`` field, as ``ad.creative.url``)."""
    fields = ad_fields(ad, sent=sent)
    try:
        tracking, conversion = matcher.effective_specs(fields)
    except matcher.SpecError as error:
        raise matcher.SpecError(f"ad.{error.path}", error.reason) from None
    return AdSpecs(tuple(tracking), tuple(conversion), matcher.specs_to_json(tracking), matcher.specs_to_json(conversion))


# -- order: the compiled sets hold their members in stored position order ---------------------
#
# ``with_changes`` keeps a replaced member in its place and puts new ones last. A member whose
# position is below some members' (another process's registration read after ours, an ad that
# newly has specs of a kind) goes in by taking those members out and adding them again after it.

_LAST = math.inf  # the position of an object the store is about to put last


def _positioned(positions: Mapping[str, float], gone: Collection[str] = (),
                new: Mapping[str, float] | None = None) -> dict[str, float]:
    """``positions`` (id -> position, ascending) without ``gone``, with ``new``, ascending."""
    result = {k: v for k, v in positions.items() if k not in gone} if gone else dict(positions)
    fresh = sorted(((k, v) for k, v in (new or {}).items() if result.get(k) != v), key=itemgetter(1))
    if not fresh:
        return result
    if result and (any(k in result for k, _ in fresh) or fresh[0][1] <= result[next(reversed(result))]):
        result.update(fresh)
        return dict(sorted(result.items(), key=itemgetter(1)))
    result.update(fresh)
    return result


def _after(positions: Mapping[str, float], position: float) -> list[str]:
    """Ids whose position is above ``position``, ascending (``positions`` ascending)."""
    ids = []
    for object_id in reversed(positions):
        if positions[object_id] <= position:
            break
        ids.append(object_id)
    ids.reverse()
    return ids


def _movers(entering: Collection[str], positions: Mapping[str, float], staying: Callable[[str], bool]) -> list[str]:
    """Ids, in position order, to add (again) last so that ``entering`` ids stand in position
    order: the entering ones and the members (``staying``) placed after the first of them."""
    if not entering:
        return []
    first = min(positions[i] for i in entering)
    moving = set(entering)
    moving.update(i for i in _after(positions, first) if staying(i))
    return sorted(moving, key=positions.__getitem__)


def _place_rules(current: Snapshot, add: Mapping[str, tuple[Any, str]], positions: Mapping[str, float],
                 remove: Collection[str] = ()) -> Any:
    """``current.rules`` without ``remove`` and with the new conversions ``add`` (id -> (rule,
    event source)), all in ``positions``' order."""
    rules = current.rules
    pixels = {source for _, source in add.values()}  # an event only meets its own pixel's rules
    moving = _movers(add, positions, lambda i: i in rules and i not in add and rules.source(i) in pixels)
    add_rules = {i: add[i][0] if i in add else rules.rule(i) for i in moving}
    sources = {i: add[i][1] if i in add else rules.source(i) for i in moving}
    return rules.with_changes(add_rules, sources=sources, remove=[*remove, *(i for i in moving if i not in add)])


def _compile_ads(ads: Mapping[str, AdSpecs], positions: Mapping[str, float], current: Snapshot | None = None, *,
                 changed: Collection[str] = ()) -> tuple[Any, Any]:
    """Compiled tracking and conversion sets (None when empty), their members in ``positions``'
    order; with ``current``, built from its sets by ``with_changes`` for the ``changed`` ads
    (added, replaced or removed; an ad whose position changed is one)."""
    compiled = []
    for kind in ("tracking", "conversion"):
        members = {ad_id: getattr(specs, kind) for ad_id, specs in ads.items() if getattr(specs, kind)}
        previous = getattr(current, kind) if current is not None else None
        if not members:
            compiled.append(None)
        elif previous is None:
            compiled.append(matcher.compile_action_specs(dict(sorted(members.items(), key=lambda m: positions[m[0]]))))
        else:
            def was_member(ad_id: str) -> bool:
                return bool(getattr(current.ad_specs.get(ad_id), kind, ()))

            entering = [ad_id for ad_id in changed if ad_id in members
                        and (not was_member(ad_id) or current.ad_positions.get(ad_id) != positions[ad_id])]
            moving = _movers(entering, positions, lambda ad_id: ad_id in members and was_member(ad_id))
            add = {ad_id: members[ad_id] for ad_id in changed if ad_id in members and ad_id not in moving}
            add.update((ad_id, members[ad_id]) for ad_id in moving)
            gone = [ad_id for ad_id in changed if ad_id not in members]
            gone += [ad_id for ad_id in moving if was_member(ad_id)]
            compiled.append(previous.with_changes(add=add or None, remove=gone))
    return compiled[0], compiled[1]
