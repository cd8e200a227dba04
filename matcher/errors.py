"""Errors raised for bad input, carrying the Graph API error code and the place of the problem."""

from __future__ import annotations

INVALID_PARAMETER = 100


class MatcherError(ValueError):
    """Base of the input errors: ``code`` is the Graph API error code, ``path`` the place."""

    code: int = INVALID_PARAMETER

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class RuleError(MatcherError):
    """A custom-conversion rule is malformed or breaks a limit (code 100)."""


class SpecError(MatcherError):
    """A tracking or conversion spec is malformed or breaks a limit (code 100)."""
