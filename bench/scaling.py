"""Throughput against rule count: the compiled kernel (1 and 2 threads) and its baselines.

    python -m bench scaling [--counts 100,1000,10000,100000] [--events 50000] [--json F] [--plot F.png]

Rule sets of the ``bench.rules`` workload at each count (100 rules per pixel; one pixel below
100 rules), the same seeded events, one run: events/s of the compiled kernel with one and two
threads, of the pure-Python twin and of a hand-written ``re`` evaluator (both on a sample),
next to the rate of merely iterating the events. Prints a table; ``--json`` writes the
figures, ``--plot`` a PNG of throughput against rule count (log-log).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

from bench.rules import as_columns, iterate_rate, make_workload, naive_matcher, threaded_rate
from matcher import _ruleset_py, compile_rules
from matcher._ruleset import USING_EXTENSION

SERIES = [
    ("compiled, columns, 1 thread", "columns_1"),
    ("compiled, columns, 2 threads", "columns_2"),
    ("compiled, rows, 1 thread", "compiled_1"),
    ("compiled, rows, 2 threads", "compiled_2"),
    ("twin (pure Python)", "twin"),
    ("hand-written re", "naive"),
    ("just iterating", "iterate"),
]


def measure(count: int, events: int, sample: int, seed: int, batch: int) -> dict:
    per_pixel = min(count, 100)
    work = make_workload(max(1, count // per_pixel), per_pixel, events, seed)
    start = time.perf_counter()
    compiled = compile_rules(work.rules, work.sources)
    compile_s = time.perf_counter() - start
    compiled.match_batch(work.events)  # warm RE2's DFA caches
    twin = compile_rules(work.rules, work.sources, engine=_ruleset_py)
    head = work.events[:sample]
    columns = as_columns(work.events, batch)
    return {
        "columns_1": threaded_rate(compiled.match_columns, work.events, batch, 1, columns),
        "columns_2": threaded_rate(compiled.match_columns, work.events, batch, 2, columns),
        "rules": len(work.rules), "compile_s": compile_s,
        "compiled_1": threaded_rate(compiled.match_batch, work.events, batch, 1),
        "compiled_2": threaded_rate(compiled.match_batch, work.events, batch, 2),
        "twin": threaded_rate(twin.match_batch, head, batch, 1),
        "naive": threaded_rate(naive_matcher(work.rules, work.sources), head, batch, 1),
        "iterate": iterate_rate(work.events),
    }


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    counts = [r["rules"] for r in results]
    for label, key in SERIES:
        ax.plot(counts, [r[key] for r in results], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rules in the compiled set (100 per pixel)")
    ax.set_ylabel("events per second")
    ax.set_title("conversion-matcher: throughput against rule count")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="100,1000,10000,100000")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--sample", type=int, default=2_000, help="events timed for the twin and the hand-written evaluator")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the figures as JSON to this file")
    ap.add_argument("--plot", help="write a PNG plot to this file")
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    results = [measure(c, args.events, args.sample, args.seed, args.batch)
               for c in tqdm(counts, desc="rule counts", unit="set", disable=not sys.stderr.isatty())]
    print(f"compiled extension loaded: {USING_EXTENSION}; {args.events:,} events, batch {args.batch}")
    widths = [max(len(label), 12) + 2 for label, _ in SERIES]
    print(f"{'rules':>8} {'compile s':>10}" + "".join(f"{label:>{w}}" for (label, _), w in zip(SERIES, widths)))
    for r in results:
        print(f"{r['rules']:>8,} {r['compile_s']:>10.3f}"
              + "".join(f"{r[key]:>{w},.0f}" for (_, key), w in zip(SERIES, widths)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"extension": USING_EXTENSION, "events": args.events, "results": results}, f, indent=2)
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
