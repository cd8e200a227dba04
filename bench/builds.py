"""Two builds of the rule kernel, interleaved in one process: is a change faster, and by how much?

    python -m bench builds OLD NEW [--rounds 20] [--forms buffers,columns,parameters,rows] [--events 200000]
                                   [--workload mixed] [--operators ...] [--event-mix ...] [--skew 1]

OLD and NEW are builds of ``matcher._ruleset_c``: the extension file, or a checkout (a git
worktree) whose ``matcher/`` holds one. Both are loaded into this process (each from a private
copy, so neither shares the other's statics) and compile the same rules; every batch is first
matched by both and the answers compared, then the batches are timed alternately: blocks of
25 batches, the kernel that starts flipping each round, so both see the same events, the
same heap and the same noise. A pair of rounds gives each kernel every batch once; the report
is NEW/OLD per pair (median, range, and how many pairs NEW won). On a shared VM whose absolute
figures move by 30% from minute to minute, these paired ratios are what holds still.

Each build is loaded and compiles the rules twice, in both orders (OLD then NEW, NEW then OLD),
and the pairs of rounds alternate between the two, so neither build is always the one loaded or
compiled second. Even so, one file given as both builds reads NEW/OLD 1.005-1.013 on the
buffers form (1.009-1.023 before the orders alternated): a ratio within ~2% of 1 is not a
difference this tool resolves.
"""

from __future__ import annotations

import gc
import glob
import importlib.machinery
import importlib.util
import json
import os
import shutil
import statistics
import tempfile
import time
from types import ModuleType

from bench import cli
from bench.rules import as_buffer_columns, as_columns, as_parameter_columns, as_rows
from bench.workload import add_workload_options, make_workload, mix_from, workload_hash
from matcher import compile_rules


FORMS = {  # a form: how the events are batched, and the method that matches such a batch
    "buffers": (as_buffer_columns, "match_columns"),
    "columns": (as_columns, "match_columns"),
    "parameters": (as_parameter_columns, "match_columns"),
    "rows": (as_rows, "match_batch"),
}
BLOCK = 25  # batches timed in a row by one kernel


def extension_path(build: str) -> str:
    """The kernel file a build names: the file itself, or the one in a checkout's ``matcher/``."""
    if os.path.isdir(build):
        found = glob.glob(os.path.join(build, "matcher", "_ruleset_c.*.so"))
        if len(found) != 1:
            raise SystemExit(f"{build}: expected one matcher/_ruleset_c.*.so (built?), found {len(found)}")
        return found[0]
    if not os.path.isfile(build):
        raise SystemExit(f"{build}: no such extension file or checkout")
    return build


def load_build(path: str, into: str) -> ModuleType:
    """Load a private copy of a kernel build as ``matcher._ruleset_c`` (not registered in
    ``sys.modules``): a copy, because loading one file twice gives back the first module."""
    copy = os.path.join(into, os.path.basename(path))
    shutil.copyfile(path, copy)
    loader = importlib.machinery.ExtensionFileLoader("matcher._ruleset_c", copy)
    spec = importlib.util.spec_from_file_location("matcher._ruleset_c", copy, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def compare(matchers: list, batches: list, events: int, rounds: int) -> dict:
    """Time two match functions alternately over the batches (``events`` in all); events/s
    per pair of rounds. ``matchers``: (old, new) pairs, a pair of rounds each in turn."""
    times = {"old": [], "new": []}
    clock = time.perf_counter
    for r in range(rounds):
        old, new = matchers[r // 2 % len(matchers)]
        spent = {"old": 0.0, "new": 0.0}
        for i, batch in enumerate(batches):
            which = "old" if (i // BLOCK + r) % 2 == 0 else "new"
            match = old if which == "old" else new
            start = clock()
            match(batch)
            spent[which] += clock() - start
        for which in spent:
            times[which].append(spent[which])
    rates = {which: [events / (t[k] + t[k + 1]) for k in range(0, rounds - 1, 2)] for which, t in times.items()}
    ratios = [n / o for o, n in zip(rates["old"], rates["new"])]
    return {"old_median": statistics.median(rates["old"]), "new_median": statistics.median(rates["new"]),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "new_faster": sum(r > 1 for r in ratios), "pairs": len(ratios)}


def main(argv: list[str] | None = None) -> int:
    ap = cli.parser("builds", __doc__)
    ap.add_argument("old", help="the baseline: a _ruleset_c extension file, or a checkout holding one")
    ap.add_argument("new", help="the change, likewise")
    ap.add_argument("--rounds", type=cli.positive_int, default=20,
                    help="rounds over the batches, an even number (pairs of them are compared; successive pairs "
                         "alternate the order the builds were loaded and compiled in)")
    ap.add_argument("--forms", default="buffers,columns,parameters,rows",
                    help="buffers (columns in flat buffers, bench rules' headline form), columns (custom data "
                         "as dicts), parameters (custom parameters as columns), rows")
    add_workload_options(ap)
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    forms = args.forms.split(",")
    if unknown := [f for f in forms if f not in FORMS]:
        ap.error(f"--forms: unknown {', '.join(unknown)} (choose from {', '.join(FORMS)})")
    if args.rounds % 2:  # (an odd last round would have no pair: timed, then dropped; 1 is odd)
        ap.error(f"argument --rounds: an even number of at least 2 is needed (rounds are compared in pairs), "
                 f"got {args.rounds}")
    spec = mix_from(args)
    w = make_workload(args.pixels, args.rules_per_pixel, args.events, args.seed, spec)
    builds = {"old": extension_path(args.old), "new": extension_path(args.new)}
    compiled = []  # (old, new): loaded and compiled in that order, then in the other
    with tempfile.TemporaryDirectory() as tmp:
        for k, order in enumerate((("old", "new"), ("new", "old"))):
            done = {}
            for which in order:
                os.mkdir(into := os.path.join(tmp, f"{which}{k}"))
                done[which] = compile_rules(w.rules, w.sources, engine=load_build(builds[which], into))
            compiled.append((done["old"], done["new"]))
    gc.freeze()  # as a serving process does after loading: collections skip the compiled rules
    results = {}
    print(f"{len(w.rules):,} rules, {len(w.events):,} events in batches of {args.batch}, {args.rounds} rounds: "
          "NEW/OLD per pair of rounds")
    print(f"{spec.describe()}; seed {args.seed}")
    for form in forms:
        batched, method = FORMS[form]
        batches = batched(w.events, args.batch)
        matchers = [(getattr(old, method), getattr(new, method)) for old, new in compiled]
        for i, batch in enumerate(batches):
            if any(old(batch) != new(batch) for old, new in matchers):
                raise SystemExit(f"{form}: the builds answer batch {i} differently; not timing them")
        r = results[form] = compare(matchers, batches, len(w.events), args.rounds)
        print(f"  {form:<10} OLD {r['old_median']:>11,.0f} ev/s  NEW {r['new_median']:>11,.0f} ev/s  "
              f"NEW/OLD {r['ratio_median']:.3f} (range {r['ratio_min']:.3f}-{r['ratio_max']:.3f}, "
              f"NEW faster in {r['new_faster']}/{r['pairs']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"old": args.old, "new": args.new, "rules": len(w.rules), "events": len(w.events),
                       "rounds": args.rounds, "seed": args.seed, "workload": spec.as_json(),
                       "workload_sha256": workload_hash(w), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
