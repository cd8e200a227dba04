"""Where a classification request's time goes inside the server, without gRPC.

    python -m bench service [--rules 10000] [--batch 1000] [--batches 200] [--seed 1]
                            [--workload urls [--operators KIND=W,...] [--event-mix EVENT=W,...] [--skew 1]
                             [--rules-per-pixel N]]

Seeds the gRPC bench's workload (``bench.grpc_load``: seed-style rules over 100 pixels, or with
``--workload`` a named ``bench.workload`` mix laid out and seeded as ``bench grpc`` does) into
a SQLite file, loads it as a server process does (registry, compiled snapshot, the heap
frozen out of the collector) and times, on the same events in pre-serialised requests of each form side by side (columns with the
custom data as one JSON array text, columns with typed ``custom_parameters``, buffers, and
buffers asking for the matches as buffers too, ``reply_as_buffers``; the answers must be equal):

1. decoding the protobuf request (the floor of any handler that reads its input);
2. decoding it into the batch's columns (``PixelBatch``: lists, custom data);
3. the matcher alone on those columns (the compiled matcher's share): ``match_columns``, or
   ``match_columns_buffers`` with the events' own values where the reply is buffers;
4. the whole ``classify_pixel_events`` plus serialising its reply (what a call costs the
   server besides gRPC itself).

Each stage is the best of ``--repeat`` passes (the machine is shared); the table shows
events/s and the stage's share of the whole handler of the same form. Figures only.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

from bench import cli
from bench.grpc_load import add_seeded_workload_options, count_workload, workload_from
from bench.workload import RULES_PER_PIXEL, Mix, layout
from server.app import create_server
from server.auth import TokenTable
from server.classification import ClassificationServicer, PixelBatch
from server.client import Client, pixel_event_buffers, pixel_event_columns
from server.core import Limits
from server.gen.conversion_matcher.v1 import classification_pb2 as pb


# The request's forms: label -> the request holding a batch of events in that form.
FORMS = {
    "custom data as JSON": lambda events: pb.ClassifyPixelEventsRequest(columns=pixel_event_columns(events, custom="json")),
    "custom parameters as columns": lambda events: pb.ClassifyPixelEventsRequest(columns=pixel_event_columns(events)),
    "buffers": lambda events: pb.ClassifyPixelEventsRequest(buffers=pixel_event_buffers(events)),
    "buffers, reply as buffers": lambda events: pb.ClassifyPixelEventsRequest(buffers=pixel_event_buffers(events),
                                                                              reply_as_buffers=True),
}


def best_seconds(fn, items: list, repeat: int) -> float:
    """The fastest of ``repeat`` passes of ``fn`` over every item."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best


def run(rules: int, batch: int, batches: int, seed_value: int, repeat: int, spec: Mix | None = None,
        rules_per_pixel: int | None = RULES_PER_PIXEL) -> dict:
    """``spec`` None: the seed-style workload; else that named one, ``rules_per_pixel`` a pixel
    (read only then: None, what the options hold without ``--workload``, is for the seed-style one)."""
    distinct_batches = min(batches, 20)
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "bench.db"
        # Its events made with its rules, from their own generator (as bench grpc's).
        _, sent, digest = count_workload(db, rules, seed_value, batch * distinct_batches, spec, rules_per_pixel)
        # Loaded as `python -m server` loads it (not started: no port is served).
        server, _ = create_server("127.0.0.1:0", db_path=db, tokens=TokenTable.from_mapping({"tokens": {}}),
                                  sync="NORMAL", sync_interval=0)
        try:
            core = server.core
            servicer = ClassificationServicer(core)
            gc.freeze()  # as `python -m server` does once it has loaded
            rules_now = core.registry.snapshot.rules

            def whole(payload: bytes) -> bytes:
                request = pb.ClassifyPixelEventsRequest.FromString(payload)
                return servicer.classify_pixel_events(request).SerializeToString()

            batches_of_events = [sent[i * batch:(i + 1) * batch] for i in range(distinct_batches)]
            seconds: dict[str, float] = {}
            first_replies = None
            for form, request in FORMS.items():
                distinct = [request(events) for events in batches_of_events]
                if form == "custom parameters as columns" and not all(r.columns.custom_parameters for r in distinct):
                    raise SystemExit("the workload's custom data did not encode as typed columns")
                distinct = [r.SerializeToString() for r in distinct]
                payloads = [distinct[i % len(distinct)] for i in range(batches)]
                requests = [pb.ClassifyPixelEventsRequest.FromString(p) for p in payloads]
                decoded = [PixelBatch(r, core.limits.max_batch_events) for r in requests]
                snapshot = core.registry.snapshot
                if requests[0].reply_as_buffers:  # the matcher builds the reply's buffers, values included
                    def matcher(b: PixelBatch):
                        return rules_now.match_columns_buffers(b.matcher_columns(), b.own_values(), snapshot.default_values)
                else:
                    def matcher(b: PixelBatch):
                        return rules_now.match_columns(b.matcher_columns())
                replies = [Client.event_results(pb.ClassifyPixelEventsResponse.FromString(whole(payload)))
                           for payload in distinct]  # (also warms RE2's DFA caches)
                if first_replies is None:
                    first_replies = replies
                    matches = sum(sum(rules_now.match_columns(b.matcher_columns())[0]) for b in decoded)
                elif replies != first_replies:
                    raise SystemExit(f"the replies differ between the request's forms ({form})")
                seconds |= {
                    f"protobuf decode, {form}": best_seconds(pb.ClassifyPixelEventsRequest.FromString, payloads, repeat),
                    f"decode into columns, {form}": best_seconds(
                        lambda p: PixelBatch(pb.ClassifyPixelEventsRequest.FromString(p), core.limits.max_batch_events),
                        payloads, repeat),
                    f"matcher alone, {form}": best_seconds(matcher, decoded, repeat),
                    f"classify + reply, {form}": best_seconds(whole, payloads, repeat),
                }
        finally:
            server.stop(0)
    events = batch * batches
    # Stage by stage, the four forms next to each other.
    stages = [name.split(", ", 1)[0] for name in seconds]
    seconds = {f"{stage}, {form}": seconds[f"{stage}, {form}"] for stage in dict.fromkeys(stages) for form in FORMS}
    result = {
        "rules": rules, "batch": batch, "events": events, "matches_per_event": matches / events,
        "workload": "seed-style (bench.grpc_load: make_rule, make_events)", "seed": seed_value,
        "compiled": rules_now.compiled,
        "stages": {name: {"seconds": s, "events_per_s": events / s} for name, s in seconds.items()},
    }
    if spec is not None:  # (the seed-style workload's report stays as it was)
        pixel_count, per_pixel = layout(rules, rules_per_pixel)
        result |= {"workload": spec.as_json(), "pixels": pixel_count, "rules_per_pixel": per_pixel,
                   "workload_sha256": digest}
    return result


def report(result: dict) -> None:
    print(f"{result['rules']:,} rules, {result['events']:,} events in batches of {result['batch']:,} "
          f"({result['matches_per_event']:.2f} matches per event; compiled kernel: {result['compiled']})")
    if isinstance(result["workload"], dict):  # a named one (bench.workload), as bench rules heads its tables
        print(f"  {Mix.from_json(result['workload']).describe()}; seed {result['seed']}; "
              f"{result['pixels']:,} pixels x {result['rules_per_pixel']:,} rules")
    print(f"  {'stage':<52}{'events/s':>12}{'us/event':>10}{'share of the whole':>20}")
    for name, stage in result["stages"].items():
        form = name.split(", ", 1)[1]
        whole = result["stages"][f"classify + reply, {form}"]["seconds"]
        print(f"  {name:<52}{stage['events_per_s']:>12,.0f}{1e6 / stage['events_per_s']:>10.3f}"
              f"{stage['seconds'] / whole:>19.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("service", __doc__)
    parser.add_argument("--rules", type=cli.positive_int, default=10_000,
                        help="custom conversions seeded (the gRPC bench's seed-style rules over 100 pixels, or "
                             "--workload's, --rules-per-pixel a pixel)")
    parser.add_argument("--batch", type=cli.positive_int, default=1_000,
                        help=f"events per request (at most the server's {Limits().max_batch_events:,})")
    parser.add_argument("--batches", type=cli.positive_int, default=200,
                        help="requests timed per stage (cycling through at most 20 distinct ones)")
    parser.add_argument("--repeat", type=cli.positive_int, default=3, help="passes per stage (the best is reported)")
    parser.add_argument("--seed", type=int, default=1, help="the workload's random seed")
    add_seeded_workload_options(parser)
    parser.add_argument("--json", help="write the figures as JSON to this file")
    args = parser.parse_args(argv)
    spec = workload_from(parser, args, [args.rules])
    if args.batch > Limits().max_batch_events:  # (the server would refuse every request: LimitExceeded)
        parser.error(f"argument --batch: at most the server's limit of {Limits().max_batch_events:,} events a "
                     f"request, got {args.batch:,}")
    result = run(args.rules, args.batch, args.batches, args.seed, args.repeat, spec, args.rules_per_pixel)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
