# cython: language_level=3
"""Compiled action-spec set: many ads' specs in one C++ index, matched over batches of actions.

Same API and results as the pure-Python twin :mod:`matcher._actionset_py`; see its docstring
for the index layout.  Here types and selectors are interned to ``int32`` ids and values to the
address of the set's canonical string for them; the index is a flat open-addressing hash table
keyed by ``(anchor selector, value)`` whose slots point at runs of inlined candidate specs (each
filed once, whatever its number of concrete types; the action's type is checked against the
candidate's typeset bits).  Matching runs in three phases:

1. *extract* (GIL held): per action, its type id and, for the selectors its type needs, the
   interned value ids (a probe of a flat ``(hash, canonical str)`` table), into C++ buffers;
2. *evaluate* (``with nogil``): probe the hash table per anchor selector, check the type and
   the remaining selectors of each candidate, keep the first matching spec per ad;
3. *build*: Python lists (GIL held, cyclic GC paused) for ``match_batch``, or, for
   ``match_columns``, flat ``array('i')`` columns written without the GIL.

Instances are immutable snapshots; concurrent readers need no lock.  ``docs/action-specs.md``
has the measurements and where the time goes.
"""

from cpython cimport array as c_array
from cpython.dict cimport PyDict_GetItemWithError
from cython.operator cimport dereference as deref
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLong
from cpython.ref cimport Py_INCREF, PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_CheckExact, PyUnicode_Compare
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libcpp.algorithm cimport sort, unique
from libcpp.pair cimport pair
from libcpp.unordered_map cimport unordered_map
from libcpp.vector cimport vector


cdef extern from "Python.h":
    int PyGC_Disable()
    int PyGC_Enable()

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* address) noexcept nogil

cdef extern from "Python.h":
    ctypedef struct PyDictObject:
        void* ma_keys
        uint64_t ma_version_tag   # changes whenever the dict does (PEP 509; up to 3.13)


cdef inline void _prefetch_dict(object maybe_dict) noexcept:
    """Start loading an action dict's header (one stage) or its key table (the next stage)."""
    prefetch(<PyObject*>maybe_dict)


cdef inline void _prefetch_dict_keys(object maybe_dict) noexcept:
    cdef char* keys
    if type(maybe_dict) is dict:
        keys = <char*>(<PyDictObject*><PyObject*>maybe_dict).ma_keys
        prefetch(keys)
        prefetch(keys + 64)
        prefetch(keys + 128)

# Actions ahead of the one being evaluated whose hash slots, then candidate runs, are
# prefetched: probes of a big table are cache misses, and overlapping them is most of the gain.
cdef enum:
    SLOT_PREFETCH = 8
    CANDIDATE_PREFETCH = 4
    EXTRACT_CHUNK = 64     # actions per three-pass extraction round

import array
from collections.abc import Mapping

from matcher._actionset_py import _apply_changes
from matcher.actionspecs import (
    ACTION_TYPE_KEY,
    ATTRIBUTE_KEYS,
    DEFAULT_MAX_LENGTH,
    action_value_text,
    gc_paused,
    parse_ads,
)

__all__ = ["ActionSpecSet", "compile_action_specs"]

# Template of the columns match_columns returns: array('i') of C ints (32 bits).
cdef c_array.array _INT_COLUMN = array.array("i")



# Value ids are the addresses of the set's canonical value strings (``value_ids`` maps each
# value text to its one canonical str object and keeps it alive).  Interning an action value is
# then one dict lookup, with no int object to read afterwards: a cache miss less per value.
ctypedef uint64_t ValueId


cdef struct Slot:
    ValueId value     # 0 when the slot is free
    uint32_t anchor   # anchor selector id
    uint32_t begin    # range of candidate spec records in entry_records
    uint32_t end


cdef struct Candidate:
    # One spec filed under one (anchor pair, value): everything needed to accept it, inline, so
    # a probe costs the slot, its run of candidates, and the checks only when there are any.
    # (32 bytes: two per cache line.)  A spec's only other constraint, when it has one value
    # ({post, page}: page), is checked here against the action's pairs (in L1), with no Check
    # and values array to chase.
    ValueId inline_value
    int32_t inline_key     # its selector id, or -1
    int32_t ad
    int32_t spec
    int32_t checks_begin   # range in Index.checks: the spec's constraints except the anchor
    int32_t checks_end     # and the inline one
    int32_t typeset_rsvp   # typeset << 1 | rsvp default: typeset is a row of Index.typeset_bits


cdef struct Check:
    int32_t key            # selector id
    int32_t values_begin   # sorted range in Index.values
    int32_t values_end


cdef struct ValueSlot:
    Py_hash_t hash
    PyObject* canonical   # NULL when free


cdef struct ActionPair:
    ValueId value
    int32_t key       # selector id
    int32_t anchor    # the selector id when it anchors specs of the action's type, else -1


cdef inline uint64_t _slot_of(ValueId value, uint32_t anchor, int bits) noexcept nogil:
    # Multiplicative hashing: the multiply spreads pointer bits over the top bits used.
    return ((value ^ (<uint64_t>anchor * <uint64_t>0x9E3779B97F4A7C15)) * <uint64_t>0xBF58476D1CE4E5B9) >> (64 - bits)


cdef inline bint _contains_sorted(const ValueId* values, Py_ssize_t count, ValueId wanted) noexcept nogil:
    cdef Py_ssize_t low = 0, high = count, middle
    if count <= 8:
        for low in range(count):
            if values[low] == wanted:
                return True
        return False
    while low < high:
        middle = (low + high) >> 1
        if values[middle] < wanted:
            low = middle + 1
        else:
            high = middle
    return low < count and values[low] == wanted


cdef inline ValueId _intern_value(dict table, object text):
    cdef PyObject* found = PyDict_GetItemWithError(table, text)
    if found != NULL:
        return <ValueId>found
    table[text] = text
    return <ValueId><PyObject*>text


cdef inline int32_t _intern(dict table, object text):
    cdef PyObject* found = PyDict_GetItemWithError(table, text)
    if found != NULL:
        return <int32_t>PyLong_AsLong(<object>found)
    cdef int32_t new_id = <int32_t>len(table)
    table[text] = new_id
    return new_id


cdef class ActionSpecSet:
    """Many ads' action specs compiled for matching actions against all of them at once."""

    # Spec records: one per (ad, spec).
    cdef vector[int32_t] record_ad
    cdef vector[int32_t] record_spec
    cdef vector[int32_t] record_constraints    # start in constraint arrays; size records + 1
    cdef vector[int32_t] record_anchor         # constraint index the record is filed under
    cdef vector[uint8_t] record_rsvp_default
    # Constraints: selector id and a sorted range of value ids.
    cdef vector[int32_t] constraint_key
    cdef vector[int32_t] constraint_values     # start in values; size constraints + 1
    cdef vector[ValueId] values
    # Hash table of anchor pairs to candidate records.
    cdef vector[Slot] slots
    cdef int slot_bits
    cdef vector[int32_t] entry_records
    cdef vector[Candidate] candidates          # entry_records with each record inlined
    cdef vector[Check] checks
    # Per typeset (distinct set of concrete types): a bitset over type ids, typeset_words
    # words per row.  Candidates are filed once per anchor value, not once per type, so the
    # index is several times smaller (meta types expand to up to 11 types) and a candidate's
    # type is checked here instead.
    cdef vector[uint64_t] typeset_bits
    cdef Py_ssize_t typeset_words
    # Per type: the selectors an action of that type is read at.
    cdef vector[int32_t] type_read_start       # size types + 1
    cdef vector[int32_t] read_key
    cdef vector[int32_t] read_anchor
    cdef int32_t rsvp_type, response_key
    cdef ValueId yes_value, maybe_value

    cdef dict type_ids
    cdef dict value_ids
    # value_ids again, as a flat open-addressing table of (hash, canonical string): one probe
    # usually settles a lookup, where the dict reads its index, then its entry array.
    cdef vector[ValueSlot] value_slots
    cdef int value_bits
    cdef list read_selectors                  # per type id: tuple of selector strings
    cdef tuple _ids
    cdef list _ads
    cdef Py_ssize_t _max_length

    def __init__(self, ads=None, *, max_length=DEFAULT_MAX_LENGTH):
        """Compile ``{ad_id: specs}``; specs are anything ``parse_action_specs`` takes."""
        self._max_length = max_length
        parsed = parse_ads(ads if ads is not None else {}, max_length=max_length)
        with gc_paused():
            self._build(parsed)

    # ----------------------------------------------------------------------------- compile

    cdef _build(self, list ads):
        cdef dict key_ids = {}
        cdef dict type_ids = {}
        cdef dict value_ids = {}
        cdef dict typeset_ids = {}              # expanded types -> typeset id
        cdef vector[int32_t] typeset_start      # per typeset: start in typeset_types
        cdef vector[int32_t] typeset_types
        cdef vector[int32_t] record_typeset
        cdef vector[pair[int32_t, ValueId]] key_value_pairs
        cdef Py_ssize_t ad_index, spec_index, start, i, j, n_records, n_keys
        cdef int32_t key_id, typeset_id
        cdef uint8_t rsvp_flag
        cdef object ad_id, specs, spec, key, constraint, value, action_type

        self._ads = ads
        self._ids = tuple([entry[0] for entry in ads])
        self.type_ids = type_ids
        self.value_ids = value_ids
        self.response_key = _intern(key_ids, "response")
        self.yes_value = _intern_value(value_ids, "yes")
        self.maybe_value = _intern_value(value_ids, "maybe")
        typeset_start.push_back(0)
        self.record_constraints.push_back(0)
        self.constraint_values.push_back(0)

        # 1. Intern every string; flatten the specs into records and constraints.
        for ad_index in range(len(ads)):
            specs = (<tuple>ads[ad_index])[1]
            for spec_index in range(len(<tuple>specs)):
                # An ActionSpec is a tuple (types, constraints, expanded_types, rsvp_default).
                spec = (<tuple>specs)[spec_index]
                expanded = (<tuple>spec)[2]
                found = typeset_ids.get(expanded)
                if found is None:
                    typeset_id = <int32_t>len(typeset_ids)
                    typeset_ids[expanded] = typeset_id
                    for action_type in sorted(expanded):
                        typeset_types.push_back(_intern(type_ids, action_type))
                    typeset_start.push_back(<int32_t>typeset_types.size())
                else:
                    typeset_id = <int32_t>found
                record_typeset.push_back(typeset_id)
                self.record_ad.push_back(<int32_t>ad_index)
                self.record_spec.push_back(<int32_t>spec_index)
                rsvp_flag = 1 if (<tuple>spec)[3] else 0
                self.record_rsvp_default.push_back(rsvp_flag)
                for constraint in <tuple>((<tuple>spec)[1]):
                    key_id = _intern(key_ids, (<tuple>constraint)[0])
                    self.constraint_key.push_back(key_id)
                    start = self.values.size()
                    for value in <tuple>((<tuple>constraint)[1]):
                        self.values.push_back(_intern_value(value_ids, value))
                        key_value_pairs.push_back(pair[int32_t, ValueId](key_id, self.values.back()))
                    sort(self.values.begin() + start, self.values.end())
                    self.constraint_values.push_back(<int32_t>self.values.size())
                self.record_constraints.push_back(<int32_t>self.constraint_key.size())
        n_records = self.record_ad.size()
        n_keys = len(key_ids)
        self.rsvp_type = _intern(type_ids, "rsvp")

        # 2. Distinct values per selector and the name order of selectors: the anchor rank.
        cdef vector[int64_t] distinct_values = vector[int64_t](n_keys, 0)
        sort(key_value_pairs.begin(), key_value_pairs.end())
        for i in range(<Py_ssize_t>key_value_pairs.size()):
            if i == 0 or key_value_pairs[i] != key_value_pairs[i - 1]:
                distinct_values[key_value_pairs[i].first] += 1
        key_value_pairs.clear()
        key_value_pairs.shrink_to_fit()
        cdef vector[int32_t] key_name_rank = vector[int32_t](n_keys, 0)
        cdef vector[uint8_t] key_is_attribute = vector[uint8_t](n_keys, 0)
        for i, key in enumerate(sorted(key_ids)):
            key_name_rank[<int32_t>key_ids[key]] = <int32_t>i
            if key in ATTRIBUTE_KEYS:
                key_is_attribute[<int32_t>key_ids[key]] = 1

        # 3. Anchor of each record (same rule as matcher.actionspecs.choose_anchor).
        cdef int32_t best, c, count
        cdef int64_t best_count, best_distinct, best_name
        self.record_anchor.resize(n_records)
        with nogil:
            for i in range(n_records):
                best = -1
                best_count = best_distinct = best_name = 0
                for c in range(self.record_constraints[i], self.record_constraints[i + 1]):
                    key_id = self.constraint_key[c]
                    if key_is_attribute[key_id]:
                        continue
                    count = self.constraint_values[c + 1] - self.constraint_values[c]
                    if (
                        best < 0
                        or count < best_count
                        or (count == best_count and (
                            distinct_values[key_id] > best_distinct
                            or (distinct_values[key_id] == best_distinct
                                and key_name_rank[key_id] < best_name)))
                    ):
                        best = c
                        best_count = count
                        best_distinct = distinct_values[key_id]
                        best_name = key_name_rank[key_id]
                self.record_anchor[i] = best

        # 4. Which selectors to read per type, and anchor pair ids of (type, selector).
        cdef vector[uint64_t] typeset_keys
        for i in range(n_records):
            for c in range(self.record_constraints[i], self.record_constraints[i + 1]):
                typeset_keys.push_back((<uint64_t>record_typeset[i] << 32) | <uint32_t>self.constraint_key[c])
        sort(typeset_keys.begin(), typeset_keys.end())
        typeset_keys.erase(unique(typeset_keys.begin(), typeset_keys.end()), typeset_keys.end())
        cdef Py_ssize_t n_types = len(type_ids)
        cdef Py_ssize_t n_typesets = typeset_start.size() - 1
        self.typeset_words = (n_types + 63) // 64
        self.typeset_bits.assign(n_typesets * self.typeset_words, 0)
        for typeset_id in range(n_typesets):
            for j in range(typeset_start[typeset_id], typeset_start[typeset_id + 1]):
                self.typeset_bits[typeset_id * self.typeset_words + (typeset_types[j] >> 6)] |= (
                    (<uint64_t>1) << (typeset_types[j] & 63))
        cdef list keys_by_type = [set() for _ in range(n_types)]
        for i in range(<Py_ssize_t>typeset_keys.size()):
            typeset_id = <int32_t>(typeset_keys[i] >> 32)
            key_id = <int32_t><uint32_t>typeset_keys[i]
            for j in range(typeset_start[typeset_id], typeset_start[typeset_id + 1]):
                (<set>keys_by_type[typeset_types[j]]).add(key_id)
        for i in range(n_records):
            if self.record_rsvp_default[i]:
                (<set>keys_by_type[self.rsvp_type]).add(self.response_key)
                break
        cdef unordered_map[uint64_t, int32_t] anchor_pair_ids
        for i in range(n_records):
            key_id = self.constraint_key[self.record_anchor[i]]
            typeset_id = record_typeset[i]
            for j in range(typeset_start[typeset_id], typeset_start[typeset_id + 1]):
                anchor_pair_ids.insert(
                    pair[uint64_t, int32_t](
                        (<uint64_t>typeset_types[j] << 32) | <uint32_t>key_id,
                        <int32_t>anchor_pair_ids.size(),
                    )
                )
        cdef list key_names = [None] * n_keys
        for key, key_id in key_ids.items():
            key_names[key_id] = key
        self.read_selectors = []
        self.type_read_start.push_back(0)
        cdef unordered_map[uint64_t, int32_t].iterator where
        for i in range(n_types):
            ordered = sorted(keys_by_type[i])
            self.read_selectors.append(tuple([key_names[k] for k in ordered]))
            for key_id in ordered:
                self.read_key.push_back(key_id)
                where = anchor_pair_ids.find((<uint64_t>i << 32) | <uint32_t>key_id)
                if where == anchor_pair_ids.end():
                    self.read_anchor.push_back(-1)
                else:
                    self.read_anchor.push_back(key_id)
            self.type_read_start.push_back(<int32_t>self.read_key.size())

        # 5. Entries (anchor selector, value) -> record, sorted, then the open-addressing table.
        cdef vector[pair[ValueId, uint64_t]] entries   # (value, anchor selector << 32 | record)
        cdef int32_t anchor
        with nogil:
            for i in range(n_records):
                anchor = self.record_anchor[i]
                key_id = self.constraint_key[anchor]
                for c in range(self.constraint_values[anchor], self.constraint_values[anchor + 1]):
                    entries.push_back(pair[ValueId, uint64_t](
                        self.values[c], (<uint64_t>key_id << 32) | <uint32_t>i))
            sort(entries.begin(), entries.end())
            self._fill_table(entries)
            self._inline_candidates(record_typeset)
        self._fill_value_slots()

    cdef int _fill_value_slots(self) except -1:
        cdef Py_ssize_t n = len(self.value_ids)
        cdef uint64_t position, mask
        cdef Py_hash_t hash_value
        cdef ValueSlot empty
        empty.hash = 0
        empty.canonical = NULL
        self.value_bits = 4
        while (<Py_ssize_t>1 << self.value_bits) < 2 * n:
            self.value_bits += 1
        mask = ((<uint64_t>1) << self.value_bits) - 1
        self.value_slots.assign((<size_t>1) << self.value_bits, empty)
        for text in self.value_ids:
            hash_value = hash(text)
            position = (<uint64_t>hash_value * <uint64_t>0x9E3779B97F4A7C15) >> (64 - self.value_bits)
            while self.value_slots[position].canonical != NULL:
                position = (position + 1) & mask
            self.value_slots[position].hash = hash_value
            self.value_slots[position].canonical = <PyObject*>text
        return 0

    cdef inline ValueId _value_id(self, PyObject* text, Py_hash_t hash_value) except? 0:
        """The interned id of ``text`` (an exact str with that hash), or 0 when no spec names it."""
        cdef uint64_t mask = ((<uint64_t>1) << self.value_bits) - 1
        cdef uint64_t position = (<uint64_t>hash_value * <uint64_t>0x9E3779B97F4A7C15) >> (64 - self.value_bits)
        cdef const ValueSlot* slots = self.value_slots.data()
        while slots[position].canonical != NULL:
            if slots[position].hash == hash_value and (
                    slots[position].canonical == text
                    or PyUnicode_Compare(<object>slots[position].canonical, <object>text) == 0):
                return <ValueId>slots[position].canonical
            position = (position + 1) & mask
        return 0

    cdef int _inline_candidates(self, const vector[int32_t]& record_typeset) except -1 nogil:
        cdef Py_ssize_t i, c, record, n_records = self.record_ad.size(), n_other
        cdef vector[int32_t] checks_start
        cdef vector[int32_t] inline_key = vector[int32_t](n_records, -1)
        cdef vector[ValueId] inline_value = vector[ValueId](n_records, 0)
        cdef Check check
        for record in range(n_records):
            checks_start.push_back(<int32_t>self.checks.size())
            n_other = self.record_constraints[record + 1] - self.record_constraints[record] - 1
            for c in range(self.record_constraints[record], self.record_constraints[record + 1]):
                if c == self.record_anchor[record]:
                    continue
                if n_other == 1 and self.constraint_values[c + 1] - self.constraint_values[c] == 1:
                    inline_key[record] = self.constraint_key[c]
                    inline_value[record] = self.values[self.constraint_values[c]]
                    continue
                check.key = self.constraint_key[c]
                check.values_begin = self.constraint_values[c]
                check.values_end = self.constraint_values[c + 1]
                self.checks.push_back(check)
        checks_start.push_back(<int32_t>self.checks.size())
        self.candidates.resize(self.entry_records.size())
        for i in range(<Py_ssize_t>self.entry_records.size()):
            record = self.entry_records[i]
            self.candidates[i].ad = self.record_ad[record]
            self.candidates[i].spec = self.record_spec[record]
            self.candidates[i].checks_begin = checks_start[record]
            self.candidates[i].checks_end = checks_start[record + 1]
            self.candidates[i].typeset_rsvp = (record_typeset[record] << 1) | self.record_rsvp_default[record]
            self.candidates[i].inline_key = inline_key[record]
            self.candidates[i].inline_value = inline_value[record]
        self.entry_records.clear()
        self.entry_records.shrink_to_fit()
        return 0

    cdef int _fill_table(self, vector[pair[ValueId, uint64_t]]& entries) except -1 nogil:
        cdef Py_ssize_t n = entries.size(), i, run_start, distinct = 0
        cdef uint64_t position, mask
        cdef ValueId value
        cdef uint32_t anchor
        for i in range(n):
            if i == 0 or entries[i].first != entries[i - 1].first or (
                    entries[i].second >> 32) != (entries[i - 1].second >> 32):
                distinct += 1
        self.slot_bits = 4
        while (<Py_ssize_t>1 << self.slot_bits) < 2 * distinct:
            self.slot_bits += 1
        mask = ((<uint64_t>1) << self.slot_bits) - 1
        cdef Slot empty
        empty.value = 0
        empty.anchor = 0
        empty.begin = 0
        empty.end = 0
        self.slots.assign((<size_t>1) << self.slot_bits, empty)
        self.entry_records.resize(n)
        i = 0
        while i < n:
            run_start = i
            value = entries[i].first
            anchor = <uint32_t>(entries[i].second >> 32)
            while i < n and entries[i].first == value and <uint32_t>(entries[i].second >> 32) == anchor:
                self.entry_records[i] = <int32_t><uint32_t>entries[i].second
                i += 1
            position = _slot_of(value, anchor, self.slot_bits)
            while self.slots[position].value != 0:
                position = (position + 1) & mask
            self.slots[position].value = value
            self.slots[position].anchor = anchor
            self.slots[position].begin = <uint32_t>run_start
            self.slots[position].end = <uint32_t>i
        return 0

    # ----------------------------------------------------------------------------- match

    cdef dict _read_via_get(self, object action):
        """A mapping that is not exactly a dict, as a dict of what the set reads from it, each
        value read with ``get`` as the reference reads it (a subclass may compute values, and
        ``dict(action)`` would bypass its methods)."""
        cdef dict copy = {}
        cdef object raw = action.get(ACTION_TYPE_KEY)
        if raw is None:
            return copy
        copy[ACTION_TYPE_KEY] = raw
        text = raw if PyUnicode_CheckExact(raw) else action_value_text(raw)
        type_id = self.type_ids.get(text) if text is not None else None
        if type_id is None:
            return copy
        for selector in self.read_selectors[type_id]:
            raw = action.get(selector)
            if raw is not None:
                copy[selector] = raw
        return copy

    cdef int _extract(self, object actions, vector[int32_t]& action_type,
                      vector[int64_t]& pair_start, vector[ActionPair]& pairs) except -1:
        """Phase 1 (GIL held): the interned type and selector values of each action.

        Actions made long before the call are cold in the caches, so a chunk of actions goes
        through three passes whose memory accesses are independent and overlap: find the
        values (prefetching the value objects), hash them (prefetching their table slots),
        then probe the value table.
        """
        cdef Py_ssize_t index, k, j, n_found, read_start, chunk_start, chunk_end
        cdef PyObject* found
        cdef PyObject* interned
        cdef object action, raw, text, selectors
        cdef int32_t type_id
        cdef ActionPair item
        cdef Py_hash_t hash_value
        cdef list keep                              # strong references for the chunk
        cdef vector[PyObject*] found_values
        cdef vector[int32_t] found_owner            # action index of each found value
        cdef vector[int32_t] found_read             # its index in read_key / read_anchor
        cdef vector[Py_hash_t] found_hash
        cdef vector[PyObject*] chunk_dicts          # each action of the chunk (held by keep)
        cdef vector[uint64_t] chunk_versions        # and its version after its lookups
        cdef PyDictObject* owner
        cdef vector[uint8_t] found_usable
        cdef dict type_ids = self.type_ids
        cdef object type_key = ACTION_TYPE_KEY
        cdef list read_selectors = self.read_selectors
        cdef object batch = actions if type(actions) is list or type(actions) is tuple else list(actions)
        cdef Py_ssize_t n_actions = len(batch)
        cdef uint64_t value_mask = ((<uint64_t>1) << self.value_bits) - 1
        action_type.reserve(n_actions)
        pair_start.reserve(n_actions + 1)
        pairs.reserve(2 * n_actions)   # about 2.5 per action in practice: one doubling, not 20
        pair_start.push_back(0)
        for chunk_start in range(0, n_actions, EXTRACT_CHUNK):
            chunk_end = min(n_actions, chunk_start + EXTRACT_CHUNK)
            keep = []
            found_values.clear()
            found_owner.clear()
            found_read.clear()
            chunk_dicts.assign(chunk_end - chunk_start, NULL)
            chunk_versions.assign(chunk_end - chunk_start, 0)
            # Pass 1: each action's type, and the value objects of the selectors it needs.
            for index in range(chunk_start, chunk_end):
                if index + 8 < n_actions:
                    _prefetch_dict(batch[index + 8])
                if index + 4 < n_actions:
                    _prefetch_dict_keys(batch[index + 4])
                action = batch[index]
                if type(action) is not dict:
                    if not isinstance(action, Mapping):
                        raise TypeError(
                            f"actions[{index}]: an action must be a mapping of selector to value, "
                            f"got {type(action).__name__}"
                        )
                    action = self._read_via_get(action)
                type_id = -1
                found = PyDict_GetItemWithError(action, type_key)
                if found != NULL:
                    raw = <object>found
                    text = raw if PyUnicode_CheckExact(raw) else action_value_text(raw)
                    if text is not None:
                        interned = PyDict_GetItemWithError(type_ids, text)
                        if interned != NULL:
                            type_id = <int32_t>PyLong_AsLong(<object>interned)
                action_type.push_back(type_id)
                if type_id < 0:
                    continue
                # The values are used in pass 2 without a reference of their own: touching
                # their reference counts here would stall on each (cold) value object before
                # its prefetch could overlap anything.  The dict is held instead, and pass 2
                # checks that it did not change meanwhile (a key's __eq__ runs Python code).
                keep.append(action)
                selectors = read_selectors[type_id]
                read_start = self.type_read_start[type_id]
                for k in range(self.type_read_start[type_id + 1] - read_start):
                    found = PyDict_GetItemWithError(action, <object>PyTuple_GET_ITEM(selectors, k))
                    if found == NULL:
                        continue
                    prefetch(found)
                    found_values.push_back(found)
                    found_owner.push_back(<int32_t>index)
                    found_read.push_back(<int32_t>(read_start + k))
                chunk_dicts[index - chunk_start] = <PyObject*>action
                chunk_versions[index - chunk_start] = (<PyDictObject*><PyObject*>action).ma_version_tag
            # Pass 2: their text and hash; start loading the value table slots.
            n_found = found_values.size()
            found_hash.resize(n_found)
            found_usable.assign(n_found, 0)
            for j in range(n_found):
                owner = <PyDictObject*>chunk_dicts[found_owner[j] - chunk_start]
                if owner.ma_version_tag != chunk_versions[found_owner[j] - chunk_start]:
                    raise RuntimeError(f"actions[{found_owner[j]}] changed while it was being matched")
                raw = <object>found_values[j]
                keep.append(raw)
                if not PyUnicode_CheckExact(raw):
                    text = action_value_text(raw)
                    if text is None:
                        continue
                    keep.append(text)
                    found_values[j] = <PyObject*>text
                    raw = text
                hash_value = hash(raw)
                found_hash[j] = hash_value
                found_usable[j] = 1
                prefetch(self.value_slots.data() + (
                    (<uint64_t>hash_value * <uint64_t>0x9E3779B97F4A7C15) >> (64 - self.value_bits)))
            # Pass 3: probe, and emit each action's (selector, value) pairs in order.
            j = 0
            for index in range(chunk_start, chunk_end):
                while j < n_found and found_owner[j] == index:
                    if found_usable[j]:
                        item.value = self._value_id(found_values[j], found_hash[j])
                        if item.value != 0:  # else a value no spec names: as good as absent
                            item.key = self.read_key[found_read[j]]
                            item.anchor = self.read_anchor[found_read[j]]
                            pairs.push_back(item)
                    j += 1
                pair_start.push_back(<int64_t>pairs.size())
        return 0

    cdef inline const Slot* _probe(self, const ActionPair* pair) noexcept nogil:
        """The slot of (anchor pair, value), or NULL."""
        cdef uint64_t mask = ((<uint64_t>1) << self.slot_bits) - 1
        cdef uint64_t position = _slot_of(pair.value, <uint32_t>pair.anchor, self.slot_bits)
        cdef const Slot* slots = self.slots.data()
        while slots[position].value != 0:
            if slots[position].value == pair.value and slots[position].anchor == <uint32_t>pair.anchor:
                return &slots[position]
            position = (position + 1) & mask
        return NULL

    cdef inline void _prefetch_slots(self, const ActionPair* pairs, Py_ssize_t count) noexcept nogil:
        cdef Py_ssize_t p
        for p in range(count):
            if pairs[p].anchor >= 0:
                prefetch(self.slots.data() + _slot_of(pairs[p].value, <uint32_t>pairs[p].anchor,
                                                      self.slot_bits))

    cdef inline void _prefetch_candidates(self, const ActionPair* pairs, Py_ssize_t count) noexcept nogil:
        cdef Py_ssize_t p
        cdef const Slot* slot
        for p in range(count):
            if pairs[p].anchor >= 0:
                slot = self._probe(&pairs[p])
                if slot != NULL:
                    prefetch(self.candidates.data() + slot.begin)

    cdef int _evaluate(self, const vector[int32_t]& action_type, const vector[int64_t]& pair_start,
                       const vector[ActionPair]& pairs, vector[uint64_t]& out,
                       vector[int64_t]& out_start) except -1 nogil:
        """Phase 2 (no GIL): ``(ad << 32 | spec)`` of the first matching spec per ad."""
        cdef Py_ssize_t n_actions = action_type.size(), a, ahead, p, q, r, c, found_start, n_pairs
        cdef int32_t type_id, key_id
        cdef ValueId response
        cdef const Slot* slot
        cdef const Candidate* candidate
        cdef const Candidate* candidates = self.candidates.data()
        cdef const Check* checks = self.checks.data()
        cdef const ValueId* values = self.values.data()
        cdef const uint64_t* typeset_bits = self.typeset_bits.data()
        cdef Py_ssize_t typeset_words = self.typeset_words
        cdef const ActionPair* action_pairs
        cdef bint ok, present
        cdef uint64_t previous
        out_start.reserve(n_actions + 1)
        out.reserve(4 * n_actions)
        out_start.push_back(0)
        for a in range(n_actions):
            ahead = a + SLOT_PREFETCH
            if ahead < n_actions and action_type[ahead] >= 0:
                self._prefetch_slots(pairs.data() + pair_start[ahead],
                                     pair_start[ahead + 1] - pair_start[ahead])
            ahead = a + CANDIDATE_PREFETCH
            if ahead < n_actions and action_type[ahead] >= 0:
                self._prefetch_candidates(pairs.data() + pair_start[ahead],
                                          pair_start[ahead + 1] - pair_start[ahead])
            type_id = action_type[a]
            found_start = out.size()
            if type_id >= 0:
                action_pairs = pairs.data() + pair_start[a]
                n_pairs = pair_start[a + 1] - pair_start[a]
                for p in range(n_pairs):
                    if action_pairs[p].anchor < 0:
                        continue
                    slot = self._probe(&action_pairs[p])
                    if slot == NULL:
                        continue
                    for r in range(slot.begin, slot.end):
                        candidate = &candidates[r]
                        if not ((typeset_bits[(candidate.typeset_rsvp >> 1) * typeset_words + (type_id >> 6)]
                                 >> (type_id & 63)) & 1):
                            continue
                        ok = True
                        if candidate.inline_key >= 0:
                            ok = False
                            for q in range(n_pairs):
                                if action_pairs[q].key == candidate.inline_key:
                                    ok = action_pairs[q].value == candidate.inline_value
                                    break
                        for c in range(candidate.checks_begin, candidate.checks_end):
                            key_id = checks[c].key
                            present = False
                            for q in range(n_pairs):
                                if action_pairs[q].key == key_id:
                                    present = _contains_sorted(
                                        values + checks[c].values_begin,
                                        checks[c].values_end - checks[c].values_begin,
                                        action_pairs[q].value,
                                    )
                                    break
                            if not present:
                                ok = False
                                break
                        if ok and (candidate.typeset_rsvp & 1) and type_id == self.rsvp_type:
                            response = 0
                            for q in range(n_pairs):
                                if action_pairs[q].key == self.response_key:
                                    response = action_pairs[q].value
                                    break
                            ok = response == self.yes_value or response == self.maybe_value
                        if ok:
                            out.push_back((<uint64_t>candidate.ad << 32) | <uint32_t>candidate.spec)
                if <Py_ssize_t>out.size() - found_start > 1:
                    # Order by ad, then keep each ad's first matching spec.
                    sort(out.begin() + found_start, out.end())
                    q = found_start
                    previous = out[found_start]
                    for r in range(found_start + 1, out.size()):
                        if (out[r] >> 32) != (previous >> 32):
                            q += 1
                            out[q] = out[r]
                            previous = out[r]
                    out.resize(q + 1)
            out_start.push_back(<int64_t>out.size())
        return 0

    cdef Py_ssize_t _match(self, object actions, vector[uint64_t]& out, vector[int64_t]& out_start) except -1:
        """Phases 1 and 2: action i's matches are out[out_start[i]:out_start[i + 1]], each
        (ad position << 32 | spec index); returns the number of actions."""
        cdef vector[int32_t] action_type
        cdef vector[int64_t] pair_start
        cdef vector[ActionPair] pairs
        self._extract(actions, action_type, pair_start, pairs)
        with nogil:
            self._evaluate(action_type, pair_start, pairs, out, out_start)
        return action_type.size()

    cdef list _run(self, object actions, bint detail):
        cdef vector[uint64_t] out
        cdef vector[int64_t] out_start
        cdef Py_ssize_t n_actions = self._match(actions, out, out_start)
        # Phase 3 (GIL held): Python lists of ids (or (id, spec index) tuples).  The lists
        # are acyclic; letting 200,000 new lists trigger cyclic collections that rescan the
        # whole heap would cost more than building them, so the collector waits.
        cdef int gc_was_enabled = PyGC_Disable()
        try:
            return self._build_results(out, out_start, n_actions, detail)
        finally:
            if gc_was_enabled:
                PyGC_Enable()

    cdef list _build_results(self, const vector[uint64_t]& out, const vector[int64_t]& out_start,
                             Py_ssize_t n_actions, bint detail):
        cdef Py_ssize_t a, k, count
        cdef list results = PyList_New(n_actions)
        cdef list row
        cdef tuple ids = self._ids
        cdef object item
        for a in range(n_actions):
            if a + 4 < n_actions:
                # The ids' reference counts are written below: start loading them early.
                for k in range(out_start[a + 4], out_start[a + 5]):
                    prefetch(PyTuple_GET_ITEM(ids, <Py_ssize_t>(out[k] >> 32)))
            count = out_start[a + 1] - out_start[a]
            row = PyList_New(count)
            for k in range(count):
                if detail:
                    item = (
                        <object>PyTuple_GET_ITEM(ids, <Py_ssize_t>(out[out_start[a] + k] >> 32)),
                        <Py_ssize_t><uint32_t>out[out_start[a] + k],
                    )
                else:
                    item = <object>PyTuple_GET_ITEM(ids, <Py_ssize_t>(out[out_start[a] + k] >> 32))
                Py_INCREF(item)
                PyList_SET_ITEM(row, k, item)
            Py_INCREF(row)
            PyList_SET_ITEM(results, a, row)
        return results

    cdef tuple _run_columns(self, object actions, bint detail):
        cdef vector[uint64_t] out
        cdef vector[int64_t] out_start
        cdef Py_ssize_t n_actions = self._match(actions, out, out_start)
        # Phase 3: three flat arrays, written without the GIL (nobody else sees them yet).
        cdef Py_ssize_t n_out = out.size(), a, k
        cdef c_array.array counts = c_array.clone(_INT_COLUMN, n_actions, False)
        cdef c_array.array ads = c_array.clone(_INT_COLUMN, n_out, False)
        cdef c_array.array specs = c_array.clone(_INT_COLUMN, n_out if detail else 0, False)
        cdef int* count_data = counts.data.as_ints
        cdef int* ad_data = ads.data.as_ints
        cdef int* spec_data = specs.data.as_ints
        with nogil:
            for a in range(n_actions):
                count_data[a] = <int>(out_start[a + 1] - out_start[a])
            for k in range(n_out):
                ad_data[k] = <int>(out[k] >> 32)
            if detail:
                for k in range(n_out):
                    spec_data[k] = <int><uint32_t>out[k]
        if detail:
            return (counts, ads, specs)
        return (counts, ads)

    def match(self, action):
        """Ids of the ads with a spec matching ``action``, in the set's order."""
        if not isinstance(action, Mapping):
            raise TypeError(
                f"an action must be a mapping of selector to value, got {type(action).__name__}"
            )
        return self._run((action,), False)[0]

    def match_detail(self, action):
        """``(id, index of the first matching spec of that ad)`` for each matching ad."""
        if not isinstance(action, Mapping):
            raise TypeError(
                f"an action must be a mapping of selector to value, got {type(action).__name__}"
            )
        return self._run((action,), True)[0]

    def match_batch(self, actions):
        """:meth:`match` for each action; the evaluation runs without the GIL."""
        return self._run(actions, False)

    def match_batch_detail(self, actions):
        """:meth:`match_detail` for each action; the evaluation runs without the GIL."""
        return self._run(actions, True)

    def match_columns(self, actions):
        """All the answers of :meth:`match_batch` as two flat ``array('i')`` columns,
        ``(counts, ads)``: ``counts[i]`` ads match action ``i``, and ``ads`` lists their
        indexes in :attr:`ids`, action after action, each action's in the set's order."""
        return self._run_columns(actions, False)

    def match_columns_detail(self, actions):
        """:meth:`match_columns` plus ``specs``: the index of each listed ad's first matching
        spec, ``(counts, ads, specs)``."""
        return self._run_columns(actions, True)

    # ----------------------------------------------------------------------------- the rest

    @property
    def ids(self):
        """The ad ids, in the order results are reported."""
        return self._ids

    def specs(self, ad_id):
        """The parsed specs of one ad (``KeyError`` when absent)."""
        for known, specs in self._ads:
            if known == ad_id:
                return specs
        raise KeyError(ad_id)

    def __len__(self):
        return len(self._ids)

    def __contains__(self, ad_id):
        return ad_id in self._ids

    def with_changes(self, add=None, remove=()):
        """A new set with ``remove`` dropped (unknown ids ignored), then ``add`` applied: an
        added id already present keeps its place, new ids go last.  ``self`` is unchanged;
        the parsed specs of unchanged ads are shared."""
        cdef ActionSpecSet new = ActionSpecSet.__new__(ActionSpecSet)
        new._max_length = self._max_length
        changed = _apply_changes(self._ads, add, remove, self._max_length)
        with gc_paused():
            new._build(changed)
        return new

    def __repr__(self):
        return f"<{type(self).__name__} {len(self._ids)} ads (compiled)>"


def compile_action_specs(ads, *, max_length=DEFAULT_MAX_LENGTH):
    """Compile ``{ad_id: specs}`` into an :class:`ActionSpecSet` (compiled kernel)."""
    return ActionSpecSet(ads, max_length=max_length)

