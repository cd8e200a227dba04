"""An ad's effective specs: seed 000's default tracking table row by row, and the rules around it.

Expected specs are written out literally here (not derived from ``DEFAULT_TRACKING``), so a
wrong row in the table fails a test.
"""

from __future__ import annotations

import pytest

from matcher import SpecError, effective_specs, parse_action_specs, specs_to_json
from matcher.effective import DEFAULT_TRACKING

PAGE, POST, APP, EVENT, OFFER, PIXEL, URL = "P1", "PO1", "A1", "E1", "O1", "PX1", "https://shop.example/"
CREATIVE = {"page_id": PAGE, "post_id": POST, "application_id": APP, "event_id": EVENT,
            "offer_id": OFFER, "url": URL}

POST_ENGAGEMENT = {"action.type": "post_engagement", "post": POST, "page": PAGE}
PAGE_ENGAGEMENT = {"action.type": "page_engagement", "page": PAGE}
APP_ENGAGEMENT = {"action.type": "app_engagement", "application": APP}
LIKE_PAGE = {"action.type": "like", "page": PAGE}
LINK_URL = {"action.type": "link_click", "object": URL}
LINK_POST = {"action.type": "link_click", "post": POST, "post.wall": PAGE}
PIXEL_SPEC = {"action.type": "offsite_conversion", "fb_pixel": PIXEL}
APP_EVENT = {"action.type": "app_custom_event", "application": APP}
MOBILE_INSTALL = {"action.type": "mobile_app_install", "application": APP}
CANVAS_INSTALL = {"action.type": "app_install", "application": APP}
RSVP = {r: {"action.type": "rsvp", "response": r, "event": EVENT} for r in ("yes", "maybe", "no")}
RECEIVE_OFFER = {"action.type": "receive_offer", "offer": OFFER, "offer.creator": PAGE}


def ad(objective, kind, goal=None, *, pixel=False, **extra):
    result = {"objective": objective, "creative": {"kind": kind, **CREATIVE}, **extra}
    if goal is not None:
        result["optimization_goal"] = goal
    if pixel:
        result["promoted_object"] = {"pixel_id": PIXEL}
    return result


def as_json(specs) -> str:
    return specs_to_json(parse_action_specs(specs)) if specs else "[]"


# (ad, expected tracking, expected conversion): one case per row of seed 000's table.
TABLE_ROWS = {
    "canvas app engagement": (
        ad("CANVAS_APP_ENGAGEMENT", "canvas_app"), [APP_ENGAGEMENT, POST_ENGAGEMENT], []),
    "canvas app install, goal APP_INSTALLS": (
        ad("CANVAS_APP_INSTALLS", "canvas_app", "APP_INSTALLS"),
        [APP_ENGAGEMENT, POST_ENGAGEMENT, CANVAS_INSTALL], [CANVAS_INSTALL]),
    "canvas app install, goal not APP_INSTALLS": (
        ad("CANVAS_APP_INSTALLS", "canvas_app", "IMPRESSIONS"), [APP_ENGAGEMENT, POST_ENGAGEMENT], []),
    "page post link, pixel, goal OFFSITE_CONVERSIONS": (
        ad("CONVERSIONS", "page_post_link", "OFFSITE_CONVERSIONS", pixel=True),
        [POST_ENGAGEMENT, LIKE_PAGE, PIXEL_SPEC], [PIXEL_SPEC]),
    "page post photo, pixel, goal OFFSITE_CONVERSIONS": (
        ad("CONVERSIONS", "page_post_photo", "OFFSITE_CONVERSIONS", pixel=True),
        [POST_ENGAGEMENT, LIKE_PAGE, PIXEL_SPEC], [PIXEL_SPEC]),
    "page post link, goal not OFFSITE_CONVERSIONS": (
        ad("CONVERSIONS", "page_post_link", "CLICKS", pixel=True),
        [PIXEL_SPEC, POST_ENGAGEMENT, LIKE_PAGE], []),
    "domain, pixel, goal OFFSITE_CONVERSIONS": (
        ad("CONVERSIONS", "domain", "OFFSITE_CONVERSIONS", pixel=True),
        [LINK_URL, LIKE_PAGE, PIXEL_SPEC], [PIXEL_SPEC]),
    "domain, goal not OFFSITE_CONVERSIONS": (
        ad("WEBSITE_CONVERSIONS", "domain", None, pixel=True), [PIXEL_SPEC, LINK_URL, LIKE_PAGE], []),
    "event, goal not EVENT_RESPONSES": (
        ad("EVENT_RESPONSES", "event", "IMPRESSIONS"), [RSVP["yes"], RSVP["maybe"], RSVP["no"]], []),
    "event, goal EVENT_RESPONSES": (
        ad("EVENT_RESPONSES", "event", "EVENT_RESPONSES"), [RSVP["yes"]], [RSVP["yes"]]),
    "page post link, LINK_CLICKS, any bid": (
        ad("LINK_CLICKS", "page_post_link", "IMPRESSIONS"), [POST_ENGAGEMENT], []),
    "page post photo, LINK_CLICKS, goal LINK_CLICKS": (
        ad("LINK_CLICKS", "page_post_photo", "LINK_CLICKS"), [POST_ENGAGEMENT, LINK_POST], [LINK_POST]),
    "domain, goal LINK_CLICKS": (
        ad("LINK_CLICKS", "domain", "LINK_CLICKS"), [LIKE_PAGE, LINK_URL], [LINK_URL]),
    "domain, goal not LINK_CLICKS": (
        ad("WEBSITE_CLICKS", "domain", "CLICKS"), [LINK_URL, LIKE_PAGE], []),
    "mobile app engagement": (
        ad("MOBILE_APP_ENGAGEMENT", "mobile_app", "CLICKS"), [POST_ENGAGEMENT, APP_EVENT], []),
    "mobile app install": (
        ad("MOBILE_APP_INSTALLS", "mobile_app", "APP_INSTALLS"),
        [POST_ENGAGEMENT, APP_EVENT, MOBILE_INSTALL], [MOBILE_INSTALL]),
    "NONE: domain ad": (ad("NONE", "domain"), [LINK_URL], []),
    "NONE: page like ad": (ad("NONE", "page_like"), [LIKE_PAGE], []),
    "NONE: page post link ad": (ad("NONE", "page_post_link"), [LINK_POST], []),
    "NONE: other page post ad": (ad("NONE", "page_post"), [POST_ENGAGEMENT], []),
    "NONE: page post photo ad": (ad(None, "page_post_photo"), [POST_ENGAGEMENT], []),
    "NONE: event ad": (ad("NONE", "event"), [RSVP["yes"]], []),
    "NONE: offer ad": (ad("NONE", "offer"), [RECEIVE_OFFER], []),
    "page like ad, PAGE_LIKES": (ad("PAGE_LIKES", "page_like", "PAGE_LIKES"),
                                  [PAGE_ENGAGEMENT, LIKE_PAGE], [LIKE_PAGE]),
    "page post ad, PAGE_LIKES, CPM": (ad("PAGE_LIKES", "page_post", "IMPRESSIONS"), [PAGE_ENGAGEMENT], []),
    "page post, goal not POST_ENGAGEMENT": (
        ad("POST_ENGAGEMENT", "page_post", "CLICKS"), [POST_ENGAGEMENT], []),
    "page post, goal POST_ENGAGEMENT": (
        ad("POST_ENGAGEMENT", "page_post_photo", "POST_ENGAGEMENT"), [POST_ENGAGEMENT], [POST_ENGAGEMENT]),
    "dynamic product ads": (ad("PRODUCT_CATALOG_SALES", "dynamic_product"), [POST_ENGAGEMENT], []),
}


@pytest.mark.parametrize("case", list(TABLE_ROWS))
def test_default_tracking_table(case):
    the_ad, tracking, conversion = TABLE_ROWS[case]
    got_tracking, got_conversion = effective_specs(the_ad)
    assert specs_to_json(got_tracking) == as_json(tracking)
    assert specs_to_json(got_conversion) == as_json(conversion)


def test_every_row_of_the_table_is_exercised():
    used = set()
    for the_ad, _, _ in TABLE_ROWS.values():
        objective = {"WEBSITE_CONVERSIONS": "CONVERSIONS", "WEBSITE_CLICKS": "LINK_CLICKS"}.get(
            the_ad["objective"], the_ad["objective"] or "NONE")
        goal = the_ad.get("optimization_goal") or "NONE"
        for index, row in enumerate(DEFAULT_TRACKING):
            if row.applies(objective, the_ad["creative"]["kind"], goal):
                used.add(index)
    assert used == set(range(len(DEFAULT_TRACKING)))


# -- custom specs: appended or replacing -----------------------------------------------------


def test_custom_tracking_specs_are_appended():
    custom = {"action.type": "video_play", "post": "POST_ID", "post.wall": "PAGE_ID"}
    tracking, _ = effective_specs(ad("POST_ENGAGEMENT", "page_post", tracking_specs=custom))
    assert specs_to_json(tracking) == as_json(
        [POST_ENGAGEMENT, {"action.type": "video_play", "post": POST, "post.wall": PAGE}])


@pytest.mark.parametrize(
    ("objective", "kind"),
    [("NONE", "page_post"), ("CANVAS_APP_ENGAGEMENT", "canvas_app"),
     ("CANVAS_APP_INSTALLS", "canvas_app"), ("MOBILE_APP_ENGAGEMENT", "mobile_app"),
     ("MOBILE_APP_INSTALLS", "mobile_app")],
)
def test_custom_tracking_specs_replace_defaults(objective, kind):
    custom = [{"action.type": "mobile_app_install", "application": "APP_ID"},
              {"action.type": "app_custom_event", "application": "APP_ID"}]
    tracking, _ = effective_specs(ad(objective, kind, tracking_specs=custom))
    assert specs_to_json(tracking) == as_json([MOBILE_INSTALL, APP_EVENT])


def test_replaced_defaults_do_not_need_their_ids():
    # Mobile app ads must name their app in custom specs; the post of the default is not needed.
    the_ad = {"objective": "MOBILE_APP_INSTALLS", "creative": {"kind": "mobile_app"},
              "tracking_specs": [{"action.type": "mobile_app_install", "application": 99}]}
    tracking, conversion = effective_specs(the_ad)
    assert specs_to_json(tracking) == as_json([{"action.type": "mobile_app_install", "application": "99"}])
    assert conversion == []


@pytest.mark.parametrize("empty", [[], (), "[]", " [ \n] ", b"[]", bytearray(b"[\t]")])
def test_empty_custom_list_keeps_defaults(empty):
    """An empty list is no custom specs, decoded or as JSON text (the text was once an error)."""
    tracking, _ = effective_specs(ad("NONE", "page_like", tracking_specs=empty))
    assert specs_to_json(tracking) == as_json([LIKE_PAGE])


def test_custom_specs_as_json_text():
    the_ad = ad("PAGE_LIKES", "page_like",
                tracking_specs='{"action.type": "checkin", "page": "PAGE_ID"}')
    tracking, _ = effective_specs(the_ad)
    assert specs_to_json(tracking) == as_json([PAGE_ENGAGEMENT, {"action.type": "checkin", "page": PAGE}])


# -- conversion specs and the promoted pixel -------------------------------------------------


def test_conversion_specs_are_tracked_and_not_repeated():
    conversion = {"action.type": "like", "page": "PAGE_ID"}
    tracking, optimised = effective_specs(
        ad("PAGE_LIKES", "page_like", "PAGE_LIKES", conversion_specs=conversion,
           tracking_specs=[conversion]))
    assert specs_to_json(optimised) == as_json([LIKE_PAGE])
    assert specs_to_json(tracking) == as_json([PAGE_ENGAGEMENT, LIKE_PAGE])


def test_conversion_specs_on_an_ad_not_optimised_for_actions_are_only_tracked():
    conversion = {"action.type": "rsvp", "event": "EVENT_ID"}
    tracking, optimised = effective_specs(ad("POST_ENGAGEMENT", "page_post", "IMPRESSIONS",
                                             conversion_specs=conversion))
    assert optimised == []
    assert specs_to_json(tracking) == as_json([POST_ENGAGEMENT, {"action.type": "rsvp", "event": EVENT}])


def test_promoted_pixel_is_tracked_once():
    custom = [{"action.type": "offsite_conversion", "fb_pixel": ["1", "2", "3"]}, PIXEL_SPEC]
    tracking, _ = effective_specs(ad("POST_ENGAGEMENT", "page_post", "POST_ENGAGEMENT", pixel=True,
                                     tracking_specs=custom))
    assert specs_to_json(tracking) == as_json(
        [{"action.type": "offsite_conversion", "fb_pixel": ["1", "2", "3"]}, PIXEL_SPEC, POST_ENGAGEMENT])


def test_duplicates_are_removed_after_normalisation():
    custom = [{"action.type": ["post_engagement"], "page": [PAGE], "post": [POST]},
              {"action.type": "like", "page": "PAGE_ID"}, {"action.type": "like", "page": PAGE}]
    tracking, _ = effective_specs(ad("POST_ENGAGEMENT", "page_post", tracking_specs=custom))
    assert specs_to_json(tracking) == as_json([POST_ENGAGEMENT, LIKE_PAGE])


def test_object_story_id_gives_page_and_post():
    the_ad = {"objective": "POST_ENGAGEMENT", "creative": {"kind": "page_post", "object_story_id": "123_456"}}
    tracking, _ = effective_specs(the_ad)
    assert specs_to_json(tracking) == as_json(
        [{"action.type": "post_engagement", "page": "123", "post": "456"}])


def test_application_from_the_promoted_object():
    the_ad = {"objective": "CANVAS_APP_ENGAGEMENT",
              "creative": {"kind": "canvas_app", "page_id": 1, "post_id": 2},
              "promoted_object": {"application_id": 777}}
    tracking, _ = effective_specs(the_ad)
    assert specs_to_json(tracking) == as_json(
        [{"action.type": "app_engagement", "application": "777"},
         {"action.type": "post_engagement", "page": "1", "post": "2"}])


@pytest.mark.parametrize(("objective", "kind", "goal", "promoted", "expected"), [
    ("PAGE_LIKES", "page_like", "PAGE_LIKES", {"page_id": "P9"},
     ([{"action.type": "page_engagement", "page": "P9"}, {"action.type": "like", "page": "P9"}],
      [{"action.type": "like", "page": "P9"}])),
    ("EVENT_RESPONSES", "event", None, {"event_id": 42},
     ([{"action.type": "rsvp", "response": r, "event": "42"} for r in ("yes", "maybe", "no")], [])),
    ("NONE", "offer", None, {"offer_id": "O7", "page_id": "P9"},
     ([{"action.type": "receive_offer", "offer": "O7", "offer.creator": "P9"}], [])),
])
def test_ids_from_the_promoted_object(objective, kind, goal, promoted, expected):
    # Spec section 4: placeholders are filled "from the ad's creative and promoted object".
    the_ad = {"objective": objective, "creative": {"kind": kind}, "promoted_object": promoted}
    if goal:
        the_ad["optimization_goal"] = goal
    tracking, conversion = effective_specs(the_ad)
    assert (specs_to_json(tracking), specs_to_json(conversion)) == tuple(map(as_json, expected))


def test_the_creative_id_wins_over_the_promoted_object():
    the_ad = {"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P1"},
              "promoted_object": {"page_id": "P9"}}
    tracking, _ = effective_specs(the_ad)
    assert specs_to_json(tracking) == as_json([{"action.type": "page_engagement", "page": "P1"}])


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_ad", "path", "message"),
    [
        ({"objective": "VIDEO_VIEWS", "creative": {"kind": "page_post"}}, "objective", "unknown objective"),
        ({"objective": 7, "creative": {"kind": "page_post"}}, "objective", "expected a string"),
        ({"objective": "NONE", "optimization_goal": "WINNING", "creative": {"kind": "page_post"}},
         "optimization_goal", "unknown optimization goal"),
        ({"objective": "NONE", "creative": {"kind": "carousel"}}, "creative.kind", "unknown creative kind"),
        ({"objective": "NONE"}, "creative.kind", "unknown creative kind"),
        ({"objective": "NONE", "creative": "page_post"}, "creative", "expected an object"),
        # An id's error says what is wrong with it, as a spec value's does.
        ({"objective": "NONE", "creative": {"kind": "domain", "url": "u", "page_id": 1.5e300}},
         "creative.page_id", "number is not finite or has too many digits"),
        ({"objective": "NONE", "creative": {"kind": "domain", "url": ""}}, "creative.url", "empty string"),
        ({"objective": "NONE", "creative": {"kind": "domain", "url": "u"}, "promoted_object": {"page_id": True}},
         "promoted_object.page_id", "expected a string or a number, got true"),
        ({"objective": "EVENT_RESPONSES", "creative": {"kind": "domain", "url": "u"}},
         "creative.kind", "no default tracking specs under objective EVENT_RESPONSES"),
        ({"objective": "NONE", "creative": {"kind": "mobile_app", "application_id": 1}},
         "creative.kind", "NONE objective"),
        ({"objective": "EVENT_RESPONSES", "creative": {"kind": "event"}},
         "tracking_specs", "EVENT_ID"),
        ({"objective": "CONVERSIONS", "optimization_goal": "OFFSITE_CONVERSIONS",
          "creative": {"kind": "domain", "url": "u", "page_id": "P"}},
         "promoted_object.pixel_id", "needs a pixel"),
        ({"objective": "CONVERSIONS", "creative": {"kind": "domain", "url": "u", "page_id": "P"}},
         "tracking_specs", "FACEBOOK_PIXEL_ID"),
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "tracking_specs": [{"action.type": "like", "post": "POST_ID"}]},
         "tracking_specs[0].post", "POST_ID"),
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "tracking_specs": [{"action.type": "like", "page": "P", "post.wall": "POST_ID"}]},
         'tracking_specs[0]["post.wall"]', "POST_ID"),  # a dotted key, as parse errors write it
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "tracking_specs": {"action.type": "like", "post": "POST_ID"}},
         "tracking_specs.post", "POST_ID"),  # one spec, not a list: no index
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "tracking_specs": ' {"action.type": "like", "post.wall": "POST_ID"}'},
         'tracking_specs["post.wall"]', "POST_ID"),
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "tracking_specs": b'[{"action.type": "like", "page": "P"}, {"action.type": "like", "post": "POST_ID"}]'},
         "tracking_specs[1].post", "POST_ID"),
        ({"objective": "NONE", "creative": {"kind": "mobile_app", "application_id": 1},
          "tracking_specs": [{"action.type": "mobile_app_install", "application": 1}]},
         "creative.kind", "NONE objective"),  # custom specs replace the row's specs, not the row
        ({"objective": "MOBILE_APP_INSTALLS", "creative": {"kind": "page_like", "page_id": 1},
          "tracking_specs": [{"action.type": "mobile_app_install", "application": 1}]},
         "creative.kind", "no default tracking specs under objective MOBILE_APP_INSTALLS"),
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "tracking_specs": [{"action.type": "like"}]},
         "tracking_specs[0]", "object reference"),
        ({"objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P"},
          "conversion_specs": {"action.type": "rsvp", "event": "E", "response": "sure"}},
         "conversion_specs.response", "yes, maybe or no"),
        ({"objective": "CANVAS_APP_ENGAGEMENT", "optimization_goal": "LINK_CLICKS",
          "creative": {"kind": "canvas_app", "page_id": 1, "post_id": 2, "application_id": 3}},
         "conversion_specs", "no default conversion spec"),
        ({"objective": "POST_ENGAGEMENT", "creative": {"kind": "page_post", "object_story_id": "123"}},
         "creative.object_story_id", "PAGEID_POSTID"),
        ({"objective": "POST_ENGAGEMENT", "creative": {"kind": "page_post", "page_id": ["P"]}},
         "creative.page_id", "expected a string or a number, got list"),
    ],
)
def test_errors_name_the_problem(the_ad, path, message):
    with pytest.raises(SpecError) as caught:
        effective_specs(the_ad)
    assert caught.value.path == path
    assert message in caught.value.reason
    assert caught.value.code == 100


def test_ad_must_be_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        effective_specs([("objective", "NONE")])


def test_custom_length_limit():
    the_ad = ad("PAGE_LIKES", "page_like", tracking_specs={"action.type": "like", "page": "P" * 100})
    effective_specs(the_ad)
    with pytest.raises(SpecError, match="limit of 50"):
        effective_specs(the_ad, max_length=50)


@pytest.mark.parametrize("form", [str, str.encode])
def test_an_empty_list_over_the_length_limit_is_too_long(form):
    """Blanks count toward the limit: "[", 10 MB of spaces and "]" is not "no specs"."""
    text = "[" + " " * 10_000_000 + "]"
    the_ad = ad("NONE", "page_like", tracking_specs=form(text))
    with pytest.raises(SpecError, match="longer than") as caught:
        effective_specs(the_ad)
    assert caught.value.path == "tracking_specs"
    assert effective_specs(ad("NONE", "page_like", tracking_specs=form("[" + " " * 4000 + "]")))[0]


def test_the_length_limit_holds_for_each_field_not_their_sum():
    """docs/action-specs.md: tracking_specs and conversion_specs are each at most max_length
    characters of JSON; the specs in effect (defaults added) may be longer."""
    spec = '{"action.type":"like","page":"%s"}' % ("P" * 60)  # 92 characters
    the_ad = ad("PAGE_LIKES", "page_like", optimization_goal="PAGE_LIKES", tracking_specs=spec,
                conversion_specs=spec.replace("like", "share"))
    tracking, conversion = effective_specs(the_ad, max_length=len(spec) + 1)
    assert len(specs_to_json(tracking)) > len(spec) + 1 and len(conversion) == 1
    with pytest.raises(SpecError) as caught:
        effective_specs({**the_ad, "conversion_specs": spec[:-1] + ', "post": "1"}'}, max_length=len(spec) + 1)
    assert caught.value.path == "conversion_specs"
