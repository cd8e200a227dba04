"""The regular-expression dialect of ``regex_match``: RE2 syntax, checked before it is used.

Both matchers use RE2: the reference through ``pyre2`` and the kernel through the C++
library. pyre2 rewrites a few escapes on their way to RE2 (``\\Z``, octal and ``\\x{...}``
escapes, ``\\b`` in a class) and, for ``str`` patterns, widens ``\\d``/``\\w``/``\\s`` to
Unicode classes. So that both paths read a pattern the same way, patterns are compiled
with ``re2.ASCII`` (RE2's own classes) and the escapes pyre2 would rewrite are rejected
here, each by name, as are the PCRE constructs RE2 lacks. Nothing is approximated.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache

import re2

# RE2's memory budget for one compiled pattern; a pattern whose program does not fit is
# rejected as too large. The kernel compiles with the same budget.
REGEX_MAX_MEM = 1 << 20

_GROUP_CONSTRUCTS = (
    ("?=", "lookahead (?=...)"),
    ("?!", "negative lookahead (?!...)"),
    ("?<=", "lookbehind (?<=...)"),
    ("?<!", "negative lookbehind (?<!...)"),
    ("?>", "atomic group (?>...)"),
    ("?(", "conditional (?(...)...)"),
    ("?R", "recursion (?R)"),
    ("?P=", "named backreference (?P=name)"),
    ("?P>", "recursion (?P>name)"),
    ("?&", "recursion (?&name)"),
    ("?#", "comment group (?#...)"),
    ("?|", "branch reset (?|...)"),
    ("*", "backtracking control verb (*...)"),
)
_ESCAPES = {
    "Z": "\\Z is not supported: use \\z for the end of the text",
    "C": "\\C (any byte) is not supported",
    "Q": "\\Q...\\E quoting is not supported: escape characters one by one",
    "E": "\\Q...\\E quoting is not supported: escape characters one by one",
    "G": "\\G anchor is not supported",
    "K": "\\K (keep out) is not supported",
    "R": "\\R (any line break) is not supported",
    "X": "\\X (extended grapheme) is not supported",
    "g": "backreference \\g is not supported",
    "k": "named backreference \\k is not supported",
}


def check_syntax(pattern: str) -> None:
    """Raise ValueError naming the first construct outside the dialect."""
    if not pattern:
        raise ValueError("regex must not be empty")
    in_class = False
    brace = -1  # where the last "{" outside a class and not escaped is, until a "}" closes it
    repeated = -1  # where the last "}" that closes a counted repetition ({2}, {2,}, {2,5}) is
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("regex ends with a lone backslash")
            nxt = pattern[i + 1]
            if nxt.isdigit() and nxt.isascii():
                what = "octal escape" if nxt == "0" else f"backreference \\{nxt}"
                raise ValueError(f"{what} is not supported (use \\xHH for a character code)")
            if nxt == "x" and pattern[i + 2 : i + 3] == "{":
                raise ValueError("\\x{...} escapes are not supported: use \\xHH or the character itself")
            if nxt in _ESCAPES:
                raise ValueError(_ESCAPES[nxt])
            if nxt == "b" and in_class:
                raise ValueError("\\b inside a character class is not supported: use \\x08")
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            elif ch == "[" and (posix := _POSIX_CLASS.match(pattern, i)):
                i = posix.end()  # [:alpha:] inside a class: its "]" does not end the class
                continue
        elif ch == "[":
            in_class = True
            # RE2 reads a "]" right after "[" or "[^" as a literal, not the end of the class.
            j = i + 1
            if pattern[j : j + 1] == "^":
                j += 1
            if pattern[j : j + 1] == "]":
                j += 1
            i = j
            continue
        elif ch == "{":
            brace = i
        elif ch == "}":  # only the first "}" after a "{" can close a repetition: tested once, here
            repeated = i if brace >= 0 and _REPETITION.fullmatch(pattern, brace, i + 1) else -1
            brace = -1
        elif ch == "(" and pattern[i + 1 : i + 2] in ("?", "*"):
            for prefix, name in _GROUP_CONSTRUCTS:
                if pattern.startswith(prefix, i + 1):
                    raise ValueError(f"{name} is not supported by RE2")
            if _NUMBERED_CALL.match(pattern, i + 1):
                raise ValueError("recursion (?N) / (?+N) / (?-N) is not supported by RE2")
            if (flags := _FLAG_GROUP.match(pattern, i + 1)) and (unknown := set(flags[1]) - set("imsU-")):
                raise ValueError(f"flag {min(unknown)} in (?{flags[1]}...) is not supported by RE2 "
                                 "(its flags are i, m, s and U)")
        elif ch == "+" and i > 0 and pattern[i - 1] in "*+?}" and not _escaped(pattern, i - 1) \
                and (pattern[i - 1] != "}" or repeated == i - 1):
            raise ValueError("possessive quantifier is not supported by RE2")
        i += 1


# PCRE's numbered subroutine calls: (?1), (?+1), (?-1), (?0).
_NUMBERED_CALL = re.compile(r"\?[+-]?[0-9]")
# A flag group, (?flags) or (?flags:...): RE2 knows i, m, s and U (and "-" to clear them).
_FLAG_GROUP = re.compile(r"\?([A-Za-z-]+)[:)]")
# RE2's POSIX classes inside a bracket expression ([[:alpha:]], [[:^digit:]]); an unknown
# name is RE2's error to report.
_POSIX_CLASS = re.compile(r"\[:\^?[A-Za-z]+:\]")
# A counted repetition RE2 reads as one: {n}, {n,} or {n,m}. Other braces ({,3}, {x}) are
# literal text in RE2, so a "+" after their "}" repeats that "}". Only the last "{" can
# open the repetition a "}" ends, so the scan keeps where that is and matches from it
# (searching back from each "}+" made a run of them quadratic).
_REPETITION = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")


def _escaped(pattern: str, i: int) -> bool:
    backslashes = 0
    while i - 1 - backslashes >= 0 and pattern[i - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def check_regex(pattern: str) -> None:
    """Raise ValueError with the reason when a pattern is not in the dialect (compiles, keeps nothing)."""
    _compile(pattern)


@lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> re2.Pattern:
    """A checked, compiled pattern for evaluation (cached); raises ValueError like ``check_regex``."""
    return _compile(pattern)


def _compile(pattern: str) -> re2.Pattern:
    check_syntax(pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyre2 warns before falling back to ``re``; we refuse instead
        try:
            compiled = re2._compile(pattern, re2.ASCII, REGEX_MAX_MEM)
        except re2.RegexError as err:
            raise ValueError(f"invalid regex: {err}") from None
    if not isinstance(compiled, re2.Pattern):
        # pyre2 handed the pattern to Python's ``re``: RE2 itself could not take it.
        raise ValueError("regex is not valid RE2 syntax or its program is too large")
    return compiled


def search(pattern: str, text: str) -> bool:
    """True when the pattern matches somewhere in the text (RE2 search semantics)."""
    return compile_regex(pattern).search(text) is not None
