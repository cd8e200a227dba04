"""Selects the compiled action-spec set, or its pure-Python twin.

The compiled kernel (``_actionset_c``) is used unless the environment sets
``MATCHER_NO_EXTENSIONS=1`` or it cannot be imported (not built on this machine).  Both expose
``ActionSpecSet`` and ``compile_action_specs`` with the same behaviour; ``USING_EXTENSION``
says which one this process runs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__all__ = ["USING_EXTENSION", "ActionSpecSet", "compile_action_specs"]

USING_EXTENSION: bool

if TYPE_CHECKING:
    from matcher._actionset_py import ActionSpecSet, compile_action_specs

    USING_EXTENSION = False
elif os.environ.get("MATCHER_NO_EXTENSIONS", "") not in ("", "0"):
    from matcher._actionset_py import ActionSpecSet, compile_action_specs

    USING_EXTENSION = False
else:
    try:
        from matcher._actionset_c import ActionSpecSet, compile_action_specs
    except ImportError:  # not built: the twin gives the same answers, only slower
        from matcher._actionset_py import ActionSpecSet, compile_action_specs

        USING_EXTENSION = False
    else:
        USING_EXTENSION = True
