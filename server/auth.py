"""Access tokens: who may act for which ad accounts, and who may send events.

The token file is JSON::

    {"tokens": {"<token>": {"accounts": ["act_1", "act_2"], "ingest": true}}}

``accounts`` are the ad accounts the token acts for; ``ingest`` lets it call the
classification service. Callers send ``authorization: Bearer <token>`` metadata.
Tokens are never logged and never returned; errors name the account, never the token.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import grpc

from server.errors import InvalidArgument, PermissionDenied, Unauthenticated, not_the_owner

ACCOUNT_ID = re.compile(r"act_[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Principal:
    """What one token may do."""

    accounts: frozenset[str]
    ingest: bool

    def require_account(self, account_id: str, field: str = "account_id") -> str:
        """Return ``account_id`` when well-formed and held by this token."""
        check_account_id(account_id, field)
        if account_id not in self.accounts:
            raise PermissionDenied(f"{field}: Permissions error: this access token cannot act for ad account {account_id}")
        return account_id

    def require_owner(self, account_id: str, what: str, field: str) -> None:
        """Allow when the token holds ``account_id``, the account ``what`` belongs to
        (``what`` named by the request's ``field``)."""
        if account_id not in self.accounts:
            raise not_the_owner(what, field)

    def require_any(self, accounts: frozenset[str] | set[str], what: str, field: str) -> None:
        """Allow when the token holds at least one of ``accounts`` (those authorised on ``what``,
        named by the request's ``field``)."""
        if not self.accounts & set(accounts):
            raise PermissionDenied(
                f"{field}: Permissions error: no ad account of this access token is authorised on {what}")

    def require_ingest(self) -> None:
        """Allow when the token may send events and actions for classification."""
        if not self.ingest:
            raise PermissionDenied("Permissions error: this access token has no ingest scope for classification")


def account_id_problem(account_id: object) -> str | None:
    """What is wrong with ``account_id`` as an ad account id, or None when it is one: ``act_``
    and a number of at most 20 digits written without leading zeros (``act_00003`` would be
    stored apart from ``act_3``, which it means; no account is ``act_0``)."""
    if isinstance(account_id, str) and ACCOUNT_ID.fullmatch(account_id):
        return None
    if isinstance(account_id, str) and re.fullmatch(r"act_0[0-9]{0,19}", account_id):
        number = account_id[4:].lstrip("0")
        return f"an ad account id has no leading zeros (act_{number})" if number else \
            "an ad account id is act_ and a number from 1 up"
    return "expected an ad account id like act_123"


def check_account_id(account_id: str, field: str = "account_id") -> str:
    problem = account_id_problem(account_id)
    if problem is not None:
        raise InvalidArgument(f"{field}: {problem}, got {account_id!r}")
    return account_id


class TokenTable:
    """Tokens loaded from a file (or given directly, e.g. by tests)."""

    def __init__(self, tokens: Mapping[str, Principal]) -> None:
        self._tokens = dict(tokens)

    @classmethod
    def from_mapping(cls, data: Mapping) -> TokenTable:
        """Build from the decoded file; raises ValueError naming the bad entry (never the token)."""
        entries = data.get("tokens") if isinstance(data, Mapping) else None
        if not isinstance(entries, Mapping):
            raise ValueError('token file: expected {"tokens": {TOKEN: {"accounts": [...], "ingest": bool}}}')
        tokens = {}
        for position, (token, entry) in enumerate(entries.items()):
            where = f"token file: entry {position}"
            if not isinstance(token, str) or not token or any(c.isspace() for c in token):
                raise ValueError(f"{where}: a token must be a non-empty string without spaces")
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: expected an object with accounts and ingest")
            accounts = entry.get("accounts", [])
            if not isinstance(accounts, list):
                raise ValueError(f"{where}: accounts must be a list of ad account ids like act_123")
            for index, account in enumerate(accounts):
                problem = account_id_problem(account)
                if problem is not None:
                    shown = repr(account[:40]) if isinstance(account, str) else type(account).__name__
                    raise ValueError(f"{where}: accounts[{index}]: {problem}, got {shown}")
            ingest = entry.get("ingest", False)
            if not isinstance(ingest, bool):
                raise ValueError(f"{where}: ingest must be true or false")
            tokens[token] = Principal(frozenset(accounts), ingest)
        return cls(tokens)

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        with open(path, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"token file {path}: not JSON ({error.msg} at line {error.lineno})") from None
        return cls.from_mapping(data)

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        """The caller's principal, from ``authorization: Bearer <token>`` metadata."""
        header = None
        for key, value in context.invocation_metadata():
            if key == "authorization":
                header = value
                break
        if header is None:
            raise Unauthenticated("Invalid OAuth 2.0 Access Token: no authorization metadata (want 'Bearer <token>')")
        scheme, _, token = header.partition(" ")
        principal = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Unauthenticated("Invalid OAuth 2.0 Access Token: the token is unknown")
        return principal
