"""Pick the rule-matching engine: the compiled kernel, or its pure-Python twin.

``MATCHER_NO_EXTENSIONS=1`` forces the twin; so does a kernel that fails to import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

USING_EXTENSION = False
if TYPE_CHECKING:
    from matcher import _ruleset_py as engine
elif os.environ.get("MATCHER_NO_EXTENSIONS") == "1":
    from matcher import _ruleset_py as engine
else:
    try:
        from matcher import _ruleset_c as engine

        USING_EXTENSION = True
    except ImportError:  # no compiler at install time: the twin gives the same answers
        from matcher import _ruleset_py as engine

Matcher, Partition = engine.Matcher, engine.Partition

__all__ = ["engine", "Matcher", "Partition", "USING_EXTENSION"]
