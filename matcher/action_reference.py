"""The reference action matcher: the matching rules of the action-spec language, written plainly.

This module is the executable form of ``docs/action-specs.md`` section "Matching".  It is slow
on purpose (it checks every spec of every ad) and is the oracle the compiled set and its twin
are tested against.

A spec matches an action when

1. the action's ``action.type`` is one of the spec's types after meta expansion;
2. for every selector the spec names, the action has that selector with one of the listed
   values (OR within a selector, AND across selectors; unnamed selectors are free);
3. an ``rsvp`` action matched by a spec that names no ``response`` answered ``yes`` or
   ``maybe``.

Action values are compared as text (:func:`matcher.actionspecs.action_value_text`): numbers are
their decimal text; values that are not strings or numbers count as absent.  An action that is
not a mapping is a ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from matcher.actionspecs import (
    ACTION_TYPE_KEY,
    RSVP_DEFAULT_RESPONSES,
    ActionSpec,
    action_value_text,
    parse_action_specs,
)

__all__ = ["action_matches", "matching_spec_indices", "spec_matches"]


def _require_mapping(action: Any) -> Mapping[Any, Any]:
    if not isinstance(action, Mapping):
        raise TypeError(f"an action must be a mapping of selector to value, got {type(action).__name__}")
    return action


def spec_matches(spec: ActionSpec, action: Mapping[str, Any]) -> bool:
    """Whether one spec matches one action."""
    action = _require_mapping(action)
    action_type = action_value_text(action.get(ACTION_TYPE_KEY))
    if action_type not in spec.expanded_types:
        return False
    for selector, accepted in spec.constraints:
        if action_value_text(action.get(selector)) not in accepted:
            return False
    if action_type == "rsvp" and spec.rsvp_default:
        return action_value_text(action.get("response")) in RSVP_DEFAULT_RESPONSES
    return True


def _as_specs(specs: Any) -> list[ActionSpec] | tuple[ActionSpec, ...]:
    if isinstance(specs, (list, tuple)) and all(type(spec) is ActionSpec for spec in specs):
        return specs  # type: ignore[return-value]
    return parse_action_specs(specs)


def matching_spec_indices(specs: Iterable[ActionSpec] | Any, action: Mapping[str, Any]) -> list[int]:
    """Indices (in order) of the specs in ``specs`` that match ``action``."""
    action = _require_mapping(action)
    return [index for index, spec in enumerate(_as_specs(specs)) if spec_matches(spec, action)]


def action_matches(specs: Iterable[ActionSpec] | Any, action: Mapping[str, Any]) -> bool:
    """Whether any of ``specs`` (parsed specs, or anything :func:`parse_action_specs` takes)
    matches ``action``."""
    action = _require_mapping(action)
    return any(spec_matches(spec, action) for spec in _as_specs(specs))
