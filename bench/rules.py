"""Rule-matching benchmark: compiled kernel, pure-Python twin and reference, side by side.

    python -m bench rules [--pixels 100] [--rules-per-pixel N] [--events 200000] [--seed 1]
                          [--workload mixed] [--operators KIND=W,...] [--event-mix EVENT=W,...] [--skew 1]

Workload (``bench.workload``): ``pixels`` advertisers (event sources), each with
``rules-per-pixel`` custom conversions of the kinds the ``--workload`` mix names (``mixed``:
URL substring ORs, event + value thresholds, regexes, custom parameter equality, nested
and/or/not, audience filters, alike), and a stream of pixel events whose sources follow a
Zipf-like popularity. Two scenarios, each in a child process so its memory figures start from
a clean heap: that workload, and 1,000 rules on one pixel. One run prints compile time,
events/s of every implementation and the ratios, and memory per compiled rule. The twin, the
reference and the two hand-written ``re`` evaluators (``bench.handwritten``: plain, and
careful) are timed on a deterministic subsample of the same events (they are 2-4 orders of
magnitude slower). Needs the compiled kernel.
"""

from __future__ import annotations

import argparse
from array import array
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import cli
from bench.handwritten import careful_matcher, naive_matcher
from bench.workload import Mix, add_workload_options, make_workload, mix_argv, mix_from, workload_hash
from matcher import _ruleset_py, compile_rules, parse_rule
from matcher.reference import match_rules
from matcher._ruleset import USING_EXTENSION
from matcher.columns import NumberColumn, TextColumn
from matcher.values import EVENT_COLUMNS


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



# What a scenario's child process writes on stdout before a step of ``run``: the parent turns
# these lines into its progress bar (the child's stderr is kept for its error, not a terminal).
PROGRESS = "#progress "
STEPS = 16  # the ``step`` calls in one ``run``


def run(pixels: int, rules_per_pixel: int, n_events: int, seed: int, sample: int, batch: int,
        spec: Mix, step=lambda label: None) -> dict:
    """One scenario's figures. ``step(label)`` is called as each of its ``STEPS`` stages starts."""
    step("generating the workload")
    work = make_workload(pixels, rules_per_pixel, n_events, seed, spec)
    n_rules = len(work.rules)
    gc.collect()
    rss0 = rss_bytes()
    step("parsing and compiling")
    t0 = time.perf_counter()
    parsed = {rid: parse_rule(text) for rid, text in work.rules.items()}
    t1 = time.perf_counter()
    compiled = compile_rules(parsed, work.sources)
    t2 = time.perf_counter()
    gc.collect()
    rss_compiled = rss_bytes()
    # The first pass is cold (RE2 builds its DFA states on first use); its answers are checked below.
    step("compiled, cold pass")
    cold_rate, compiled_out = rate(compiled.match_batch, work.events, batch)
    del compiled_out  # a retained answer per event makes Python's full collections rescan more
    gc.collect()
    rss_warm = rss_bytes()  # the compiled set with warm DFA caches
    # The machine is shared: the compiled figures are the best of ``REPEATS`` runs each.
    step("compiled, rows")
    compiled_rate = best_rate(compiled.match_batch, work.events, batch, 1)  # answers consumed per batch
    compiled_out = [r for chunk in as_rows(work.events, batch) for r in compiled.match_batch(chunk)]
    step("compiled, columns")
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
    step("compiled, parameter columns")
    parameters_rate = best_rate(compiled.match_columns, work.events, batch, 1, parameter_columns)
    step("compiled, buffers")
    buffers_rate = best_rate(compiled.match_columns, work.events, batch, 1, buffer_columns)
    # The same events as a job sends them when it can keep each pixel's together (a stream
    # partitioned by pixel): runs of one pixel longer than a call, against ~10 a call on average.
    step("compiled, grouped by pixel")
    order = sorted(range(n_events), key=lambda i: work.events[i]["pixel_id"])
    grouped_events = [work.events[i] for i in order]
    grouped = as_buffer_columns(grouped_events, batch)
    assert joined([compiled.match_columns(c) for c in grouped]) == flattened([compiled_out[i] for i in order]), \
        "events grouped by pixel and in generated order disagree"
    grouped_rate = best_rate(compiled.match_columns, grouped_events, batch, 1, grouped)
    del grouped
    step("twin")
    twin = compile_rules(parsed, work.sources, engine=_ruleset_py)
    subsample = work.events[:sample]
    twin_rate, twin_out = rate(twin.match_batch, subsample, batch)

    def reference_batch(events):
        return match_rules(parsed, events, work.sources)

    step("reference")
    ref_sample = subsample[: max(1, sample // 10)]
    reference_rate, reference_out = rate(reference_batch, ref_sample, batch)
    step("hand-written re, plain")
    naive = naive_matcher(work.rules, work.sources)
    naive(subsample)  # untimed: its regexes compile on first use (~15% of a cold pass), set-up as the careful one's
    naive_rate, naive_out = rate(naive, subsample, batch)
    step("hand-written re, careful")
    careful_rate, careful_out = rate(careful_matcher(work.rules, work.sources), subsample, batch)
    assert compiled_out[:sample] == twin_out, "compiled and twin disagree"
    assert compiled_out[: len(ref_sample)] == reference_out, "compiled and reference disagree"
    # The two hand-written evaluators differ in care, not in meaning: the careful one's speed
    # only counts if it answers as the plain one does.
    assert careful_out == naive_out, "the careful hand-written evaluator and the plain one disagree"
    matches = sum(map(len, compiled_out))
    step("compiled, two threads, rows")
    two_threads = best_rate(compiled.match_batch, work.events, batch, 2)
    step("compiled, two threads, columns")
    columns_two_threads = best_rate(compiled.match_columns, work.events, batch, 2, columns)
    step("compiled, two threads, parameter columns")
    parameters_two_threads = best_rate(compiled.match_columns, work.events, batch, 2, parameter_columns)
    step("compiled, two threads, buffers")
    buffers_two_threads = best_rate(compiled.match_columns, work.events, batch, 2, buffer_columns)
    return {
        "rules": n_rules, "pixels": pixels, "events": n_events, "batch": batch, "compiled_extension": USING_EXTENSION,
        "seed": seed, "workload": spec.as_json(), "workload_sha256": workload_hash(work),
        "parse_s": t1 - t0, "compile_s": t2 - t1,
        "bytes_per_rule_compiled": (rss_compiled - rss0) / n_rules, "bytes_per_rule_after_run": (rss_warm - rss0) / n_rules,
        "compiled_events_per_s": compiled_rate, "compiled_cold_events_per_s": cold_rate,
        "columns_events_per_s": columns_rate, "parameter_columns_events_per_s": parameters_rate, "columns_two_threads_events_per_s": columns_two_threads,
        "parameter_columns_two_threads_events_per_s": parameters_two_threads,
        "buffer_columns_events_per_s": buffers_rate, "buffer_columns_two_threads_events_per_s": buffers_two_threads,
        "buffer_wrap_events_per_s": wrap_rate, "buffer_columns_grouped_events_per_s": grouped_rate,
        "twin_events_per_s": twin_rate, "reference_events_per_s": reference_rate,
        "naive_re_events_per_s": naive_rate, "careful_re_events_per_s": careful_rate,
        # The headline form (columns in buffers, generated order) against each hand-written baseline.
        "buffer_columns_vs_naive_re": buffers_rate / naive_rate,
        "buffer_columns_vs_careful_re": buffers_rate / careful_rate,
        "naive_agrees": naive_out == compiled_out[:sample],
        "iterate_events_per_s": iterate_rate(work.events),
        "one_thread_events_per_s": compiled_rate, "two_threads_events_per_s": two_threads,
        "matches_per_event": matches / n_events,
        "twin_sample": len(subsample), "reference_sample": len(ref_sample),
    }


def report(name: str, r: dict) -> None:
    print(f"\n== {name}: {r['rules']:,} rules over {r['pixels']} pixel(s), {r['events']:,} events, batch {r['batch']}")
    print(f"  {Mix.from_json(r['workload']).describe()}; seed {r['seed']}")
    print(f"  parse {r['parse_s']:.3f} s + compile {r['compile_s']:.3f} s = {r['parse_s'] + r['compile_s']:.3f} s")
    print(f"  memory: {r['bytes_per_rule_compiled']:.0f} B/rule compiled, {r['bytes_per_rule_after_run']:.0f} B/rule "
          "with warm DFA caches (RSS)")
    print(f"  compiled figures: best of {REPEATS} runs")
    print(f"  first pass over the events (cold DFA caches): {r['compiled_cold_events_per_s']:,.0f} events/s")
    print(f"  {'implementation':<28}{'events/s':>12}{'vs reference':>14}{'vs plain re':>13}{'vs careful re':>15}")
    for label, key in [("compiled, columns, warm", "columns_events_per_s"),
                       ("  custom params as columns", "parameter_columns_events_per_s"),
                       ("  ... in buffers (Arrow)", "buffer_columns_events_per_s"),
                       ("  ... grouped by pixel", "buffer_columns_grouped_events_per_s"),
                       ("compiled, rows, warm", "compiled_events_per_s"), ("twin (pure Python)", "twin_events_per_s"),
                       ("reference", "reference_events_per_s"),
                       ("hand-written re, plain", "naive_re_events_per_s"),
                       ("hand-written re, careful", "careful_re_events_per_s"),
                       ("just iterating the events", "iterate_events_per_s")]:
        print(f"  {label:<28}{r[key]:>12,.0f}{r[key] / r['reference_events_per_s']:>13,.0f}x"
              f"{r[key] / r['naive_re_events_per_s']:>12,.1f}x{r[key] / r['careful_re_events_per_s']:>14,.1f}x")
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
        print("  (the hand-written evaluators disagree with the compiled kernel on some events: they skip the "
              "spec's edge cases)")
    print(f"  matches per event: {r['matches_per_event']:.3f} (twin and hand-written evaluators timed on "
          f"{r['twin_sample']:,} events, reference on {r['reference_sample']:,})")


SHAPES = {"many_pixels": None, "one_pixel": (1, 1000)}  # None: --pixels x --rules-per-pixel


def scenario_command(name: str, args) -> list[str]:
    """The child process that runs scenario ``name`` with the parent's options."""
    return [sys.executable, "-m", "bench.rules", "--scenario", name, "--events", str(args.events),
            "--batch", str(args.batch), "--sample", str(args.sample), "--seed", str(args.seed),
            "--pixels", str(args.pixels), "--rules-per-pixel", str(args.rules_per_pixel), *mix_argv(args)]


def run_scenario(name: str, args, bar) -> dict:
    """Runs scenario ``name`` in a child process; its result. SystemExit naming the scenario,
    with the child's stderr printed first, when the child fails."""
    command = scenario_command(name, args)
    with tempfile.TemporaryFile("w+") as errors:  # (a file, not a pipe: a long stderr cannot stall the child)
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as child:
            lines = []
            for line in child.stdout:
                if line.startswith(PROGRESS):
                    bar.set_postfix_str(f"{name}: {line[len(PROGRESS):].strip()}")
                    bar.update(1)
                else:
                    lines.append(line)
        errors.seek(0)
        stderr = errors.read()
    if child.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"bench rules: the {name} scenario's child process failed (exit status {child.returncode}); "
                         f"its stderr is above. Command: {subprocess.list2cmdline(command)}")
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        sys.stderr.write(stderr)
        raise SystemExit(f"bench rules: the {name} scenario's child process wrote no result line "
                         f"(its last line of output: {lines[-1][:200] if lines else 'none'!r})") from None


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("rules", __doc__)
    add_workload_options(ap)
    ap.add_argument("--sample", type=cli.positive_int, default=5000,
                    help="events timed for the twin and the hand-written evaluators (reference: a tenth)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a progress bar on stderr (default: when stderr is a terminal)")
    ap.add_argument("--scenario", choices=list(SHAPES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cli.require_compiled_kernel("rules", "rules")
    spec = mix_from(args)
    if args.scenario:  # a child process: one scenario, so its memory figures start from a clean heap
        pixels, per_pixel = SHAPES[args.scenario] or (args.pixels, args.rules_per_pixel)

        def step(label: str) -> None:
            print(PROGRESS + label, flush=True)

        result = run(pixels, per_pixel, args.events, args.seed, args.sample, args.batch, spec, step)
        print(json.dumps(result))
        return 0
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if args.progress is None else args.progress
    with tqdm(total=STEPS * len(SHAPES), desc="rules bench", unit="step", disable=not enabled, file=sys.stderr,
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}") as bar:
        results = {name: run_scenario(name, args, bar) for name in SHAPES}
    print(cli.kernels_loaded())  # (the scenarios' child processes run this interpreter in this environment)
    report(f"{args.pixels * args.rules_per_pixel:,}-rule workload", results["many_pixels"])
    report("1,000 rules on one pixel", results["one_pixel"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "workload": spec.as_json(), "seed": args.seed}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
