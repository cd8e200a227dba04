"""Shared test switches: ``--run-slow`` runs the soak/load/scale tests the default run skips."""

from collections.abc import Mapping

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# -- rule matching implementations ---------------------------------------------------------
from matcher import _ruleset_py  # noqa: E402
from matcher.reference import match_rules  # noqa: E402
from matcher.ruleset import compile_rules  # noqa: E402

try:
    from matcher import _ruleset_c
except ImportError:  # the guard test in test_ruleset.py reports this
    _ruleset_c = None


def _engine_match(engine):
    def run(rules, events, sources=None):
        return compile_rules(rules, sources, engine=engine).match_batch(events)
    return run


# The rule engines: the twin, and the kernel when it built.
ENGINES = [_ruleset_py] + ([_ruleset_c] if _ruleset_c is not None else [])

IMPLEMENTATIONS = {"reference": match_rules, "twin": _engine_match(_ruleset_py)}
if _ruleset_c is not None:
    IMPLEMENTATIONS["compiled"] = _engine_match(_ruleset_c)


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def match_all(request):
    """``match_all(rules, events, sources=None) -> [[ids] per event]`` for each implementation."""
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def holds(match_all):
    """``holds(rule, event) -> bool`` for each implementation."""
    def check(rule, event):
        return match_all({"r": rule}, [event])[0] == ["r"]
    return check


# -- action-spec sets ------------------------------------------------------------------------
from matcher import _actionset_py  # noqa: E402

try:
    from matcher import _actionset_c
except ImportError:  # test_action_matching.test_compiled_kernel_loaded reports it
    _actionset_c = None

# Factories ``ads -> set`` of the compiled kernel (None when it did not build) and its twin.
ACTION_SETS = {"compiled": _actionset_c.ActionSpecSet if _actionset_c is not None else None,
               "twin": _actionset_py.ActionSpecSet}


def pick_action_set(implementations: dict, name: str):
    """The factory ``name`` of ``implementations``; skips when it is the kernel and it did not build."""
    factory = implementations[name]
    if factory is None:
        pytest.skip("compiled kernel not built (test_compiled_kernel_loaded fails for this)")
    return factory


class FrozenMapping(Mapping):
    """A read-only mapping that is not a dict: inputs must work as any ``Mapping``."""

    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)
