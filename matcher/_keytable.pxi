# Included by _ruleset_c.pyx.
#
# Key table: ids filed under keys of bytes, looked up by a text's bytes. It holds the
# predicates of a group's exact-match values (``eq`` / ``is_any`` texts, their folding,
# numbers) and the partitions by event source. Most lookups of values find nothing, and they
# come from every event, each into another pixel's groups, so the table is laid out for a
# cold cache: one flat array of 32-byte slots (open addressing, linear probing, at most half
# full), each holding 32 bits of the key's hash, its length, its id when it has one (most
# do), and the key itself when it is 16 bytes or shorter. A lookup that finds nothing reads
# one slot, or a few neighbours in the same line (a slot with another tag or length is
# passed without reading its key; an empty one ends the probe); one that finds a short key
# reads no other line. (``std::unordered_map<string_view, vector<int>>`` read a bucket, the
# node before the first in it, the node, the key's text and the vector's data: up to five
# dependent loads from as many cache lines.)

DEF KEY_INLINE = 16


cdef extern from *:
    """
    #include <cstring>
    // A text's hash: 8 bytes at a time, a multiply and a fold each (std::hash runs MurmurHash
    // over the bytes: ~50 instructions for a short text). The last word overlaps the one before
    // it, and a text under 8 bytes is read as two overlapping 4-byte words (or its first, middle
    // and last byte): fixed-size loads, which compile to moves where a tail of variable length
    // was a call to memcpy. With the length in the seed, every byte still counts.
    static inline uint64_t _text_word(const char* s, size_t n) {
        uint64_t w = 0;
        uint32_t a, b;
        if (n >= 8) {
            std::memcpy(&w, s + n - 8, 8);
        } else if (n >= 4) {
            std::memcpy(&a, s, 4);
            std::memcpy(&b, s + n - 4, 4);
            w = a | ((uint64_t)b << 32);
        } else if (n > 0) {
            w = (uint64_t)(unsigned char)s[0] | ((uint64_t)(unsigned char)s[n / 2] << 8)
                | ((uint64_t)(unsigned char)s[n - 1] << 16);
        }
        return w;
    }
    // Whether two texts of n bytes are the same. Up to 16 bytes: two overlapping words of 8,
    // 4 or 1 bytes from each end (no call to memcmp for a short key).
    static inline bool _same_bytes(const char* a, const char* b, size_t n) {
        uint64_t x, y, u, v;
        uint32_t p, q, r, t;
        if (n > 16) return std::memcmp(a, b, n) == 0;
        if (n >= 8) {
            std::memcpy(&x, a, 8); std::memcpy(&y, b, 8);
            std::memcpy(&u, a + n - 8, 8); std::memcpy(&v, b + n - 8, 8);
            return ((x ^ y) | (u ^ v)) == 0;
        }
        if (n >= 4) {
            std::memcpy(&p, a, 4); std::memcpy(&q, b, 4);
            std::memcpy(&r, a + n - 4, 4); std::memcpy(&t, b + n - 4, 4);
            return ((p ^ q) | (r ^ t)) == 0;
        }
        for (size_t i = 0; i < n; i++) if (a[i] != b[i]) return false;
        return true;
    }
    static inline uint64_t _text_hash(const char* s, size_t n) {
        uint64_t hash = n * 0x9E3779B97F4A7C15ull, w;
        size_t i = 0;
        for (; i + 8 < n; i += 8) {
            std::memcpy(&w, s + i, 8);
            hash = (hash ^ w) * 0xFF51AFD7ED558CCDull;
            hash ^= hash >> 32;
        }
        hash = (hash ^ _text_word(s, n)) * 0xFF51AFD7ED558CCDull;
        return hash ^ (hash >> 32);
    }
    """
    uint64_t _text_hash(const char* s, size_t n) noexcept nogil
    cbool _same_bytes(const char* a, const char* b, size_t n) noexcept nogil


cdef struct KeySlot:
    uint32_t tag  # 0: an empty slot; else the hash's top 32 bits, with the lowest set
    uint32_t size  # the key's length in bytes
    int32_t id  # >= 0: the key's one id; else ~(its offset in KeyTable.multi)
    uint32_t at  # a longer key's offset in KeyTable.keys
    char head[KEY_INLINE]  # a short key


cdef cppclass KeyTable:
    vector[KeySlot] slots  # empty when the table is
    uint64_t mask  # slots - 1 (a power of two)
    vector[int32_t] multi  # a key with several ids: their count, then the ids
    string keys  # the keys longer than KEY_INLINE


cdef inline uint32_t _key_tag(uint64_t hash) noexcept nogil:
    return <uint32_t>(hash >> 32) | 1


cdef inline const KeySlot* _key_slot(const KeyTable* t, const char* key, size_t size) noexcept nogil:
    """The key's slot, or NULL when it is not in the table (which must not be empty)."""
    cdef uint64_t hash = _text_hash(key, size)
    cdef uint32_t tag = _key_tag(hash)
    cdef uint64_t i = hash & t.mask
    cdef const KeySlot* slot = &t.slots[i]
    while slot.tag != 0:
        if slot.tag == tag and slot.size == size and _same_bytes(
                <const char*>slot.head if size <= KEY_INLINE else t.keys.data() + slot.at, key, size):
            return slot
        i = (i + 1) & t.mask
        slot = &t.slots[i]
    return NULL


cdef int key_table_fill(KeyTable* t, dict entries) except -1:
    """``entries``: key (bytes) -> ids (a sequence of ints)."""
    cdef KeySlot empty
    cdef KeySlot* slot
    cdef uint64_t hash, i
    cdef size_t capacity = 2
    cdef bytes key
    memset(&empty, 0, sizeof(KeySlot))
    if not entries:
        return 0
    while capacity < 2 * len(entries):
        capacity <<= 1
    t.slots.assign(capacity, empty)
    t.mask = capacity - 1
    for key, ids in entries.items():
        hash = _text_hash(key, len(key))
        i = hash & t.mask
        while t.slots[i].tag != 0:
            i = (i + 1) & t.mask
        slot = &t.slots[i]
        slot.tag = _key_tag(hash)
        slot.size = len(key)
        if len(key) <= KEY_INLINE:
            memcpy(slot.head, <const char*>key, len(key))
        else:
            slot.at = t.keys.size()
            t.keys.append(<string>key)
        if len(ids) == 1:
            slot.id = ids[0]
        else:
            slot.id = ~<int32_t>t.multi.size()
            t.multi.push_back(len(ids))
            for ident in ids:
                t.multi.push_back(ident)
    return 0


cdef inline void key_table_get(const KeyTable* t, const char* key, size_t size,
                               const int32_t** ids, int32_t* count) noexcept nogil:
    """The key's ids: ``count`` of them at ``ids`` (0 when the key is not there)."""
    cdef const KeySlot* slot
    count[0] = 0
    if t.slots.empty():
        return
    slot = _key_slot(t, key, size)
    if slot == NULL:
        return
    if slot.id >= 0:
        ids[0] = &slot.id
        count[0] = 1
    else:
        ids[0] = &t.multi[~slot.id + 1]
        count[0] = t.multi[~slot.id]
