"""PixelService: conversion pixels, their authorised ad accounts and snippets."""

from __future__ import annotations

from decimal import Decimal
from html import escape
from operator import attrgetter
from typing import Iterator

from server.auth import Principal, check_account_id
from server.core import Core
from server.errors import InvalidArgument, LimitExceeded, PermissionDenied, one_of
from server.gen.conversion_matcher.v1 import pixels_pb2, pixels_pb2_grpc
from server.paging import Page, fill, first_page, page_request, read_on
from server.store import PixelRecord

PIXEL_TAGS = ("CHECKOUT", "REGISTRATION", "LEAD", "KEY_PAGE_VIEW", "ADD_TO_CART", "OTHER")
ACTIVE_WINDOW_SECONDS = 24 * 3600
MAX_SNIPPET_CENTS = 10**12


def parse_tag(tag: str) -> str:
    """The stored (upper-case) tag; OTHER when empty."""
    if not tag:
        return "OTHER"
    return one_of(tag, PIXEL_TAGS, "tag")


def pixel_status(last_firing_time: int | None, now: int) -> str:
    if last_firing_time is None:
        return "UNVERIFIED"
    return "ACTIVE" if now - last_firing_time < ACTIVE_WINDOW_SECONDS else "INACTIVE"


def snippet(pixel: PixelRecord, account_id: str, cents: int) -> str:
    """The conversion-page JavaScript; the value is stated in dollars (cents / 100)."""
    dollars = str(Decimal(cents).scaleb(-2))
    name = escape(pixel.name).replace("--", "- -")  # keep the name inside the HTML comment
    return (
        f"<!-- Facebook Conversion Code for {name} -->\n"
        '<script type="text/javascript">\n'
        "var fb_param = {};\n"
        f"fb_param.pixel_id = '{pixel.id}';\n"
        f"fb_param.value = '{dollars}';\n"
        "fb_param.currency = 'USD';\n"
        f"fb_param.ad_account_id = '{account_id}';\n"
        "(function(){\n"
        "  var fpw = document.createElement('script');\n"
        "  fpw.async = true;\n"
        "  fpw.src = '//connect.facebook.net/en_US/fp.js';\n"
        "  var ref = document.getElementsByTagName('script')[0];\n"
        "  ref.parentNode.insertBefore(fpw, ref);\n"
        "})();\n"
        "</script>\n"
        '<noscript><img height="1" width="1" alt="" style="display:none" '
        f'src="https://www.facebook.com/offsite_event.php?id={pixel.id}&amp;value={dollars}&amp;currency=USD" />'
        "</noscript>"
    )


class PixelServicer(pixels_pb2_grpc.PixelServiceServicer):
    """Pixels are readable by every ad account authorised on them; only the creator
    account changes, deletes or shares them.

    Only creating and deleting a pixel goes through the registry (classification records
    the events of registered pixels). Names, tags and authorised accounts are read from the
    store on every call, by every process, so changing them is a plain store write."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # -- helpers -------------------------------------------------------------------------

    def _message(self, pixel: PixelRecord) -> pixels_pb2.Pixel:
        message = pixels_pb2.Pixel(
            id=pixel.id,
            name=pixel.name,
            tag=pixel.tag,
            status=pixel_status(pixel.last_firing_time, self.core.now()),
            creator=pixel.creator,
            js_pixel=snippet(pixel, pixel.creator, 1),
            creation_time=pixel.creation_time,
        )
        if pixel.last_firing_time is not None:
            message.last_firing_time = pixel.last_firing_time
        return message

    def _readable(self, principal: Principal, pixel_id: str) -> PixelRecord:
        pixel = self.core.store.get_pixel(_pixel_id(pixel_id), among=principal.accounts)
        principal.require_any(set(pixel.authorized_accounts), f"pixel {pixel.id}", "pixel_id")
        return pixel

    def _managed(self, principal: Principal, pixel_id: str) -> PixelRecord:
        """The pixel when the caller is its creator (its accounts are not read: none of the
        calls that change a pixel needs them)."""
        pixel = self.core.store.get_pixel(_pixel_id(pixel_id), among=())
        if pixel.creator not in principal.accounts:
            self._readable(principal, pixel.id)  # a caller who cannot even read it is told so
            raise PermissionDenied(
                f"pixel_id: Permissions error: only the creator account {pixel.creator} can change pixel {pixel.id}"
            )
        return pixel

    def _accounts(self, account_ids) -> list[str]:
        if not account_ids:
            raise InvalidArgument("account_ids: give at least one ad account id")
        if len(account_ids) > self.core.limits.max_accounts_per_call:
            raise LimitExceeded(
                f"account_ids: {len(account_ids)} accounts, more than {self.core.limits.max_accounts_per_call} per call"
            )
        return [check_account_id(a, f"account_ids[{i}]") for i, a in enumerate(account_ids)]

    def _accounts_after(self, pixel_id: str, after: str | None) -> Iterator[str]:
        """The pixel's authorised accounts after ``after``, read from the store as needed."""
        return read_on(lambda after, limit: self.core.store.authorized_accounts(pixel_id, after, limit), str, after)

    def _authorised(self, pixel_id: str, page: Page) -> pixels_pb2.AuthorizedAdAccounts:
        """One page of the pixel's authorised accounts."""
        account_ids, token = fill(page, ((a, a) for a in self._accounts_after(pixel_id, page.after)),
                                  reply_bytes=self.core.limits.max_message_bytes, what="account id")
        return pixels_pb2.AuthorizedAdAccounts(pixel_id=pixel_id, account_ids=account_ids, next_page_token=token)

    # -- calls --------------------------------------------------------------------------------

    def CreatePixel(self, request, context):
        principal = self.core.authenticate(context)
        account = principal.require_account(request.account_id)
        name = self.core.text(request.name, "name")
        tag = parse_tag(request.tag)
        now = self.core.now()
        pixel = self.core.registry.add_pixel(lambda: self.core.store.create_pixel(name, tag, account, now))
        return self._message(pixel)

    def GetPixel(self, request, context):
        principal = self.core.authenticate(context)
        return self._message(self._readable(principal, request.pixel_id))

    def ListPixels(self, request, context):
        principal = self.core.authenticate(context)
        account = principal.require_account(request.account_id)
        page = page_request(request, "ListPixels", account)
        records = read_on(lambda after, limit: self.core.store.list_pixels(account, after, limit),
                          attrgetter("id"), page.after)
        pixels, token = fill(
            page, ((p.id, self._message(p)) for p in records),
            reply_bytes=self.core.limits.max_message_bytes, what="pixel",
        )
        return pixels_pb2.ListPixelsResponse(pixels=pixels, next_page_token=token)

    def UpdatePixel(self, request, context):
        principal = self.core.authenticate(context)
        name = self.core.text(request.name, "name") if request.HasField("name") else None
        tag = parse_tag(request.tag) if request.HasField("tag") else None
        if request.HasField("tag") and not request.tag:
            raise InvalidArgument("tag: must not be empty when given")
        if name is None and tag is None:
            raise InvalidArgument("nothing to update: give name and/or tag")
        pixel = self._managed(principal, request.pixel_id)
        return self._message(self.core.store.update_pixel(pixel.id, name, tag))

    def DeletePixel(self, request, context):
        principal = self.core.authenticate(context)
        pixel = self._managed(principal, request.pixel_id)
        # The refusal while conversions count it names the caller's by id, the others' per account.
        self.core.registry.remove_pixel(pixel.id, lambda pixel_id: self.core.store.delete_pixel(pixel_id,
                                                                                             principal.accounts))
        return pixels_pb2.DeletePixelResponse(success=True)

    def ListAuthorizedAdAccounts(self, request, context):
        principal = self.core.authenticate(context)
        pixel = self._readable(principal, request.pixel_id)
        return self._authorised(pixel.id, page_request(request, "ListAuthorizedAdAccounts", pixel.id))

    def AddAuthorizedAdAccounts(self, request, context):
        principal = self.core.authenticate(context)
        accounts = self._accounts(request.account_ids)
        pixel = self._managed(principal, request.pixel_id)
        limit = self.core.limits.max_accounts_per_pixel
        self.core.store.add_authorized_accounts(pixel.id, accounts, limit)
        return self._authorised(pixel.id, first_page("ListAuthorizedAdAccounts", pixel.id))

    def RemoveAuthorizedAdAccounts(self, request, context):
        principal = self.core.authenticate(context)
        accounts = self._accounts(request.account_ids)
        pixel = self._managed(principal, request.pixel_id)
        if pixel.creator in accounts:
            raise InvalidArgument(f"account_ids: the creator {pixel.creator} is always authorised and cannot be removed")
        self.core.store.remove_authorized_accounts(pixel.id, accounts)
        return self._authorised(pixel.id, first_page("ListAuthorizedAdAccounts", pixel.id))

    def GetPixelSnippets(self, request, context):
        principal = self.core.authenticate(context)
        cents = request.value if request.HasField("value") else 1
        if not 0 <= cents <= MAX_SNIPPET_CENTS:
            raise InvalidArgument(f"value: {cents} cents is outside 0..{MAX_SNIPPET_CENTS}")
        pixel = self._readable(principal, request.pixel_id)
        page = page_request(request, "GetPixelSnippets", pixel.id)
        accounts = self._accounts_after(pixel.id, page.after)
        snippets, token = fill(
            page,
            ((a, pixels_pb2.PixelSnippet(account_id=a, js=snippet(pixel, a, cents))) for a in accounts),
            reply_bytes=self.core.limits.max_message_bytes, what="snippet for",
        )
        return pixels_pb2.PixelSnippets(pixel_id=pixel.id, snippets=snippets, next_page_token=token)


def _pixel_id(pixel_id: str) -> str:
    if not pixel_id:
        raise InvalidArgument("pixel_id: required")
    return pixel_id


__all__ = ["PixelServicer", "PIXEL_TAGS", "parse_tag", "pixel_status", "snippet"]
