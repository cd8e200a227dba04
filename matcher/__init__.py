"""conversion-matcher: custom-conversion rules and action specs, compiled and matched in batches."""

from matcher.errors import MatcherError, RuleError, SpecError

__all__ = ["MatcherError", "RuleError", "SpecError"]
