"""Ids of the objects the service creates (pixels, custom conversions).

One generator for all of them. The spec leaves the format open; like the Graph API's ids,
they are numeric strings: 18 digits, the first not 0, drawn at random (``secrets``), so two
processes creating at once need no shared counter and collisions are negligible (the
store's primary keys still refuse a duplicate). Ids are opaque to everything else: nothing
parses them, so ids stored by earlier versions (15-digit pixel ids) stay valid.
Ads keep the id their caller registers them under.
"""

from __future__ import annotations

import secrets

__all__ = ["ID_DIGITS", "new_id"]

ID_DIGITS = 18


def new_id() -> str:
    """A new random id: ``ID_DIGITS`` decimal digits, no leading zero."""
    low = 10 ** (ID_DIGITS - 1)
    return str(low + secrets.randbelow(9 * low))
