"""conversion-matcher: custom-conversion rules and action specs, compiled and matched in batches."""

from matcher.errors import MatcherError, RuleError, SpecError
from matcher.reference import evaluate
from matcher.rules import DEFAULT_LIMITS, Limits, Rule, parse_rule
from matcher.ruleset import CompiledRules, compile_rules

__all__ = [
    "MatcherError", "RuleError", "SpecError",
    "Rule", "Limits", "DEFAULT_LIMITS", "parse_rule", "evaluate",
    "CompiledRules", "compile_rules",
]
