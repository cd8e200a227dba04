"""The compiled state classification reads, and the one writer that changes it.

Concurrency contract: :attr:`Registry.snapshot` is an immutable :class:`Snapshot`.
Classification reads the attribute once per batch and uses that snapshot throughout,
without locks, so it never waits for a registration and never sees half of one. A
registration takes the writer lock, builds the next snapshot with ``with_changes``
(only the changed pixel's rules, or the changed ads, are recompiled; the rest is
shared), commits to the store, and only then swaps the reference. A rejected or failed
registration therefore changes neither the store nor what classification sees.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, TypeVar

import matcher

from server.errors import InvalidArgument, parse_json
from server.store import AdRecord, CustomConversionRecord, PixelRecord, Store

T = TypeVar("T")


def new_id() -> str:
    """A numeric string id like the Graph API's (18 digits: collisions are negligible)."""
    return str(10**17 + secrets.randbelow(9 * 10**17))


@dataclass(frozen=True)
class AdSpecs:
    """An ad's effective specs, parsed, with their canonical JSON text."""

    tracking: tuple
    conversion: tuple
    tracking_json: str
    conversion_json: str


@dataclass(frozen=True)
class Snapshot:
    """Everything one classification batch reads. Never mutated after publication
    (the per-pixel ad cache only memoises a pure function of the snapshot)."""

    rules: Any  # matcher.CompiledRules over tracked custom conversions, scoped to their pixel
    default_values: Mapping[str, float]  # custom conversion id -> default_conversion_value
    pixel_ids: frozenset[str]  # registered pixels (only their events are recorded)
    tracking: Any  # compiled effective tracking specs of every ad, or None when no ads
    conversion: Any  # compiled effective conversion specs, or None
    ad_specs: Mapping[str, AdSpecs] = field(default_factory=dict)
    pixel_ad_cache: dict = field(default_factory=dict, compare=False)

    @property
    def rule_count(self) -> int:
        return len(self.default_values)


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

    # -- start-up ---------------------------------------------------------------------------

    def load(self) -> None:
        """Compile everything the store holds (at start)."""
        with self._writer:
            conversions = self.store.tracked_custom_conversions()
            rules = matcher.compile_rules(
                {c.id: c.rule for c in conversions}, sources={c.id: c.event_source_id for c in conversions}
            )
            ads = {ad.id: effective_ad_specs(ad) for ad in self.store.list_ads(None)}
            tracking, conversion = _compile_ads(ads)
            self._publish(
                Snapshot(
                    rules=rules,
                    default_values={c.id: c.default_conversion_value for c in conversions},
                    pixel_ids=frozenset(self.store.pixel_ids()),
                    tracking=tracking,
                    conversion=conversion,
                    ad_specs=ads,
                )
            )

    def _publish(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot  # one reference assignment: readers see old or new, never half
        for listener in self.listeners:
            listener(snapshot)

    # -- writers ----------------------------------------------------------------------------

    def add_pixel(self, create: Callable[[], PixelRecord]) -> PixelRecord:
        """Run the store's create; its events are recorded from now on."""
        with self._writer:
            pixel = create()
            current = self.snapshot
            self._publish(replace(current, pixel_ids=current.pixel_ids | {pixel.id}))
            return pixel

    def remove_pixel(self, pixel_id: str, delete: Callable[[str], None]) -> None:
        """Run the store's delete; its events are no longer recorded."""
        with self._writer:
            delete(pixel_id)
            current = self.snapshot
            self._publish(replace(current, pixel_ids=current.pixel_ids - {pixel_id}))

    def add_custom_conversion(self, record: CustomConversionRecord, rule: Any, limit: int) -> CustomConversionRecord:
        """Store a new conversion under a fresh id and make it visible to classification."""
        with self._writer:
            current = self.snapshot
            record = replace(record, id=new_id())
            while record.id in current.default_values:
                record = replace(record, id=new_id())
            rules = current.rules.with_changes({record.id: rule}, sources={record.id: record.event_source_id})
            stored = self.store.create_custom_conversion(record, limit)
            self._publish(
                replace(
                    current,
                    rules=rules,
                    default_values={**current.default_values, stored.id: stored.default_conversion_value},
                )
            )
            return stored

    def update_custom_conversion(self, conversion_id: str, changes: Mapping[str, object]) -> CustomConversionRecord:
        """Apply an update; a new default value applies to the next batch."""
        with self._writer:
            stored = self.store.update_custom_conversion(conversion_id, changes)
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
            if tracked:
                values = {k: v for k, v in current.default_values.items() if k != conversion_id}
                self._publish(replace(current, rules=rules, default_values=values))
            return result

    def put_ad(self, record: AdRecord, *, replace_existing: bool) -> tuple[AdRecord, AdSpecs]:
        """Register or replace an ad; returns it with its effective specs, now in classification."""
        with self._writer:
            specs = effective_ad_specs(record)
            current = self.snapshot
            ads = {**current.ad_specs, record.id: specs}
            tracking, conversion = _compile_ads(ads, current, changed=record.id)
            stored = self.store.put_ad(record, replace_existing=replace_existing)
            self._publish(replace(current, tracking=tracking, conversion=conversion, ad_specs=ads, pixel_ad_cache={}))
            return stored, specs

    def delete_ad(self, ad_id: str) -> None:
        """Delete an ad; its specs leave classification."""
        with self._writer:
            current = self.snapshot
            ads = {k: v for k, v in current.ad_specs.items() if k != ad_id}
            tracking, conversion = _compile_ads(ads, current, removed=ad_id)
            self.store.delete_ad(ad_id)
            self._publish(replace(current, tracking=tracking, conversion=conversion, ad_specs=ads, pixel_ad_cache={}))


# -- ads: effective specs and their compiled sets ------------------------------------------

def _json_object(text: str, field_name: str) -> dict:
    if not text:
        return {}
    value = parse_json(text, field_name)
    if not isinstance(value, dict):
        raise InvalidArgument(f"{field_name}: expected a JSON object")
    return value


def effective_ad_specs(ad: AdRecord) -> AdSpecs:
    """Parse an ad's fields and derive the specs in effect (SpecError / InvalidArgument: code 100)."""
    tracking, conversion = matcher.effective_specs(
        {
            "objective": ad.objective,
            "creative": _json_object(ad.creative, "ad.creative"),
            "optimization_goal": ad.optimization_goal,
            "promoted_object": _json_object(ad.promoted_object, "ad.promoted_object"),
            "tracking_specs": ad.tracking_specs or None,
            "conversion_specs": ad.conversion_specs or None,
        }
    )
    return AdSpecs(tuple(tracking), tuple(conversion), matcher.specs_to_json(tracking), matcher.specs_to_json(conversion))


def _compile_ads(ads: Mapping[str, AdSpecs], current: Snapshot | None = None, *, changed: str | None = None,
                 removed: str | None = None) -> tuple[Any, Any]:
    """Compiled tracking and conversion sets (None when empty); with ``current``, built from
    its sets by ``with_changes`` for the one changed or removed ad."""
    compiled = []
    for kind in ("tracking", "conversion"):
        members = {ad_id: getattr(specs, kind) for ad_id, specs in ads.items() if getattr(specs, kind)}
        previous = getattr(current, kind) if current is not None else None
        if not members:
            compiled.append(None)
        elif previous is None:
            compiled.append(matcher.compile_action_specs(members))
        else:
            add = {changed: members[changed]} if changed in members else None
            gone = [ad_id for ad_id in (changed, removed) if ad_id is not None and ad_id not in members]
            compiled.append(previous.with_changes(add=add, remove=gone))
    return compiled[0], compiled[1]
