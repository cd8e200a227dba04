"""AdService: ads with their tracking and conversion specs, and the specs in effect."""

from __future__ import annotations

from operator import attrgetter

import matcher
from matcher.actionspecs import action_value_text, decode_specs_text, key_path
from matcher.effective import PLACEHOLDERS, ad_ids

from server.auth import Principal
from server.core import Core
from server.errors import InvalidArgument, PermissionDenied, PixelNotAuthorised
from server.paging import fill, page_request, read_on
from server.gen.conversion_matcher.v1 import ads_pb2 as pb, ads_pb2_grpc
from server.registry import PIXEL_SELECTORS, AdSpecs, ad_fields, effective_ad_specs
from server.store import AdRecord

MAX_AD_ID_CHARS = 64
MAX_JSON_FIELD_CHARS = 16 * 1024


def _registration(record: AdRecord, specs: AdSpecs) -> pb.AdRegistration:
    return pb.AdRegistration(
        ad=pb.Ad(
            id=record.id,
            account_id=record.account_id,
            objective=record.objective,
            creative=record.creative,
            optimization_goal=record.optimization_goal,
            promoted_object=record.promoted_object,
            tracking_specs=record.tracking_specs,
            conversion_specs=record.conversion_specs,
        ),
        effective_tracking_specs=specs.tracking_json,
        effective_conversion_specs=specs.conversion_json,
    )


def _check_ad_id(ad_id: str) -> None:
    """Ids are chosen by callers and compared exactly: one with blanks at its start or end
    (``" 123"`` for ``"123"``) is refused rather than stored as another ad, as is one with a
    control character in it (``Core.text``). (Ads stored before these checks still load, and
    GetAd/DeleteAd still find them.)"""
    if ad_id != ad_id.strip():
        raise InvalidArgument(f"ad.id: {ad_id[:40]!r} has blanks at its start or end")


# The fields a placeholder takes an id from (``matcher.effective.PLACEHOLDERS``), each
# placeholder's in the order it tries them; the promoted pixel's own field first.
_ID_SOURCES = sorted(dict.fromkeys(source for sources in PLACEHOLDERS.values() for source in sources),
                     key=lambda source: source != "promoted_object.pixel_id")


def _pixel_place(record: AdRecord, pixel_id: str) -> str:
    """The place in the request that names ``pixel_id``: a value under a pixel selector in the
    ad's own specs (``ad.tracking_specs[0].fb_pixel[1]``), else the field of ``promoted_object``
    or ``creative`` holding it that the default specs, the promoted pixel's tracking or a
    placeholder (``FACEBOOK_PIXEL_ID``, ``PAGE_ID``) took it from (``ad.promoted_object.pixel_id``,
    ``ad.creative.page_id``, ``ad.creative.object_story_id``; as ``matcher.effective.ad_ids``
    reads them, a placeholder's from the source it takes, as ``effective_specs`` fills it);
    ``ad`` when none does. Read only for a refusal, from fields the registration already parsed."""
    fields = ad_fields(record)
    ids = ad_ids(fields)

    def source_place(source: str) -> str:
        section, _, name = source.partition(".")
        # a page or post id the creative's object_story_id gave (PAGEID_POSTID)
        return f"ad.{source}" if name in fields[section] else "ad.creative.object_story_id"

    for name in ("tracking_specs", "conversion_specs"):
        text = getattr(record, name)
        try:
            decoded = decode_specs_text(text, f"ad.{name}", len(text)) if text else None
        except matcher.SpecError:
            continue
        listed = isinstance(decoded, list)
        for index, spec in enumerate(decoded if listed else [decoded]):
            if not isinstance(spec, dict):
                continue
            place = f"ad.{name}[{index}]" if listed else f"ad.{name}"
            for selector in PIXEL_SELECTORS:
                value = spec.get(selector)
                values = value if isinstance(value, list) else [value]
                for position, item in enumerate(values):
                    text = action_value_text(item)
                    if text == pixel_id:
                        return key_path(place, selector) + (f"[{position}]" if isinstance(value, list) else "")
                    # a placeholder: the first of its sources the ad gives (matcher.effective._fill's choice)
                    source = next((source for source in PLACEHOLDERS.get(text, ()) if source in ids), None)
                    if source is not None and ids[source] == pixel_id:
                        return source_place(source)
    for source in _ID_SOURCES:  # the default specs' and the promoted pixel's tracking
        if ids.get(source) == pixel_id:
            return source_place(source)
    return "ad"


class AdServicer(ads_pb2_grpc.AdServiceServicer):
    def __init__(self, core: Core) -> None:
        self.core = core

    def _record(self, principal: Principal, ad: pb.Ad) -> AdRecord:
        _check_ad_id(self.core.text(ad.id, "ad.id", limit=MAX_AD_ID_CHARS))
        principal.require_account(ad.account_id, "ad.account_id")
        for name in ("objective", "optimization_goal"):
            if len(getattr(ad, name)) > MAX_AD_ID_CHARS:
                raise InvalidArgument(f"ad.{name}: more than {MAX_AD_ID_CHARS} characters")
        for name in ("creative", "promoted_object", "tracking_specs", "conversion_specs"):
            if len(getattr(ad, name)) > MAX_JSON_FIELD_CHARS:
                raise InvalidArgument(f"ad.{name}: more than {MAX_JSON_FIELD_CHARS} characters")
        return AdRecord(
            id=ad.id,
            account_id=ad.account_id,
            objective=ad.objective,
            creative=ad.creative,
            optimization_goal=ad.optimization_goal,
            promoted_object=ad.promoted_object,
            tracking_specs=ad.tracking_specs,
            conversion_specs=ad.conversion_specs,
        )

    def _owned(self, principal: Principal, ad_id: str, field: str = "ad_id") -> AdRecord:
        if not ad_id:
            raise InvalidArgument(f"{field}: required")
        record = self.core.store.get_ad(ad_id, field=field)
        principal.require_owner(record.account_id, f"ad {record.id}", field)
        return record

    def _put(self, request, context, *, replace_existing: bool) -> pb.AdRegistration:
        principal = self.core.authenticate(context)
        record = self._record(principal, request.ad)
        if replace_existing:
            self._owned(principal, record.id, "ad.id")
        try:
            stored, specs = self.core.registry.put_ad(record, replace_existing=replace_existing,
                                                      owners=principal.accounts if replace_existing else None)
        except PixelNotAuthorised as error:  # found in the write: the field that named it added here
            raise PermissionDenied(f"{_pixel_place(record, error.pixel_id)}: {error.message}") from None
        return _registration(stored, specs)

    def RegisterAd(self, request, context):
        return self._put(request, context, replace_existing=False)

    def ReplaceAd(self, request, context):
        return self._put(request, context, replace_existing=True)

    def GetAd(self, request, context):
        principal = self.core.authenticate(context)
        record = self._owned(principal, request.ad_id)
        specs = self.core.registry.snapshot.ad_specs.get(record.id) or effective_ad_specs(record)
        return _registration(record, specs)

    def ListAds(self, request, context):
        principal = self.core.authenticate(context)
        account = principal.require_account(request.account_id)
        page = page_request(request, "ListAds", account)
        specs = self.core.registry.snapshot.ad_specs
        records = read_on(lambda after, limit: self.core.store.list_ads(account, after, limit), attrgetter("id"),
                          page.after)
        ads, token = fill(
            page,
            # An ad this process has not loaded yet is left out (docs/service.md, "Consistency across processes").
            ((r.id, _registration(r, specs[r.id]) if r.id in specs else None) for r in records),
            reply_bytes=self.core.limits.max_message_bytes, what="ad",
        )
        return pb.ListAdsResponse(ads=ads, next_page_token=token)

    def DeleteAd(self, request, context):
        principal = self.core.authenticate(context)
        # Checked here too, before the writer lock and the ad set's recompilation, so a refused
        # delete costs one read; the store checks again in its write.
        record = self._owned(principal, request.ad_id)
        self.core.registry.delete_ad(record.id, owners=principal.accounts)
        return pb.DeleteAdResponse(success=True)
