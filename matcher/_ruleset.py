"""Pick the rule-matching engine: the compiled kernel, or its pure-Python twin.

``MATCHER_NO_EXTENSIONS=1`` forces the twin; so does a kernel that fails to import.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

USING_EXTENSION = False
if TYPE_CHECKING:
    from matcher._ruleset_py import Matcher, Partition
elif os.environ.get("MATCHER_NO_EXTENSIONS") == "1":
    from matcher._ruleset_py import Matcher, Partition
else:
    try:
        from matcher._ruleset_c import Matcher, Partition

        USING_EXTENSION = True
    except ImportError:  # no compiler at install time: the twin gives the same answers
        from matcher._ruleset_py import Matcher, Partition

__all__ = ["Matcher", "Partition", "USING_EXTENSION"]
