"""The kernel's key table (exact-match values and event sources by their bytes): every key
found with its ids, and nothing else, whatever its length (short keys live in the slot,
longer ones apart; the hash and the comparison read words of 8, 4 or 1 bytes from each end).
The rule-level behaviour is the differential tests'; these reach the cases a rule set rarely
does: keys that differ in one byte at every position, many keys, empty keys, shared ids."""

import random

import pytest

from tests.conftest import _ruleset_c

pytestmark = pytest.mark.skipif(_ruleset_c is None, reason="compiled extension not loaded")


def _lookup(entries, probes):
    return _ruleset_c._key_table_lookup(entries, probes)


def test_an_empty_table_finds_nothing():
    assert _lookup([], [b"", b"a", b"x" * 40]) == [[], [], []]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 40, 100])
def test_a_key_is_found_and_its_one_byte_neighbours_are_not(size):
    key = bytes(range(65, 65 + size))
    entries = [(key, [7])]
    assert _lookup(entries, [key]) == [[7]]
    neighbours = [key[:i] + bytes([key[i] ^ 1]) + key[i + 1:] for i in range(size)]
    neighbours += [key + b"A", b"A" + key] + ([key[:-1]] if size else [])
    assert _lookup(entries, neighbours) == [[] for _ in neighbours]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 40, 100])
def test_every_byte_counts_in_the_hash_and_the_comparison(size):
    key = bytes(range(65, 65 + size))
    hashes = {_ruleset_c._key_parts(key, key)[0]}
    assert _ruleset_c._key_parts(key, key)[1]
    for i in range(size):
        neighbour = key[:i] + bytes([key[i] ^ 1]) + key[i + 1:]
        hashed, same = _ruleset_c._key_parts(neighbour, key)
        assert not same, i
        hashes.add(hashed)
    assert len(hashes) == size + 1
    assert _ruleset_c._key_parts(key[:-1], key[:-1])[0] != _ruleset_c._key_parts(key, key)[0]


def test_many_keys_of_every_length_each_find_their_own_ids():
    rng = random.Random(5)
    keys = list(dict.fromkeys(bytes(rng.choice(b"ab\x00\xff") for _ in range(rng.randrange(0, 30)))
                              for _ in range(3000)))
    entries = [(key, [i] if i % 3 else [i, -5, i + 1_000_000]) for i, key in enumerate(keys)]
    assert _lookup(entries, keys) == [ids for _, ids in entries]
    absent = [key + b"c" for key in keys] + [b"c" + key for key in keys]
    assert _lookup(entries, absent) == [[] for _ in absent]


def test_the_empty_key_is_a_key_like_any_other():
    assert _lookup([(b"", [1]), (b"\x00", [2])], [b"", b"\x00", b"\x00\x00"]) == [[1], [2], []]


def test_a_key_with_several_ids_keeps_them_in_order():
    assert _lookup([(b"Purchase", [3, 1, 2]), (b"x" * 20, [9, 8])], [b"Purchase", b"x" * 20]) == [[3, 1, 2], [9, 8]]
