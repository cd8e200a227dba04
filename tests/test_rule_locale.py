"""Numbers mean the same whatever locale the process sets (the kernel parses in the C locale)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import matcher._ruleset

PROBE = """
import locale, sys
locale.setlocale(locale.LC_ALL, "de_DE.UTF-8")
assert locale.localeconv()["decimal_point"] == ","
import matcher
from matcher.reference import evaluate
rules = {"gt": {"value": {"gt": 1.2}}, "lt": {"value": {"lt": 1.7}}, "eq": {"value": {"eq": 1.5}}}
data = {"custom_data": {"value": "1.5"}}
compiled = matcher.compile_rules(rules)
print(sorted(compiled.match(data)), sorted(r for r, rule in rules.items() if evaluate(rule, data)))
"""


@pytest.fixture(scope="module")
def comma_locale(tmp_path_factory) -> Path:
    """A compiled de_DE.UTF-8 locale (decimal point ","), built with localedef."""
    if shutil.which("localedef") is None or not Path("/usr/share/i18n/locales/de_DE").exists():
        pytest.skip("no localedef or no de_DE locale source to build a comma-decimal locale from")
    where = tmp_path_factory.mktemp("locales")
    subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(where / "de_DE.UTF-8")],
                   check=True, capture_output=True)
    return where


def test_a_comma_decimal_locale_does_not_change_what_a_number_means(comma_locale):
    assert matcher._ruleset.USING_EXTENSION
    env = {**os.environ, "LOCPATH": str(comma_locale), "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True).stdout
    # Before: the kernel read "1.5" as 1 under de_DE (strtod stops at the "."): ['lt'] only.
    assert out.split("\n")[0] == "['eq', 'gt', 'lt'] ['eq', 'gt', 'lt']"
