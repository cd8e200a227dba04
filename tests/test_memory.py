"""Memory over many calls: the compiled kernels give back what each call takes.

The kernels allocate outside Python's view (C++ vectors, RE2 programs, references held while
the GIL is released), so a leak shows in no Python count of objects. Each check runs one kind
of call for a warm-up stretch (caches, RE2's DFA states, a matcher's kept working memory),
then for a second stretch as long, and counts what is allocated around the second: the bytes
malloc has handed out and not had back (glibc's ``mallinfo2``: C and C++ allocations and
Python's larger objects), and the blocks of Python's small-object allocator in use. Neither
depends on which pages happen to be resident (memory freed by earlier tests is reused without
growing the process, which hid a leak from a first version that read the resident size). A
kernel that kept a few bytes a call or an event would grow by megabytes or thousands of
blocks; one that gives everything back stays within the allocators' own slack. The first
tests leak on purpose, to show the measure sees what it is for.

Memory, not time: no figure here depends on how fast the machine is.
"""

from __future__ import annotations

import ctypes
import gc
import random
import sys
from array import array
from collections.abc import Callable

import pytest

from bench.rules import as_buffers, as_columns, as_parameter_columns, as_rows, make_workload, wrap_buffers
from matcher import parse_rule
from matcher.ruleset import compile_rules
from tests.conftest import _actionset_c, _ruleset_c


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
if _mallinfo2 is not None:
    _mallinfo2.restype = _MallInfo2
pytestmark = pytest.mark.skipif(_mallinfo2 is None, reason="malloc's own count is read from glibc's mallinfo2")

# Growth over a measured stretch that fails a check. Each stretch is long enough that keeping
# 16 bytes an event, 512 bytes a call, or one small object every four calls grows past them.
LIMIT_MIB = 2.0
CALLS = 4000
LIMIT_BLOCKS = CALLS // 4
BATCH = 50  # events a call: CALLS * BATCH * 16 B = 3.05 MiB


def allocated() -> tuple[float, int]:
    """MiB malloc has handed out (in its heaps and mapped alone), and Python's small blocks."""
    info = _mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, sys.getallocatedblocks()


def growth(call: Callable[[], object], calls: int = CALLS) -> tuple[float, int]:
    """(MiB, blocks) gained over ``calls`` calls, after as many to warm up."""
    for _ in range(calls):
        call()
    gc.collect()
    mib, blocks = allocated()
    for _ in range(calls):
        call()
    gc.collect()
    after_mib, after_blocks = allocated()
    return after_mib - mib, after_blocks - blocks


def assert_keeps_nothing(call: Callable[[], object], calls: int = CALLS) -> None:
    mib, blocks = growth(call, calls)
    assert mib < LIMIT_MIB and blocks < LIMIT_BLOCKS * calls // CALLS, (mib, blocks)


def cycling(batches: list, method: Callable[[object], object]) -> Callable[[], object]:
    """A call that matches the next of ``batches`` each time (so no one batch stays hot)."""
    state = {"i": 0}

    def call() -> object:
        state["i"] = (state["i"] + 1) % len(batches)
        return method(batches[state["i"]])
    return call


def test_the_measure_sees_bytes_kept():
    kept = []
    assert growth(lambda: kept.append(bytearray(1024)))[0] > LIMIT_MIB


def test_the_measure_sees_small_objects_kept():
    kept = []
    assert growth(lambda: kept.append(object()))[1] > LIMIT_BLOCKS


# -- custom-conversion rules ---------------------------------------------------------------

@pytest.fixture(scope="module")
def workload():
    """The bench's rules (20 pixels, 50 rules each) and events, with some made harder: non-ASCII
    URLs (folded for the i_ literals, and the regex set run), and custom data with lists, ints,
    booleans and text numbers (read under the GIL)."""
    assert _ruleset_c is not None, "the compiled kernel did not build"
    work = make_workload(20, 50, 2000, 3)
    rng = random.Random(3)
    for event in work.events:
        if rng.random() < 0.3:
            event["url"] = event["url"] + "/Ärger-ẞ"
        if rng.random() < 0.2:
            event["custom_data"] = dict(event.get("custom_data") or {}, value="12.5", category=["garden-1", 7],
                                        n=3, flag=True)
    rules = {rule_id: parse_rule(text) for rule_id, text in work.rules.items()}
    return rules, work.sources, work.events


@pytest.fixture(scope="module")
def compiled(workload):
    rules, sources, _ = workload
    return compile_rules(rules, sources, engine=_ruleset_c)


def test_rows_keep_nothing(compiled, workload):
    assert_keeps_nothing(cycling(as_rows(workload[2], BATCH), compiled.match_batch))


def test_columns_keep_nothing(compiled, workload):
    assert_keeps_nothing(cycling(as_columns(workload[2], BATCH), compiled.match_columns))


def test_parameter_columns_keep_nothing(compiled, workload):
    batches = as_parameter_columns(workload[2], BATCH)
    assert_keeps_nothing(cycling(batches, compiled.match_columns))


def test_buffers_with_values_answered_as_buffers_keep_nothing(compiled, workload):
    """Events in flat buffers, and the matches (with a value each) written into new buffers."""
    batches = [wrap_buffers(b) for b in as_buffers(as_parameter_columns(workload[2], BATCH))]
    values = {rule_id: float(i) for i, rule_id in enumerate(compiled.ids)}
    own = array("d", [float("nan")] * BATCH)
    assert_keeps_nothing(cycling(batches, lambda b: compiled.match_columns_buffers(b, own, values)))


def test_refused_calls_keep_nothing(compiled, workload):
    """A call refused in its second chunk (a chunk's held texts and working memory are let go
    on the way out), and one refused before any chunk (columns of different lengths)."""
    events = workload[2][:600]
    bad_row = events[:400] + [17] + events[401:]
    columns = as_columns(events, len(events))[0]
    uneven = dict(columns, url=columns["url"][:-1])

    def call():
        for method, batch in ((compiled.match_batch, bad_row), (compiled.match_columns, uneven)):
            with pytest.raises((TypeError, ValueError)):
                method(batch)
    assert_keeps_nothing(call, CALLS // 4)


def test_patterns_one_by_one_keep_nothing(compiled, workload):
    """Every set's DFA out of memory: each text's patterns one by one, regexes as programs made
    for the call and freed after it."""
    _ruleset_c._set_multi_pattern_sets(True, run_out=True)
    try:
        assert_keeps_nothing(cycling(as_rows(workload[2], BATCH), compiled.match_batch), CALLS // 8)
    finally:
        _ruleset_c._set_multi_pattern_sets(True)


def test_compiling_and_changing_rule_sets_keeps_nothing(workload):
    """A service compiles a set per change: each dropped set gives back its C++ partitions."""
    rules, sources, _ = workload
    some = dict(list(rules.items())[:200])
    sources = {rule_id: sources[rule_id] for rule_id in some if rule_id in sources}
    base = compile_rules(some, sources, engine=_ruleset_c)
    extra = {"extra": parse_rule({"url": {"i_contains": "/extra-page"}})}

    def call():
        compile_rules(some, sources, engine=_ruleset_c)
        base.with_changes(extra, remove=list(some)[:5])
    assert_keeps_nothing(call, 100)


# -- action specs --------------------------------------------------------------------------

def test_action_specs_keep_nothing():
    assert _actionset_c is not None, "the compiled kernel did not build"
    from bench.actions import Workload

    work = Workload(2000, 2000, 5)
    specs = _actionset_c.compile_action_specs(work.ads)
    batches = [work.actions[i:i + BATCH] for i in range(0, len(work.actions), BATCH)]
    ad_ids = list(work.ads)

    def call(batch):
        specs.match_batch_detail(batch)
        specs.match_columns_detail(batch)
    assert_keeps_nothing(cycling(batches, call))
    changed = {ad_ids[0]: [{"action.type": "like", "page": "1"}]}
    assert_keeps_nothing(lambda: specs.with_changes(changed, remove=ad_ids[1:3]), 200)
