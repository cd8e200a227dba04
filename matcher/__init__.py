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

# Action specs (tracking and conversion specs): parsing, ads' effective specs, matching.
from matcher._actionset import USING_EXTENSION as ACTION_SET_COMPILED
from matcher._actionset import ActionSpecSet, compile_action_specs
from matcher.action_reference import action_matches, matching_spec_indices
from matcher.actionspecs import ActionSpec, parse_action_specs, specs_to_json
from matcher.effective import effective_specs

__all__ += [
    "ActionSpec", "parse_action_specs", "specs_to_json",
    "action_matches", "matching_spec_indices",
    "ActionSpecSet", "compile_action_specs", "ACTION_SET_COMPILED",
    "effective_specs",
]
