"""What every ``python -m bench NAME`` command line shares: its parser, checked option values,
and the refusal to report compiled figures without the compiled kernel.

The ``type=`` functions below turn a bad value into argparse's own error (``argument --events:
...``, exit status 2) instead of a ZeroDivisionError, an IndexError or a silent row of zeros
deep inside a run.
"""

from __future__ import annotations

import argparse
import importlib
import math
from typing import Callable


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m bench NAME``, described by the first paragraph of its module's doc."""
    return argparse.ArgumentParser(prog=f"python -m bench {name}", description=doc.split("\n\n")[0])


def _number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{'an integer' if kind is int else 'a number'} is needed, "
                                         f"got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"a finite number is needed, got {text!r}")
    return value


def _at_least(kind: type, low: int, *, inclusive: bool = True) -> Callable[[str], int | float]:
    """A ``type=`` function for a number of ``kind`` of at least ``low`` (more than ``low``
    when not ``inclusive``); the error quotes an integer as read and a float as given."""
    bound = f"{low} or more" if inclusive else f"more than {low}"

    def parse(text: str) -> int | float:
        value = _number(text, kind)
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value if kind is int else text}")
        return value

    return parse


# A count, a batch size, a number of repeats: 1 or more.
positive_int = _at_least(int, 1)
# A count where 0 means "none of these" (e.g. ``--registrations 0``).
nonnegative_int = _at_least(int, 0)
# Seconds, a rate, a fraction: more than 0.
positive_float = _at_least(float, 0, inclusive=False)
# An exponent or a weight where 0 means something (uniform, none).
nonnegative_float = _at_least(float, 0)


def comma_list(item):
    """A ``type=`` function for a comma list of ``item`` values (e.g. ``positive_int``); an empty
    text is an empty list (``--sweep ""``: none), and the bad item is named in the error."""
    def parse(text: str) -> list:
        values = []
        for part in text.split(","):
            if not part.strip():
                continue
            try:
                values.append(item(part.strip()))
            except argparse.ArgumentTypeError as error:
                where = f"{part.strip()!r} in {text!r}: " if part.strip() != text.strip() else ""
                raise argparse.ArgumentTypeError(f"{where}{error}") from None
        return values

    return parse


def weights(text: str) -> dict[str, int]:
    """``NAME=WEIGHT,...`` (``urls=5,regex=1``): whole weights of 0 or more, each name once.
    Which names exist is the caller's to check (it knows them)."""
    found: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, equals, weight = part.partition("=")
        name = name.strip()
        if not equals or not name:
            raise argparse.ArgumentTypeError(f"NAME=WEIGHT pairs separated by commas are needed, got {part.strip()!r}")
        if name in found:
            raise argparse.ArgumentTypeError(f"{name} is given twice")
        try:
            found[name] = nonnegative_int(weight.strip())
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{name}: {error}") from None
    if not found:
        raise argparse.ArgumentTypeError(f"NAME=WEIGHT pairs separated by commas are needed, got {text!r}")
    if not any(found.values()):
        raise argparse.ArgumentTypeError(f"at least one weight must be more than 0, got {text!r}")
    return found


# The compiled kernels a command may require, by the name it gives: (the module whose
# ``USING_EXTENSION`` says whether the compiled one loaded, how a refusal names it).
_KERNELS = {
    "rules": ("matcher._ruleset", "rule kernel (matcher._ruleset_c)"),
    "actions": ("matcher._actionset", "action-set kernel (matcher._actionset_c)"),
}


def require_compiled_kernel(command: str, kernel: str) -> None:
    """Stops ``command`` when the compiled ``kernel`` (a name in ``_KERNELS``: "rules",
    "actions") did not load: its figures would be the pure-Python twin's under the name
    "compiled"."""
    module, label = _KERNELS[kernel]
    if not importlib.import_module(module).USING_EXTENSION:
        raise SystemExit(f"python -m bench {command}: the compiled {label} is not in use, "
                         "so there are no compiled figures to report: build it (make build) and unset "
                         "MATCHER_NO_EXTENSIONS")


def kernels_loaded() -> str:
    """The line a report states its kernels with: the module each of ``matcher._ruleset`` and
    ``matcher._actionset`` actually imported, and whether it is the compiled one (their
    ``USING_EXTENSION``)."""
    from matcher import _actionset, _ruleset

    def state(module: str, compiled: bool) -> str:
        return f"{module} ({'compiled' if compiled else 'pure-Python twin'})"

    return (f"kernels loaded: rules {state(_ruleset.engine.__name__, _ruleset.USING_EXTENSION)}, "
            f"action specs {state(_actionset.ActionSpecSet.__module__, _actionset.USING_EXTENSION)}")
