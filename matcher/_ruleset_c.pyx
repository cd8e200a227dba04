# cython: freethreading_compatible = False
"""Compiled rule matcher: the plans of ``matcher.plan`` loaded into C++ and run over batches.

A batch is processed in chunks. For each chunk, the events' field values are extracted
into flat C arrays (pointers into the events' own UTF-8 buffers; numbers as doubles): under
the GIL, except, from columns, ASCII strs and the URL's parts (see ``_fast_builtin``) and
custom parameters' ASCII strs and floats (see ``_fast_parameter``); the chunk is then
evaluated with the GIL released (hash lookups, RE2::Set passes, numeric comparisons, rule
programs); the result lists are built under the GIL again.
Value semantics mirror ``matcher.values`` exactly; the differential tests hold them equal.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.float cimport PyFloat_FromDouble
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_GetSlice, PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_FromLongLong
from cpython.memoryview cimport PyMemoryView_GET_BUFFER
from cpython.ref cimport Py_INCREF, PyObject
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libcpp cimport bool as cbool
from libcpp.algorithm cimport copy, find, sort
from libcpp.deque cimport deque
from libcpp.string cimport string
from libcpp.string_view cimport string_view
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector

from matcher.includes.clocale cimport LC_NUMERIC_MASK, locale_t, newlocale, strtod_l
from matcher.includes.re2 cimport (
    RE2, RE2Set, FilteredRE2, SetErrorInfo, StringPiece, UNANCHORED, Options, QuoteMeta, kNoError,
)

from collections.abc import Mapping
from decimal import Decimal
from numbers import Integral
import sys

from matcher._casefold_data import FOLD_PAIRS
from matcher.columns import NumberColumn, TextColumn
from matcher.plan import FOLDED, NUMBER, P_CONTAINS, P_ICONTAINS, P_IPREFIX, P_PREFIX, P_REGEX, TEXT
from matcher.regex import REGEX_MAX_MEM
from matcher.errors import RuleError
from matcher.values import decimal_number, decimal_text, number_text, source_key

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize_NoExc "PyUnicode_AsUTF8AndSize"(object, Py_ssize_t*)
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)
    void PyErr_Clear()
    void _hold_ref "Py_INCREF"(PyObject*)
    void _drop_ref "Py_DECREF"(PyObject*)
    int PyGC_Disable()
    int PyGC_Enable()

# What the columns' extraction reads without the GIL (see ``_fast_builtin``): borrowed pointers
# into a call's private column slices, so no reference counts are touched.
cdef extern from *:
    """
    static inline PyObject* _list_item(PyObject* list, Py_ssize_t i) { return PyList_GET_ITEM(list, i); }
    static inline Py_ssize_t _list_size(PyObject* list) { return PyList_GET_SIZE(list); }
    /* An exact str with ASCII data inline: its UTF-8 is its data. */
    static inline int _exact_ascii_str(PyObject* o) {
        return Py_TYPE(o) == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(o);
    }
    static inline const char* _ascii_data(PyObject* o) { return (const char*)PyUnicode_DATA(o); }
    static inline Py_ssize_t _ascii_size(PyObject* o) { return PyUnicode_GET_LENGTH(o); }
    /* An exact int (its value is read with the GIL: ``Matcher._find_int_sources``). */
    static inline int _exact_int(PyObject* o) { return Py_TYPE(o) == &PyLong_Type; }
    /* An exact float (immutable) and its value. */
    static inline int _exact_float(PyObject* o) { return Py_TYPE(o) == &PyFloat_Type; }
    static inline double _float_value(PyObject* o) { return PyFloat_AS_DOUBLE(o); }
    /* Ask the memory for the first ``lines`` cache lines at ``p``; of an object, its header and
       what follows (a str's data). */
    static inline void _prefetch_lines(const char* p, int lines) {
        for (int i = 0; i < lines; i++) __builtin_prefetch(p + 64 * i);
    }
    static inline void _prefetch_object(PyObject* o, int lines) { _prefetch_lines((const char*)o, lines); }
    /* Ask for the first two cache lines of a dict's keys (their header, indexes and first entries). */
    static inline void _prefetch_dict_keys(PyObject* o) {
        if (PyDict_CheckExact(o)) {
            const char* keys = (const char*)((PyDictObject*)o)->ma_keys;
            __builtin_prefetch(keys);
            __builtin_prefetch(keys + 64);
        }
    }
    """
    PyObject* _list_item(PyObject* list, Py_ssize_t i) noexcept nogil
    Py_ssize_t _list_size(PyObject* list) noexcept nogil
    bint _exact_ascii_str(PyObject* o) noexcept nogil
    const char* _ascii_data(PyObject* o) noexcept nogil
    Py_ssize_t _ascii_size(PyObject* o) noexcept nogil
    bint _exact_int(PyObject* o) noexcept nogil
    bint _exact_float(PyObject* o) noexcept nogil
    double _float_value(PyObject* o) noexcept nogil
    void _prefetch_lines(const char* p, int lines) noexcept nogil
    void _prefetch_object(PyObject* o, int lines) noexcept nogil
    void _prefetch_dict_keys(PyObject* o) noexcept

cdef PyObject* _NONE = <PyObject*>None


cdef inline void _prefetch_rows(PyObject* column, int lines, const int32_t* rows, Py_ssize_t m) noexcept nogil:
    """Start loading the first ``lines`` cache lines of the objects of a list's items
    ``rows[:m]`` (none when ``column`` is NULL), at a chunk's start: a batch's objects are
    scattered over the heap and, in a batch job, rarely in cache; asked for together, their
    misses overlap instead of stalling the extraction one event at a time."""
    cdef Py_ssize_t i
    cdef PyObject* value
    if column == NULL:
        return
    for i in range(m):
        if rows[i] < _list_size(column):
            value = _list_item(column, rows[i])
            if value != _NONE:
                _prefetch_object(value, lines)


cdef inline PyObject* _column_value(PyObject* column, Py_ssize_t row) noexcept nogil:
    """A row's value (borrowed) in a call's column slice (NULL: nobody sent the column), NULL
    when missing: None, or past the end of a list another thread shortened before the call."""
    cdef PyObject* value
    if column == NULL or row >= _list_size(column):
        return NULL
    value = _list_item(column, row)
    if value == _NONE:
        return NULL
    return value


# Columns held in buffers (``matcher.columns``): a TextColumn's UTF-8 and offsets, a
# NumberColumn's 8-byte values, and either's validity bitmap, read in place without the GIL.
# Their buffers cannot change (read-only exporters, or copies), and the call holds the column.
DEF BUF_NONE = 0  # not a buffer column: a list, or nobody sent it
DEF BUF_TEXT = 1
DEF BUF_FLOAT = 2
DEF BUF_INT = 3

cdef struct Buf:
    int kind
    const char* data  # texts: the UTF-8; numbers: the values
    const char* offsets  # texts: the offsets (int32, or int64 when ``wide``)
    cbool wide
    const unsigned char* valid  # NULL: every value is present; else the validity bitmap
    Py_ssize_t n  # values
    cbool ascii  # texts: every one is ASCII


cdef Buf _column_buf(object column, list held) except *:
    """The buffers of ``column`` from its first value on; kind BUF_NONE when it is not a
    buffer column. Read once per call (``_Events.begin``: the attributes are Python's). The
    objects owning the buffers are appended to ``held``, which the call keeps, so the
    pointers outlive any change to the column's attributes."""
    cdef Buf b
    memset(&b, 0, sizeof(Buf))
    if type(column) is TextColumn:
        data, offsets = column._data, column._offsets
        held += (data, offsets)
        b.kind = BUF_TEXT
        b.wide = column._wide
        b.data = <const char*>PyMemoryView_GET_BUFFER(data).buf
        b.offsets = <const char*>PyMemoryView_GET_BUFFER(offsets).buf
        b.ascii = column._ascii
    elif type(column) is NumberColumn:
        values = column._values
        held.append(values)
        b.kind = BUF_INT if column._integers else BUF_FLOAT
        b.data = <const char*>PyMemoryView_GET_BUFFER(values).buf
    else:
        return b
    b.n = len(column)
    validity = column._validity
    if validity is not None:
        held.append(validity)
        b.valid = <const unsigned char*>PyBytes_AS_STRING(validity)
    return b


def first_decrease(memoryview offsets not None, Py_ssize_t n):
    """The first i < n with offsets[i] > offsets[i + 1], or -1 (a TextColumn's check; the
    twin's loop, in C): ``offsets`` holds at least n + 1 int32 or int64."""
    cdef Py_ssize_t width = PyMemoryView_GET_BUFFER(offsets).itemsize
    if width not in (4, 8) or not offsets.c_contiguous or len(offsets) < n + 1:
        raise ValueError("offsets: n + 1 contiguous int32 or int64 values")
    return _first_decrease(<const char*>PyMemoryView_GET_BUFFER(offsets).buf, width, n)


cdef Py_ssize_t _first_decrease(const char* at, Py_ssize_t width, Py_ssize_t n) noexcept nogil:
    """``first_decrease`` over n + 1 offsets of ``width`` bytes (4 or 8) at ``at``, any alignment."""
    cdef Py_ssize_t i
    cdef int32_t a32, b32
    cdef int64_t a64, b64
    for i in range(n):
        if width == 4:
            memcpy(&a32, at + 4 * i, 4)
            memcpy(&b32, at + 4 * i + 4, 4)
            if a32 > b32:
                return i
        else:
            memcpy(&a64, at + 8 * i, 8)
            memcpy(&b64, at + 8 * i + 8, 8)
            if a64 > b64:
                return i
    return -1


cdef bint _LITTLE_ENDIAN = sys.byteorder == "little"


def ascii_text_column(bytes data not None, bytes offsets not None, validity, Py_ssize_t n):
    """``TextColumn(data, offsets as int32, validity, n)`` in one call, for ``offsets`` holding
    at least n + 1 little-endian int32 (bytes after them ignored, as Arrow pads) and
    ``validity`` bytes or None, when the texts are ASCII (so UTF-8, every offset on a
    character boundary) and every check the constructor makes passes; else None, and the
    constructor (which says what is wrong) is the way. Copies what it does: the offsets
    (here only the n + 1 read) and the bitmap's first bytes; the data is read in place."""
    cdef int32_t first, last
    cdef const char* at = PyBytes_AS_STRING(offsets)
    if not _LITTLE_ENDIAN or not 0 <= n < len(offsets) // 4:
        return None
    if validity is not None and (type(validity) is not bytes or len(validity) < (n + 7) // 8):
        return None
    if _first_decrease(at, 4, n) >= 0:
        return None
    memcpy(&first, at, 4)
    memcpy(&last, at + 4 * n, 4)
    if first < 0 or last > len(data) or not _all_ascii(PyBytes_AS_STRING(data) + first, last - first):
        return None
    column = TextColumn.__new__(TextColumn)
    column._data = memoryview(data)
    column._offsets = memoryview(PyBytes_FromStringAndSize(at, 4 * (n + 1))).cast("i")
    column._wide = False
    column._validity = None if validity is None else validity[:(n + 7) // 8]
    column._ascii = True
    column._n = n
    return column


cdef inline cbool _buf_has(const Buf* b, Py_ssize_t row) noexcept nogil:
    """Whether a buffer column holds a value for the chunk's row."""
    return row < b.n and (b.valid == NULL or (b.valid[row >> 3] >> (row & 7)) & 1)


cdef inline int64_t _buf_offset(const Buf* b, Py_ssize_t i) noexcept nogil:
    cdef int32_t narrow
    cdef int64_t wide
    if b.wide:
        memcpy(&wide, b.offsets + 8 * i, 8)  # (any alignment: a buffer may start anywhere)
        return wide
    memcpy(&narrow, b.offsets + 4 * i, 4)
    return narrow


cdef inline const char* _buf_text(const Buf* b, Py_ssize_t row, Py_ssize_t* size) noexcept nogil:
    """A text column's row (present: see ``_buf_has``) as its UTF-8 and size."""
    cdef int64_t first = _buf_offset(b, row)
    size[0] = _buf_offset(b, row + 1) - first
    return b.data + first


cdef inline int64_t _buf_int(const Buf* b, Py_ssize_t row) noexcept nogil:
    """An integer column's row (present)."""
    cdef int64_t i
    memcpy(&i, b.data + 8 * row, 8)
    return i


cdef inline double _buf_number(const Buf* b, Py_ssize_t row) noexcept nogil:
    """A number column's row (present) as a double."""
    cdef double d
    if b.kind == BUF_FLOAT:
        memcpy(&d, b.data + 8 * row, 8)
        return d
    return <double>_buf_int(b, row)


cdef inline void _put_u32(char* at, uint32_t value) noexcept nogil:
    """``value`` at ``at`` in the machine's byte order (any alignment), as Arrow stores it."""
    memcpy(at, &value, 4)


cdef inline uint32_t _offset_at(const char* at, size_t i) noexcept nogil:
    """The uint32 ``_put_u32`` wrote at ``at + 4 * i``."""
    cdef uint32_t value
    memcpy(&value, at + 4 * i, 4)
    return value


cdef inline void _put_f64(char* at, double value) noexcept nogil:
    memcpy(at, &value, 8)


cdef inline cbool _all_ascii(const char* text, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char seen = 0
    for i in range(size):
        seen |= <unsigned char>text[i]
    return seen < 0x80


cdef object _buf_object(const Buf* b, Py_ssize_t row):
    """A buffer column's row (present) as the object a list column would hold there."""
    cdef const char* text
    cdef Py_ssize_t size
    if b.kind == BUF_TEXT:
        text = _buf_text(b, row, &size)
        return text[:size].decode("utf-8")
    if b.kind == BUF_FLOAT:
        return PyFloat_FromDouble(_buf_number(b, row))
    return PyLong_FromLongLong(_buf_int(b, row))

# Event keys, as objects (no module-global lookups in the extraction loop).
cdef str _KEY_URL = "url"
cdef str _KEY_EVENT = "event"
cdef str _KEY_DEVICE = "device_type"
cdef str _KEY_CUSTOM = "custom_data"
cdef str _KEY_PIXEL = "pixel_id"

cdef const char* _SLASH = "/"
cdef const char* _TRUE = "true"
cdef const char* _FALSE = "false"

# Events per chunk: bounds the extracted arrays and lets other threads take the GIL between.
DEF CHUNK = 256
# Events per window a columnar call is grouped by source within (a multiple of CHUNK). Grouped
# over the whole call, a large call read its input in an order that met a cache miss on most
# reads; grouped within windows of 16,384 (of 1,024-200,000 measured, the best) a 200,000-event
# call ran 1.15x faster, and one of at most 16,384 events is grouped as before.
DEF GROUP_WINDOW = 16384
GROUPED_WITHIN = GROUP_WINDOW  # (for the tests)
# RE2 memory budget of one multi-pattern set (program plus DFA cache).
DEF SET_MAX_MEM = 4 << 20
# One regex's budget, when a group runs its regexes one by one. The rule parser accepts a regex
# whose program fits REGEX_MAX_MEM in pyre2's bundled RE2; the system's RE2, linked here, may
# need several times that for the same program (\pL{56} does not compile at 1 MiB), and a
# regex that does not compile matches nothing: so 8 times the parser's budget.
cdef long long REGEX_MAX_MEM_C = REGEX_MAX_MEM * 8

# Opcodes and kinds, as in matcher.plan.
DEF OP_PRED = 0
DEF OP_NEG = 1
DEF OP_EXISTS = 2
DEF OP_MISSING = 3
DEF OP_AND = 4
DEF OP_OR = 5
DEF OP_NOR = 6
DEF G_TEXT = 0
DEF G_FOLDED = 1
DEF G_NUMBER = 2
DEF K_CONTAINS = 0
DEF K_PREFIX = 1
DEF K_REGEX = 2
DEF K_ICONTAINS = 3
DEF K_IPREFIX = 4
# Built-in fields.
DEF F_CUSTOM = 0
DEF F_URL = 1
DEF F_EVENT = 2
DEF F_DEVICE = 3
DEF F_DOMAIN = 4
DEF F_PATH = 5
# Item number states.
DEF NUM_UNKNOWN = 0
DEF NUM_YES = 1
DEF NUM_NO = 2

include "_literals.pxi"
include "_keytable.pxi"

assert (TEXT, FOLDED, NUMBER) == (G_TEXT, G_FOLDED, G_NUMBER)
assert (P_CONTAINS, P_PREFIX, P_REGEX, P_ICONTAINS, P_IPREFIX) == (K_CONTAINS, K_PREFIX, K_REGEX, K_ICONTAINS, K_IPREFIX)


# ---------------------------------------------------------------------------------------------
# Case folding and decimal numbers (mirrors of matcher.values.fold / parse_number)

cdef unordered_map[uint32_t, uint32_t] _FOLD
for _cp, _folded in FOLD_PAIRS:
    _FOLD[_cp] = _folded


cdef inline void _append_utf8(string& out, uint32_t cp) noexcept nogil:
    if cp < 0x80:
        out.push_back(<char>cp)
    elif cp < 0x800:
        out.push_back(<char>(0xC0 | (cp >> 6)))
        out.push_back(<char>(0x80 | (cp & 0x3F)))
    elif cp < 0x10000:
        out.push_back(<char>(0xE0 | (cp >> 12)))
        out.push_back(<char>(0x80 | ((cp >> 6) & 0x3F)))
        out.push_back(<char>(0x80 | (cp & 0x3F)))
    else:
        out.push_back(<char>(0xF0 | (cp >> 18)))
        out.push_back(<char>(0x80 | ((cp >> 12) & 0x3F)))
        out.push_back(<char>(0x80 | ((cp >> 6) & 0x3F)))
        out.push_back(<char>(0x80 | (cp & 0x3F)))


cdef void fold_utf8(const char* s, Py_ssize_t n, string& out) noexcept nogil:
    """Simple case folding of valid UTF-8 text into ``out`` (a sequence cut off by the end,
    which only text changed by another thread during a call can hold, is copied as it is:
    nothing past ``n`` is read)."""
    cdef Py_ssize_t i = 0
    cdef unsigned char c
    cdef uint32_t cp
    cdef char* dst
    cdef unordered_map[uint32_t, uint32_t].iterator it
    out.resize(n)
    dst = &out[0]
    while i < n:  # ASCII prefix: one table lookup per byte
        c = <unsigned char>s[i]
        if c >= 0x80:
            break
        dst[i] = <char>(c + 32) if 65 <= c <= 90 else <char>c
        i += 1
    if i == n:
        return
    out.resize(i)
    while i < n:
        c = <unsigned char>s[i]
        if c < 0x80:
            out.push_back(<char>(c + 32) if 65 <= c <= 90 else <char>c)
            i += 1
            continue
        if i + (2 if c < 0xE0 else 3 if c < 0xF0 else 4) > n:
            out.append(s + i, n - i)
            return
        if c < 0xE0:
            cp = ((c & 0x1F) << 6) | (<unsigned char>s[i + 1] & 0x3F)
            i += 2
        elif c < 0xF0:
            cp = ((c & 0x0F) << 12) | ((<unsigned char>s[i + 1] & 0x3F) << 6) | (<unsigned char>s[i + 2] & 0x3F)
            i += 3
        else:
            cp = (((c & 0x07) << 18) | ((<unsigned char>s[i + 1] & 0x3F) << 12)
                  | ((<unsigned char>s[i + 2] & 0x3F) << 6) | (<unsigned char>s[i + 3] & 0x3F))
            i += 4
        it = _FOLD.find(cp)
        if it != _FOLD.end():
            cp = (cython.operator.dereference(it)).second
        _append_utf8(out, cp)


cdef inline cbool _is_space(char c) noexcept nogil:
    return c == b' ' or c == b'\t' or c == b'\n' or c == b'\r' or c == b'\f' or c == b'\v'


cdef inline cbool _is_digit(char c) noexcept nogil:
    return b'0' <= c <= b'9'


# Numbers are read in the C locale: an application that sets a locale whose decimal point is
# "," (setlocale) must not change what "1.5" means, as it does not for Python's float().
cdef locale_t _C_NUMERIC = newlocale(LC_NUMERIC_MASK, b"C", NULL)
if _C_NUMERIC == NULL:
    raise MemoryError("newlocale: cannot create the C numeric locale")


cdef cbool parse_decimal(const char* s, Py_ssize_t n, double* out) noexcept nogil:
    """A decimal number with optional surrounding ASCII space; false unless finite."""
    cdef Py_ssize_t i = 0, start, end, digits = 0
    cdef char small[64]
    cdef string buf
    while i < n and _is_space(s[i]):
        i += 1
    start = i
    if i < n and (s[i] == b'+' or s[i] == b'-'):
        i += 1
    while i < n and _is_digit(s[i]):
        i += 1
        digits += 1
    if i < n and s[i] == b'.':
        i += 1
        while i < n and _is_digit(s[i]):
            i += 1
            digits += 1
    if digits == 0:
        return False
    if i < n and (s[i] == b'e' or s[i] == b'E'):
        i += 1
        if i < n and (s[i] == b'+' or s[i] == b'-'):
            i += 1
        if i >= n or not _is_digit(s[i]):
            return False
        while i < n and _is_digit(s[i]):
            i += 1
    end = i
    while i < n and _is_space(s[i]):
        i += 1
    if i != n:
        return False
    if end - start < 63:  # the usual case: no allocation
        memcpy(small, s + start, end - start)
        small[end - start] = 0
        out[0] = strtod_l(small, NULL, _C_NUMERIC)
    else:
        buf.assign(s + start, end - start)
        out[0] = strtod_l(buf.c_str(), NULL, _C_NUMERIC)
    return isfinite(out[0])


# ---------------------------------------------------------------------------------------------
# URL parts (mirror of matcher.values.url_parts)

cdef inline cbool _is_alpha(char c) noexcept nogil:
    return (b'a' <= c <= b'z') or (b'A' <= c <= b'Z')


cdef inline Py_ssize_t _first_of(const char* s, Py_ssize_t n, cbool slash) noexcept nogil:
    """Index of the first '?' or '#' (and '/' when ``slash``) in ``s[:n]``; ``n`` when none."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if c == b'?' or c == b'#' or (slash and c == b'/'):
            return i
    return n


cdef void url_parts(const char* s, Py_ssize_t n, Py_ssize_t* host_start, Py_ssize_t* host_len,
                    Py_ssize_t* path_start, Py_ssize_t* path_len) noexcept nogil:
    """Host span (length -1: none) and path span (length 0: "/") of a URL."""
    cdef Py_ssize_t i = 0, rest = 0, end, at, k
    cdef cbool scheme = False, authority = True
    host_len[0] = -1
    if n > 0 and _is_alpha(s[0]):
        i = 1
        while i < n and (_is_alpha(s[i]) or _is_digit(s[i]) or s[i] == b'+' or s[i] == b'.' or s[i] == b'-'):
            i += 1
        if i + 3 <= n and s[i] == b':' and s[i + 1] == b'/' and s[i + 2] == b'/':
            scheme = True
            rest = i + 3
    if not scheme:
        if n >= 2 and s[0] == b'/' and s[1] == b'/':
            rest = 2
        elif n >= 1 and s[0] == b'/':
            authority = False
    if authority:
        end = rest + _first_of(s + rest, n - rest, True)
        at = rest - 1
        for k in range(rest, end):
            if s[k] == b'@':
                at = k
        host_start[0] = at + 1
        k = at + 1
        if k < end and s[k] == b'[':
            while k < end and s[k] != b']':
                k += 1
            host_len[0] = (k + 1 if k < end else end) - host_start[0]
        else:
            while k < end and s[k] != b':':
                k += 1
            host_len[0] = k - host_start[0]
        if host_len[0] == 0:
            host_len[0] = -1
        rest = end
    path_start[0] = rest
    path_len[0] = _first_of(s + rest, n - rest, False)


# ---------------------------------------------------------------------------------------------
# Compiled partitions

cdef extern from *:
    """
    typedef int _int_on_line __attribute__((aligned(64)));
    """
    ctypedef int _int_on_line  # an int that starts a cache line (and so the struct holding it)


# A group's first cache line holds all that a lookup of its exact values reads (the rules'
# data is cold for most events: each line a group spans is a miss); its patterns start the
# next line.
cdef cppclass GroupC:
    _int_on_line kind
    int field
    int op
    int pred
    double bound
    cbool numbers  # number_eq or number_text_eq has keys
    cbool patterns  # pat_kind is not empty
    cbool rest_always
    KeyTable text_eq  # by UTF-8 (G_FOLDED: folded)
    # With the literal scanner (NULL: none), ``set`` is NULL: literals of 4 bytes or more are
    # the scanner's, the rest (regexes, shorter literals) are in ``rest``, which runs only when
    # the scanner found every atom one of its regexes requires, unless ``rest_always``.
    LitScan* scan
    RE2Set* rest
    vector[int] rest_preds
    RE2Set* set  # every pattern (texts with non-ASCII bytes)
    vector[int] set_preds
    vector[int] pat_kind
    vector[string] pat_text
    vector[RE2*] pat_regex
    KeyTable number_eq  # by the number's 8 bytes (a double; -0.0 as 0.0)
    KeyTable number_text_eq  # by UTF-8: the texts equal to a number in the rule that no number parses to
    # CSR, by atom id: the regexes filed under the atom (each regex under one atom it requires,
    # or under each of its atoms when it requires none); by regex: the atoms it requires.
    vector[int32_t] atom_regex
    vector[int32_t] atom_regex_at
    vector[int32_t] regex_atom
    vector[int32_t] regex_atom_at

    __dealloc__():
        cdef size_t i
        if this.set != NULL:
            del this.set
        if this.scan != NULL:
            del this.scan
        if this.rest != NULL:
            del this.rest
        for i in range(this.pat_regex.size()):
            if this.pat_regex[i] != NULL:
                del this.pat_regex[i]


cdef struct Entry:
    # A rule as a candidate, on one line: what triage and the programs read of it.
    int32_t rule  # partition-local index
    int32_t code  # its program's offset in PartC.code; ~(global rule index) when a fired trigger decides it
    uint64_t fields  # the fields it reads beyond the eager ones, a bit per slot (0 without field masks)


cdef cppclass PartC:
    vector[int32_t] rules
    # Candidates are stored flat (CSR): predicate p triggers entry[trigger_at[p]:trigger_at[p + 1]];
    # the rules without a trigger set are entry[always_at:]. A rule's entry is repeated under
    # each of its triggers. Programs (branch form, see _branch_program) are stored flat too, in
    # the order the entries first name their rules, so the programs of one trigger's rules
    # share cache lines. A rule that holds whenever one of its triggers does (a single
    # predicate, an OR of its trigger predicates) has no program: a fired trigger decides it.
    vector[Entry] entry
    vector[int32_t] trigger_at
    int32_t always_at
    vector[int32_t] code
    vector[GroupC*] groups
    vector[int32_t] pred_group
    vector[int32_t] eager
    vector[int32_t] eager_fields  # fields the eager groups read: extracted for every event
    vector[int32_t] rule_field  # CSR: other fields rule r's program reads, extracted on demand
    vector[int32_t] rule_field_at
    # Gated groups (see matcher.plan), CSR by predicate: the groups predicate p gates are
    # gate_group[gate_at[p]:gate_at[p + 1]]; gate_field likewise the fields to request when p
    # fires: the gated groups' and every field the rules they trigger read (those rules become
    # candidates only in the last phase, after the fields are extracted). Empty: no gates.
    vector[int32_t] gate_at
    vector[int32_t] gate_group
    vector[int32_t] gate_field_at
    vector[int32_t] gate_field
    # Whether every field slot is below 64: then triage ORs its candidates' ``fields`` masks
    # and requests each field once (else it reads rule_field).
    cbool field_masks

    __dealloc__():
        cdef size_t i
        for i in range(this.groups.size()):
            del this.groups[i]


cdef class Partition:
    """One partition's plan, loaded into C++ (immutable)."""

    cdef PartC* part
    cdef readonly frozenset needs_text

    def __cinit__(self, plan):
        self.part = new PartC()

    def __init__(self, plan):
        cdef PartC* p = self.part
        cdef GroupC* g
        cdef Entry e
        self.needs_text = frozenset(plan.needs_text)
        for index in plan.rules:
            p.rules.push_back(index)
        for gid in plan.pred_group:
            p.pred_group.push_back(gid)
        for x in plan.eager:
            p.eager.push_back(x)
        eager_fields = sorted({plan.groups[gid].field for gid in plan.eager})
        for x in eager_fields:
            p.eager_fields.push_back(x)
        lazy_fields = [sorted(_program_fields(plan, program) - set(eager_fields)) for program in plan.programs]
        _flatten(lazy_fields, &p.rule_field, &p.rule_field_at)
        p.field_masks = all(f < 64 for fields in lazy_fields for f in fields)
        if any(plan.gates):
            # Per gated group: its field and every field the rules it triggers read (one pass
            # over the predicates, however many gates share a group).
            group_fields = {gid: {plan.groups[gid].field} for groups in plan.gates for gid in groups}
            for pid, gid in enumerate(plan.pred_group):
                if gid in group_fields:
                    for r in plan.triggers[pid]:
                        group_fields[gid].update(lazy_fields[r])
            eager_set = set(eager_fields)
            gate_fields = [sorted(set().union(*(group_fields[gid] for gid in groups)) - eager_set) if groups else []
                           for groups in plan.gates]
            _flatten(plan.gates, &p.gate_group, &p.gate_at)
            _flatten(gate_fields, &p.gate_field, &p.gate_field_at)
        entries = []  # local rule indexes: under each trigger, then the rules without one
        for rules in plan.triggers:
            p.trigger_at.push_back(len(entries))
            entries.extend(rules)
        p.trigger_at.push_back(len(entries))
        p.always_at = len(entries)
        entries.extend(plan.always)
        trigger_sets = [set() for _ in plan.programs]
        for pid, rules in enumerate(plan.triggers):
            for r in rules:
                trigger_sets[r].add(pid)
        code_of = {}
        for r in entries:
            if r not in code_of:
                if _decided_by_trigger(plan.programs[r], trigger_sets[r]):
                    code_of[r] = ~plan.rules[r]
                else:
                    code_of[r] = p.code.size()
                    for x in _branch_program(plan.programs[r], plan.pred_group):
                        p.code.push_back(x)
        for r in entries:
            e.rule = r
            e.code = code_of[r]
            e.fields = sum(1 << f for f in lazy_fields[r]) if p.field_masks else 0
            p.entry.push_back(e)
        for group in plan.groups:
            g = new GroupC()
            p.groups.push_back(g)
            g.set = NULL
            g.scan = NULL
            g.rest = NULL
            g.kind = group.kind
            g.field = group.field
            g.op = group.op
            g.bound = group.bound
            g.pred = group.pred
            key_table_fill(&g.text_eq, _text_keys(group.text_eq))
            key_table_fill(&g.number_text_eq, _text_keys(group.number_text_eq))
            key_table_fill(&g.number_eq, _number_keys(group.number_eq))
            g.numbers = not g.number_eq.slots.empty() or not g.number_text_eq.slots.empty()
            if group.patterns:
                _load_patterns(g, group.patterns)
            g.patterns = not g.pat_kind.empty()

    def __dealloc__(self):
        del self.part


cdef void _flatten(list lists, vector[int32_t]* flat, vector[int32_t]* at) except *:
    """Lists of ints as one array plus offsets (CSR): list i is flat[at[i]:at[i + 1]]."""
    for values in lists:
        at.push_back(flat.size())
        for x in values:
            flat.push_back(x)
    at.push_back(flat.size())


# A program in branch form: the postfix program's tests in its order, each with where to go
# next when it holds and when not, so that an AND stops at its first false child and an OR at
# its first true one. Words: [entry, (test, group, on true, on false)...]; a test is a
# predicate id (>= 0) or ~field (the field is present); its group is the predicate's (0 for a
# presence test), so a test whose predicate is not marked true finds whether its group ran
# without reading ``pred_group``; a target is a test's offset in the rule's words or
# B_ACCEPT / B_REJECT. NEG p f becomes "f present" then "not p"; MISSING f, "f present" with
# its targets swapped; NOR, an OR with its targets swapped.
DEF B_ACCEPT = -1
DEF B_REJECT = -2


def _branch_program(list program, list pred_group):
    stack = []
    i = 0
    while i < len(program):  # the postfix program as a tree: leaves are [test], nodes (op, children)
        op = program[i]
        if op == OP_PRED:
            stack.append([program[i + 1]])
        elif op == OP_NEG:
            stack.append((OP_NEG, program[i + 1], program[i + 2]))
        elif op == OP_EXISTS or op == OP_MISSING:
            stack.append((op, ~program[i + 1]))
        else:
            count = program[i + 1]
            stack[len(stack) - count:] = [(op, stack[len(stack) - count:])]
        i += 3 if op == OP_NEG else 2
    tests = []  # [test, on true, on false], last evaluated first; targets are tests or ints

    def emit(node, on_true, on_false):
        """Append the node's tests; return where its evaluation starts."""
        if type(node) is list:
            test = [node[0], on_true, on_false]
            tests.append(test)
            return test
        op = node[0]
        if op == OP_NEG:
            return emit((OP_EXISTS, ~node[2]), emit([node[1]], on_false, on_true), on_false)
        if op == OP_EXISTS or op == OP_MISSING:
            test = [node[1], on_true, on_false] if op == OP_EXISTS else [node[1], on_false, on_true]
            tests.append(test)
            return test
        if op == OP_NOR:
            on_true, on_false = on_false, on_true
        entry = on_true if op == OP_AND else on_false
        for child in reversed(node[1]):
            entry = emit(child, entry, on_false) if op == OP_AND else emit(child, on_true, entry)
        return entry

    entry = emit(stack[0], B_ACCEPT, B_REJECT)  # (no negative indexes: wraparound is off)
    tests.reverse()  # evaluation order
    where = {id(t): 1 + 4 * k for k, t in enumerate(tests)}
    words = [where[id(entry)] if type(entry) is list else entry]
    for test in tests:
        words += [test[0], pred_group[test[0]] if test[0] >= 0 else 0]
        words += [where[id(t)] if type(t) is list else t for t in test[1:]]
    return words


def _decided_by_trigger(list program, set triggers):
    """Whether a rule holds whenever one of its triggers does: its program is a predicate or
    an OR of predicates (at any depth), every trigger one of them."""
    preds = set()
    for i in range(0, len(program), 2):
        if program[i] == OP_PRED:
            preds.add(program[i + 1])
        elif program[i] != OP_OR:
            return False
    return bool(triggers) and triggers <= preds


def _program_fields(plan, program):
    """Fields a rule's program reads: those of its predicates' groups and of presence tests."""
    fields = set()
    i = 0
    while i < len(program):
        op = program[i]
        if op == OP_PRED:
            fields.add(plan.groups[plan.pred_group[program[i + 1]]].field)
            i += 2
        elif op == OP_NEG:
            fields.add(plan.groups[plan.pred_group[program[i + 1]]].field)
            fields.add(program[i + 2])
            i += 3
        elif op == OP_EXISTS or op == OP_MISSING:
            fields.add(program[i + 1])
            i += 2
        else:
            i += 2
    return fields


cdef dict _text_keys(dict texts):
    """A group's texts' predicates by their UTF-8."""
    return {(<str>text).encode("utf-8"): preds for text, preds in texts.items()}


cdef dict _number_keys(dict numbers):
    """A group's numbers' predicates by the bytes of the double each compares as (-0.0 as 0.0;
    two ints past 2**53 may share one). NaN equals nothing: it has none."""
    cdef double d
    cdef dict out = {}
    for number, preds in numbers.items():
        d = <double>number + 0.0
        if d == d:
            out.setdefault(PyBytes_FromStringAndSize(<char*>&d, sizeof(double)), []).extend(preds)
    return out


cdef Options _regex_options() noexcept nogil:
    cdef Options opts
    opts.set_log_errors(False)
    opts.set_max_mem(REGEX_MAX_MEM_C)
    return opts


cdef bint _USE_SETS = True
cdef long long _SET_MAX_MEM = SET_MAX_MEM
cdef bint _SETS_RUN_OUT = False


def _set_multi_pattern_sets(bint enabled, long long max_mem=SET_MAX_MEM, bint run_out=False):
    """Tests only: build partitions without RE2::Set, or with a small budget (a set too large
    for it is not built: pattern by pattern); and with ``run_out``, have every set's match
    report its DFA out of memory, as RE2 does when a budget leaves it too little room (no
    budget makes that happen on every text, so the fallback is forced: each text's patterns
    one by one, regexes as programs made for the call)."""
    global _USE_SETS, _SET_MAX_MEM, _SETS_RUN_OUT
    _USE_SETS = enabled
    _SET_MAX_MEM = max_mem
    _SETS_RUN_OUT = run_out


cdef int _load_patterns(GroupC* g, list patterns) except -1:
    cdef Options opts
    cdef Options set_opts
    cdef string err
    cdef string text
    cdef string pattern
    cdef bytes raw
    cdef size_t i
    opts = _regex_options()
    for kind, source, pid in patterns:
        raw = (<str>source).encode("utf-8")
        g.pat_kind.push_back(kind)
        g.pat_text.push_back(string(<char*>raw, len(raw)))
        g.pat_regex.push_back(NULL)
        g.set_preds.push_back(pid)
    if _USE_SCANNER and _load_fast_path(g):
        return 0
    set_opts.set_log_errors(False)
    set_opts.set_max_mem(_SET_MAX_MEM)
    g.set = new RE2Set(set_opts, UNANCHORED)
    for i in range(g.pat_kind.size()):
        pattern = _set_pattern(g.pat_kind[i], g.pat_text[i])
        if g.set.Add(StringPiece(pattern.data(), pattern.size()), &err) < 0:
            raise RuleError("rule", f"regex {g.pat_text[i].decode('utf-8', 'replace')!r} is not valid RE2: "
                                    f"{err.decode('utf-8', 'replace')}")
    if not _USE_SETS or not g.set.Compile():
        # Too large for one program: evaluate this group pattern by pattern.
        del g.set
        g.set = NULL
        for i in range(g.pat_kind.size()):
            if g.pat_kind[i] == K_REGEX:
                g.pat_regex[i] = new RE2(StringPiece(g.pat_text[i].data(), g.pat_text[i].size()), opts)
                if not g.pat_regex[i].ok():  # never silently match nothing
                    raise RuleError("rule", f"regex {g.pat_text[i].decode('utf-8', 'replace')!r}: its program "
                                            "is too large for this build's RE2")
    return 0


cdef string _set_pattern(int kind, string text):
    """A pattern as an RE2 set member: regexes as written, literals quoted."""
    cdef string pattern
    if kind == K_REGEX:
        return text
    pattern = QuoteMeta(StringPiece(text.data(), text.size()))
    if kind == K_ICONTAINS or kind == K_IPREFIX:
        pattern = string(b"(?i)") + pattern
    if kind == K_PREFIX or kind == K_IPREFIX:
        pattern = string(b"^") + pattern
    return pattern


cdef bint _USE_SCANNER = True


def _set_literal_scanner(bint enabled):
    """Tests only: build partitions without the literal scanner (one RE2::Set per group)."""
    global _USE_SCANNER
    _USE_SCANNER = enabled


def _scan_literals(list literals, bytes text, int mode=SCAN_ASCII):
    """Tests only: (the ids found, deduplicated and sorted; the scan's step; how many ids it
    reported, repeats included) of a scanner over
    ``literals`` ((UTF-8, fold, prefix, id) tuples, as ``lit_scan_new`` takes them) run on
    ``text`` in ``mode`` (0: ASCII text, both kinds; 1: exact literals; 2: folded ones)."""
    cdef LitScan* s = lit_scan_new(literals)
    cdef vector[int32_t] out
    cdef vector[uint64_t] found
    try:
        lit_scan(s, <const char*>text, len(text), mode, out, found)
        return sorted(set(out)), s.step, out.size()
    finally:
        del s


def _key_table_lookup(list entries, list probes):
    """Tests only: the ids a key table made of ``entries`` ((key bytes, ids) pairs, no key
    twice) finds for each of ``probes`` (bytes), as lists."""
    assert len(dict(entries)) == len(entries)
    cdef KeyTable t
    cdef const int32_t* ids
    cdef int32_t count
    key_table_fill(&t, dict(entries))
    out = []
    for probe in probes:
        key_table_get(&t, <const char*>(<bytes>probe), len(probe), &ids, &count)
        out.append([ids[k] for k in range(count)])
    return out


def _key_parts(bytes a, bytes b):
    """Tests only: (the hash of ``a``, whether ``a`` and ``b``, of one length, are the same
    bytes): the key table's two halves, which hide each other's faults in lookups (a key is
    compared only when 32 bits of its hash match)."""
    assert len(a) == len(b)
    return _text_hash(a, len(a)), _same_bytes(a, b, len(a))


# Scanner ids: a predicate's (>= 0), or atom a's: ATOM_ID - a.
DEF ATOM_ID = -1


cdef bint _load_fast_path(GroupC* g) except -1:
    """The group's patterns (``pat_*``): literals of 4 bytes or more to the scanner; regexes and
    shorter literals to the rest set, with the atoms that rule each regex out filed in the
    scanner. False when the rest set is too large for one program: then the group keeps a set
    of every pattern instead."""
    cdef Options set_opts
    cdef string err
    cdef string pattern
    cdef size_t i
    literals = []
    rest = []
    prefilters = []
    g.rest_always = False
    for i in range(g.pat_kind.size()):
        kind, raw, pid = g.pat_kind[i], <bytes>g.pat_text[i].data()[:g.pat_text[i].size()], g.set_preds[i]
        if kind == K_REGEX:
            rest.append((kind, raw, pid))
            prefilter = _regex_atoms(raw)
            if prefilter is None:
                g.rest_always = True
            else:
                prefilters.append(prefilter)
        elif len(raw) >= WINDOW:
            literals.append((raw, kind == K_ICONTAINS or kind == K_IPREFIX, kind == K_PREFIX or kind == K_IPREFIX, pid))
        else:
            rest.append((kind, raw, pid))
            g.rest_always = True
    # A regex with required atoms is filed under the one the fewest of the group's regexes
    # require (/product/\d+/p1x2 under /p1x2, not /product/), and runs only when the others
    # are in the text too; otherwise it is filed under all its atoms.
    shared = {}
    for required, _ in prefilters:
        for atom in required:
            shared[atom] = shared.get(atom, 0) + 1
    atom_ids = {}
    filed = []
    requires = []
    for r, (required, atoms) in enumerate(prefilters):
        chosen = [min(required, key=lambda a: (shared[a], -len(a)))] if required else atoms
        filed.extend((atom_ids.setdefault(atom, len(atom_ids)), r) for atom in chosen)
        requires.append(sorted({atom_ids.setdefault(atom, len(atom_ids)) for atom in required}))
    literals.extend((atom, True, False, ATOM_ID - aid) for atom, aid in atom_ids.items())
    _flatten([[r for a, r in filed if a == aid] for aid in range(len(atom_ids))], &g.atom_regex, &g.atom_regex_at)
    _flatten(requires, &g.regex_atom, &g.regex_atom_at)
    if rest:
        set_opts.set_log_errors(False)
        set_opts.set_max_mem(_SET_MAX_MEM)
        g.rest = new RE2Set(set_opts, UNANCHORED)
        for kind, raw, pid in rest:
            pattern = _set_pattern(kind, string(<char*>raw, len(raw)))
            if g.rest.Add(StringPiece(pattern.data(), pattern.size()), &err) < 0:
                _drop_fast_path(g)
                raise RuleError("rule", f"regex {raw.decode('utf-8', 'replace')!r} is not valid RE2: "
                                        f"{err.decode('utf-8', 'replace')}")
            g.rest_preds.push_back(pid)
        if not _USE_SETS or not g.rest.Compile():
            _drop_fast_path(g)
            return False
    g.scan = lit_scan_new(literals)
    return True


cdef object _regex_atoms(bytes regex):
    """(required, all): the regex's atoms (RE2's FilteredRE2 prefilter: lowercased strings, one
    of which is in any ASCII text it matches) and those every such text contains; None when
    no atom rules it out (or it does not compile alone: the rest set decides)."""
    cdef FilteredRE2* f = new FilteredRE2(WINDOW)
    cdef vector[string] atoms
    cdef vector[int] some
    cdef vector[int] passed
    cdef int rid
    cdef size_t i, j
    try:
        if f.Add(StringPiece(<char*>regex, len(regex)), _regex_options(), &rid) != 0:
            return None
        f.Compile(&atoms)
        f.AllPotentials(some, &passed)
        if not passed.empty() or atoms.empty():
            return None
        required = []
        for i in range(atoms.size()):
            some.clear()
            for j in range(atoms.size()):
                if j != i:
                    some.push_back(j)
            f.AllPotentials(some, &passed)
            if passed.empty():
                required.append(atoms[i])
        every = [atoms[i] for i in range(atoms.size())]
        if not all(len(atom) >= WINDOW for atom in every):
            return None
        return required, every
    finally:
        del f


cdef void _drop_fast_path(GroupC* g) noexcept:
    if g.scan != NULL:
        del g.scan
        g.scan = NULL
    if g.rest != NULL:
        del g.rest
        g.rest = NULL
    g.rest_preds.clear()
    g.atom_regex.clear()
    g.atom_regex_at.clear()
    g.regex_atom.clear()
    g.regex_atom_at.clear()


# ---------------------------------------------------------------------------------------------
# Extracted values and per-call scratch

cdef struct Item:
    const char* text  # NULL: the item has no text
    Py_ssize_t size
    cbool ascii  # the text is ASCII (known when it is read: the pattern groups' fast case)
    double number
    int num_state


cdef struct Span:
    int32_t start
    int32_t count  # 0: the field is missing


cdef struct Row:
    PartC* unscoped
    PartC* scoped


cdef cppclass Held:
    # Strong references to the objects whose buffers a chunk's items point into: another thread
    # changing an event, a column or a custom_data value while the GIL is released cannot free
    # them. Released (under the GIL) once the chunk is evaluated.
    vector[PyObject*] objects

    void hold(PyObject* o) noexcept:
        _hold_ref(o)
        this.objects.push_back(o)

    void release() noexcept:
        cdef size_t i
        for i in range(this.objects.size()):
            _drop_ref(this.objects[i])
        this.objects.clear()

    __dealloc__():
        this.release()


cdef cppclass Scratch:
    vector[uint32_t] pred_mark
    vector[uint32_t] group_mark
    vector[uint32_t] rule_mark
    vector[int32_t]* found  # where marking appends a predicate that became true
    vector[int32_t] true_preds  # that place in phase 2 (nobody reads it there)
    vector[int] set_hits
    vector[int32_t] lit_hits
    vector[uint64_t] lit_found  # the literal scanner's marks (see lit_scan)
    vector[int32_t] atoms
    string folded
    uint32_t stamp


cdef extern from *:
    """
    static inline int _ctz64(uint64_t x) { return __builtin_ctzll(x); }
    """
    int _ctz64(uint64_t x) noexcept nogil


cdef void _next_stamp(Scratch* sc) noexcept nogil:
    cdef size_t i
    sc.stamp += 1
    if sc.stamp == 0:  # wrapped: forget every old mark
        for i in range(sc.pred_mark.size()):
            sc.pred_mark[i] = 0
        for i in range(sc.group_mark.size()):
            sc.group_mark[i] = 0
        for i in range(sc.rule_mark.size()):
            sc.rule_mark[i] = 0
        sc.stamp = 1


cdef inline void _mark_one(Scratch* sc, int p) noexcept nogil:
    if sc.pred_mark[p] != sc.stamp:
        sc.pred_mark[p] = sc.stamp
        sc.found.push_back(p)


cdef inline cbool _item_number(Item* item) noexcept nogil:
    if item.num_state == NUM_UNKNOWN:
        if item.text != NULL and parse_decimal(item.text, item.size, &item.number):
            item.num_state = NUM_YES
        else:
            item.num_state = NUM_NO
    return item.num_state == NUM_YES


cdef inline void _lookup(Scratch* sc, const KeyTable& table, const char* text, size_t size) noexcept nogil:
    cdef const int32_t* preds
    cdef int32_t count, k
    key_table_get(&table, text, size, &preds, &count)
    for k in range(count):
        _mark_one(sc, preds[k])


cdef cbool _run_set(RE2Set* rset, vector[int]& preds, Scratch* sc, const char* text, size_t size) noexcept nogil:
    """Marks the predicates of a set's patterns that match the text; False when the set's DFA
    ran out of memory (the caller then tries the patterns one by one; marks are idempotent).

    Most texts match none of the patterns. Asked only *whether* one matches, RE2 stops at the
    first match and allocates nothing; asked *which*, it allocates a match set per call (three
    allocations, ~10% of an event's instructions once). So: whether, then which."""
    cdef SetErrorInfo info
    cdef size_t i
    if _SETS_RUN_OUT:
        return False
    if not rset.Match(StringPiece(text, size), NULL, &info):
        return info.kind == kNoError
    sc.set_hits.clear()
    if not rset.Match(StringPiece(text, size), &sc.set_hits, &info) and info.kind != kNoError:
        return False
    for i in range(sc.set_hits.size()):
        _mark_one(sc, preds[sc.set_hits[i]])
    return True


cdef void _run_patterns(GroupC* g, Scratch* sc, const char* text, size_t size, cbool ascii) noexcept nogil:
    cdef size_t i
    cdef int kind
    cdef RE2* regex
    cdef cbool hit
    cdef string_view view
    if g.scan != NULL and _run_fast_path(g, sc, text, size, ascii):
        return
    if g.set != NULL and _run_set(g.set, g.set_preds, sc, text, size):
        return
    # No set, or its DFA ran out of memory: pattern by pattern (the i_ literals on folded text).
    cdef cbool folded = False
    for i in range(g.pat_kind.size()):
        kind = g.pat_kind[i]
        if kind == K_REGEX:
            regex = g.pat_regex[i]
            if regex == NULL:  # the set's DFA ran out of memory: a one-off program for this call
                regex = new RE2(StringPiece(g.pat_text[i].data(), g.pat_text[i].size()), _regex_options())
            hit = regex.Match(StringPiece(text, size), 0, size, UNANCHORED, NULL, 0)
            if regex != g.pat_regex[i]:
                del regex
            if hit:
                _mark_one(sc, g.set_preds[i])
            continue
        if kind == K_ICONTAINS or kind == K_IPREFIX:
            if not folded:
                fold_utf8(text, size, sc.folded)
                folded = True
            view = string_view(sc.folded.data(), sc.folded.size())
        else:
            view = string_view(text, size)
        if kind == K_CONTAINS or kind == K_ICONTAINS:
            hit = view.find(string_view(g.pat_text[i].data(), g.pat_text[i].size())) != <size_t>-1
        else:
            hit = view.size() >= g.pat_text[i].size() and view.substr(0, g.pat_text[i].size()) == string_view(
                g.pat_text[i].data(), g.pat_text[i].size())
        if hit:
            _mark_one(sc, g.set_preds[i])


cdef cbool _some_regex_may_match(GroupC* g, vector[int32_t]& found) noexcept nogil:
    """Whether a regex filed under a found atom has every atom it requires found (``found``:
    the atoms in the text, a few, maybe repeated)."""
    cdef size_t i, k
    cdef int32_t j, r
    cdef cbool complete
    for i in range(found.size()):
        for j in range(g.atom_regex_at[found[i]], g.atom_regex_at[found[i] + 1]):
            r = g.atom_regex[j]
            complete = True
            for k in range(<size_t>g.regex_atom_at[r], <size_t>g.regex_atom_at[r + 1]):
                if find(found.begin(), found.end(), g.regex_atom[k]) == found.end():
                    complete = False
                    break
            if complete:
                return True
    return False


cdef cbool _run_fast_path(GroupC* g, Scratch* sc, const char* text, size_t size, cbool ascii) noexcept nogil:
    """A text's patterns through the scanner and, when needed, the rest set. False when the
    rest set's DFA ran out of memory (the caller then tries every pattern one by one; marks
    are idempotent)."""
    cdef size_t i
    cdef int32_t hit
    cdef cbool run_rest = g.rest_always or not ascii
    sc.lit_hits.clear()
    if ascii:
        lit_scan(g.scan, text, size, SCAN_ASCII, sc.lit_hits, sc.lit_found)
    else:
        lit_scan(g.scan, text, size, SCAN_EXACT, sc.lit_hits, sc.lit_found)
        fold_utf8(text, size, sc.folded)
        lit_scan(g.scan, sc.folded.data(), sc.folded.size(), SCAN_FOLDED, sc.lit_hits, sc.lit_found)
    sc.atoms.clear()
    for i in range(sc.lit_hits.size()):
        hit = sc.lit_hits[i]
        if hit <= ATOM_ID:
            sc.atoms.push_back(ATOM_ID - hit)
        else:
            _mark_one(sc, hit)
    if not run_rest and not sc.atoms.empty():
        run_rest = _some_regex_may_match(g, sc.atoms)
    if g.rest != NULL and run_rest:
        return _run_set(g.rest, g.rest_preds, sc, text, size)
    return True


# _run_patterns through a pointer GCC cannot see through: inlined, it (with the scanner's
# fast path) made _run_group's frame large for every group, most of which are hash lookups.
ctypedef void (*PatternsFn)(GroupC*, Scratch*, const char*, size_t, cbool) noexcept nogil
cdef PatternsFn _run_patterns_call = _run_patterns


cdef void _run_group(PartC* p, int gid, Scratch* sc, Item* items, Span* spans) noexcept nogil:
    cdef GroupC* g = p.groups[gid]
    cdef Span span = spans[g.field]
    cdef int32_t k
    cdef Item* item
    cdef double number
    sc.group_mark[gid] = sc.stamp
    for k in range(span.start, span.start + span.count):
        item = &items[k]
        if g.kind == G_NUMBER:
            if _item_number(item):
                number = item.number
                if ((g.op == 0 and number < g.bound) or (g.op == 1 and number <= g.bound)
                        or (g.op == 2 and number > g.bound) or (g.op == 3 and number >= g.bound)):
                    _mark_one(sc, g.pred)
                    return
            continue
        if g.kind == G_TEXT:
            if g.numbers:
                if _item_number(item):
                    number = item.number + 0.0
                    if number == number:
                        _lookup(sc, g.number_eq, <const char*>&number, sizeof(double))
                elif item.text != NULL:
                    _lookup(sc, g.number_text_eq, item.text, item.size)
            if item.text == NULL:
                continue
            _lookup(sc, g.text_eq, item.text, item.size)
            if g.patterns:
                _run_patterns_call(g, sc, item.text, item.size, item.ascii)
        elif item.text != NULL:  # G_FOLDED: i_is_any
            fold_utf8(item.text, item.size, sc.folded)
            _lookup(sc, g.text_eq, sc.folded.data(), sc.folded.size())


cdef cbool _run_program(PartC* p, const int32_t* code, Scratch* sc, Item* items, Span* spans) noexcept nogil:
    """Runs a program in branch form (see _branch_program)."""
    cdef int32_t i = code[0], test, gid
    cdef cbool value
    while i >= 0:
        test = code[i]
        if test < 0:
            value = spans[~test].count > 0
        elif sc.pred_mark[test] == sc.stamp:  # most tested predicates are true ones of the eager groups
            value = True
        else:
            gid = code[i + 1]
            if sc.group_mark[gid] == sc.stamp:
                value = False
            else:
                _run_group(p, gid, sc, items, spans)
                value = sc.pred_mark[test] == sc.stamp
        i = code[i + 2] if value else code[i + 3]
    return i == B_ACCEPT


cdef struct Pending:
    # One (event, partition) between the two evaluation phases.
    PartC* part
    int32_t row
    size_t pred_start, pred_end  # true predicates of the eager groups, in Batch.preds
    size_t cand_start, cand_end  # candidate rules (in trigger order), in Batch.cands
    size_t gate_start, gate_end  # gated groups to run (those of its fired gates), in Batch.gated


cdef cppclass Batch:
    # A chunk's state between phases.
    vector[Pending] pending
    vector[int32_t] preds
    vector[int32_t] cands  # candidates, as their entries (PartC.entry) in trigger order
    vector[int32_t] gated  # gated groups, by pending
    vector[int32_t] lazy  # (row, field) pairs to extract before the programs run
    vector[char] have  # per row and field: 0 not extracted, 1 extracted, 2 requested


cdef inline void _request(Batch* b, char* have, int32_t row, int32_t f) noexcept nogil:
    """Field f of the row is to be extracted before the programs run (once)."""
    if have[f] == 0:
        have[f] = 2
        b.lazy.push_back(row)
        b.lazy.push_back(f)


cdef inline void _candidate(PartC* p, int32_t j, int32_t row, Scratch* sc, Batch* b, char* have,
                            uint64_t* need) noexcept nogil:
    """The rule of entry j is a candidate (once per event): queue the entry and request the
    fields the rule reads (with field masks, add them to ``need``)."""
    cdef const Entry* e = &p.entry[j]
    cdef int32_t k
    sc.rule_mark[e.rule] = sc.stamp
    b.cands.push_back(j)
    if p.field_masks:
        need[0] |= e.fields
        return
    for k in range(p.rule_field_at[e.rule], p.rule_field_at[e.rule + 1]):
        _request(b, have, row, p.rule_field[k])


cdef void _triage(PartC* p, int32_t row, Scratch* sc, Item* items, Span* spans, Batch* b,
                  int nfields) noexcept nogil:
    """Phase 1: run the eager groups, find the candidate rules, request the fields they read.
    The true predicates and the candidates go straight to the batch (the predicates are
    dropped when no rule is a candidate, and then no field was requested)."""
    cdef size_t i
    cdef int32_t j, pred
    cdef uint64_t need = 0
    cdef Pending pend
    cdef char* have = &b.have[row * nfields]
    _next_stamp(sc)
    pend.pred_start = b.preds.size()
    pend.cand_start = b.cands.size()
    sc.found = &b.preds
    for i in range(p.eager.size()):
        _run_group(p, p.eager[i], sc, items, spans)
    for j in range(p.always_at, <int32_t>p.entry.size()):
        _candidate(p, j, row, sc, b, have, &need)
    for i in range(pend.pred_start, b.preds.size()):
        pred = b.preds[i]
        for j in range(p.trigger_at[pred], p.trigger_at[pred + 1]):
            if sc.rule_mark[p.entry[j].rule] != sc.stamp:
                _candidate(p, j, row, sc, b, have, &need)
    while need != 0:  # the candidates' fields, by field mask
        _request(b, have, row, _ctz64(need))
        need &= need - 1
    pend.gate_start = b.gated.size()
    if not p.gate_at.empty():  # fired gates: their groups run in phase 4, their fields are requested
        for i in range(pend.pred_start, b.preds.size()):
            pred = b.preds[i]
            for j in range(p.gate_at[pred], p.gate_at[pred + 1]):
                b.gated.push_back(p.gate_group[j])
            for j in range(p.gate_field_at[pred], p.gate_field_at[pred + 1]):
                _request(b, have, row, p.gate_field[j])
    pend.gate_end = b.gated.size()
    if b.cands.size() == pend.cand_start and pend.gate_end == pend.gate_start:
        b.preds.resize(pend.pred_start)
        return
    pend.part = p
    pend.row = row
    pend.pred_end = b.preds.size()
    pend.cand_end = b.cands.size()
    b.pending.push_back(pend)


cdef void _decide(Pending* pend, Scratch* sc, Item* items, Span* spans, vector[int32_t]& out,
                  Batch* b) noexcept nogil:
    """Phase 2: restore the eager results, run the gated groups of the fired gates (their true
    predicates' rules become candidates, after the others) and the candidates' programs (a
    candidate its trigger decides is a match as it stands)."""
    cdef PartC* p = pend.part
    cdef size_t i, r
    cdef size_t ranges[4]
    cdef const Entry* e
    _next_stamp(sc)
    sc.found = &sc.true_preds
    sc.true_preds.clear()
    for i in range(p.eager.size()):
        sc.group_mark[p.eager[i]] = sc.stamp
    for i in range(pend.pred_start, pend.pred_end):
        sc.pred_mark[b.preds[i]] = sc.stamp
    ranges[0] = pend.cand_start
    ranges[1] = pend.cand_end
    ranges[2] = b.cands.size()
    if pend.gate_start != pend.gate_end:
        _gated_candidates(pend, sc, items, spans, b)
    ranges[3] = b.cands.size()
    # Two ranges, one loop: one call of _run_program, which GCC then inlines (measured: out of
    # line, the 1,000-rule pixel's programs cost ~400 instructions an event more).
    for r in range(0, 4, 2):
        for i in range(ranges[r], ranges[r + 1]):
            e = &p.entry[b.cands[i]]
            if e.code < 0:
                out.push_back(~e.code)
            elif _run_program(p, &p.code[e.code], sc, items, spans):
                out.push_back(p.rules[e.rule])


cdef inline void _clear_chunk(vector[Item]& items, vector[Row]& rows, deque[string]& owned, Batch* b,
                              vector[int]& keys_state, vector[int32_t]& redo, Py_ssize_t m) noexcept nogil:
    """A new chunk of ``m`` rows: the last one's items, rows, texts, queues and marks dropped."""
    items.clear()
    rows.clear()
    owned.clear()
    b.pending.clear()
    b.preds.clear()
    b.cands.clear()
    b.gated.clear()
    b.lazy.clear()
    memset(b.have.data(), 0, b.have.size())
    keys_state.assign(m, -1)
    rows.resize(m)
    redo.clear()


cdef void _decide_chunk(Batch* b, Scratch* sc, Item* items, Span* spans, int nf, Py_ssize_t start,
                        Py_ssize_t stop, vector[int32_t]& matched, vector[size_t]& offsets) noexcept nogil:
    """The programs of a chunk's pending (event, partition) pairs, for rows ``start:stop`` of
    the call: row r's matches appended to ``matched`` from ``offsets[r]`` on, in rule order."""
    cdef size_t k = 0, m
    cdef Py_ssize_t row
    for row in range(stop - start):
        offsets[start + row] = matched.size()
        m = matched.size()
        while k < b.pending.size() and b.pending[k].row == row:
            _decide(&b.pending[k], sc, items, &spans[row * nf], matched, b)
            k += 1
        # Candidates ran in trigger order; the few matches are sorted into rule order.
        if matched.size() - m > 1:
            sort(matched.begin() + m, matched.end())


cdef void _gated_candidates(Pending* pend, Scratch* sc, Item* items, Span* spans, Batch* b) noexcept nogil:
    """Run the gated groups of the fired gates; the rules their true predicates trigger join
    the candidates, at the end of Batch.cands (their fields were requested with the gates).
    Those rules trigger only on gated groups' predicates, so none of them was a candidate in
    triage: ``rule_mark`` dedupes them among themselves only."""
    cdef PartC* p = pend.part
    cdef size_t i
    cdef int32_t j, gid, pred
    cdef int32_t rule
    for i in range(pend.gate_start, pend.gate_end):
        gid = b.gated[i]
        if sc.group_mark[gid] != sc.stamp:
            _run_group(p, gid, sc, items, spans)
    for i in range(sc.true_preds.size()):
        pred = sc.true_preds[i]
        for j in range(p.trigger_at[pred], p.trigger_at[pred + 1]):
            rule = p.entry[j].rule
            if sc.rule_mark[rule] != sc.stamp:
                sc.rule_mark[rule] = sc.stamp
                b.cands.push_back(j)


DEF TEXT_AHEAD = 4  # rows


cdef inline void _prefetch_texts(const Item* items, const Span* spans, int nf) noexcept nogil:
    """Start loading the first lines of a row's texts, a few rows before triage scans them: in
    grouped order a chunk's rows jump about their columns' buffers, which the CPU's own
    prefetchers cannot follow."""
    cdef int f
    cdef int32_t k
    for f in range(nf):
        for k in range(spans[f].start, spans[f].start + spans[f].count):
            if items[k].text != NULL:
                _prefetch_lines(items[k].text, 2 if items[k].size > 64 else 1)


cdef inline void _triage_rows(Row* rows, Py_ssize_t nrows, Scratch* sc, vector[Item]& items, Span* spans,
                              Batch* b, int nf) noexcept nogil:
    """Phase 1 for a chunk's rows (each row's partitions: the unscoped one, then its source's)."""
    cdef Py_ssize_t row
    cdef Row* r
    for row in range(nrows):
        if row + TEXT_AHEAD < nrows:
            _prefetch_texts(items.data(), &spans[(row + TEXT_AHEAD) * nf], nf)
        r = &rows[row]
        if r.unscoped != NULL:
            _triage(r.unscoped, row, sc, items.data(), &spans[row * nf], b, nf)
        if r.scoped != NULL:
            _triage(r.scoped, row, sc, items.data(), &spans[row * nf], b, nf)


cdef inline cbool _fast_builtin(PyObject* column, Py_ssize_t row, int kind, vector[Item]& items, Span* span) noexcept nogil:
    """A built-in field's value from a call's column slice (borrowed; NULL: nobody sent it),
    without the GIL: False when it is not for here (a value that is not an exact str with
    ASCII data: ``_extract_field`` reads it under the GIL), else its item (none when missing)
    and span. For F_DOMAIN and F_PATH the column is the URL's and the item is its host or
    path as ``_add_url_part`` makes it: a span of the URL's data (a host with capitals is
    left to the GIL: its lowercased copy is owned by the chunk).

    Safe without the GIL: the slice is private to the call and holds a reference to each of
    its items, so no other thread can resize it, replace an item or free one until the call
    is done; and what is read of the item is immutable once a str exists (its type, which
    ``__class__`` assignment cannot change to or from ``str``; its length; its kind, ASCII
    and compact flags, stored beside the ``interned`` flag, which another thread may set, but
    a write of that word rewrites these flags unchanged; and its inline data). No reference
    count is touched. Non-ASCII text is left to the GIL: its UTF-8 is CPython's cache, which
    may be allocated on first use."""
    cdef PyObject* value = _column_value(column, row)
    span.start = items.size()
    span.count = 0
    if value == NULL:
        return True
    if not _exact_ascii_str(value):
        return False
    return _builtin_item(_ascii_data(value), _ascii_size(value), True, kind, items, span)


cdef inline cbool _fast_builtin_buf(const Buf* b, Py_ssize_t row, int kind, vector[Item]& items,
                                    Span* span) noexcept nogil:
    """``_fast_builtin`` for a buffer column: any text (its UTF-8 is in the buffer); False for
    numbers, as for a list's."""
    cdef const char* text
    cdef Py_ssize_t size
    span.start = items.size()
    span.count = 0
    if not _buf_has(b, row):
        return True
    if b.kind != BUF_TEXT:
        return False
    text = _buf_text(b, row, &size)
    return _builtin_item(text, size, b.ascii or _all_ascii(text, size), kind, items, span)


cdef inline cbool _builtin_item(const char* text, Py_ssize_t size, cbool ascii, int kind, vector[Item]& items,
                                Span* span) noexcept nogil:
    """A built-in field's text (a URL for F_DOMAIN and F_PATH) as ``_fast_builtin`` makes its
    item; ``span`` is set for a missing value already."""
    cdef Py_ssize_t hs, hl, ps, pl, k
    cdef Item item
    item.text = text
    item.size = size
    item.ascii = ascii
    item.number = 0.0
    item.num_state = NUM_UNKNOWN
    if kind == F_DOMAIN or kind == F_PATH:
        url_parts(item.text, item.size, &hs, &hl, &ps, &pl)
        if kind == F_DOMAIN:
            if hl < 0:
                return True
            for k in range(hs, hs + hl):
                if b'A' <= item.text[k] <= b'Z':
                    return False
            item.text += hs
            item.size = hl
        elif pl > 0:
            item.text += ps
            item.size = pl
        else:
            item.text = _SLASH
            item.size = 1
            item.ascii = True
    items.push_back(item)
    span.count = 1
    return True


cdef inline cbool _fast_parameter(PyObject* value, cbool needs_text, vector[Item]& items, Span* span) noexcept nogil:
    """A custom parameter's value from a call's parameter column slices (borrowed; NULL:
    the event lacks it), without the GIL, as ``_fast_builtin`` reads a built-in: an exact
    ASCII str as ``_push_str`` and an exact float (immutable) as ``_add_item`` makes their
    items; False for anything else (non-ASCII text, ints, bools, lists, subclasses) and for
    a float whose text a predicate reads (``number_text`` is Python): those are read under
    the GIL."""
    cdef Item item
    span.start = items.size()
    span.count = 0
    if value == NULL:
        return True
    item.text = NULL
    item.size = 0
    item.ascii = True
    item.number = 0.0
    if _exact_ascii_str(value):
        item.text = _ascii_data(value)
        item.size = _ascii_size(value)
        item.num_state = NUM_UNKNOWN
    elif _exact_float(value) and not needs_text:
        item.number = _float_value(value)
        if isfinite(item.number):
            item.num_state = NUM_YES
        else:
            item.number = 0.0
            item.num_state = NUM_NO
    else:
        return False
    items.push_back(item)
    span.count = 1
    return True


cdef inline cbool _fast_parameter_buf(const Buf* b, Py_ssize_t row, cbool needs_text, vector[Item]& items,
                                      Span* span) noexcept nogil:
    """``_fast_parameter`` for a buffer column's row (present): any text; a number as ``_add_item``
    makes a float's or an int's item, unless a predicate reads its text (left to the GIL)."""
    cdef Item item
    span.start = items.size()
    span.count = 0
    item.ascii = True
    item.number = 0.0
    if b.kind == BUF_TEXT:
        item.text = _buf_text(b, row, &item.size)
        item.ascii = b.ascii or _all_ascii(item.text, item.size)
        item.num_state = NUM_UNKNOWN
    elif needs_text:
        return False
    else:
        item.text = NULL
        item.size = 0
        item.number = _buf_number(b, row)
        if isfinite(item.number):
            item.num_state = NUM_YES
        else:
            item.number = 0.0
            item.num_state = NUM_NO
    items.push_back(item)
    span.count = 1
    return True


# ---------------------------------------------------------------------------------------------
# The matcher: extraction under the GIL, evaluation without it

# Which built-in event value ``_Events.get`` reads.
DEF W_PIXEL = 0
DEF W_URL = F_URL
DEF W_EVENT = F_EVENT
DEF W_DEVICE = F_DEVICE


cdef int _check_column(object column, str what) except -1:
    if column is not None and type(column) is not list and type(column) is not TextColumn \
            and type(column) is not NumberColumn:
        raise TypeError(f"{what}: a list, TextColumn or NumberColumn, got {type(column).__name__}")
    return 0


cdef list _alias(list keys, dict event):
    """``keys`` with each one replaced by the equal key object ``event`` holds, if it holds one.
    Events decoded together (one ``json.loads``, one unpickling) or built by the same code share
    their key objects, and a lookup with the very object a dict holds hits on identity without
    comparing texts (-6% instructions per event in rows at 10,000 rules); an equal key looks up
    exactly the same entries, so this only saves time."""
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0, i
    while PyDict_Next(event, &pos, &key, &value):
        if type(<object>key) is str:
            for i in range(len(keys)):
                if <str>key == <str>keys[i]:
                    keys[i] = <object>key
    return keys


cdef object _ABSENT = object()
cdef tuple _EVENT_KEYS = (_KEY_PIXEL, _KEY_URL, _KEY_EVENT, _KEY_DEVICE, _KEY_CUSTOM)


cdef dict _read_via_get(object event):
    """A mapping that is not exactly a dict, as a dict of the keys a rule set reads from an
    event, each read with ``get`` as the twin and the reference read it (a subclass or another
    mapping may compute its values, and ``dict(event)`` would bypass its methods)."""
    cdef dict copy = {}
    for key in _EVENT_KEYS:
        value = event.get(key)
        if value is not None:
            copy[key] = value
    return copy


@cython.final
cdef class _Events:
    """Where a batch's events come from: a sequence of mappings (rows) or lists (columns).

    Either way extraction sees the same values: a column's ``None`` is a missing key.
    Row indexes are relative to the current chunk (``start``), whose rows are the call's rows
    ``order[start:stop]``: columns are evaluated grouped by event source (see ``_run``).
    """

    cdef object events  # rows: the sequence of events
    cdef list dicts  # rows: the chunk's events, as dicts
    cdef list chunk_customs  # rows: the chunk's custom_data values
    cdef bint columnar
    # The call's rows in the order they are evaluated, and the chunk's part of it (chunk row ->
    # call row). Columns: grouped by event source, each source's rows in call order (``_run``).
    cdef vector[int32_t] order
    cdef const int32_t* idx
    cdef vector[int32_t] source  # columns: per call row, see ``Matcher._find_sources``
    cdef list columns  # columns: by W_ code (pixel_id, url, event, device_type), each a list or None
    # columns: private slices of the list columns, for the whole call (a slice holds a
    # reference to each of its items, and no other thread can see it, so neither changes
    # while the GIL is released: the built-in columns are read without it, see
    # ``_fast_builtin``). Dropped (under the GIL) when the call ends.
    cdef list slices
    cdef PyObject* column[4]  # borrowed from ``slices``, NULL for a column nobody sent or a buffer column
    cdef Buf buf[4]  # a buffer column's buffers (``matcher.columns``), kind BUF_NONE otherwise
    cdef list held_buffers  # the objects owning ``buf``'s and ``param_buf``'s buffers
    cdef list made  # objects made from buffer columns' values for the reads under the GIL, held for the chunk
    cdef object customs  # columns: the custom_data list, or None; a private slice of it from ``begin`` on
    cdef PyObject* custom_column  # borrowed: ``customs`` when a list, else NULL (for ``start_columns``)
    cdef bint by_parameter  # columns: custom parameters given as columns (``params``), not ``customs``
    cdef list params  # per field slot of a custom parameter: the columns its first key reads, in lookup order
    # by_parameter: private slices of ``params``' list columns (as ``slices``), and borrowed
    # pointers to them: field slot s reads param_column[param_at[s]:param_at[s + 1]].
    cdef list param_slices
    cdef vector[PyObject*] param_column  # (NULL for a buffer column)
    cdef vector[Buf] param_buf  # parallel to param_column: a buffer column's buffers, kind BUF_NONE for a list
    cdef vector[Py_ssize_t] param_at
    cdef list keys  # rows: the key objects looked up (see ``_alias``): by W_ code (pixel_id, url, event, device_type), then custom_data

    cdef int begin(self, Py_ssize_t n) except -1:
        """Columns: read each buffer column's buffers (see ``_column_buf``) and slice each list
        column once for the call. The order is the call's until ``_run`` sets another."""
        cdef int which
        cdef Py_ssize_t row
        cdef Buf b
        self.order.resize(n)
        for row in range(n):
            self.order[row] = row
        if not self.columnar:
            return 0
        self.held_buffers = []
        self.custom_column = NULL
        if self.customs is not None:
            self.customs = PyList_GetSlice(self.customs, 0, n)
            self.custom_column = <PyObject*>self.customs
        self.slices = [None] * 4
        for which in range(4):
            column = self.columns[which]
            self.buf[which] = _column_buf(column, self.held_buffers)
            if column is None or self.buf[which].kind != BUF_NONE:
                self.column[which] = NULL
            else:  # (shorter than n when another thread shortened the list)
                self.slices[which] = PyList_GetSlice(column, 0, n)
                self.column[which] = <PyObject*>self.slices[which]
        self.param_slices = []
        self.param_column.clear()
        self.param_buf.clear()
        self.param_at.assign(1, 0)
        if self.by_parameter:
            for looked_up in self.params:
                for column in <list>looked_up:
                    b = _column_buf(column, self.held_buffers)
                    self.param_buf.push_back(b)
                    if b.kind != BUF_NONE:
                        self.param_column.push_back(NULL)
                    else:
                        piece = PyList_GetSlice(column, 0, n)
                        self.param_slices.append(piece)
                        self.param_column.push_back(<PyObject*>piece)
                self.param_at.push_back(self.param_column.size())
        return 0

    cdef void end(self):
        self.slices = None
        self.param_slices = None
        self.made = None
        self.held_buffers = None

    cdef void start_columns(self, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
        """Columns: make rows ``order[start:stop]`` the chunk. Reads only the call's slices."""
        cdef Py_ssize_t m = stop - start
        cdef size_t i
        self.idx = self.order.data() + start
        # A str's 48-byte header and its data: a pixel id on two lines at most, a URL's first
        # ~140 bytes on three (the scan reads on; the CPU follows); the dicts' and parameters'
        # headers (a dict's keys once needed: ``_run``).
        _prefetch_rows(self.column[W_PIXEL], 2, self.idx, m)
        _prefetch_rows(self.column[W_URL], 3, self.idx, m)
        _prefetch_rows(self.custom_column, 1, self.idx, m)
        for i in range(self.param_column.size()):
            _prefetch_rows(self.param_column[i], 1, self.idx, m)

    cdef int start(self, Py_ssize_t start, Py_ssize_t stop) except -1:
        """Rows: make rows ``start:stop`` the chunk, their events as dicts."""
        cdef PyObject* raw
        cdef Py_ssize_t row, m = stop - start
        self.idx = self.order.data() + start
        self.dicts = []
        self.chunk_customs = []
        for row in range(m):
            event = self.events[self.idx[row]]
            if type(event) is not dict:
                if not isinstance(event, Mapping):
                    raise TypeError(f"events[{self.idx[row]}]: an event is a mapping, got {type(event).__name__}")
                event = _read_via_get(event)
            if row == 0:
                self.keys = _alias(list(_EVENT_KEYS), event)
            raw = PyDict_GetItemWithError(event, <object>PyList_GET_ITEM(self.keys, 4))
            self.dicts.append(event)
            self.chunk_customs.append(<object>raw if raw != NULL else None)
        return 0

    cdef inline PyObject* custom(self, Py_ssize_t row) noexcept:
        """The custom_data value (borrowed), NULL when missing."""
        cdef PyObject* value
        if not self.columnar:
            value = PyList_GET_ITEM(self.chunk_customs, row)
        elif self.customs is None or self.idx[row] >= PyList_GET_SIZE(self.customs):
            return NULL  # (past the end: another thread shortened the list during the call)
        else:
            value = PyList_GET_ITEM(self.customs, self.idx[row])
        if value == <PyObject*>None:
            return NULL
        return value

    cdef inline Py_ssize_t param_column_of(self, int slot, Py_ssize_t row) noexcept nogil:
        """Where the custom parameter a field's first key names is read for the row: the first
        column, in lookup order, with an entry there (the exact name's column first, then those
        equal under case folding, as ``_lookup_key``), as an index into ``param_column`` and
        ``param_buf``; -1 when missing. Reads only the call's slices and buffers, which no
        other thread can change (see ``_fast_builtin``)."""
        cdef Py_ssize_t i
        row = self.idx[row]
        for i in range(self.param_at[slot], self.param_at[slot + 1]):
            if self.param_buf[i].kind != BUF_NONE:
                if _buf_has(&self.param_buf[i], row):
                    return i
            elif _column_value(self.param_column[i], row) != NULL:
                return i
        return -1

    cdef PyObject* param(self, int slot, Py_ssize_t row) except? NULL:
        """The value (borrowed) of the custom parameter a field's first key names, NULL when missing."""
        cdef Py_ssize_t i = self.param_column_of(slot, row)
        if i < 0:
            return NULL
        row = self.idx[row]
        if self.param_buf[i].kind != BUF_NONE:
            return self._made(&self.param_buf[i], row)
        return _column_value(self.param_column[i], row)

    cdef inline cbool fast_param(self, int slot, Py_ssize_t row, cbool needs_text, vector[Item]& items,
                                 Span* span) noexcept nogil:
        """``param``'s value read without the GIL into its item and span (``_fast_parameter``);
        False when it is left to the GIL."""
        cdef Py_ssize_t i = self.param_column_of(slot, row)
        if i < 0:
            return _fast_parameter(NULL, needs_text, items, span)
        row = self.idx[row]
        if self.param_buf[i].kind != BUF_NONE:
            return _fast_parameter_buf(&self.param_buf[i], row, needs_text, items, span)
        return _fast_parameter(_column_value(self.param_column[i], row), needs_text, items, span)

    cdef inline PyObject* get(self, int which, Py_ssize_t row) except? NULL:
        """The built-in value (borrowed), NULL when missing."""
        if not self.columnar:
            return PyDict_GetItemWithError(<object>PyList_GET_ITEM(self.dicts, row),
                                           <object>PyList_GET_ITEM(self.keys, which))
        row = self.idx[row]
        if self.buf[which].kind != BUF_NONE:
            return self._made(&self.buf[which], row) if _buf_has(&self.buf[which], row) else NULL
        return _column_value(self.column[which], row)

    cdef PyObject* _made(self, const Buf* b, Py_ssize_t row) except NULL:
        """A buffer column's row (present) as an object (borrowed: ``made`` holds it for the chunk)."""
        value = _buf_object(b, row)
        self.made.append(value)
        return <PyObject*>value


cdef void _call_order(const vector[int32_t]& order, vector[int32_t]& matched, vector[size_t]& offsets) noexcept nogil:
    """Matches found in ``order`` (position p: the call's row order[p], its matches
    matched[offsets[p]:offsets[p + 1]]) rewritten in call order."""
    cdef size_t n = order.size(), p
    cdef vector[size_t] at
    cdef vector[int32_t] out
    at.assign(n + 1, 0)
    for p in range(n):
        at[order[p] + 1] = offsets[p + 1] - offsets[p]
    for p in range(n):
        at[p + 1] += at[p]
    out.resize(matched.size())
    for p in range(n):
        copy(matched.begin() + offsets[p], matched.begin() + offsets[p + 1], out.begin() + at[order[p]])
    matched.swap(out)
    offsets.swap(at)


# Matches per event, as int objects (an event matches few rules): match_columns' counts.
DEF _SMALL_COUNTS = 64
_small_counts = list(range(_SMALL_COUNTS))  # keeps them alive
cdef PyObject* _small_count[_SMALL_COUNTS]
for _c in range(_SMALL_COUNTS):
    _small_count[_c] = <PyObject*>_small_counts[_c]


@cython.final
cdef class _Work:
    """A call's working memory from chunk to chunk (``Matcher._run``), kept by the matcher for
    its next call. A new call's vectors would grow again from nothing, reallocated and copied
    as they do, and in new memory each time: 1,000-event calls ran 1.10-1.16x slower per
    event than 1,000-event windows of one large call, ~160 more instructions an event."""
    cdef Scratch sc
    cdef Batch b
    cdef vector[Item] items
    cdef vector[Span] spans
    cdef vector[Row] rows
    cdef vector[int] keys_state
    cdef vector[int32_t] redo

    def __cinit__(self):
        self.sc.stamp = 0

    cdef void trade(self, vector[Item]& items, vector[Span]& spans, vector[Row]& rows,
                    vector[int]& keys_state, vector[int32_t]& redo) noexcept:
        """Swap these vectors with the kept ones (their buffers change hands, none is copied)."""
        items.swap(self.items)
        spans.swap(self.spans)
        rows.swap(self.rows)
        keys_state.swap(self.keys_state)
        redo.swap(self.redo)


@cython.final
cdef class Matcher:
    """A compiled set's snapshot: partitions by event source, plus the unscoped one."""

    cdef list _ids
    # Every id's UTF-8 back to back, id i at _id_utf8[_id_at[i]:_id_at[i + 1]], for the
    # matches as buffers (``_id_table``: made on first use). Copying from here reads one flat
    # buffer, where asking each matched id's str for its UTF-8 met a cache miss per match.
    cdef string _id_utf8
    cdef vector[int64_t] _id_at
    cdef frozenset _id_odd  # the indexes of ids with no UTF-8 (not a str, a lone surrogate; None: removed)
    cdef object _unscoped  # Partition or None (kept alive for the C pointers below)
    cdef vector[int] _field_kind  # per slot: F_* code
    cdef vector[char] _field_needs_text  # (char, not bool: vector[bool] is a bitset, slow to read)
    cdef vector[char] _field_simple  # a custom parameter named by one key, no [*]
    cdef vector[char] _field_name_folded  # that key is its own case folding
    cdef list _field_name  # per slot: the first key (custom parameters)
    cdef list _field_folded  # per slot: its folded UTF-8
    cdef list _field_segments  # per slot: tuple of (name, folded utf-8 bytes, each); () for built-ins
    cdef dict _scoped  # source -> Partition (keeps them alive for the C pointers below)
    # An event's source is looked up by its UTF-8 bytes in a key table (its partition's index
    # in _source_parts), where a Python dict lookup compares a str object, its hash and its
    # text (~160 instructions per event).
    cdef KeyTable _by_source
    cdef vector[PartC*] _source_parts
    cdef dict _odd_sources  # sources with no UTF-8 form (lone surrogates), by str
    cdef size_t _max_preds, _max_groups, _max_rules
    cdef int _nfields
    cdef PartC* _unscoped_c  # (for the extraction without the GIL) NULL when none
    cdef bint _has_scoped
    # Working memory of calls that ended, for the next ones (``_Work``): taken and given
    # back under the GIL, so calls in several threads at once each have their own. A call that
    # raises does not give its back (it may be half way through a chunk): the next makes new.
    cdef list _spare

    def __init__(self, fields, unscoped, scoped, ids):
        cdef cbool flag
        self._spare = []
        self._ids = list(ids)
        self._unscoped = unscoped
        self._unscoped_c = (<Partition>unscoped).part if unscoped is not None else NULL
        self._nfields = len(fields)
        parts = ([unscoped] if unscoped is not None else []) + list(scoped.values())
        needs_text = set().union(*(p.needs_text for p in parts)) if parts else set()
        self._field_segments = []
        self._field_name = []
        self._field_folded = []
        for slot, path in enumerate(fields):
            kind = {"url": F_URL, "event": F_EVENT, "device_type": F_DEVICE, "domain": F_DOMAIN,
                    "path": F_PATH}.get(path.builtin, F_CUSTOM)
            self._field_kind.push_back(kind)
            flag = slot in needs_text
            self._field_needs_text.push_back(flag)
            segments = tuple((s.name, s.folded.encode("utf-8"), s.each) for s in path.segments)
            self._field_segments.append(segments)
            flag = len(segments) == 1 and not segments[0][2]
            self._field_simple.push_back(flag)
            flag = bool(segments) and segments[0][1] == segments[0][0].encode("utf-8")
            self._field_name_folded.push_back(flag)
            self._field_name.append(segments[0][0] if segments else None)
            self._field_folded.append(segments[0][1] if segments else None)
        self._scoped = dict(scoped)
        self._has_scoped = bool(self._scoped)
        self._odd_sources = {}
        by_text = {}
        for source, part in self._scoped.items():
            try:
                text = str(source).encode("utf-8")
            except UnicodeEncodeError:
                self._odd_sources[str(source)] = part
                continue
            by_text[text] = [self._source_parts.size()]
            self._source_parts.push_back((<Partition>part).part)
        key_table_fill(&self._by_source, by_text)
        self._max_preds = self._max_groups = self._max_rules = 1
        for part in parts:
            self._size_for(part)

    cdef void _size_for(self, Partition part):
        cdef PartC* p = part.part
        self._max_preds = max(self._max_preds, p.pred_group.size())
        self._max_groups = max(self._max_groups, p.groups.size())
        self._max_rules = max(self._max_rules, p.rules.size())

    def match(self, event):
        if type(event) is not dict and not isinstance(event, Mapping):
            raise TypeError(f"an event is a mapping, got {type(event).__name__}")
        return self.match_batch((event,))[0]

    def match_batch(self, events):
        cdef _Events src = _Events.__new__(_Events)
        cdef Py_ssize_t n = len(events)
        cdef vector[int32_t] matched
        cdef vector[size_t] offsets
        cdef list results = PyList_New(n)
        cdef list out
        cdef Py_ssize_t row
        cdef size_t i
        cdef int gc_was_enabled
        src.events = events
        self._run(src, n, matched, offsets)
        # The result lists hold only strings (no cycles), and the GIL is held throughout:
        # letting their allocation trigger collections that rescan the heap buys nothing.
        gc_was_enabled = PyGC_Disable()
        try:
            for row in range(n):
                out = PyList_New(offsets[row + 1] - offsets[row])
                for i in range(offsets[row], offsets[row + 1]):
                    rule_id = self._ids[matched[i]]
                    Py_INCREF(rule_id)
                    PyList_SET_ITEM(out, i - offsets[row], rule_id)
                Py_INCREF(out)
                PyList_SET_ITEM(results, row, out)
        finally:
            if gc_was_enabled:
                PyGC_Enable()
        return results

    def match_columns(self, Py_ssize_t n, pixel_id, event, url, device_type, custom_data, dict parameters=None):
        """Events as columns (lists of length ``n``, ``matcher.columns`` buffer columns, or None
        for a column nobody sent); ``parameters``, when given, are the custom parameters as
        columns (name -> column), in place of ``custom_data`` (a list, or None).

        Returns ``(counts, ids)``: per event its number of matches, and the matched rule
        ids of every event, flattened in event order. The caller checks the lengths.
        """
        cdef vector[int32_t] matched
        cdef vector[size_t] offsets
        cdef list counts = PyList_New(n)
        cdef list ids
        cdef Py_ssize_t row
        cdef size_t i, m
        self._run_columns(n, pixel_id, event, url, device_type, custom_data, parameters, matched, offsets)
        for row in range(n):
            m = offsets[row + 1] - offsets[row]
            if m < _SMALL_COUNTS:  # the common case: an int object from the table, not a call
                count = <object>_small_count[m]
            else:
                count = m
            Py_INCREF(count)
            PyList_SET_ITEM(counts, row, count)
        ids = PyList_New(matched.size())
        for i in range(matched.size()):
            rule_id = self._ids[matched[i]]
            Py_INCREF(rule_id)
            PyList_SET_ITEM(ids, i, rule_id)
        return counts, ids

    def match_columns_buffers(self, Py_ssize_t n, pixel_id, event, url, device_type, custom_data,
                              dict parameters=None, own_values=None, rule_values=None):
        """``match_columns`` with the answer in Arrow's layouts, little-endian, built here with
        no Python object per event or match: ``(counts, offsets, data, values)`` where counts
        is ``n`` uint32, the matched ids are the UTF-8 texts ``data[offsets[k]:offsets[k+1]]``
        (``m + 1`` int32 offsets for ``m`` matches), and values, when ``rule_values`` (one
        float64 per rule index, as ``ids``) is given, is per match the event's own value from
        ``own_values`` (``n`` float64, or None: none has one) when finite, else the rule's.
        The caller checks the buffers' lengths; ids must be ``str``."""
        cdef vector[int32_t] matched
        cdef vector[size_t] offsets
        cdef const double[::1] own
        cdef const double[::1] fallback
        cdef Py_ssize_t row, size, total = 0
        cdef size_t i, k
        cdef double value
        cdef bint own_counts
        cdef bint has_own = own_values is not None
        if has_own:
            own = own_values
        if rule_values is not None:
            fallback = rule_values
        self._run_columns(n, pixel_id, event, url, device_type, custom_data, parameters, matched, offsets)
        counts = PyBytes_FromStringAndSize(NULL, 4 * n)
        cdef char* out = PyBytes_AS_STRING(counts)
        for row in range(n):
            _put_u32(out + 4 * row, <uint32_t>(offsets[row + 1] - offsets[row]))
        self._id_table()
        cdef const int64_t* id_at = self._id_at.data()
        ends = PyBytes_FromStringAndSize(NULL, 4 * (matched.size() + 1))
        cdef char* at = PyBytes_AS_STRING(ends)
        _put_u32(at, 0)
        for i in range(matched.size()):  # the offsets (past int32: raises below, unread)
            size = id_at[matched[i] + 1] - id_at[matched[i]]
            if size == 0 and matched[i] in self._id_odd:  # raises, as encoding the id does
                PyUnicode_AsUTF8AndSize(<object>PyList_GET_ITEM(self._ids, matched[i]), &size)
            total += size
            _put_u32(at + 4 * (i + 1), <uint32_t>total)
        if total > 0x7FFFFFFF:
            raise OverflowError(f"the matched ids hold {total} bytes, more than int32 offsets address")
        data = PyBytes_FromStringAndSize(NULL, total)
        cdef char* put = PyBytes_AS_STRING(data)
        for i in range(matched.size()):  # the UTF-8, each id where its offset says
            memcpy(put + _offset_at(at, i), self._id_utf8.data() + id_at[matched[i]],
                   id_at[matched[i] + 1] - id_at[matched[i]])
        if rule_values is None:
            return counts, ends, data, None
        values = PyBytes_FromStringAndSize(NULL, 8 * matched.size())
        out = PyBytes_AS_STRING(values)
        for row in range(n):
            value = own[row] if has_own else 0.0
            own_counts = has_own and isfinite(value)  # else each match's rule's value
            for k in range(offsets[row], offsets[row + 1]):
                _put_f64(out + 8 * k, value if own_counts else fallback[matched[k]])
        return counts, ends, data, values

    cdef int _id_table(self) except -1:
        """Make ``_id_utf8``, ``_id_at`` and ``_id_odd`` if not yet made (under the GIL, with no
        Python code run on the way, so no other thread sees them half made). An id with no
        UTF-8 form gets none here: it raises only when matched, as before it was tabled."""
        cdef string utf8
        cdef vector[int64_t] at
        cdef const char* text
        cdef Py_ssize_t size, i
        if self._id_at.size() == <size_t>len(self._ids) + 1:
            return 0
        odd = set()
        at.push_back(0)
        for i in range(len(self._ids)):
            rule_id = self._ids[i]
            text = PyUnicode_AsUTF8AndSize_NoExc(rule_id, &size) if isinstance(rule_id, str) else NULL
            if text == NULL:
                PyErr_Clear()
                odd.add(i)
            else:
                utf8.append(text, size)
            at.push_back(utf8.size())
        self._id_utf8.swap(utf8)
        self._id_at.swap(at)
        self._id_odd = frozenset(odd)
        return 0

    cdef int _run_columns(self, Py_ssize_t n, pixel_id, event, url, device_type, custom_data, dict parameters,
                          vector[int32_t]& matched, vector[size_t]& offsets) except -1:
        """Check the columns and evaluate them (``_run``)."""
        cdef _Events src = _Events.__new__(_Events)
        src.columnar = True
        src.columns = [pixel_id, url, event, device_type]
        for column in src.columns:
            _check_column(column, "a column")
        if custom_data is not None and type(custom_data) is not list:
            raise TypeError(f"custom_data: a list, got {type(custom_data).__name__}")
        src.customs = custom_data
        if parameters is not None:
            for column in parameters.values():
                _check_column(column, "a custom parameter's column")
            src.by_parameter = True
            by_folding = _by_folding(parameters)
            src.params = [self._parameter_columns(slot, parameters, by_folding) for slot in range(self._nfields)]
        self._run(src, n, matched, offsets)
        return 0

    cdef list _parameter_columns(self, int slot, dict parameters, dict by_folding):
        """The columns a custom field's first key reads, in lookup order (empty for built-ins)."""
        name = self._field_name[slot]
        if name is None:
            return []
        exact = parameters.get(name)
        order = [exact] if exact is not None else []
        order += [column for key, column in by_folding.get(self._field_folded[slot], ()) if key != name]
        return order

    cdef int _run(self, _Events src, Py_ssize_t n, vector[int32_t]& matched, vector[size_t]& offsets) except -1:
        """Evaluate ``n`` events chunk by chunk; row r's matches are matched[offsets[r]:offsets[r+1]].

        Columns are evaluated grouped by event source (``_group_by_source``): one pixel's
        rules, groups and tables are then read for a run of its events, not fetched again
        from memory for each event another pixel's came between. The matches are put back in
        call order at the end."""
        cdef Py_ssize_t start, stop, row, rows_here
        cdef vector[Item] items
        cdef vector[Span] spans
        cdef vector[Row] rows
        cdef vector[int] keys_state
        cdef deque[string] owned
        cdef Held held
        cdef vector[int32_t] redo  # columns: (row, field slot or -1 for the source) left to the GIL
        cdef size_t k
        cdef bint evaluated
        cdef PyObject* raw
        cdef int nf = max(self._nfields, 1)
        cdef _Work work = self._spare.pop() if self._spare else _Work.__new__(_Work)
        cdef Scratch* sc = &work.sc  # (its marks hold older stamps than any of this call's)
        cdef Batch* b = &work.b
        work.trade(items, spans, rows, keys_state, redo)
        sc.pred_mark.resize(self._max_preds, 0)
        sc.group_mark.resize(self._max_groups, 0)
        sc.rule_mark.resize(self._max_rules, 0)
        rows_here = min(n, CHUNK)
        spans.resize(rows_here * nf)
        b.have.resize(rows_here * nf)
        offsets.assign(n + 1, 0)
        src.begin(n)
        cdef bint group = src.columnar and self._has_scoped
        cdef bint grouped = False
        # Sized with the GIL (a failed allocation is a MemoryError there): what the nogil
        # block below fills.
        if group:
            src.source.resize(n)
        keys_state.reserve(rows_here)
        rows.reserve(rows_here)
        start = 0
        while start < n:
            evaluated = False  # eager groups and candidates have run
            held.release()  # (the last chunk's references: its programs have run)
            if src.columnar:
                # No GIL: grouping the call's rows, then chunk after chunk the fields every
                # event needs (those of the eager groups) that are built-in columns' ASCII
                # strs or buffers, and the sources given either way; when nothing is left to
                # the GIL (the common case), the next phases too. The GIL is taken again only
                # for a chunk that left something to it, once to read a list's int pixel ids
                # (``_find_sources``), or at the call's end: each release,
                # with other threads waiting for it, costs them a wake-up and this thread a
                # wait to take it back.
                src.made = []
                with nogil:
                    if group:
                        grouped = self._group_by_source(src, n)
                        group = False
                    while start < n:
                        stop = min(n, start + CHUNK)
                        _clear_chunk(items, rows, owned, b, keys_state, redo, stop - start)
                        src.start_columns(start, stop)
                        self._extract_fast(src, stop - start, items, spans.data(), rows.data(), b.have.data(), nf, redo)
                        if not redo.empty():
                            break
                        self._evaluate(src, rows.data(), start, stop, sc, items, spans.data(), b, nf, redo)
                        evaluated = True
                        if not redo.empty():
                            break
                        _decide_chunk(b, sc, items.data(), spans.data(), nf, start, stop, matched, offsets)
                        evaluated = False
                        start = stop
                if start >= n:
                    break
                # GIL: the rest of this chunk's (queued by row, as the rows are read).
                if not evaluated:
                    self._extract_redo(src, redo, items, spans.data(), rows.data(), owned, &held,
                                       b.have.data(), nf, keys_state.data())
            else:
                # GIL: the fields every event needs (those of the eager groups).
                stop = min(n, start + CHUNK)
                _clear_chunk(items, rows, owned, b, keys_state, redo, stop - start)
                src.start(start, stop)
                for row in range(stop - start):
                    self._extract(src, row, items, &spans[row * nf], &rows[row], owned, &held,
                                  &b.have[row * nf], &keys_state[row])
            if not evaluated:
                redo.clear()
                with nogil:
                    self._evaluate(src, rows.data(), start, stop, sc, items, spans.data(), b, nf, redo)
            # GIL: the fields the candidates' programs read that are left to it (custom data
            # as dicts, whose keys are asked for first: their lookups would miss one by one).
            if not src.by_parameter:
                for k in range(0, redo.size(), 2):
                    raw = src.custom(redo[k])
                    if raw != NULL:
                        _prefetch_dict_keys(raw)
            for k in range(0, redo.size(), 2):
                row = redo[k]
                self._extract_field(src, row, redo[k + 1], &spans[row * nf], items, owned, &held,
                                    &keys_state[row])
            # No GIL: the programs.
            with nogil:
                _decide_chunk(b, sc, items.data(), spans.data(), nf, start, stop, matched, offsets)
            start = stop
        offsets[n] = matched.size()
        src.end()
        work.trade(items, spans, rows, keys_state, redo)
        self._spare.append(work)
        if grouped:
            _call_order(src.order, matched, offsets)
        return 0

    cdef bint _group_by_source(self, _Events src, Py_ssize_t n) noexcept nogil:
        """Columns: each row's source (``_find_sources``), then ``src.order`` as the rows grouped
        by it within each window of ``GROUP_WINDOW`` rows (a counting sort; a source's rows keep
        their order). False when that order is the call's own. ``src.source`` holds n rows."""
        cdef vector[int32_t] at
        cdef Py_ssize_t row, first, last
        cdef int32_t k
        cdef bint moved = False
        self._find_sources(src, n)
        for first in range(0, n, GROUP_WINDOW):
            last = min(n, first + GROUP_WINDOW)
            at.assign(self._source_parts.size() + 3, 0)  # by source + 2: -2 (to the GIL), -1 (none), sources
            at[0] = first
            for row in range(first, last):
                at[src.source[row] + 3] += 1
            for k in range(1, <int32_t>at.size()):
                at[k] += at[k - 1]
            for row in range(first, last):
                k = at[src.source[row] + 2]
                at[src.source[row] + 2] = k + 1
                src.order[k] = row
                moved = moved or k != row
        return moved

    cdef void _find_sources(self, _Events src, Py_ssize_t n) noexcept nogil:
        """Columns, without the GIL (taken once, when a list holds ints: their values are
        Python's): per call row, the index of its source's partition in ``_source_parts``, -1
        when it has none (no pixel id, a float that is no integer, or one no rule names), -2
        when its pixel id is left to the GIL (see ``_extract_fast``). A float, in a float column
        or a list (an exact one), is read here unless it is an integer past int64's range."""
        cdef Py_ssize_t row, size
        cdef const Buf* pixel_buf = &src.buf[W_PIXEL]
        cdef PyObject* pixel
        cdef const char* text
        cdef bint ints = False
        for row in range(n):
            src.source[row] = -1
            if pixel_buf.kind == BUF_NONE:
                pixel = _column_value(src.column[W_PIXEL], row)
                if pixel == NULL:
                    continue
                if not _exact_ascii_str(pixel):  # floats, str subclasses, non-ASCII, ints, ...
                    if _exact_float(pixel):  # as a float column's (a float's value is C's)
                        src.source[row] = self._float_source(_float_value(pixel))
                        continue
                    src.source[row] = -2
                    ints = ints or _exact_int(pixel)
                    continue
                text = _ascii_data(pixel)
                size = _ascii_size(pixel)
            elif not _buf_has(pixel_buf, row):
                continue
            elif pixel_buf.kind == BUF_TEXT:
                text = _buf_text(pixel_buf, row, &size)
            elif pixel_buf.kind == BUF_INT:  # an integer's decimal text (``_source_part``)
                src.source[row] = self._int_source(_buf_int(pixel_buf, row))
                continue
            else:  # a float: an integral one is its integer's id (``source_key``)
                src.source[row] = self._float_source(_buf_number(pixel_buf, row))
                continue
            src.source[row] = self._source_index(text, size)
        if ints:  # a list's exact ints: their values are read with the GIL, once for them all
            with gil:
                self._find_int_sources(src, n)

    cdef void _find_int_sources(self, _Events src, Py_ssize_t n) noexcept:
        """``_find_sources`` for the rows left to the GIL whose pixel id is an exact int that
        fits 64 bits (the others stay left to it)."""
        cdef Py_ssize_t row
        cdef PyObject* pixel
        for row in range(n):
            if src.source[row] != -2:
                continue
            pixel = _column_value(src.column[W_PIXEL], row)
            if pixel != NULL and _exact_int(pixel):
                src.source[row] = self._long_source(pixel)

    cdef int32_t _float_source(self, double number) noexcept nogil:
        """``_int_source`` of a float pixel id that is an integer in int64's range; -2 for an
        integer past it (``source_key`` writes its digits, with the GIL), -1 for a fraction,
        NaN or an infinity (no source's id)."""
        cdef int64_t integer
        if -9223372036854775808.0 <= number < 9223372036854775808.0:
            integer = <int64_t>number
            return self._int_source(integer) if <double>integer == number else -1
        return -2 if isfinite(number) else -1

    cdef int32_t _long_source(self, PyObject* pixel) noexcept:
        """``_int_source`` of an exact int (with the GIL); -2 past 64 bits (``source_key``'s
        to say). An exact int cannot fail to convert: at most it overflows."""
        cdef int overflow = 0
        cdef long long number = PyLong_AsLongLongAndOverflow(<object>pixel, &overflow)
        return -2 if overflow else self._int_source(number)

    cdef void _evaluate(self, _Events src, Row* rows, Py_ssize_t start, Py_ssize_t stop, Scratch* sc,
                        vector[Item]& items, Span* spans, Batch* b, int nf, vector[int32_t]& redo) noexcept nogil:
        """No GIL, once a chunk's eager fields are extracted: eager groups and candidates, and
        the fields the candidates' programs read that ``_fast_field`` can (columns); the others
        are queued in ``redo`` (empty on entry). (The programs stay in ``_run``: compiled apart
        from its locals they cost +2% instructions on one pixel.)"""
        cdef size_t k
        cdef int32_t row, slot
        _triage_rows(rows, stop - start, sc, items, spans, b, nf)
        if not src.columnar:
            redo.assign(b.lazy.begin(), b.lazy.end())
            return
        for k in range(0, b.lazy.size(), 2):
            row = b.lazy[k]
            slot = b.lazy[k + 1]
            if not self._fast_field(src, slot, row, items, &spans[row * nf + slot]):
                redo.push_back(row)
                redo.push_back(slot)

    cdef int _extract(self, _Events src, Py_ssize_t row, vector[Item]& items, Span* base, Row* result,
                      deque[string]& owned, Held* held, char* have, int* keys_state) except -1:
        """The fields of the eager groups of the event's partitions (``have``: the row's
        extracted fields, so a field both partitions read is extracted once)."""
        cdef PartC* p
        cdef size_t i
        cdef int slot
        result.unscoped = NULL
        result.scoped = NULL
        if self._unscoped is not None:
            p = (<Partition>self._unscoped).part
            result.unscoped = p
            for i in range(p.eager_fields.size()):
                slot = p.eager_fields[i]
                self._extract_field(src, row, slot, base, items, owned, held, keys_state)
                have[slot] = 1
        if not self._scoped:
            return 0
        return self._extract_scoped(src, row, items, base, result, owned, held, have, keys_state)

    cdef inline int _extract_scoped(self, _Events src, Py_ssize_t row, vector[Item]& items, Span* base,
                                    Row* result, deque[string]& owned, Held* held, char* have, int* keys_state) except -1:
        """The event's partition by its source, and the fields of its eager groups not yet extracted."""
        cdef PartC* p = self._source_part(src.get(W_PIXEL, row))
        cdef size_t i
        cdef int slot
        result.scoped = p
        if p == NULL:
            return 0
        for i in range(p.eager_fields.size()):
            slot = p.eager_fields[i]
            if have[slot] == 0:
                self._extract_field(src, row, slot, base, items, owned, held, keys_state)
                have[slot] = 1
        return 0

    cdef void _extract_fast(self, _Events src, Py_ssize_t nrows, vector[Item]& items, Span* spans, Row* rows,
                            char* have, int nf, vector[int32_t]& redo) noexcept nogil:
        """Columns, without the GIL: each row's partitions (its source as ``_find_sources``
        found it) and the fields of their eager groups, as ``_extract`` finds them, for what can
        be read without it (``_fast_field``); the rest is queued in ``redo`` as (row, slot),
        (row, -1) for a source left to the GIL, for ``_extract_redo`` (a queued field is marked
        extracted already, so it is queued once)."""
        cdef Py_ssize_t row
        cdef int32_t source
        cdef Row* r
        for row in range(nrows):
            r = &rows[row]
            r.unscoped = self._unscoped_c
            r.scoped = NULL
            if r.unscoped != NULL:
                self._fast_fields(src, r.unscoped, row, items, &spans[row * nf], &have[row * nf], redo)
            if not self._has_scoped:
                continue
            source = src.source[src.idx[row]]
            if source == -2:
                redo.push_back(row)
                redo.push_back(-1)
            elif source >= 0:
                r.scoped = self._source_parts[source]
                self._fast_fields(src, r.scoped, row, items, &spans[row * nf], &have[row * nf], redo)

    cdef inline void _fast_fields(self, _Events src, PartC* p, Py_ssize_t row, vector[Item]& items, Span* base,
                                  char* have, vector[int32_t]& redo) noexcept nogil:
        cdef size_t i
        cdef int slot
        for i in range(p.eager_fields.size()):
            slot = p.eager_fields[i]
            if have[slot]:
                continue
            have[slot] = 1
            if not self._fast_field(src, slot, row, items, &base[slot]):
                redo.push_back(row)
                redo.push_back(slot)

    cdef inline cbool _fast_field(self, _Events src, int slot, Py_ssize_t row, vector[Item]& items,
                                  Span* span) noexcept nogil:
        """Field ``slot`` of a row read without the GIL (columns): a built-in or a URL part (see
        ``_fast_builtin``), or a custom parameter named by one key when parameters come as
        columns (see ``_fast_parameter``). False when it is left to the GIL."""
        cdef int kind = self._field_kind[slot]
        cdef int which = kind  # (a built-in's W_ code is its F_ code)
        if kind == F_DOMAIN or kind == F_PATH:
            which = W_URL
        elif kind == F_CUSTOM:
            if src.by_parameter and self._field_simple[slot]:
                return src.fast_param(slot, row, self._field_needs_text[slot], items, span)
            return False
        row = src.idx[row]
        if src.buf[which].kind != BUF_NONE:
            return _fast_builtin_buf(&src.buf[which], row, kind, items, span)
        return _fast_builtin(src.column[which], row, kind, items, span)

    cdef int _extract_redo(self, _Events src, vector[int32_t]& redo, vector[Item]& items, Span* spans, Row* rows,
                           deque[string]& owned, Held* held, char* have, int nf, int* keys_state) except -1:
        """Columns, with the GIL: what ``_extract_fast`` left (see there), as ``_extract`` does it."""
        cdef size_t k
        cdef int32_t row, slot
        for k in range(0, redo.size(), 2):
            row = redo[k]
            slot = redo[k + 1]
            if slot >= 0:
                self._extract_field(src, row, slot, &spans[row * nf], items, owned, held, &keys_state[row])
            else:
                self._extract_scoped(src, row, items, &spans[row * nf], &rows[row], owned, held, &have[row * nf],
                                     &keys_state[row])
        return 0

    cdef PartC* _source_part(self, PyObject* raw) except? NULL:
        """The partition of an event's source (its pixel_id, borrowed; NULL: missing), NULL when
        none: its text as ``source_key`` gives it (a str as it is, an integer in decimal, an
        integral float or Decimal as its integer; an exact int or float in int64's range
        without a str made)."""
        cdef const char* text
        cdef Py_ssize_t size
        cdef int32_t source
        if raw == NULL:
            return NULL
        if type(<object>raw) is str:  # the usual id: its text as it is
            key = <object>raw
        else:
            if _exact_int(raw):
                source = self._long_source(raw)
            elif _exact_float(raw):
                source = self._float_source(_float_value(raw))
            else:
                source = -2
            if source != -2:  # (-2: past int64, or no exact int or float: its text, with the GIL)
                return self._source_parts[source] if source >= 0 else NULL
            key = source_key(<object>raw)
            if key is None:
                return NULL
        text = _utf8(key, &size)
        if text == NULL:
            found = self._odd_sources.get(str(key))
            return (<Partition>found).part if found is not None else NULL
        source = self._source_index(text, size)
        return self._source_parts[source] if source >= 0 else NULL

    cdef int32_t _int_source(self, int64_t number) noexcept nogil:
        """``_source_index`` of an integer pixel id's decimal text (``source_key``'s), written
        here: an int column's ids (or a list's ints) find their source without a str made."""
        cdef char digits[24]
        cdef char* at = digits + 24
        cdef uint64_t magnitude = <uint64_t>0 - <uint64_t>number if number < 0 else <uint64_t>number
        while True:
            at -= 1
            at[0] = <char>(48 + magnitude % 10)
            magnitude //= 10
            if magnitude == 0:
                break
        if number < 0:
            at -= 1
            at[0] = 45  # '-'
        return self._source_index(at, digits + 24 - at)

    cdef inline int32_t _source_index(self, const char* text, Py_ssize_t size) noexcept nogil:
        """The index in ``_source_parts`` of the source whose UTF-8 is ``text``; -1 when none."""
        cdef const int32_t* index
        cdef int32_t count
        key_table_get(&self._by_source, text, size, &index, &count)
        return index[0] if count else -1

    cdef int _extract_field(self, _Events src, Py_ssize_t row, int slot, Span* base, vector[Item]& items,
                            deque[string]& owned, Held* held, int* keys_state) except -1:
        """The items of the row's field ``slot``, appended to ``items``; its span in ``base``.
        The common case (a built-in field holding a str) stays here, the others out of line."""
        cdef int kind = self._field_kind[slot]
        cdef PyObject* raw
        cdef Span span
        span.start = items.size()
        if kind == F_URL or kind == F_EVENT or kind == F_DEVICE:
            raw = src.get(kind, row)  # (the W_ code of a built-in field is its F_ code)
            if raw == NULL:
                pass
            elif type(<object>raw) is str:
                _push_str(items, <object>raw, held)
            else:
                self._add_items(<object>raw, items, self._field_needs_text[slot], held)
        elif kind == F_DOMAIN or kind == F_PATH:
            _add_url_part(src.get(W_URL, row), kind == F_DOMAIN, items, owned, held)
        else:
            self._extract_custom(src, row, slot, items, held, keys_state)
        span.count = items.size() - span.start
        base[slot] = span
        return 0

    cdef int _extract_custom(self, _Events src, Py_ssize_t row, int slot, vector[Item]& items, Held* held,
                             int* keys_state) except -1:
        """A custom parameter: its first key's value, then the path's other keys."""
        cdef bint needs_text = self._field_needs_text[slot]
        cdef PyObject* raw
        if src.by_parameter:
            raw = src.param(slot, row)
            value = <object>raw if raw != NULL else None
        else:
            raw = src.custom(row)
            value = None if raw == NULL else _lookup_key(
                <object>raw, self._field_name[slot], self._field_folded[slot],
                keys_state if self._field_name_folded[slot] else NULL)
        if value is None:
            return 0
        if self._field_simple[slot]:
            self._add_items(value, items, needs_text, held)
        else:
            self._extract_path(value, slot, items, needs_text, held)
        return 0

    cdef int _extract_path(self, object first, int slot, vector[Item]& items, bint needs_text,
                           Held* held) except -1:
        """The items of a custom parameter path, given its first key's value (not None)."""
        cdef tuple segments = self._field_segments[slot]
        cdef Py_ssize_t i, last = len(segments) - 1
        values = [first]  # what the path's i-th key gives, node by node
        for i in range(last + 1):
            name, folded, each = segments[i]
            if i:
                values = [value for value in (_lookup_key(node, name, folded, NULL) for node in nodes)
                          if value is not None]
            nodes = []
            for value in values:  # a list fans out under [*] and at the last key
                if (each or i == last) and isinstance(value, (list, tuple)):
                    nodes.extend([v for v in value if v is not None])
                else:
                    nodes.append(value)
            if not nodes:
                return 0
        for value in nodes:
            self._add_item(value, items, needs_text, held)

    cdef int _add_items(self, object value, vector[Item]& items, bint needs_text, Held* held) except -1:
        if type(value) is str:  # the common case, without the dispatch below
            _push_str(items, value, held)
            return 0
        if value is None:
            return 0
        if isinstance(value, (list, tuple)):
            for element in value:
                if element is not None:
                    self._add_item(element, items, needs_text, held)
        else:
            self._add_item(value, items, needs_text, held)

    cdef int _add_item(self, object value, vector[Item]& items, bint needs_text, Held* held) except -1:
        cdef Item item
        item.text = NULL
        item.size = 0
        item.ascii = True  # true, false and number texts
        item.number = 0.0
        item.num_state = NUM_NO
        if isinstance(value, str):
            _set_text(&item, value, held)
            item.num_state = NUM_UNKNOWN if item.text != NULL else NUM_NO
        elif value is True:
            item.text = _TRUE
            item.size = 4
        elif value is False:
            item.text = _FALSE
            item.size = 5
        elif isinstance(value, int):
            if type(value) is not int:  # a subclass as its value (``item_text``): as an exact int
                return self._add_item(int.__int__(value), items, needs_text, held)
            try:
                item.number = float(value)
                item.num_state = NUM_YES
            except OverflowError:
                pass
            if needs_text:
                try:
                    text = str(value)
                except ValueError:
                    text = None
                if text is not None:
                    _set_text(&item, text, held)
        elif isinstance(value, float):
            if isfinite(<double>value):
                item.number = <double>value
                item.num_state = NUM_YES
            if needs_text:
                text = number_text(value)
                _set_text(&item, text, held)
        elif isinstance(value, Integral):  # an integer of another type (numpy.int64): as its int
            return self._add_item(int(value), items, needs_text, held)
        elif isinstance(value, Decimal):  # ``decimal_number`` and ``decimal_text``
            number = decimal_number(value)
            if number is not None:
                item.number = <double>number
                item.num_state = NUM_YES
            if needs_text:
                text = decimal_text(value)
                if text is not None:
                    _set_text(&item, text, held)
        items.push_back(item)
        return 0


cdef int _add_url_part(PyObject* url, cbool domain, vector[Item]& items, deque[string]& owned,
                       Held* held) except -1:
    """The URL's host (lowercased, owned) or path ("/" when empty) as an item; none when the
    URL is missing, not a str, or without a host."""
    cdef const char* text
    cdef Py_ssize_t size, hs, hl, ps, pl, k
    cdef Item item
    cdef string host
    if url == NULL or not isinstance(<object>url, str):
        return 0
    text = _utf8(<object>url, &size)
    if text == NULL:
        return 0
    item.ascii = PyUnicode_IS_COMPACT_ASCII(<object>url)  # so are its host and path
    item.number = 0.0
    item.num_state = NUM_UNKNOWN
    url_parts(text, size, &hs, &hl, &ps, &pl)
    if domain:
        if hl < 0:
            return 0
        host.assign(text + hs, hl)
        for k in range(hl):
            if b'A' <= host[k] <= b'Z':
                host[k] = host[k] + 32
        owned.push_back(host)
        item.text = owned.back().data()
        item.size = hl
    elif pl > 0:
        held.hold(url)
        item.text = text + ps
        item.size = pl
    else:
        item.text = _SLASH
        item.size = 1
        item.ascii = True
    items.push_back(item)
    return 0


cdef object _lookup_key(object node, str name, bytes folded, int* keys_state):
    """A custom parameter: the exact key wins, else the first key equal under case folding.

    ``keys_state`` (given when ``name`` is its own folding) caches whether every key of
    ``node`` is its own folding; then no key can equal ``name`` under folding without
    equalling it exactly, and the scan is skipped.
    """
    cdef PyObject* raw
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0
    if type(node) is dict:
        raw = PyDict_GetItemWithError(node, name)
        if raw != NULL:
            return <object>raw
        if keys_state != NULL:
            if keys_state[0] < 0:
                keys_state[0] = _keys_are_folded(<dict>node)
            if keys_state[0] == 1:
                return None
        while PyDict_Next(node, &pos, &key, &value):
            if _folds_to(<object>key, folded):
                return <object>value
        return None
    if isinstance(node, Mapping):
        found = node.get(name, _ABSENT)  # (as ``values.lookup``: not ``in`` then ``[]``)
        if found is not _ABSENT:
            return found
        for k, v in node.items():
            if _folds_to(k, folded):
                return v
    return None


cdef dict _by_folding(dict parameters):
    """Parameter columns by their name's simple case folding (UTF-8): folded -> [(name,
    column)] in the columns' order. Each name is folded once, so however many columns a
    request sends, finding every field's columns costs one pass over them."""
    cdef dict index = {}
    cdef const char* text
    cdef Py_ssize_t size
    cdef string buf
    for key, column in parameters.items():
        if not isinstance(key, str):
            continue
        text = _utf8(key, &size)
        if text == NULL:
            continue
        fold_utf8(text, size, buf)
        index.setdefault(<bytes>buf, []).append((key, column))
    return index


cdef int _keys_are_folded(dict node):
    """1 when every str key is ASCII without capitals (its own folding), else 0."""
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_ssize_t pos = 0, i, n
    cdef const char* data
    while PyDict_Next(node, &pos, &key, &value):
        if not isinstance(<object>key, str):
            continue
        if not PyUnicode_IS_COMPACT_ASCII(<object>key):
            return 0
        data = <const char*>PyUnicode_DATA(<object>key)
        n = PyUnicode_GET_LENGTH(<object>key)
        for i in range(n):
            if b'A' <= data[i] <= b'Z':
                return 0
    return 1


cdef bint _folds_to(object key, bytes folded) except -1:
    """Whether a key's simple case folding is ``folded`` (UTF-8)."""
    cdef const char* text
    cdef const char* target = folded
    cdef Py_ssize_t size, i, n = len(folded)
    cdef unsigned char c
    cdef string buf
    if not isinstance(key, str):
        return False
    text = _utf8(key, &size)
    if text == NULL:
        return False
    for i in range(size):  # ASCII keys fold byte by byte: compare without building the folding
        c = <unsigned char>text[i]
        if c >= 0x80:
            break
        if i >= n or <char>(c + 32 if 65 <= c <= 90 else c) != target[i]:
            return False
    else:
        return size == n
    fold_utf8(text, size, buf)
    return buf.size() == <size_t>n and buf == <string>folded


cdef inline void _set_text(Item* item, object text, Held* held) noexcept:
    """An item's text: a str's UTF-8 (NULL for lone surrogates), and whether it is ASCII; the
    str is held until the chunk is done (its buffer is read without the GIL)."""
    item.text = _utf8(text, &item.size)
    item.ascii = PyUnicode_IS_COMPACT_ASCII(text)
    held.hold(<PyObject*>text)


cdef inline int _push_str(vector[Item]& items, object text, Held* held) except -1:
    """A str value as an item: its text, its number parsed on demand."""
    cdef Item item
    _set_text(&item, text, held)
    item.number = 0.0
    item.num_state = NUM_UNKNOWN if item.text != NULL else NUM_NO
    items.push_back(item)
    return 0


cdef const char* _utf8(object text, Py_ssize_t* size) noexcept:
    """UTF-8 of a str (ASCII data directly; else CPython's cached UTF-8), NULL for lone surrogates."""
    cdef const char* data
    if PyUnicode_IS_COMPACT_ASCII(text):
        size[0] = PyUnicode_GET_LENGTH(text)
        return <const char*>PyUnicode_DATA(text)
    data = PyUnicode_AsUTF8AndSize_NoExc(text, size)
    if data == NULL:
        PyErr_Clear()
        size[0] = 0
    return data
