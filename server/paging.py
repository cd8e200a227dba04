"""Pages of list replies: ``page_size``, ``page_token`` and ``next_page_token`` (AIP-158).

An account's ads or pixels, a pixel's snippets and authorised accounts, and a custom
conversion's stats rows have no bound a reply could hold, so their calls answer one page at
a time:

- A page holds at most ``page_size`` items (0: ``MAX_PAGE_SIZE``; more is taken as
  ``MAX_PAGE_SIZE``, or a call's own ``largest``: stats have none; negative is code 100). It also ends before the reply would pass the
  server's message size limit, so a short page is not necessarily the last: an empty
  ``next_page_token`` is.
- Items come in key order (ad id, pixel id, account id; (hour, key) for stats), and a
  token holds the key of the last item its page covered: the next page starts strictly
  after it. Items created or deleted between pages therefore never make the other items
  repeat or go missing.
- A token names its call and scope (the account or pixel listed; the conversion and
  aggregation). Given to another call or scope, or not one this service wrote, it is code
  100 on ``page_token``.
- A token is ``[call, scope, key]`` in JSON, base64url without padding: the key as it is
  (a string; for stats, ``[hour, key]``), one level of encoding.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

from google.protobuf.message import Message

from matcher.values import is_text
from server.errors import InvalidArgument, LimitExceeded

__all__ = ["MAX_PAGE_SIZE", "REPLY_RESERVE_BYTES", "Page", "fill", "first_page", "page_request", "read_on", "text_key"]

MAX_PAGE_SIZE = 1000
REPLY_RESERVE_BYTES = 4096  # what a reply holds besides its items: the token, a pixel id
READ_CHUNK = 64  # rows first read from the store at a time: a page that ends on bytes reads few past it
MAX_READ_CHUNK = 4096  # ... doubling per read up to this, so a long page takes few reads

T = TypeVar("T")
K = TypeVar("K")
M = TypeVar("M", Message, str)


@dataclass(frozen=True)
class Page:
    """One page asked for: ``call``/``scope`` bind its tokens; ``after`` is the key it starts
    after (None: the first page), as ``page_request``'s ``key`` read it from the token."""

    call: str
    scope: str
    size: int
    after: Any

    def token(self, last_key: Any) -> str:
        """The token of the page after ``last_key`` (JSON-able: a string, or a tuple of them
        and ints, which JSON writes as a list)."""
        text = json.dumps([self.call, self.scope, last_key], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def text_key(key: object) -> str | None:
    """A token's key that is text (an id), or None when it is something else."""
    return key if isinstance(key, str) and is_text(key) else None


def page_request(request: Message, call: str, scope: str, largest: int = MAX_PAGE_SIZE,
                 key: Callable[[object], Any] = text_key) -> Page:
    """The page ``request`` asks for (its ``page_size`` and ``page_token``); code 100 when bad.
    A ``page_size`` of 0 or over ``largest`` asks for ``largest`` items. ``key`` reads the key
    a token holds (decoded JSON) as the call's key, or gives None when it is not one."""
    size = request.page_size
    if size < 0:
        default = f"the default, {largest}" if largest == MAX_PAGE_SIZE else "as many as fit"
        raise InvalidArgument(f"page_size: {size} is negative (0 asks for {default})")
    return Page(call, scope, min(size or largest, largest), _after(request.page_token, call, scope, key))


def first_page(call: str, scope: str) -> Page:
    """The page a request with neither ``page_size`` nor ``page_token`` asks for."""
    return Page(call, scope, MAX_PAGE_SIZE, None)


_NOT_OURS = "page_token: not a next_page_token this service returned"


def _after(token: str, call: str, scope: str, key: Callable[[object], Any]) -> Any:
    if not token:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 3
            and all(isinstance(part, str) and is_text(part) for part in decoded[:2])):
        raise InvalidArgument(_NOT_OURS)
    if decoded[:2] != [call, scope]:
        raise InvalidArgument(
            f"page_token: returned by {decoded[0]} for {decoded[1]!r}, not by {call} for {scope!r}; "
            "start again without a token"
        )
    after = key(decoded[2])
    if after is None:
        raise InvalidArgument(_NOT_OURS)
    return after


def _entry_bytes(item: Message | str) -> int:
    """Bytes ``item`` takes as one element of a repeated field numbered under 16."""
    size = len(item.encode()) if isinstance(item, str) else item.ByteSize()
    return 1 + (size.bit_length() + 6) // 7 + size if size else 2


def read_on(read: Callable[[K | None, int], list[T]], key: Callable[[T], K], after: K | None) -> Iterator[T]:
    """Every row after ``after``, lazily: ``read(after, limit)`` gives the first ``limit`` rows
    after a key, in key order, and is called again only when a page needs more (for twice as
    many rows each time, up to ``MAX_READ_CHUNK``: a page reads at most about as many rows past
    its end as it took)."""
    chunk = READ_CHUNK
    while True:
        rows = read(after, chunk)
        yield from rows
        if len(rows) < chunk:
            return
        after = key(rows[-1])
        chunk = min(2 * chunk, MAX_READ_CHUNK)


def fill(page: Page, items: Iterable[tuple[K, M | None]], *, reply_bytes: int,
         what: str) -> tuple[list[M], str]:
    """The messages of one page and the next page's token ('' when this page is the last).

    ``items`` are (key, message) in key order, every item after ``page.after`` (read lazily:
    the page takes what fits and looks one item further); a message may also be a string, an
    element of a repeated string field. A message of None is an item left
    out of the listing that the page still moves past. The next page's token holds this
    page's last key (``Page.token``). ``reply_bytes`` is the server's message size limit; an
    item that alone would pass it is code 368 naming ``what`` and its key.
    """
    budget = reply_bytes - REPLY_RESERVE_BYTES
    messages: list[M] = []
    used = 0
    last = None
    for key, message in items:
        if len(messages) == page.size:
            return messages, page.token(last)
        if message is not None:
            size = _entry_bytes(message)
            if used + size > budget:
                if not messages:
                    shown = key if isinstance(key, str) else json.dumps(key)
                    raise LimitExceeded(
                        f"{what} {shown}: {size} bytes, more than a reply can hold ({reply_bytes} bytes, "
                        "the server's --max-message-bytes)"
                    )
                return messages, page.token(last)
            messages.append(message)
            used += size
        last = key
    return messages, ""
