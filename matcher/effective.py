"""An ad's effective specs: what it tracks and what it optimises for.

Implements section 4 of the action-spec language (``docs/action-specs.md``): the default
tracking specs of seed 000's table (reconstructed row by row in the doc, and in
:data:`DEFAULT_TRACKING` below), custom ``tracking_specs`` appended to the defaults or replacing
them, placeholders filled from the ad's creative and promoted object, conversion specs and the
promoted pixel tracked automatically, exact duplicates removed.

The ad is a mapping::

    {
        "objective": "POST_ENGAGEMENT",            # missing means NONE
        "optimization_goal": "POST_ENGAGEMENT",    # missing or NONE: not set to an action
        "creative": {
            "kind": "page_post",                   # see CREATIVE_KINDS
            "page_id": "P1", "post_id": "PO1",     # or "object_story_id": "P1_PO1"
            "application_id": ..., "event_id": ..., "offer_id": ..., "url": ...,
        },
        "promoted_object": {"pixel_id": "PX1", "application_id": "A1",
                            "page_id": ..., "event_id": ..., "offer_id": ...},
        "tracking_specs": [...],                   # optional, custom
        "conversion_specs": [...],                 # optional, custom
    }
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from matcher.actionspecs import (
    DEFAULT_MAX_LENGTH,
    ActionSpec,
    decode_specs_text,
    key_path,
    parse_action_specs,
    parse_decoded,
    scalar_text,
)
from matcher.errors import SpecError

__all__ = [
    "CREATIVE_KINDS",
    "DEFAULT_TRACKING",
    "OBJECTIVES",
    "OPTIMIZATION_GOALS",
    "PLACEHOLDERS",
    "REPLACING_OBJECTIVES",
    "DefaultRow",
    "ad_ids",
    "effective_specs",
]

#: Placeholder value -> (where the id comes from, in the order tried).
PLACEHOLDERS: Mapping[str, tuple[str, ...]] = {
    "PAGE_ID": ("creative.page_id", "promoted_object.page_id"),
    "POST_ID": ("creative.post_id",),
    "APPLICATION_ID": ("creative.application_id", "promoted_object.application_id"),
    "APP_ID": ("creative.application_id", "promoted_object.application_id"),
    "EVENT_ID": ("creative.event_id", "promoted_object.event_id"),
    "OFFER_ID": ("creative.offer_id", "promoted_object.offer_id"),
    "FACEBOOK_PIXEL_ID": ("promoted_object.pixel_id",),
    "URL": ("creative.url",),
}

CREATIVE_KINDS = frozenset(
    {
        "page_post_link",   # page post link ad
        "page_post_photo",  # page post photo ad
        "page_post",        # any other page post (status, video, ...)
        "domain",           # domain ad (an external URL)
        "page_like",        # page like ad
        "event",
        "offer",
        "canvas_app",
        "mobile_app",
        "dynamic_product",
    }
)
_LINK_AND_PHOTO = frozenset({"page_post_link", "page_post_photo"})
_PAGE_POSTS = frozenset({"page_post", "page_post_link", "page_post_photo"})

#: Goals that optimise for an action (the ad's conversion specs are what it optimises for).
_ACTION_GOALS = frozenset(
    {
        "OFFSITE_CONVERSIONS", "POST_ENGAGEMENT", "PAGE_LIKES", "LINK_CLICKS",
        "EVENT_RESPONSES", "APP_INSTALLS", "OFFER_CLAIMS",
    }
)
#: CPM / CPC style goals: nothing is optimised for; conversion specs given are only tracked.
_PLAIN_GOALS = frozenset({"NONE", "IMPRESSIONS", "CLICKS", "REACH"})
OPTIMIZATION_GOALS = _ACTION_GOALS | _PLAIN_GOALS

_OBJECTIVE_ALIASES = {"WEBSITE_CONVERSIONS": "CONVERSIONS", "WEBSITE_CLICKS": "LINK_CLICKS"}
#: Objectives where custom tracking specs replace the defaults instead of being appended.
REPLACING_OBJECTIVES = frozenset(
    {
        "NONE", "CANVAS_APP_ENGAGEMENT", "CANVAS_APP_INSTALLS",
        "MOBILE_APP_ENGAGEMENT", "MOBILE_APP_INSTALLS",
    }
)

# Spec templates (placeholders are filled per ad).
_POST_ENGAGEMENT = {"action.type": "post_engagement", "post": "POST_ID", "page": "PAGE_ID"}
_PAGE_ENGAGEMENT = {"action.type": "page_engagement", "page": "PAGE_ID"}
_APP_ENGAGEMENT = {"action.type": "app_engagement", "application": "APPLICATION_ID"}
_LIKE_PAGE = {"action.type": "like", "page": "PAGE_ID"}
_LINK_CLICK_URL = {"action.type": "link_click", "object": "URL"}
_LINK_CLICK_POST = {"action.type": "link_click", "post": "POST_ID", "post.wall": "PAGE_ID"}
_PIXEL = {"action.type": "offsite_conversion", "fb_pixel": "FACEBOOK_PIXEL_ID"}
_APP_CUSTOM_EVENT = {"action.type": "app_custom_event", "application": "APPLICATION_ID"}
_MOBILE_APP_INSTALL = {"action.type": "mobile_app_install", "application": "APPLICATION_ID"}
_CANVAS_APP_INSTALL = {"action.type": "app_install", "application": "APPLICATION_ID"}
_RSVP_YES = {"action.type": "rsvp", "response": "yes", "event": "EVENT_ID"}
_RSVP_MAYBE = {"action.type": "rsvp", "response": "maybe", "event": "EVENT_ID"}
_RSVP_NO = {"action.type": "rsvp", "response": "no", "event": "EVENT_ID"}
_RECEIVE_OFFER = {"action.type": "receive_offer", "offer": "OFFER_ID", "offer.creator": "PAGE_ID"}


@dataclass(frozen=True)
class DefaultRow:
    """One row of seed 000's default tracking spec table.

    ``goal`` and ``goal_is`` give the row's optimisation condition: ``goal_is=True`` means the
    row applies when the goal is ``goal``; ``False`` when it is anything else (including not
    set); ``goal=None`` means any goal.
    """

    objective: str
    creatives: frozenset[str]
    goal: str | None
    goal_is: bool
    specs: tuple[Mapping[str, str], ...]
    seed_row: str

    def applies(self, objective: str, creative: str, goal: str) -> bool:
        if objective != self.objective or creative not in self.creatives:
            return False
        if self.goal is None:
            return True
        return (goal == self.goal) == self.goal_is


def _row(objective, creatives, goal, goal_is, specs, seed_row) -> DefaultRow:
    return DefaultRow(objective, frozenset(creatives), goal, goal_is, tuple(specs), seed_row)


#: Seed 000's table, reconstructed (see ``docs/action-specs.md`` for each decision).
DEFAULT_TRACKING: tuple[DefaultRow, ...] = (
    _row("CANVAS_APP_ENGAGEMENT", {"canvas_app"}, None, True,
         [_APP_ENGAGEMENT, _POST_ENGAGEMENT],
         "Canvas app engagement ads"),
    _row("CANVAS_APP_INSTALLS", {"canvas_app"}, "APP_INSTALLS", True,
         [_APP_ENGAGEMENT, _POST_ENGAGEMENT],
         "Canvas app install ads with optimization_goal=APP_INSTALLS"),
    _row("CANVAS_APP_INSTALLS", {"canvas_app"}, "APP_INSTALLS", False,
         [_APP_ENGAGEMENT, _POST_ENGAGEMENT],
         "Canvas app install ads with optimization not set to APP_INSTALLS"),
    _row("CONVERSIONS", _LINK_AND_PHOTO, "OFFSITE_CONVERSIONS", True,
         [_POST_ENGAGEMENT, _LIKE_PAGE],
         "Page post link and photo ads, pixel promoted, optimization_goal=OFFSITE_CONVERSIONS"),
    _row("CONVERSIONS", _LINK_AND_PHOTO, "OFFSITE_CONVERSIONS", False,
         [_PIXEL, _POST_ENGAGEMENT, _LIKE_PAGE],
         "Page post link and photo ads with optimization not set to OFFSITE_CONVERSIONS"),
    _row("CONVERSIONS", {"domain"}, "OFFSITE_CONVERSIONS", True,
         [_LINK_CLICK_URL, _LIKE_PAGE],
         "Domain ads, pixel promoted, optimization_goal=OFFSITE_CONVERSIONS"),
    _row("CONVERSIONS", {"domain"}, "OFFSITE_CONVERSIONS", False,
         [_PIXEL, _LINK_CLICK_URL, _LIKE_PAGE],
         "Domain ads with optimization not set to OFFSITE_CONVERSIONS"),
    _row("EVENT_RESPONSES", {"event"}, "EVENT_RESPONSES", False,
         [_RSVP_YES, _RSVP_MAYBE, _RSVP_NO],
         "Event ads with optimization not set to EVENT_RESPONSES"),
    _row("EVENT_RESPONSES", {"event"}, "EVENT_RESPONSES", True,
         [],
         "Event ads with optimization_goal=EVENT_RESPONSES (conversion spec covers them)"),
    _row("LINK_CLICKS", _LINK_AND_PHOTO, None, True,
         [_POST_ENGAGEMENT],
         "Page post link and photo ads with any bid option"),
    _row("LINK_CLICKS", {"domain"}, "LINK_CLICKS", True,
         [_LIKE_PAGE],
         "Domain ads with optimization_goal=LINK_CLICKS"),
    _row("LINK_CLICKS", {"domain"}, "LINK_CLICKS", False,
         [_LINK_CLICK_URL, _LIKE_PAGE],
         "Domain ads with optimization not set to LINK_CLICKS"),
    _row("MOBILE_APP_ENGAGEMENT", {"mobile_app"}, None, True,
         [_POST_ENGAGEMENT, _APP_CUSTOM_EVENT],
         "Mobile app engagement ads with any bid option"),
    _row("MOBILE_APP_INSTALLS", {"mobile_app"}, None, True,
         [_POST_ENGAGEMENT, _APP_CUSTOM_EVENT, _MOBILE_APP_INSTALL],
         "Mobile app install ads with any bid option"),
    # Objective NONE, "any ad type": the defaults by ad type are the ad types' conversion specs.
    _row("NONE", {"domain"}, None, True, [_LINK_CLICK_URL], "Any ad type: domain ad"),
    _row("NONE", {"page_like"}, None, True, [_LIKE_PAGE], "Any ad type: page like ad"),
    _row("NONE", {"page_post_link"}, None, True, [_LINK_CLICK_POST],
         "Any ad type: page post link ad"),
    _row("NONE", {"page_post", "page_post_photo"}, None, True, [_POST_ENGAGEMENT],
         "Any ad type: all other page post ads"),
    _row("NONE", {"event"}, None, True, [_RSVP_YES], "Any ad type: event ad"),
    _row("NONE", {"offer"}, None, True, [_RECEIVE_OFFER], "Any ad type: offer ad"),
    _row("PAGE_LIKES", {"page_like"} | _PAGE_POSTS, None, True,
         [_PAGE_ENGAGEMENT],
         "Page Like ads or page post ads with any bid option"),
    _row("POST_ENGAGEMENT", _PAGE_POSTS, "POST_ENGAGEMENT", False,
         [_POST_ENGAGEMENT],
         "Page post ads with optimization not set to POST_ENGAGEMENT"),
    _row("POST_ENGAGEMENT", _PAGE_POSTS, "POST_ENGAGEMENT", True,
         [],
         "Page post ads with optimization_goal=POST_ENGAGEMENT (conversion spec covers them)"),
    _row("PRODUCT_CATALOG_SALES", {"dynamic_product"}, None, True,
         [_POST_ENGAGEMENT],
         "Dynamic Product Ads"),
)

OBJECTIVES = frozenset(row.objective for row in DEFAULT_TRACKING)


def _default_conversion(goal: str, creative: str) -> tuple[Mapping[str, str], ...]:
    """What an ad optimised for ``goal`` converts on when it names no conversion specs."""
    if goal == "OFFSITE_CONVERSIONS":
        return (_PIXEL,)
    if goal == "POST_ENGAGEMENT":
        return (_POST_ENGAGEMENT,)
    if goal == "PAGE_LIKES":
        return (_LIKE_PAGE,)
    if goal == "EVENT_RESPONSES":
        return (_RSVP_YES,)
    if goal == "OFFER_CLAIMS":
        return (_RECEIVE_OFFER,)
    if goal == "LINK_CLICKS":
        if creative == "domain":
            return (_LINK_CLICK_URL,)
        if creative in _PAGE_POSTS:
            return (_LINK_CLICK_POST,)
    if goal == "APP_INSTALLS":
        if creative == "canvas_app":
            return (_CANVAS_APP_INSTALL,)
        if creative == "mobile_app":
            return (_MOBILE_APP_INSTALL,)
    raise SpecError(
        "conversion_specs",
        f"no default conversion spec for optimization_goal {goal} with a {creative} creative; "
        "give conversion_specs",
    )


def _text_field(container: Mapping[str, Any], name: str, path: str) -> str | None:
    if name not in container or container[name] is None:
        return None
    return scalar_text(container[name], lambda: path)


def _mapping_field(ad: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = ad.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(name, f"expected an object, got {type(value).__name__}")
    return value


def ad_ids(ad: Mapping[str, Any]) -> dict[str, str]:
    """Known ids of the ad, keyed like ``creative.page_id`` (a page and post id given only as
    ``creative.object_story_id`` under ``creative.page_id`` and ``creative.post_id``)."""
    ids: dict[str, str] = {}
    for section in ("creative", "promoted_object"):
        fields = _mapping_field(ad, section)
        for name in ("page_id", "post_id", "application_id", "event_id", "offer_id", "url",
                     "pixel_id", "object_story_id"):
            text = _text_field(fields, name, f"{section}.{name}")
            if text is not None:
                ids[f"{section}.{name}"] = text
    story = ids.get("creative.object_story_id")
    if story is not None:
        page, sep, post = story.partition("_")
        if not sep or not page or not post:
            raise SpecError(
                "creative.object_story_id", f"expected PAGEID_POSTID, got {story[:80]!r}"
            )
        ids.setdefault("creative.page_id", page)
        ids.setdefault("creative.post_id", post)
    return ids


def _fill(
    specs: list[ActionSpec], ids: Mapping[str, str], field: str, needed_by: str | None = None,
    indexed: bool = True,
) -> list[ActionSpec]:
    """Replace placeholder values by the ad's ids; a missing id is a SpecError at its place
    (``indexed``: the specs were given as a list, so the place names the spec's index)."""
    filled: list[ActionSpec] = []
    for index, spec in enumerate(specs):
        constraints = []
        changed = False
        for key, values in spec.constraints:
            new_values = set()
            for value in values:
                sources = PLACEHOLDERS.get(value)
                if sources is None:
                    new_values.add(value)
                    continue
                changed = True
                for source in sources:
                    if source in ids:
                        new_values.add(ids[source])
                        break
                else:
                    spec_path = f"{field}[{index}]" if indexed else field
                    where = key_path(spec_path, key) if needed_by is None else field
                    because = f" for the default spec {needed_by}" if needed_by else ""
                    raise SpecError(
                        where,
                        f"placeholder {value}{because} needs the ad's "
                        + " or ".join(sources),
                    )
            constraints.append((key, tuple(sorted(new_values))))
        filled.append(ActionSpec._trusted(spec.types, tuple(constraints)) if changed else spec)
    return filled


def _templates(templates: tuple[Mapping[str, str], ...], ids, field: str, row: str):
    specs = parse_action_specs(list(templates), field=field) if templates else []
    return _fill(specs, ids, field, needed_by=f"of {row!r}")


def _custom(ad: Mapping[str, Any], name: str, ids, max_length: int) -> list[ActionSpec] | None:
    """The ad's own specs in field ``name``, placeholders filled; None when it gives none
    (absent, null, or an empty list, decoded or as JSON text)."""
    raw = ad.get(name)
    if raw is None:
        return None
    measured = isinstance(raw, (str, bytes, bytearray))
    if measured:
        # Decoded first, within the length limit: text that is an empty list is no specs,
        # but text over the limit is an error even when it is only blanks around "[]".
        raw = decode_specs_text(raw, name, max_length)
    if isinstance(raw, (list, tuple)) and not raw:
        return None
    specs = parse_decoded(raw, lambda: name, max_length, measured=measured)
    return _fill(specs, ids, name, indexed=not isinstance(raw, (Mapping, ActionSpec)))


def _unique(specs: list[ActionSpec]) -> list[ActionSpec]:
    seen: set[ActionSpec] = set()
    result = []
    for spec in specs:
        if spec not in seen:
            seen.add(spec)
            result.append(spec)
    return result


def effective_specs(
    ad: Mapping[str, Any], *, max_length: int = DEFAULT_MAX_LENGTH
) -> tuple[list[ActionSpec], list[ActionSpec]]:
    """``(tracking, conversion)``: the specs ``ad`` tracks and the ones it optimises for.

    Tracking is the default specs of the ad's objective, creative and goal (custom
    ``tracking_specs`` appended, or replacing them for objective ``NONE`` and app ads), then the
    conversion specs, then the promoted pixel, exact duplicates removed in that order.  Raises
    :class:`matcher.SpecError` for an unknown objective, creative kind or goal, a creative the
    objective does not take, or an id a default or placeholder needs but the ad lacks.
    """
    if not isinstance(ad, Mapping):
        raise TypeError(f"an ad must be a mapping, got {type(ad).__name__}")
    raw_objective = ad.get("objective") or "NONE"
    if not isinstance(raw_objective, str):
        raise SpecError("objective", f"expected a string, got {type(raw_objective).__name__}")
    objective = _OBJECTIVE_ALIASES.get(raw_objective, raw_objective)
    if objective not in OBJECTIVES:
        raise SpecError(
            "objective",
            f"unknown objective {raw_objective[:80]!r}; expected one of "
            + ", ".join(sorted(OBJECTIVES | _OBJECTIVE_ALIASES.keys())),
        )
    goal = ad.get("optimization_goal") or "NONE"
    if not isinstance(goal, str) or goal not in OPTIMIZATION_GOALS:
        raise SpecError(
            "optimization_goal",
            f"unknown optimization goal {str(goal)[:80]!r}; expected one of "
            + ", ".join(sorted(OPTIMIZATION_GOALS)),
        )
    creative = _mapping_field(ad, "creative")
    kind = creative.get("kind")
    if not isinstance(kind, str) or kind not in CREATIVE_KINDS:
        raise SpecError(
            "creative.kind",
            f"unknown creative kind {str(kind)[:80]!r}; expected one of "
            + ", ".join(sorted(CREATIVE_KINDS)),
        )
    ids = ad_ids(ad)
    if goal == "OFFSITE_CONVERSIONS" and "promoted_object.pixel_id" not in ids:
        raise SpecError(
            "promoted_object.pixel_id",
            "optimization_goal OFFSITE_CONVERSIONS needs a pixel in the promoted object",
        )

    custom_tracking = _custom(ad, "tracking_specs", ids, max_length)
    custom_conversion = _custom(ad, "conversion_specs", ids, max_length)

    # The row is looked up even when custom specs replace its specs: an objective takes only
    # the creatives it has a row for, whatever the ad tracks.
    row = next((r for r in DEFAULT_TRACKING if r.applies(objective, kind, goal)), None)
    if row is None:
        raise SpecError(
            "creative.kind",
            f"a {kind} creative has no default tracking specs under objective {objective}"
            + (" (cannot create such an ad with NONE objective)" if objective == "NONE" else ""),
        )
    if objective in REPLACING_OBJECTIVES and custom_tracking is not None:
        tracking = list(custom_tracking)
    else:
        tracking = _templates(row.specs, ids, "tracking_specs", row.seed_row)
        if custom_tracking is not None:
            tracking += custom_tracking

    if custom_conversion is not None:
        conversion = custom_conversion
    elif goal in _ACTION_GOALS:
        conversion = _templates(
            _default_conversion(goal, kind), ids, "conversion_specs", f"optimization_goal {goal}"
        )
    else:
        conversion = []
    tracking += conversion
    if "promoted_object.pixel_id" in ids:
        tracking += _fill(parse_action_specs(_PIXEL), ids, "promoted_object")
    # Conversion specs given to an ad that optimises for no action are tracked only.
    if goal not in _ACTION_GOALS:
        conversion = []
    return _unique(tracking), _unique(conversion)
