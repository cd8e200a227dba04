# Included by _ruleset_c.pyx.
#
# Literal scanner: which of a group's literals occur in a text, in one pass over it.
#
# Every literal of 4 bytes or more is filed under 4-byte windows of its lowercased text. The
# scan reads the lowercased text's window at every `step`-th position: two bits in one word
# of a bloom (16 bits per filed window, ~1 KiB for a hundred literals) say whether any
# literal could have it; only then is the window looked up, inline, in a flat table (open
# addressing, at most half full, probed from the top bits of the same hash, the window stored
# in its slot) and each literal filed under it compared where it would start (its last four
# bytes first). A literal is filed under `step`
# consecutive windows (those the fewest other literals share), so one of them lies on a
# sampled position wherever it occurs: `step` is up to 4, limited by the shortest literal
# (length - 3) and lowered while more than 16 literals would share a window. Literals that
# must start the text ("prefix") are looked up only at the offsets of their windows. A URL
# costs ~4-11 instructions a byte (RE2::Set's DFA, tracking every pattern, spends ~20, plus
# its per-call costs).
#
# A literal compares byte for byte ("exact") or under simple case folding ("fold": its text
# is given folded), anywhere or at the start only ("prefix"). An ASCII text is scanned once
# for both kinds (folding ASCII is lowercasing A-Z); another text twice: as it is for the
# exact literals (UTF-8 never hides an ASCII byte inside a longer character), and folded for
# the others. The caller's ids are opaque: the kernel uses them for predicates and to know
# that a regex's atom is present.

from libc.stdint cimport uint64_t
from libc.string cimport memcmp

DEF WINDOW = 4
DEF MAX_STEP = 4
DEF MAX_SHARED = 16  # literals filed under one window, above which a shorter step is taken

cdef unsigned char _LOWER[256]
for _c in range(256):
    _LOWER[_c] = _c + 32 if 65 <= _c <= 90 else _c



# A literal's record in LitIndex.lits; its text (lowercased when fold) follows it there.
cdef struct Lit:
    uint32_t last  # its last window, lowercased: most literals a window lookup finds differ there
    int32_t id
    int32_t size
    int32_t window  # offset, within the literal, of the window it is filed under
    int32_t fold
    int32_t ordinal  # the literal's number in its LitScan: its bit in a scan's found marks


DEF LIT_ALIGN = 4  # a record starts on a multiple of it


cdef struct Slot:
    uint32_t window  # lowercased
    int32_t first  # the byte offset, in LitIndex.lits, of the first record filed under the window
    int32_t count  # records filed under it, one after another; 0: an empty slot


cdef cppclass LitIndex:
    vector[uint64_t] bloom  # two bits of one word (hashes of a window) set when some literal is filed under it
    uint64_t mask  # words in bloom - 1
    vector[Slot] slots  # open addressing: a window's slot is at the top bits of its hash (see _slot), or after it
    uint64_t slot_mask  # slots - 1 (a power of two)
    uint32_t slot_shift  # 64 - log2(slots)
    # The records, by window, each followed by its text: a lookup reads the literals filed under
    # a window, and the texts it compares, from one run of bytes (one or two cache lines), not
    # from a record table and then a text table, each a miss when the pixel's data is cold.
    string lits


cdef cppclass LitScan:
    LitIndex anywhere
    uint32_t step
    int32_t count  # literals (each filed under one or more windows)
    LitIndex prefix
    vector[int32_t] prefix_at  # the offsets of the prefix literals' windows


cdef inline uint32_t _lower4(uint32_t x) noexcept nogil:
    """Four ASCII bytes, A-Z lowercased (no byte may have its high bit set)."""
    cdef uint32_t upper = ((x + <uint32_t>0x3F3F3F3F) ^ (x + <uint32_t>0x25252525)) & <uint32_t>0x80808080
    return x | (upper >> 2)


cdef inline uint32_t _window_ascii(const unsigned char* s) noexcept nogil:
    cdef uint32_t x
    memcpy(&x, s, 4)
    return _lower4(x)


cdef inline uint32_t _window_at(const unsigned char* s) noexcept nogil:
    """The window at ``s`` (any bytes; A-Z lowercased), as ``_window_ascii`` reads ASCII."""
    return (<uint32_t>_LOWER[s[0]] | (<uint32_t>_LOWER[s[1]] << 8) | (<uint32_t>_LOWER[s[2]] << 16)
            | (<uint32_t>_LOWER[s[3]] << 24))


# The bloom hashes a window with bit 5 of each byte set: that lowercases A-Z as well (merging a
# few other pairs of bytes, such as _ and DEL, which only lets a few more windows through), so
# the scan tests a window's raw bytes and lowercases only the windows that pass. A window has
# two bits in one word (a blocked bloom: one cache line per test), both from one 64-bit
# product: the word from bits 40-53, the bits from the top six and from bits 34-39. The
# second bit is tested only when the first is set.
DEF BLOOM_CASE = 0x20202020
# Bits per filed window: ~1.5% of other windows pass. (32 let ~0.5% pass but made the bloom
# twice the lines, and it is cold for most events: simulated L2 misses per event 14.7 -> 13.3
# at 16, for one more instruction per event.)
DEF BLOOM_BITS = 16
DEF BLOOM_MIN = 512  # bits: one cache line


cdef inline uint64_t _bloom_hash(uint32_t window) noexcept nogil:
    return <uint64_t>(window | BLOOM_CASE) * <uint64_t>0x9E3779B97F4A7C15


cdef inline cbool _in_bloom(const uint64_t* bloom, uint64_t mask, uint32_t window) noexcept nogil:
    """Whether a literal may be filed under the window (lowercased or not)."""
    cdef uint64_t h = _bloom_hash(window)
    cdef uint64_t word = bloom[(h >> 40) & mask]
    return ((word >> (h >> 58)) & 1) and ((word >> ((h >> 34) & 63)) & 1)


cdef list _windows(bytes text):
    cdef const unsigned char* data = <const unsigned char*><const char*>text
    cdef size_t i
    return [_window_at(data + i) for i in range(len(text) - WINDOW + 1)]


# The slots: a flat table, open addressing with linear probing, at most half full. A window's
# slot is found from the top bits of its bloom hash (the same for a window lowercased or not),
# then by comparing the window stored in the slot; an empty slot ends the probe.
cdef inline const Slot* _slot(const LitIndex* index, uint32_t window) noexcept nogil:
    """The slot of a lowercased window: an empty one (``count`` 0) when nothing is filed under it."""
    cdef uint64_t i = _bloom_hash(window) >> index.slot_shift
    cdef const Slot* slot = &index.slots[i]
    while slot.count != 0 and slot.window != window:
        i = (i + 1) & index.slot_mask
        slot = &index.slots[i]
    return slot


cdef int _fill_slots(LitIndex* index, dict ranges) except -1:
    """``ranges``: window -> (byte offset of its first record, records)."""
    cdef Slot empty
    cdef Slot* slot
    cdef uint32_t log2 = 1
    empty.window = 0
    empty.first = 0
    empty.count = 0
    while (1 << log2) < 2 * len(ranges):
        log2 += 1
    index.slots.assign(1 << log2, empty)
    index.slot_mask = (1 << log2) - 1
    index.slot_shift = 64 - log2
    for w, (first, count) in ranges.items():
        slot = <Slot*>_slot(index, w)
        slot.window = w
        slot.first = first
        slot.count = count
    return 0


cdef inline size_t _lit_bytes(int32_t size) noexcept nogil:
    """A record and its text, up to where the next record starts."""
    return (sizeof(Lit) + <size_t>size + LIT_ALIGN - 1) // LIT_ALIGN * LIT_ALIGN


cdef int _fill(LitIndex* index, list filed) except -1:
    """``filed``: (window, offset in the literal, text, fold, id, ordinal); texts lowercased
    when fold."""
    cdef Lit lit
    cdef uint64_t h
    cdef uint32_t bits = BLOOM_MIN
    cdef size_t total = 0  # bytes of the records before the one filed next
    cdef size_t at
    filed.sort(key=lambda x: x[0])
    ranges = {}
    for item in filed:
        first, count = ranges.get(item[0], (total, 0))
        ranges[item[0]] = (first, count + 1)
        total += _lit_bytes(len(item[2]))
    if total > 0x7FFFFFFF:
        raise ValueError("the literals of one pattern group exceed 2 GiB")
    while bits < BLOOM_BITS * len(filed) and bits < (1 << 20):
        bits <<= 1
    index.bloom.assign(bits // 64, 0)
    index.mask = bits // 64 - 1
    _fill_slots(index, ranges)
    index.lits.reserve(total)
    for w, offset, text, fold, ident, ordinal in filed:
        h = _bloom_hash(w)
        index.bloom[(h >> 40) & index.mask] |= ((<uint64_t>1) << (h >> 58)) | ((<uint64_t>1) << ((h >> 34) & 63))
        lit.size = len(text)
        lit.window = offset
        lit.id = ident
        lit.fold = fold
        lit.ordinal = ordinal
        lit.last = _window_at(<const unsigned char*><const char*>text + len(text) - WINDOW)
        at = index.lits.size()
        index.lits.append(<const char*>&lit, sizeof(Lit))
        index.lits.append(<string>text)
        index.lits.append(at + _lit_bytes(lit.size) - index.lits.size(), <char>0)
    return 0


cdef list _file(list literals, list windows, dict counts, int step):
    """(window, offset, stored text, fold, id, ordinal, prefix) entries: each literal under the run of
    ``step`` windows (one for a prefix) the fewest literals share; among those the last
    (suffixes tell literals such as /thankyou-p1x1 and /thankyou-p1x2 apart)."""
    filed = []
    for ordinal, ((text, fold, prefix, ident), ws) in enumerate(zip(literals, windows)):
        stored = text.lower() if fold else text  # folded already: only ASCII capitals can remain
        span = 1 if prefix else step
        cost = [sum(counts[w] for w in ws[k:k + span]) for k in range(len(ws) - span + 1)]
        best = min(range(len(cost)), key=lambda k: (cost[k], -k))
        filed.extend((ws[k], k, stored, fold, ident, ordinal, prefix) for k in range(best, best + span))
    return filed


cdef LitScan* lit_scan_new(list literals) except NULL:
    """``literals``: (UTF-8 of at least 4 bytes, folded when fold, fold, prefix, id) tuples."""
    cdef LitScan* s = new LitScan()
    literals = sorted(set(literals))  # a regex atom many regexes are filed under: once
    windows = [_windows(text) for text, _, _, _ in literals]
    counts = {}
    for ws in windows:
        for w in ws:
            counts[w] = counts.get(w, 0) + 1
    # The longest step the shortest literal allows, unless it files many literals under one
    # window (literals sharing all but a short tail: every text with that window would be
    # compared with each of them).
    shortest = min([len(text) for text, _, prefix, _ in literals if not prefix], default=WINDOW)
    step = max(1, min(MAX_STEP, shortest - WINDOW + 1))
    while True:
        filed = _file(literals, windows, counts, step)
        per_window = {}
        for entry in filed:
            if not entry[6]:
                per_window[entry[0]] = per_window.get(entry[0], 0) + 1
        if step == 1 or max(per_window.values(), default=0) <= MAX_SHARED:
            break
        step -= 1
    s.step = step
    s.count = len(literals)
    _fill(&s.anywhere, [e[:6] for e in filed if not e[6]])
    _fill(&s.prefix, [e[:6] for e in filed if e[6]])
    for k in sorted({e[1] for e in filed if e[6]}):
        s.prefix_at.push_back(k)
    return s


cdef inline cbool _lit_equal(const Lit* lit, const unsigned char* at) noexcept nogil:
    cdef const unsigned char* text = <const unsigned char*>lit + sizeof(Lit)
    cdef int32_t k
    if not lit.fold:
        return memcmp(text, at, lit.size) == 0
    for k in range(lit.size):
        if _LOWER[at[k]] != text[k]:
            return False
    return True


# What a scan looks for: both kinds in an ASCII text, else exact ones in the text as it is and
# folded ones in its folding.
DEF SCAN_ASCII = 0
DEF SCAN_EXACT = 1
DEF SCAN_FOLDED = 2


cdef inline uint32_t _window_of(const unsigned char* s, int mode) noexcept nogil:
    """The lowercased window at ``s``: SWAR in an ASCII text, by table otherwise."""
    return _window_ascii(s) if mode == SCAN_ASCII else _window_at(s)


cdef inline int32_t _lit_hits(const LitIndex* index, const unsigned char* text, size_t n, uint32_t window, size_t pos,
                    cbool prefix, int mode, vector[int32_t]& out, uint64_t* found) noexcept nogil:
    """The literals filed under the window found at ``pos``, compared where they would start,
    unless ``found`` marks them found already; returns how many it found."""
    cdef const Slot* slot = _slot(index, window)
    cdef const char* at = index.lits.data() + slot.first
    cdef const Lit* lit
    cdef Py_ssize_t start
    cdef int32_t k, newly = 0
    cdef uint64_t bit
    for k in range(slot.count):
        lit = <const Lit*>at
        at += _lit_bytes(lit.size)
        if (mode == SCAN_EXACT and lit.fold) or (mode == SCAN_FOLDED and not lit.fold):
            continue
        start = <Py_ssize_t>pos - lit.window
        if start < 0 or <size_t>(start + lit.size) > n or (prefix and start != 0):
            continue
        if _window_of(text + start + lit.size - WINDOW, mode) != lit.last:
            continue
        # (tested after the last window, so only near-certain matches pay for it)
        bit = (<uint64_t>1) << (lit.ordinal & 63)
        if found[lit.ordinal >> 6] & bit:
            continue
        if _lit_equal(lit, text + start):
            found[lit.ordinal >> 6] |= bit
            out.push_back(lit.id)
            newly += 1
    return newly


cdef void lit_scan(const LitScan* s, const char* data, size_t n, int mode, vector[int32_t]& out,
                   vector[uint64_t]& found) noexcept nogil:
    """Appends the id of every literal of the ``mode``'s kinds occurring in ``data``, once per
    literal (``found``: the caller's scratch for the marks, kept between calls)."""
    # Marks, so a literal is compared and reported once however often it occurs: a text of a
    # million "a"s against literals "aaaa", "aaaaa", ... would otherwise compare each of them
    # at every position, and report each as often (a scan's memory growing with the text).
    found.assign((<size_t>s.count + 63) >> 6, 0)
    # One copy of the scan per mode: the compiler drops the other modes' tests from the loops.
    if mode == SCAN_ASCII:
        _lit_scan(s, data, n, SCAN_ASCII, out, found.data())
    elif mode == SCAN_EXACT:
        _lit_scan(s, data, n, SCAN_EXACT, out, found.data())
    else:
        _lit_scan(s, data, n, SCAN_FOLDED, out, found.data())


cdef inline size_t _next_in_bloom(const unsigned char* text, size_t i, size_t end, size_t step,
                                 const uint64_t* bloom, uint64_t mask) noexcept nogil:
    """The first of positions ``i``, ``i + step``, ... up to ``end`` whose window passes the bloom
    (past ``end`` when none). No call in the loop, so every value stays in a register; two
    windows a round (one test of the bound for both): ~12 instructions a window, at any step
    (a window rolled along byte by byte at step 1 costs more than a load)."""
    cdef uint32_t w0, w1
    while i + step <= end:
        memcpy(&w0, text + i, WINDOW)
        memcpy(&w1, text + i + step, WINDOW)
        if _in_bloom(bloom, mask, w0):
            return i
        if _in_bloom(bloom, mask, w1):
            return i + step
        i += 2 * step
    if i <= end:
        memcpy(&w0, text + i, WINDOW)
        if _in_bloom(bloom, mask, w0):
            return i
        i += step
    return i


cdef inline void _lit_scan(const LitScan* s, const char* data, size_t n, int mode, vector[int32_t]& out,
                           uint64_t* found) noexcept nogil:
    cdef const unsigned char* text = <const unsigned char*>data
    cdef const LitIndex* index = &s.prefix
    cdef size_t i, end, step = s.step
    cdef uint32_t window
    cdef int32_t missing = s.count  # literals not found yet: none left, the rest of the text is not read
    if n < WINDOW:
        return
    for i in range(s.prefix_at.size()):
        if <size_t>s.prefix_at[i] + WINDOW > n:
            break
        window = _window_at(text + s.prefix_at[i])
        if _in_bloom(index.bloom.data(), index.mask, window):
            missing -= _lit_hits(index, text, n, window, s.prefix_at[i], True, mode, out, found)
    index = &s.anywhere
    if index.lits.empty():
        return
    end = n - WINDOW
    i = _next_in_bloom(text, 0, end, step, index.bloom.data(), index.mask)
    while i <= end:
        missing -= _lit_hits(index, text, n, _window_of(text + i, mode), i, False, mode, out, found)
        if missing == 0:
            return
        i = _next_in_bloom(text, i + step, end, step, index.bloom.data(), index.mask)
