"""Pure-Python twin of the compiled action-spec set (``_actionset_c``): same API, same answers.

Many ads' specs are filed in one index: per concrete action type, per anchor selector and
value (:func:`matcher.actionspecs.choose_anchor`), the specs that can match an action carrying
that value.  Matching an action reads only the selectors that matter for its type, looks each
anchor value up, and checks the remaining selectors of the few candidates found.  (The kernel
files each spec once per anchor value instead, with its types as a bitset to check: smaller
for C, while nested dicts per type are what is cheap in Python.)

Instances are immutable snapshots: :meth:`ActionSpecSet.with_changes` returns a new set and
leaves the old one usable, so readers never need a lock (one writer builds, then swaps).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from matcher.actionspecs import (
    ACTION_TYPE_KEY,
    DEFAULT_MAX_LENGTH,
    RSVP_DEFAULT_RESPONSES,
    ActionSpec,
    action_value_text,
    choose_anchor,
    count_distinct_values,
    gc_paused,
    parse_ads,
)

__all__ = ["ActionSpecSet", "compile_action_specs"]

# (ad index, spec index, spec)
_Record = tuple[int, int, ActionSpec]


def _require_mapping(action: Any, index: int | None = None) -> Mapping[Any, Any]:
    if not isinstance(action, Mapping):
        where = f"actions[{index}]: " if index is not None else ""
        raise TypeError(
            f"{where}an action must be a mapping of selector to value, got {type(action).__name__}"
        )
    return action


class ActionSpecSet:
    """Many ads' action specs compiled for matching actions against all of them at once."""

    __slots__ = ("_ads", "_ids", "_selectors_by_type", "_index", "_max_length")

    def __init__(
        self,
        ads: Mapping[str, Any] | None = None,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        """Compile ``{ad_id: specs}``; specs are anything ``parse_action_specs`` takes."""
        self._max_length = max_length
        parsed = parse_ads(ads if ads is not None else {}, max_length=max_length)
        with gc_paused():
            self._build(parsed)

    def _build(self, ads: list[tuple[str, tuple[ActionSpec, ...]]]) -> None:
        self._ads = ads
        self._ids = tuple(ad_id for ad_id, _ in ads)
        distinct = count_distinct_values(ads)
        # type -> {(selector, value): [records]}
        index: dict[str, dict[tuple[str, str], list[_Record]]] = {}
        # type -> selectors an action of that type is read at (anchor ones flagged)
        anchors_by_type: dict[str, dict[str, None]] = {}
        for ad_index, (_, specs) in enumerate(ads):
            for spec_index, spec in enumerate(specs):
                anchor = choose_anchor(spec.constraints, distinct)
                anchor_key, anchor_values = spec.constraints[anchor]
                record = (ad_index, spec_index, spec)
                for action_type in spec.expanded_types:
                    by_value = index.get(action_type)
                    if by_value is None:
                        index[action_type] = by_value = {}
                        anchors_by_type[action_type] = {}
                    anchors_by_type[action_type][anchor_key] = None
                    for value in anchor_values:
                        by_value.setdefault((anchor_key, value), []).append(record)
        self._index = index
        self._selectors_by_type = {t: tuple(keys) for t, keys in anchors_by_type.items()}

    @property
    def ids(self) -> tuple[str, ...]:
        """The ad ids, in the order results are reported."""
        return self._ids

    def specs(self, ad_id: str) -> tuple[ActionSpec, ...]:
        """The parsed specs of one ad (``KeyError`` when absent)."""
        for known, specs in self._ads:
            if known == ad_id:
                return specs
        raise KeyError(ad_id)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, ad_id: object) -> bool:
        return ad_id in self._ids

    def _matches(self, action: Mapping[Any, Any]) -> list[tuple[int, int]]:
        """Sorted ``(ad index, first matching spec index)`` pairs."""
        action_type = action_value_text(action.get(ACTION_TYPE_KEY))
        by_value = self._index.get(action_type) if action_type is not None else None
        if by_value is None:
            return []
        first_spec: dict[int, int] = {}
        for selector in self._selectors_by_type[action_type]:
            value = action_value_text(action.get(selector))
            if value is None:
                continue
            for ad_index, spec_index, spec in by_value.get((selector, value), ()):
                known = first_spec.get(ad_index)
                if known is not None and known <= spec_index:
                    continue
                if _rest_matches(spec, action, action_type):
                    first_spec[ad_index] = spec_index
        return sorted(first_spec.items())

    def match(self, action: Mapping[str, Any]) -> list[str]:
        """Ids of the ads with a spec matching ``action``, in the set's order."""
        ids = self._ids
        return [ids[ad] for ad, _ in self._matches(_require_mapping(action))]

    def match_detail(self, action: Mapping[str, Any]) -> list[tuple[str, int]]:
        """``(id, index of the first matching spec of that ad)`` for each matching ad."""
        ids = self._ids
        return [(ids[ad], spec) for ad, spec in self._matches(_require_mapping(action))]

    def match_batch(self, actions: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """:meth:`match` for each action."""
        ids = self._ids
        return [
            [ids[ad] for ad, _ in self._matches(_require_mapping(action, i))]
            for i, action in enumerate(actions)
        ]

    def match_batch_detail(
        self, actions: Sequence[Mapping[str, Any]]
    ) -> list[list[tuple[str, int]]]:
        """:meth:`match_detail` for each action."""
        ids = self._ids
        return [
            [(ids[ad], spec) for ad, spec in self._matches(_require_mapping(action, i))]
            for i, action in enumerate(actions)
        ]

    def match_columns(self, actions: Iterable[Mapping[str, Any]]) -> tuple[array, array]:
        """All the answers of :meth:`match_batch` as two flat ``array('i')`` columns.

        Returns ``(counts, ads)``: ``counts[i]`` is the number of ads action ``i`` matches, and
        ``ads`` lists their indexes in :attr:`ids`, action after action, each action's in the
        set's order.  No per-action list and no id string is touched, which is most of what
        :meth:`match_batch` costs.
        """
        counts, ads, _ = self._columns(actions, False)
        return counts, ads

    def match_columns_detail(
        self, actions: Iterable[Mapping[str, Any]]
    ) -> tuple[array, array, array]:
        """:meth:`match_columns` plus a third column: ``specs[k]`` is the index of the first
        matching spec of ad ``ads[k]`` (as :meth:`match_batch_detail` reports it)."""
        return self._columns(actions, True)

    def _columns(self, actions: Iterable[Mapping[str, Any]], detail: bool) -> tuple[array, array, array]:
        counts, ads, specs = array("i"), array("i"), array("i")
        for i, action in enumerate(actions):
            found = self._matches(_require_mapping(action, i))
            counts.append(len(found))
            for ad, spec in found:
                ads.append(ad)
                if detail:
                    specs.append(spec)
        return counts, ads, specs

    def with_changes(
        self, add: Mapping[str, Any] | None = None, remove: Iterable[str] = ()
    ) -> ActionSpecSet:
        """A new set with ``remove`` dropped (unknown ids ignored), then ``add`` applied: an
        added id already present keeps its place, new ids go last.  ``self`` is unchanged;
        the parsed specs of unchanged ads are shared."""
        return type(self)._from_parsed(
            _apply_changes(self._ads, add, remove, self._max_length), self._max_length
        )

    @classmethod
    def _from_parsed(
        cls, ads: list[tuple[str, tuple[ActionSpec, ...]]], max_length: int
    ) -> ActionSpecSet:
        new = object.__new__(cls)
        new._max_length = max_length
        with gc_paused():
            new._build(ads)
        return new

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self._ids)} ads (pure Python)>"


def _rest_matches(spec: ActionSpec, action: Mapping[Any, Any], action_type: str) -> bool:
    for selector, accepted in spec.constraints:
        if action_value_text(action.get(selector)) not in accepted:
            return False
    if spec.rsvp_default and action_type == "rsvp":
        return action_value_text(action.get("response")) in RSVP_DEFAULT_RESPONSES
    return True


def _apply_changes(
    ads: list[tuple[str, tuple[ActionSpec, ...]]],
    add: Mapping[str, Any] | None,
    remove: Iterable[str],
    max_length: int,
) -> list[tuple[str, tuple[ActionSpec, ...]]]:
    """Shared by the twin and the compiled set: the ad list after a change."""
    if isinstance(remove, str):
        raise TypeError("remove must be an iterable of ad ids, not a single string")
    removed = set(remove)
    added = dict(parse_ads(add if add is not None else {}, max_length=max_length))
    result = []
    for ad_id, specs in ads:
        if ad_id in removed:
            continue
        replacement = added.pop(ad_id, None)
        result.append((ad_id, replacement if replacement is not None else specs))
    result.extend(added.items())
    return result


def compile_action_specs(
    ads: Mapping[str, Any], *, max_length: int = DEFAULT_MAX_LENGTH
) -> ActionSpecSet:
    """Compile ``{ad_id: specs}`` into an :class:`ActionSpecSet` (pure Python)."""
    return ActionSpecSet(ads, max_length=max_length)
