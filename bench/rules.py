"""Rule-matching benchmark: compiled kernel, pure-Python twin and reference, side by side.

    python -m bench.rules [--pixels 100] [--rules-per-pixel 100] [--events 200000] [--seed 1]

Workload: ``pixels`` advertisers (event sources), each with ``rules-per-pixel`` custom
conversions of mixed kinds (URL substring ORs, event + value thresholds, regexes, custom
parameter equality, nested and/or/not), and a stream of pixel events whose sources follow
a Zipf-like popularity. One run prints compile time, events/s of every implementation and
the ratios, and memory per compiled rule. The twin and the reference are timed on a
deterministic subsample of the same events (they are 2-3 orders of magnitude slower).
"""

from __future__ import annotations

import argparse
from array import array
import gc
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from matcher import _ruleset_py, compile_rules, parse_rule
from matcher.reference import match_rules
from matcher._ruleset import USING_EXTENSION
from matcher.columns import NumberColumn, TextColumn
from matcher.values import EVENT_COLUMNS

STANDARD_EVENTS = ["PageView", "ViewContent", "AddToCart", "InitiateCheckout", "Purchase", "Lead", "Search",
                   "CompleteRegistration"]
EVENT_WEIGHTS = [50, 20, 10, 5, 8, 3, 3, 1]
CATEGORIES = ["shoes", "bags", "hats", "shirts", "watches", "toys", "books", "garden"]


@dataclass
class Workload:
    rules: dict[str, str]  # id -> JSON text, as a service receives them
    sources: dict[str, str]
    events: list[dict]


def make_rule(rng: random.Random, pixel: int, k: int) -> dict:
    token = f"p{pixel}x{k}"
    kind = k % 6
    if kind == 0:  # URL substring OR (the commonest custom conversion)
        return {"or": [{"url": {"i_contains": f"/thankyou-{token}"}}, {"url": {"i_contains": f"/confirmation/{token}"}}]}
    if kind == 1:  # standard event above a value
        return {"and": [{"event": {"eq": rng.choice(["Purchase", "InitiateCheckout"])}},
                        {"value": {"gt": rng.choice([20, 50, 100, 250, 1000])}}]}
    if kind == 2:  # regex on the URL
        return {"url": {"regex_match": rf"/product/\d+/{token}(/|$)"}}
    if kind == 3:  # custom parameter equality with an event
        return {"and": [{"event": "AddToCart"}, {"category": {"eq": f"{rng.choice(CATEGORIES)}-{k % 20}"}}]}
    if kind == 4:  # nested and/or/not
        return {"and": [{"event": {"is_any": ["Purchase", "Lead"]}},
                        {"or": [{"path": {"starts_with": f"/checkout/{token}"}}, {"content_type": {"i_is_any": ["Product", token]}}]},
                        {"not": {"url": {"contains": "test=1"}}}]}
    return {"operator": "and", "filters": [  # audience filter syntax, as Ads Manager writes it
        {"field": "event", "operator": "eq", "value": "ViewContent"},
        {"field": "URL", "operator": "i_contains", "value": f"/landing/{token}"},
    ]}


def make_event(rng: random.Random, pixel_weights: list[float], pixels: int, rules_per_pixel: int) -> dict:
    pixel = rng.choices(range(pixels), pixel_weights)[0]
    event = rng.choices(STANDARD_EVENTS, EVENT_WEIGHTS)[0]
    k = rng.randrange(rules_per_pixel * 2)  # half the tokens exist in some rule
    token = f"p{pixel}x{k}"
    path = rng.choice([f"/thankyou-{token}", f"/product/{rng.randrange(10**6)}/{token}", f"/checkout/{token}/pay",
                       f"/landing/{token}", "/", "/cart", f"/blog/post-{k}", f"/confirmation/{token}"])
    query = rng.choice(["", "?utm_source=fb", "?test=1", "?ref=home&utm_medium=cpc"])
    custom = {"currency": "USD"}
    if event in ("Purchase", "InitiateCheckout", "AddToCart"):
        custom["value"] = round(rng.lognormvariate(3.5, 1.2), 2)
        custom["category"] = f"{rng.choice(CATEGORIES)}-{rng.randrange(20)}"
        custom["content_ids"] = [f"sku-{rng.randrange(1000)}" for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        custom["content_type"] = rng.choice(["product", "product_group"])
    return {"event": event, "url": f"https://shop{pixel}.example.com{path}{query}", "custom_data": custom,
            "pixel_id": f"{1000 + pixel}", "device_type": rng.choice(["desktop", "mobile_iphone", "mobile_android"])}


def make_workload(pixels: int, rules_per_pixel: int, events: int, seed: int) -> Workload:
    rng = random.Random(seed)
    rules, sources = {}, {}
    for pixel in range(pixels):
        for k in range(rules_per_pixel):
            rid = f"cc_{pixel}_{k}"
            rules[rid] = json.dumps(make_rule(rng, pixel, k))
            sources[rid] = f"{1000 + pixel}"
    weights = [1.0 / (rank + 1) for rank in range(pixels)]  # Zipf(1) popularity
    return Workload(rules, sources, [make_event(rng, weights, pixels, rules_per_pixel) for _ in range(events)])


def naive_matcher(rules: dict[str, str], sources: dict[str, str]):
    """What a user would write by hand: rules grouped by pixel, each walked per event with ``re``.

    Close to the spec for the operators this workload uses; not a reference (no aliases beyond
    these, no Unicode folding, no list values), just the baseline a team would start from.
    """
    import re

    def normalise(node):  # once per rule, as a team would: one syntax, operands pre-lowered
        if "filters" in node:
            return {node["operator"]: [normalise({f["field"]: {f["operator"]: f["value"]}}) for f in node["filters"]]}
        for key in ("and", "or"):
            if key in node:
                return {key: [normalise(c) for c in node[key]]}
        if "not" in node:
            return {"not": normalise(node["not"])}
        (field, cond), = node.items()
        if not isinstance(cond, dict):
            cond = {"eq": cond}
        (op, operand), = cond.items()
        if op == "i_contains":
            operand = operand.lower()
        elif op == "i_is_any":
            operand = [o.lower() for o in operand]
        return {field: {op: operand}}

    by_pixel: dict[str, list] = {}
    for rid, text in rules.items():
        by_pixel.setdefault(sources[rid], []).append((rid, normalise(json.loads(text))))
    compiled: dict[str, re.Pattern] = {}

    def value(event, field, memo):
        name = field.lower()
        if name in ("url", "event", "device_type"):
            return event.get(name)
        if name == "path":
            if "path" not in memo:  # split the URL once per event
                rest = (event.get("url") or "").split("://", 1)[-1]
                path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
                memo["path"] = path.split("?", 1)[0].split("#", 1)[0]
            return memo["path"]
        return (event.get("custom_data") or {}).get(field)

    def holds(node, event, memo):
        if "and" in node:
            return all(holds(c, event, memo) for c in node["and"])
        if "or" in node:
            return any(holds(c, event, memo) for c in node["or"])
        if "not" in node:
            return not holds(node["not"], event, memo)
        (field, cond), = node.items()
        (op, operand), = cond.items()
        v = value(event, field, memo)
        if v is None:
            return False
        if op in ("gt", "lt", "gte", "lte"):
            try:
                x, y = float(v), float(operand)
            except (TypeError, ValueError):
                return False
            return {"gt": x > y, "lt": x < y, "gte": x >= y, "lte": x <= y}[op]
        v = str(v)
        if op == "eq":
            return v == str(operand)
        if op == "contains":
            return operand in v
        if op == "i_contains":
            return operand in v.lower()
        if op == "starts_with":
            return v.startswith(operand)
        if op == "is_any":
            return v in operand
        if op == "i_is_any":
            return v.lower() in operand
        if op == "regex_match":
            pattern = compiled.get(operand) or compiled.setdefault(operand, re.compile(operand))
            return pattern.search(v) is not None
        raise ValueError(op)

    def match_event(event):
        memo: dict = {}
        return [rid for rid, rule in by_pixel.get(event.get("pixel_id"), ()) if holds(rule, event, memo)]

    def match_batch(events):
        return [match_event(e) for e in events]

    return match_batch


def as_rows(events: list[dict], batch: int) -> list[list[dict]]:
    """The events as ``match_batch`` batches of ``batch`` events."""
    return [events[i:i + batch] for i in range(0, len(events), batch)]


def as_columns(events: list[dict], batch: int) -> list[dict[str, list]]:
    """The events as ``match_columns`` batches (as a service holds them after decoding a request)."""
    return [{name: [e.get(name) for e in events[i:i + batch]] for name in EVENT_COLUMNS}
            for i in range(0, len(events), batch)]


def as_parameter_columns(events: list[dict], batch: int) -> list[dict[str, Any]]:
    """``as_columns`` with the custom parameters as columns too, one per name (as a service
    holds a request whose parameters came as typed columns, not JSON)."""
    batches = as_columns(events, batch)
    for columns in batches:
        customs = [c if isinstance(c, dict) else {} for c in columns["custom_data"]]
        names = dict.fromkeys(name for custom in customs for name in custom)
        columns["custom_data"] = {name: [custom.get(name) for custom in customs] for name in names}
    return batches


def as_buffers(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``as_parameter_columns`` batches with each column of one kind of value as the buffers
    Arrow would hold it in (texts: UTF-8 and int32 offsets; floats: float64; a validity
    bitmap where values are missing), as ``(TextColumn or NumberColumn, buffers)``; other
    columns (lists of lists) stay lists. ``wrap_buffers`` makes a batch of them."""
    def buffers(values: list) -> Any:
        present = [v for v in values if v is not None]
        if present and all(type(v) is str for v in present):
            column = TextColumn.from_texts(values)
        elif present and all(type(v) is float for v in present):
            column = NumberColumn.from_numbers(values)
        else:
            return values
        validity, *rest = column.buffers()
        if type(column) is TextColumn:  # (from_texts makes int64 offsets; Arrow's string has int32)
            offsets, data = rest
            return TextColumn, (data.tobytes(), array("i", offsets).tobytes()), validity
        return NumberColumn, (rest[0].tobytes(),), validity

    return [{name: ({k: buffers(v) for k, v in column.items()} if isinstance(column, dict) else buffers(column))
             for name, column in b.items()} for b in batches]


def wrap_buffers(raw: dict[str, Any]) -> dict[str, Any]:
    """A batch of ``as_buffers`` as columns for ``match_columns``: what a job holding Arrow
    buffers does per batch (the wrappers check the buffers and copy the offsets, not the data)."""
    def wrap(column: Any) -> Any:
        if type(column) is not tuple:
            return column
        kind, args, validity = column
        if kind is TextColumn:
            data, offsets = args
            return TextColumn(data, memoryview(offsets).cast("i"), validity)
        return NumberColumn(memoryview(args[0]).cast("d"), validity)

    return {name: ({k: wrap(v) for k, v in column.items()} if isinstance(column, dict) else wrap(column))
            for name, column in raw.items()}


def as_buffer_columns(events: list[dict], batch: int) -> list[dict[str, Any]]:
    """Batches of columns in flat buffers, wrapped: the form the headline figure is timed on."""
    return [wrap_buffers(raw) for raw in as_buffers(as_parameter_columns(events, batch))]


def threaded_rate(fn, events: list, batch: int, threads: int, batches: list | None = None) -> float:
    """Events per second with ``threads`` threads sharing one compiled set, each its share of
    batches (``events`` sliced by ``batch``, or the ``batches`` given)."""
    import threading

    if batches is None:
        batches = as_rows(events, batch)
    shares = [batches[k::threads] for k in range(threads)]

    def work(share):
        for chunk in share:
            fn(chunk)

    workers = [threading.Thread(target=work, args=(share,)) for share in shares]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(events) / (time.perf_counter() - start)


REPEATS = 3


def best_rate(fn, events: list, batch: int, threads: int, batches: list | None = None) -> float:
    """The best of ``REPEATS`` ``threaded_rate`` runs (noise on a shared machine only slows a run down)."""
    return max(threaded_rate(fn, events, batch, threads, batches) for _ in range(REPEATS))


def rss_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rate(fn, events: list, batch: int) -> tuple[float, list]:
    """Events per second of ``fn(batch) -> results`` over all events, and the results.

    Batches are sliced up front; the timed loop holds only the calls. Every answer is kept,
    as a batch job would (``threaded_rate`` consumes them per batch, as a service does).
    """
    batches = as_rows(events, batch)
    start = time.perf_counter()
    results = [fn(chunk) for chunk in batches]
    elapsed = time.perf_counter() - start
    return len(events) / elapsed, [r for chunk in results for r in chunk]


def joined(answers: list[tuple[list, list]]) -> tuple[list, list]:
    """``match_columns``'s answers to a run of batches as one: matches per event, every id."""
    return [n for counts, _ in answers for n in counts], [i for _, ids in answers for i in ids]


def flattened(per_event: list[list]) -> tuple[list, list]:
    """Per-event match lists (``match_batch``'s) in ``match_columns``'s shape, to compare."""
    return [len(r) for r in per_event], [i for r in per_event for i in r]


def iterate_rate(events: list) -> float:
    """The input's ceiling: merely touching every event's fields in Python."""
    start = time.perf_counter()
    for event in events:
        event.get("pixel_id"), event.get("url"), event.get("event"), event.get("custom_data")
    return len(events) / (time.perf_counter() - start)


def run(pixels: int, rules_per_pixel: int, n_events: int, seed: int, sample: int, batch: int) -> dict:
    work = make_workload(pixels, rules_per_pixel, n_events, seed)
    n_rules = len(work.rules)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    parsed = {rid: parse_rule(text) for rid, text in work.rules.items()}
    t1 = time.perf_counter()
    compiled = compile_rules(parsed, work.sources)
    t2 = time.perf_counter()
    gc.collect()
    rss_compiled = rss_bytes()
    assert compiled.compiled == USING_EXTENSION
    # The first pass is cold (RE2 builds its DFA states on first use); its answers are checked below.
    cold_rate, compiled_out = rate(compiled.match_batch, work.events, batch)
    del compiled_out  # a retained answer per event makes Python's full collections rescan more
    gc.collect()
    rss_warm = rss_bytes()  # the compiled set with warm DFA caches
    # The machine is shared: the compiled figures are the best of ``REPEATS`` runs each.
    compiled_rate = best_rate(compiled.match_batch, work.events, batch, 1)  # answers consumed per batch
    compiled_out = [r for chunk in as_rows(work.events, batch) for r in compiled.match_batch(chunk)]
    columns = as_columns(work.events, batch)
    columns_rate = best_rate(compiled.match_columns, work.events, batch, 1, columns)
    flat = [compiled.match_columns(c) for c in columns]
    assert joined(flat) == flattened(compiled_out), "columns and rows disagree"
    parameter_columns = as_parameter_columns(work.events, batch)
    assert [compiled.match_columns(c) for c in parameter_columns] == flat, \
        "custom parameters as columns and as mappings disagree"
    raw_buffers = as_buffers(parameter_columns)
    start = time.perf_counter()
    buffer_columns = [wrap_buffers(raw) for raw in raw_buffers]
    wrap_rate = n_events / (time.perf_counter() - start)
    assert [compiled.match_columns(c) for c in buffer_columns] == flat, "columns in buffers and as lists disagree"
    del flat
    parameters_rate = best_rate(compiled.match_columns, work.events, batch, 1, parameter_columns)
    buffers_rate = best_rate(compiled.match_columns, work.events, batch, 1, buffer_columns)
    # The same events as a job sends them when it can keep each pixel's together (a stream
    # partitioned by pixel): runs of one pixel longer than a call, against ~10 a call on average.
    order = sorted(range(n_events), key=lambda i: work.events[i]["pixel_id"])
    grouped_events = [work.events[i] for i in order]
    grouped = as_buffer_columns(grouped_events, batch)
    assert joined([compiled.match_columns(c) for c in grouped]) == flattened([compiled_out[i] for i in order]), \
        "events grouped by pixel and in generated order disagree"
    grouped_rate = best_rate(compiled.match_columns, grouped_events, batch, 1, grouped)
    del grouped
    twin = compile_rules(parsed, work.sources, engine=_ruleset_py)
    subsample = work.events[:sample]
    twin_rate, twin_out = rate(twin.match_batch, subsample, batch)

    def reference_batch(events):
        return match_rules(parsed, events, work.sources)

    ref_sample = subsample[: max(1, sample // 10)]
    reference_rate, reference_out = rate(reference_batch, ref_sample, batch)
    naive_rate, naive_out = rate(naive_matcher(work.rules, work.sources), subsample, batch)
    assert compiled_out[:sample] == twin_out, "compiled and twin disagree"
    assert compiled_out[: len(ref_sample)] == reference_out, "compiled and reference disagree"
    matches = sum(map(len, compiled_out))
    two_threads = best_rate(compiled.match_batch, work.events, batch, 2)
    columns_two_threads = best_rate(compiled.match_columns, work.events, batch, 2, columns)
    parameters_two_threads = best_rate(compiled.match_columns, work.events, batch, 2, parameter_columns)
    buffers_two_threads = best_rate(compiled.match_columns, work.events, batch, 2, buffer_columns)
    return {
        "rules": n_rules, "pixels": pixels, "events": n_events, "batch": batch, "compiled_extension": USING_EXTENSION,
        "parse_s": t1 - t0, "compile_s": t2 - t1,
        "bytes_per_rule_compiled": (rss_compiled - rss0) / n_rules, "bytes_per_rule_after_run": (rss_warm - rss0) / n_rules,
        "compiled_events_per_s": compiled_rate, "compiled_cold_events_per_s": cold_rate,
        "columns_events_per_s": columns_rate, "parameter_columns_events_per_s": parameters_rate, "columns_two_threads_events_per_s": columns_two_threads,
        "parameter_columns_two_threads_events_per_s": parameters_two_threads,
        "buffer_columns_events_per_s": buffers_rate, "buffer_columns_two_threads_events_per_s": buffers_two_threads,
        "buffer_wrap_events_per_s": wrap_rate, "buffer_columns_grouped_events_per_s": grouped_rate,
        "twin_events_per_s": twin_rate, "reference_events_per_s": reference_rate,
        "naive_re_events_per_s": naive_rate,
        "naive_agrees": naive_out == compiled_out[:sample],
        "iterate_events_per_s": iterate_rate(work.events),
        "one_thread_events_per_s": compiled_rate, "two_threads_events_per_s": two_threads,
        "matches_per_event": matches / n_events,
        "twin_sample": len(subsample), "reference_sample": len(ref_sample),
    }


def report(name: str, r: dict) -> None:
    print(f"\n== {name}: {r['rules']:,} rules over {r['pixels']} pixel(s), {r['events']:,} events, batch {r['batch']}")
    print(f"  compiled extension loaded: {r['compiled_extension']}")
    print(f"  parse {r['parse_s']:.3f} s + compile {r['compile_s']:.3f} s = {r['parse_s'] + r['compile_s']:.3f} s")
    print(f"  memory: {r['bytes_per_rule_compiled']:.0f} B/rule compiled, {r['bytes_per_rule_after_run']:.0f} B/rule "
          "with warm DFA caches (RSS)")
    print(f"  compiled figures: best of {REPEATS} runs")
    print(f"  first pass over the events (cold DFA caches): {r['compiled_cold_events_per_s']:,.0f} events/s")
    print(f"  {'implementation':<26}{'events/s':>12}{'vs reference':>14}{'vs hand-written re':>20}")
    for label, key in [("compiled, columns, warm", "columns_events_per_s"),
                       ("  custom params as columns", "parameter_columns_events_per_s"),
                       ("  ... in buffers (Arrow)", "buffer_columns_events_per_s"),
                       ("  ... grouped by pixel", "buffer_columns_grouped_events_per_s"),
                       ("compiled, rows, warm", "compiled_events_per_s"), ("twin (pure Python)", "twin_events_per_s"),
                       ("reference", "reference_events_per_s"), ("hand-written, Python re", "naive_re_events_per_s"),
                       ("just iterating the events", "iterate_events_per_s")]:
        print(f"  {label:<26}{r[key]:>12,.0f}{r[key] / r['reference_events_per_s']:>13,.0f}x"
              f"{r[key] / r['naive_re_events_per_s']:>19,.1f}x")
    print(f"  threads, rows: 1 -> {r['one_thread_events_per_s']:,.0f}/s, 2 -> {r['two_threads_events_per_s']:,.0f}/s "
          f"({r['two_threads_events_per_s'] / r['one_thread_events_per_s']:.2f}x)")
    print(f"  threads, columns: 1 -> {r['columns_events_per_s']:,.0f}/s, "
          f"2 -> {r['columns_two_threads_events_per_s']:,.0f}/s "
          f"({r['columns_two_threads_events_per_s'] / r['columns_events_per_s']:.2f}x)")
    print(f"  threads, parameter columns: 1 -> {r['parameter_columns_events_per_s']:,.0f}/s, "
          f"2 -> {r['parameter_columns_two_threads_events_per_s']:,.0f}/s "
          f"({r['parameter_columns_two_threads_events_per_s'] / r['parameter_columns_events_per_s']:.2f}x)")
    print(f"  threads, columns in buffers: 1 -> {r['buffer_columns_events_per_s']:,.0f}/s, "
          f"2 -> {r['buffer_columns_two_threads_events_per_s']:,.0f}/s "
          f"({r['buffer_columns_two_threads_events_per_s'] / r['buffer_columns_events_per_s']:.2f}x); "
          f"wrapping the buffers (checks, offsets copied): {r['buffer_wrap_events_per_s']:,.0f} events/s")
    if not r["naive_agrees"]:
        print("  (the hand-written evaluator disagrees with the reference on some events: it skips the spec's edge cases)")
    print(f"  matches per event: {r['matches_per_event']:.3f} (twin timed on {r['twin_sample']:,} events, "
          f"reference on {r['reference_sample']:,})")


def add_workload_options(ap: argparse.ArgumentParser) -> None:
    """The options naming a ``make_workload`` workload and its batches (``bench builds`` too)."""
    ap.add_argument("--pixels", type=int, default=100)
    ap.add_argument("--rules-per-pixel", type=int, default=100)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_options(ap)
    ap.add_argument("--sample", type=int, default=5000, help="events timed for the twin (reference: a tenth)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--scenario", choices=["many_pixels", "one_pixel"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    shapes = {"many_pixels": (args.pixels, args.rules_per_pixel), "one_pixel": (1, 1000)}
    if args.scenario:  # a child process: one scenario, so its memory figures start from a clean heap
        pixels, per_pixel = shapes[args.scenario]
        result = run(pixels, per_pixel, args.events, args.seed, args.sample, args.batch)
        print(json.dumps(result))
        return 0
    results = {}
    for name in shapes:
        child = [sys.executable, "-m", "bench.rules", "--scenario", name, "--events", str(args.events),
                 "--batch", str(args.batch), "--sample", str(args.sample), "--seed", str(args.seed),
                 "--pixels", str(args.pixels), "--rules-per-pixel", str(args.rules_per_pixel)]
        done = subprocess.run(child, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    report(f"{args.pixels * args.rules_per_pixel:,}-rule workload", results["many_pixels"])
    report("1,000 rules on one pixel", results["one_pixel"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
