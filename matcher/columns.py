"""Columns held in flat buffers, for ``CompiledRules.match_columns``: Arrow's layouts, zero-copy.

A batch job reading Parquet or Arrow has its events as buffers already: a string column is
one UTF-8 buffer plus an offsets buffer, a number column one buffer of 8-byte values, and
either may carry a validity bitmap (bit i clear: value i is missing). ``TextColumn`` and
``NumberColumn`` wrap those buffers so the compiled kernel reads values in place, with no
``str`` or ``float`` object per value: every value of a batch sits in a few sequential
buffers instead of one object each, scattered over the heap.

Either is a read-only ``Sequence`` whose item ``i`` is what a list column would hold (a
``str``, a ``float`` or an ``int``, or ``None`` when missing), so anything that accepts a list
column accepts one of these, and answers are the same as for ``list(column)``.

From pyarrow (not a dependency), for an array ``a`` with no slice offset (``a.offset == 0``)::

    validity, offsets, data = a.buffers()               # pa.string(); pa.large_string() alike
    TextColumn(data, memoryview(offsets).cast("i"), validity, len(a))   # "q" for large_string
    validity, values = a.buffers()                      # pa.float64() or pa.int64()
    NumberColumn(memoryview(values).cast("d"), validity, len(a))        # "q" for int64

Offsets and bitmaps are copied (they bound every read); data and values that are read-only
(``bytes``, Arrow's buffers) are used in place, writable ones copied, so a column does not
change under a call that reads it without the GIL. (Memory that its owner changes behind a
read-only view can change answers, never read outside the buffers.)
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
from typing import Any, NamedTuple

__all__ = ["TextColumn", "NumberColumn", "MatchBuffers", "match_buffers", "ascii_text_column"]

_INT_FORMATS = {"i": 4, "l": 8, "q": 8}  # signed, as Arrow's offsets and int64 columns are


def _frozen(buffer: Any, label: str, copy: bool = False) -> memoryview:
    """A contiguous one-dimensional view of ``buffer`` that cannot change: the buffer itself
    when its exporter is read-only (unless ``copy``), else a copy."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"{label}: a buffer (bytes, memoryview, array, ...), got {type(buffer).__name__}") from None
    if view.ndim != 1:
        raise ValueError(f"{label}: a contiguous one-dimensional buffer, got {view.ndim} dimension(s)")
    if not view.c_contiguous:
        raise ValueError(f"{label}: a contiguous one-dimensional buffer, got a strided one (copy it first)")
    if copy or not view.readonly:
        view = memoryview(view.tobytes()).cast(view.format)
    return view


def _validity(validity: Any, n: int, label: str) -> bytes | None:
    """The validity bitmap's first ``n`` bits as bytes (copied: it is small), or None."""
    if validity is None:
        return None
    view = _frozen(validity, label).cast("B")  # (copied below)
    need = (n + 7) // 8
    if len(view) < need:
        raise ValueError(f"{label}: {len(view)} bytes hold fewer than {n} bits")
    return view[:need].tobytes()


_ENGINE: dict = {}  # the engine's functions this module calls, once looked up


def _engine(name: str) -> Any:
    """The engine's function ``name`` (the kernel imports this module, so the engine is looked
    up when the first column is made; an import statement per column cost ~2.4 us, a sixth of
    making a small one)."""
    function = _ENGINE.get(name)
    if function is None:
        from matcher._ruleset import engine

        function = _ENGINE[name] = getattr(engine, name)
    return function


def _first_decrease(offsets: memoryview, n: int) -> int:
    """The first i < n with offsets[i] > offsets[i + 1], or -1: the engine's loop."""
    return _engine("first_decrease")(offsets, n)


def ascii_text_column(data: bytes, offsets: bytes, validity: bytes | None, n: int) -> "TextColumn | None":
    """``TextColumn(data, offsets, validity, n)`` in one compiled call, for ``offsets`` as
    bytes holding n + 1 little-endian int32 (Arrow's layout on the wire; bytes after them are
    ignored) and ``validity`` bytes or None, when the texts are all ASCII (a request's common
    case: ids, event names, most URLs) and every check passes. None otherwise: the
    constructor then makes the column or names what is wrong."""
    return _engine("ascii_text_column")(data, offsets, validity, n)


def _missing(validity: bytes, n: int) -> Iterator[int]:
    """The indexes below ``n`` whose bit in ``validity`` is clear (a byte at a time: most are
    all ones)."""
    for at, byte in enumerate(validity):
        if byte != 0xFF:
            for bit in range(8):
                if not (byte >> bit) & 1 and at * 8 + bit < n:
                    yield at * 8 + bit


def _bitmap(missing: list[bool]) -> bytes | None:
    """A validity bitmap with bit i clear where ``missing[i]``, or None when nothing is missing."""
    if not any(missing):
        return None
    bits = bytearray((len(missing) + 7) // 8)
    for i, gone in enumerate(missing):
        if not gone:
            bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


class _Column(Sequence):
    """What both columns share: ``n`` values, a validity bitmap, reading as a list does."""

    __slots__ = ("_validity", "_n")
    _validity: bytes | None
    _n: int

    def _value(self, i: int) -> Any:
        """Value ``i`` (0 <= i < n, present)."""
        raise NotImplementedError

    def _every_value(self) -> list:
        """Every value as if present (a missing one's is unspecified)."""
        raise NotImplementedError

    def tolist(self) -> list:
        """``list(column)``, in a few C-level calls per column instead of one call per value."""
        return self._with_missing(self._every_value(), None)

    def _with_missing(self, values: Any, missing: Any) -> Any:
        """``values`` (one per value, mutable) with ``missing`` where a value is missing."""
        if self._validity is not None:
            for i in _missing(self._validity, self._n):
                values[i] = missing
        return values

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        i = i.__index__()
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"{type(self).__name__} index out of range")
        validity = self._validity
        if validity is not None and not (validity[i >> 3] >> (i & 7)) & 1:
            return None
        return self._value(i)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(islice(self, 3))}{'...' if self._n > 3 else ''}, n={self._n})"


class TextColumn(_Column):
    """``n`` texts in one UTF-8 buffer: value ``i`` is ``data[offsets[i]:offsets[i + 1]]``
    decoded, or ``None`` where bit ``i`` of ``validity`` (least significant bit first) is 0.

    ``offsets`` is a buffer of ``n + 1`` int32 (format ``"i"``, Arrow's ``string``) or int64
    (``"q"``, ``large_string``), non-decreasing, within ``data``; the texts are valid UTF-8
    and every value starts and ends on a character boundary. ``n`` defaults to
    ``len(offsets) - 1``. Raises ValueError (naming the buffer and the place) otherwise.
    """

    __slots__ = ("_data", "_offsets", "_wide", "_ascii")

    def __init__(self, data: Any, offsets: Any, validity: Any = None, n: int | None = None) -> None:
        data = _frozen(data, "data").cast("B")
        offsets = _frozen(offsets, "offsets", copy=True)  # (they bound every read)
        if offsets.format not in _INT_FORMATS or offsets.itemsize != _INT_FORMATS[offsets.format]:
            raise ValueError(f"offsets: int32 or int64 values (format 'i' or 'q'), got format {offsets.format!r}")
        if n is None:
            n = len(offsets) - 1
        if n < 0 or len(offsets) < n + 1:
            raise ValueError(f"offsets: {len(offsets)} values, expected n + 1 = {max(n, 0) + 1}")
        offsets = offsets[:n + 1]
        first, last = offsets[0], offsets[n]
        if first < 0 or last > len(data):
            raise ValueError(f"offsets: the values run from {first} to {last}, outside data's 0 to {len(data)}")
        i = _first_decrease(offsets, n)
        if i >= 0:
            raise ValueError(f"offsets: offset {i + 1} ({offsets[i + 1]}) is less than offset {i} ({offsets[i]})")
        text = data[first:last]
        try:
            ascii = str(text, "utf-8").isascii()
        except UnicodeDecodeError as e:
            raise ValueError(f"data: not UTF-8 at byte {first + e.start}") from None
        if not ascii:
            for i in range(n + 1):
                at = offsets[i]
                if at < last and data[at] & 0xC0 == 0x80:
                    raise ValueError(f"offsets: offset {i} ({at}) falls inside a UTF-8 character")
        self._data = data
        self._offsets = offsets
        self._wide = offsets.itemsize == 8
        self._validity = _validity(validity, n, "validity")
        self._ascii = ascii
        self._n = n

    @classmethod
    def from_texts(cls, texts: Iterable[str | None]) -> "TextColumn":
        """A column holding ``texts`` (``None`` for a missing value): for tests and for data not
        already in buffers (building one costs more than the kernel saves reading it)."""
        texts = list(texts)
        encoded = [t.encode("utf-8") if t is not None else b"" for t in texts]
        offsets = array("q", accumulate(map(len, encoded), initial=0))
        return cls(b"".join(encoded), offsets, _bitmap([t is None for t in texts]))

    def buffers(self) -> list:
        """``[validity or None, offsets, data]``, read-only, in Arrow's order."""
        return [self._validity, self._offsets.toreadonly(), self._data.toreadonly()]

    def _value(self, i: int) -> str:
        return str(self._data[self._offsets[i]:self._offsets[i + 1]], "utf-8")

    def _every_value(self) -> list:
        offsets = self._offsets.tolist()
        if self._ascii:  # one decode, then slices of the str
            start = offsets[0]
            text = str(self._data[start:offsets[-1]], "ascii")
            return [text[a - start:b - start] for a, b in zip(offsets, offsets[1:])]
        return [str(self._data[a:b], "utf-8") for a, b in zip(offsets, offsets[1:])]


class NumberColumn(_Column):
    """``n`` numbers in one buffer of float64 (format ``"d"``: values are ``float``) or int64
    (``"q"``: values are ``int``), ``None`` where bit ``i`` of ``validity`` is 0. ``n``
    defaults to the buffer's length."""

    __slots__ = ("_values", "_integers")

    def __init__(self, values: Any, validity: Any = None, n: int | None = None) -> None:
        values = _frozen(values, "values")
        if values.format == "d":
            integers = False
        elif values.format in _INT_FORMATS and values.itemsize == 8:
            integers = True
        else:
            raise ValueError(f"values: float64 or int64 values (format 'd' or 'q'), got format {values.format!r}")
        if n is None:
            n = len(values)
        if not 0 <= n <= len(values):
            raise ValueError(f"values: {len(values)} values, expected n = {n}")
        self._values = values[:n]
        self._integers = integers
        self._validity = _validity(validity, n, "validity")
        self._n = n

    def float64s(self, missing: float = math.nan) -> Any:
        """The values as one float64 buffer (format ``"d"``) with ``missing`` where a value is
        missing: the column's own buffer when it holds float64 and none is missing, else a copy."""
        if not self._integers and self._validity is None:
            return self._values
        values = array("d")
        if self._integers:
            values.extend(map(float, self._values))
        else:
            values.frombytes(self._values.cast("B"))
        return self._with_missing(values, missing)

    @classmethod
    def from_numbers(cls, numbers: Iterable[float | int | None], integers: bool = False) -> "NumberColumn":
        """A column holding ``numbers`` (``None`` for a missing value), as int64 or float64."""
        numbers = list(numbers)
        values = array("q" if integers else "d", [0 if x is None else x for x in numbers])
        return cls(values, _bitmap([x is None for x in numbers]))

    def buffers(self) -> list:
        """``[validity or None, values]``, read-only, in Arrow's order."""
        return [self._validity, self._values.toreadonly()]

    def _value(self, i: int) -> float | int:
        return self._values[i]

    def _every_value(self) -> list:
        return self._values.tolist()


class MatchBuffers(NamedTuple):
    """``CompiledRules.match_columns_buffers``'s answer, in Arrow's layouts and the machine's byte
    order: ``counts`` is one uint32 per event (its number of matches); the matched rule ids,
    event after event, are a string array: ``offsets`` (int32, one more than the matches) into
    ``data`` (their UTF-8); ``values`` is one float64 per match, or None when no values were
    asked for. With pyarrow: ``pa.Array.from_buffers(pa.string(), m, [None, pa.py_buffer(offsets),
    pa.py_buffer(data)])``."""

    counts: bytes
    offsets: bytes
    data: bytes
    values: bytes | None


def match_buffers(counts: Iterable[int], ids: Iterable[str], values: Iterable[float] | None = None) -> MatchBuffers:
    """Matches given as lists (``match_columns``'s ``(counts, ids)`` and a value per match) in
    ``MatchBuffers``' layout: the statement of that layout, for engines and callers that hold
    lists. An id is its str's UTF-8 (a subclass's as its text: its own ``encode`` decides nothing,
    as in the kernel)."""
    encoded = [str.encode(rule_id, "utf-8") for rule_id in ids]
    offsets = array("i", accumulate(map(len, encoded), initial=0))  # (OverflowError past int32, as the kernel's)
    return MatchBuffers(array("I", counts).tobytes(), offsets.tobytes(), b"".join(encoded),
                        None if values is None else array("d", values).tobytes())
