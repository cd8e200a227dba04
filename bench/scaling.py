"""Throughput against rule count: the compiled kernel (1 and 2 threads) and its baselines.

    python -m bench scaling [--counts 100,1000,10000,100000] [--events 50000] [--json F] [--plot F.png]
                            [--workload mixed] [--operators KIND=W,...] [--event-mix EVENT=W,...] [--skew 1]

Rule sets of the ``bench.workload`` workload at each count (``RULES_PER_PIXEL`` rules per pixel,
every bench's default; one pixel below that many rules, so a larger count must be a multiple of
it), the same seeded events, one run: events/s of the compiled kernel with one and two threads,
of the pure-Python twin and of the two hand-written ``re`` evaluators, plain and careful (on a
sample), next to the rate of merely iterating the events. Prints a table; ``--json`` writes the
figures, ``--plot`` a PNG of throughput against rule count (log-log). Needs the compiled kernel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tqdm import tqdm

from bench import cli
from bench.handwritten import careful_matcher, naive_matcher
from bench.rules import as_columns, iterate_rate, threaded_rate
from bench.workload import RULES_PER_PIXEL, Mix, add_mix_options, layout, make_workload, mix_from, workload_hash
from matcher import _ruleset_py, compile_rules
from matcher._ruleset import USING_EXTENSION

SERIES = [
    ("compiled, columns, 1 thread", "columns_1"),
    ("compiled, columns, 2 threads", "columns_2"),
    ("compiled, rows, 1 thread", "compiled_1"),
    ("compiled, rows, 2 threads", "compiled_2"),
    ("twin (pure Python)", "twin"),
    ("hand-written re", "naive"),
    ("hand-written re, careful", "careful"),
    ("just iterating", "iterate"),
]


def rule_count(text: str) -> int:
    """A ``--counts`` item: at most ``RULES_PER_PIXEL`` (one pixel), or a whole number of such
    pixels. Any other count could only be measured as a different one, so it is refused, not
    rounded."""
    count = cli.positive_int(text)
    try:
        layout(count, RULES_PER_PIXEL)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return count


def measure(count: int, events: int, sample: int, seed: int, batch: int, spec: Mix | None = None) -> dict:
    work = make_workload(*layout(count, RULES_PER_PIXEL), events, seed, spec)
    start = time.perf_counter()
    compiled = compile_rules(work.rules, work.sources)
    compile_s = time.perf_counter() - start
    compiled.match_batch(work.events)  # warm RE2's DFA caches
    twin = compile_rules(work.rules, work.sources, engine=_ruleset_py)
    head = work.events[:sample]
    naive, careful = naive_matcher(work.rules, work.sources), careful_matcher(work.rules, work.sources)
    if naive(head) != careful(head):  # the careful one's figure only counts if it answers alike
        raise SystemExit(f"bench scaling: at {count} rules the careful hand-written evaluator and the plain one "
                         "disagree")
    columns = as_columns(work.events, batch)
    return {
        "columns_1": threaded_rate(compiled.match_columns, work.events, batch, 1, columns),
        "columns_2": threaded_rate(compiled.match_columns, work.events, batch, 2, columns),
        "rules": len(work.rules), "compile_s": compile_s, "workload_sha256": workload_hash(work),
        "compiled_1": threaded_rate(compiled.match_batch, work.events, batch, 1),
        "compiled_2": threaded_rate(compiled.match_batch, work.events, batch, 2),
        "twin": threaded_rate(twin.match_batch, head, batch, 1),
        "naive": threaded_rate(naive, head, batch, 1),
        "careful": threaded_rate(careful, head, batch, 1),
        "iterate": iterate_rate(work.events),
    }


def plot(results: list[dict], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    counts = [r["rules"] for r in results]
    for label, key in SERIES:
        ax.plot(counts, [r[key] for r in results], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"rules in the compiled set ({RULES_PER_PIXEL} per pixel)")
    ax.set_ylabel("events per second")
    ax.set_title("conversion-matcher: throughput against rule count" + (f"\n{title}" if title else ""),
                 fontsize=9 if title else None)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("scaling", __doc__)
    ap.add_argument("--counts", type=cli.comma_list(rule_count), default="100,1000,10000,100000",
                    help=f"rule counts, a comma list: under {RULES_PER_PIXEL} (one pixel) or multiples of "
                         f"{RULES_PER_PIXEL}")
    ap.add_argument("--events", type=cli.positive_int, default=50_000, help="pixel events matched at each count")
    ap.add_argument("--sample", type=cli.positive_int, default=2_000,
                    help="events timed for the twin and the hand-written evaluators")
    ap.add_argument("--batch", type=cli.positive_int, default=1000, help="events per call")
    ap.add_argument("--seed", type=int, default=1, help="the workload's random seed")
    add_mix_options(ap)
    ap.add_argument("--json", help="write the figures as JSON to this file")
    ap.add_argument("--plot", help="write a PNG plot to this file")
    args = ap.parse_args(argv)
    if not args.counts:
        ap.error("--counts: at least one rule count is needed")
    cli.require_compiled_kernel("scaling", "rules")
    spec = mix_from(args)
    results = [measure(c, args.events, args.sample, args.seed, args.batch, spec)
               for c in tqdm(args.counts, desc="rule counts", unit="set", disable=not sys.stderr.isatty())]
    print(f"{spec.describe()}; seed {args.seed}")
    print(cli.kernels_loaded())
    print(f"{args.events:,} events, batch {args.batch}")
    widths = [max(len(label), 12) + 2 for label, _ in SERIES]
    print(f"{'rules':>8} {'compile s':>10}" + "".join(f"{label:>{w}}" for (label, _), w in zip(SERIES, widths)))
    for r in results:
        print(f"{r['rules']:>8,} {r['compile_s']:>10.3f}"
              + "".join(f"{r[key]:>{w},.0f}" for (_, key), w in zip(SERIES, widths)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"extension": USING_EXTENSION, "events": args.events, "seed": args.seed,
                       "workload": spec.as_json(), "results": results}, f, indent=2)
    if args.plot:
        plot(results, args.plot, f"workload {spec.name}" + (f" ({', '.join(spec.overridden)} given)"
                                                             if spec.overridden else ""))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
