"""Load benchmark of the gRPC service: client and server on this machine, real SQLite file.

    .venv/bin/python -m bench.grpc_load [--rules 10000] [--batch 1000] [--seconds 3] [--repeat 3]

Steps, all against a ``python -m server`` child process:
1. seed ``--rules`` custom conversions (seed-style rules over 100 pixels in 100 ad accounts)
   straight into the SQLite file, then start the server, which loads and compiles them;
2. throughput: ``--concurrency`` callers send pre-serialised ``--batch``-event columnar
   batches for ``--seconds`` (unary calls, then as many bidirectional streams), ``--repeat``
   times (median and range printed: the machine is shared); the same bytes go to an *empty
   handler* (a server that reads the request bytes and replies with nothing) to show the
   transport ceiling;
3. latency: 100-event batches paced at half the events/s measured in step 2; p50/p90/p99;
4. registration visibility: create a custom conversion, then classify an event only it
   matches; the time until it matches (p50/p99). The create call returns after the swap, so
   the first classification already sees it.

Clients send pre-serialised bytes and do not decode replies, so the client's Python cost
stays small next to the server's. Prints a table; never asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from server.client import Client, pixel_event_columns
from server.gen.conversion_matcher.v1 import classification_pb2 as pb, custom_conversions_pb2 as cc_pb
from server.store import CustomConversionRecord, SQLiteStore
from server.testing import ServerProcess

METHOD = "/conversion_matcher.v1.ClassificationService/ClassifyPixelEvents"
STREAM_METHOD = "/conversion_matcher.v1.ClassificationService/StreamClassifyPixelEvents"
ACCOUNTS = [f"act_{i}" for i in range(1, 101)]
# Registers the conversions whose visibility is timed, on pixel 0 (shared with it), since
# the seeded accounts are at their 100-conversion limit.
NEWCOMER = "act_101"
TOKENS = {"tokens": {"bench": {"accounts": [*ACCOUNTS, NEWCOMER], "ingest": True}}}
METADATA = (("authorization", "Bearer bench"),)
WORDS = ["shoe", "hat", "thankyou", "confirm", "cart", "blue", "red", "sale", "promo", "checkout"]
EVENTS = ["Purchase", "Lead", "AddToCart", "PageView", "ViewContent", "item-sold"]



def _run_callers(caller, concurrency: int) -> float:
    """Run ``caller(slot)`` on ``concurrency`` threads at once; the seconds until all return."""
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started

def make_rule(rng: random.Random, i: int) -> dict:
    """Rules in the style of seed 003: URL contains, event + value, event + custom parameter, regex."""
    kind = i % 4
    if kind == 0:
        return {"url": {"i_contains": f"{rng.choice(WORDS)}{rng.randint(0, 99)}.html"}}
    if kind == 1:
        return {"and": [{"event": {"eq": rng.choice(EVENTS)}}, {"value": {"gt": rng.randint(100, 10_000)}}]}
    if kind == 2:
        return {"and": [{"event": {"eq": "item-sold"}}, {"color": {"i_contains": f"{rng.choice(WORDS)}{rng.randint(0, 99)}"}}]}
    return {"or": [{"url": {"regex_match": rf"/{rng.choice(WORDS)}/[0-9]+{rng.randint(0, 99)}$"}},
                   {"path": {"starts_with": f"/{rng.choice(WORDS)}{rng.randint(0, 99)}/"}}]}


def make_events(rng: random.Random, pixels: list[str], count: int) -> list[dict]:
    return [
        {
            "pixel_id": rng.choice(pixels),
            "event": rng.choice(EVENTS),
            "url": f"https://shop.example/{rng.choice(WORDS)}{rng.randint(0, 99)}.html?ref=ad",
            "device_type": rng.choice(["desktop", "mobile_iphone", "mobile_android"]),
            "custom_data": {"value": rng.randint(0, 12_000), "color": f"{rng.choice(WORDS)}{rng.randint(0, 99)}"},
        }
        for _ in range(count)
    ]


def seed(db_path: Path, rule_count: int, rng: random.Random) -> list[str]:
    """Write pixels and conversions through the store (unsynced, bulk); returns the pixel ids."""
    store = SQLiteStore(db_path, synchronous="OFF")
    pixels = [store.create_pixel(f"pixel {i}", "OTHER", ACCOUNTS[i], 0).id for i in range(len(ACCOUNTS))]
    store.add_authorized_accounts(pixels[0], [NEWCOMER])
    for i in range(rule_count):
        owner = i % len(ACCOUNTS)
        store.create_custom_conversion(
            CustomConversionRecord(
                id=str(10**17 + i), account_id=ACCOUNTS[owner], name=f"cc {i}", description="",
                rule=json.dumps(make_rule(rng, i)), event_source_id=pixels[owner], event_source_type="pixel",
                custom_event_type="OTHER", default_conversion_value=1.0, creation_time=0,
            ),
            limit=10**9,
        )
    store.close()
    return pixels


def serve_empty() -> None:
    """A server whose one handler takes the request bytes and returns an empty reply."""
    handler = grpc.method_handlers_generic_handler(
        "conversion_matcher.v1.ClassificationService",
        {"ClassifyPixelEvents": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(0)


def raw_call(channel: grpc.Channel):
    # No serializers: requests go out as the pre-built bytes, replies stay bytes.
    return channel.unary_unary(METHOD)


def throughput(target: str, payload: bytes, events_per_call: int, seconds: float, concurrency: int) -> tuple[float, float]:
    """(events/s, calls/s) with ``concurrency`` callers sending ``payload`` back to back."""
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    call = raw_call(channel)
    call(payload, metadata=METADATA, timeout=30)  # warm up the connection and caches
    done = [0] * concurrency
    deadline = time.perf_counter() + seconds

    def caller(slot: int) -> None:
        while time.perf_counter() < deadline:
            call(payload, metadata=METADATA, timeout=30)
            done[slot] += 1

    elapsed = _run_callers(caller, concurrency)
    channel.close()
    calls = sum(done)
    return calls * events_per_call / elapsed, calls / elapsed


def stream_throughput(target: str, payload: bytes, events_per_call: int, seconds: float, concurrency: int) -> float:
    """events/s over ``concurrency`` open streams, each keeping a window of batches in flight."""
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    stream = channel.stream_stream(STREAM_METHOD)
    done = [0] * concurrency
    deadline = time.perf_counter() + seconds
    window = 4  # batches sent ahead of their replies

    def caller(slot: int) -> None:
        credits = threading.Semaphore(window)
        stop = threading.Event()

        def requests():
            while not stop.is_set():
                credits.acquire()
                if time.perf_counter() >= deadline:
                    return
                yield payload

        for _ in stream(requests(), metadata=METADATA, timeout=seconds + 30):
            done[slot] += 1
            credits.release()
        stop.set()

    elapsed = _run_callers(caller, concurrency)
    channel.close()
    return sum(done) * events_per_call / elapsed


def paced_latency(target: str, payload: bytes, calls_per_second: float, seconds: float, concurrency: int) -> list[float]:
    """Latencies (s) of calls started on a fixed schedule (open loop), spread over callers."""
    channel = grpc.insecure_channel(target)
    call = raw_call(channel)
    call(payload, metadata=METADATA, timeout=30)
    interval = 1.0 / calls_per_second
    start = time.perf_counter() + 0.05
    total = int(seconds * calls_per_second)
    latencies: list[float] = []
    lock = threading.Lock()

    def caller(slot: int) -> None:
        for n in range(slot, total, concurrency):
            scheduled = start + n * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            call(payload, metadata=METADATA, timeout=30)
            # From the scheduled start: a call delayed by a busy server counts its wait.
            with lock:
                latencies.append(time.perf_counter() - scheduled)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    return latencies


def registration_visibility(target: str, pixel: str, account: str, count: int) -> tuple[list[float], list[float]]:
    """(create call seconds, seconds from starting a create until an event only that
    conversion matches is classified as it)."""
    creates, times = [], []
    with Client(target, "bench") as client:
        for i in range(count):
            name = f"bench-visible-{i}-{random.random()}"[:50]
            started = time.perf_counter()
            created = client.create_custom_conversion(account, f"visible {i}", pixel, {"event": {"eq": name}})
            creates.append(time.perf_counter() - started)
            while True:
                result = client.classify_pixel_events([{"pixel_id": pixel, "event": name}])
                if any(m.custom_conversion_id == created.id for m in result[0].conversions):
                    break
            times.append(time.perf_counter() - started)
            # Keep the account under its 100-conversion limit.
            client.call(client.custom_conversions.DeleteCustomConversion,
                        cc_pb.DeleteCustomConversionRequest(custom_conversion_id=created.id))
    return creates, times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput or latency measurement")
    parser.add_argument("--repeat", type=int, default=3, help="throughput measurements per row (median shown)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--registrations", type=int, default=50)
    parser.add_argument("--sync", default="FULL", choices=("FULL", "NORMAL"))
    parser.add_argument("--sweep", default="",
                        help="also measure latency at these fractions of the batch-1000 rate, e.g. 0.1,0.25,0.5,0.75")
    parser.add_argument("--json", help="write every figure as JSON to this file")
    parser.add_argument("--plot", help="with --sweep: write a PNG of latency against load to this file")
    parser.add_argument("--empty-server", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.empty_server:
        serve_empty()
        return 0

    rng = random.Random(20261122)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        pixels = seed(directory / "matcher.db", options.rules, rng)
        seeded = time.perf_counter() - t0
        events = make_events(rng, pixels, options.batch)
        big = pb.ClassifyPixelEventsRequest(columns=pixel_event_columns(events)).SerializeToString()
        small = pb.ClassifyPixelEventsRequest(columns=pixel_event_columns(events[:100])).SerializeToString()

        server = ServerProcess(directory, "--sync", options.sync, tokens_file=TOKENS)
        empty = subprocess.Popen([sys.executable, "-m", "bench.grpc_load", "--empty-server"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            empty_target = f"127.0.0.1:{int(empty.stdout.readline())}"
            with Client(server.target, "bench") as client:
                sample = client.classify_pixel_events(events)
            matches = sum(len(r.conversions) for r in sample) / len(sample)

            seconds, concurrency, batch = options.seconds, options.concurrency, options.batch

            def measured(run) -> list[float]:
                return sorted(run() for _ in range(options.repeat))

            rows = [
                ("empty handler (transport ceiling)", batch,
                 measured(lambda: throughput(empty_target, big, batch, seconds, concurrency)[0])),
                ("ClassifyPixelEvents", batch, measured(lambda: throughput(server.target, big, batch, seconds, concurrency)[0])),
                ("StreamClassifyPixelEvents", batch,
                 measured(lambda: stream_throughput(server.target, big, batch, seconds, concurrency))),
                ("ClassifyPixelEvents", 100, measured(lambda: throughput(server.target, small, 100, seconds, concurrency)[0])),
            ]
            full_rate = statistics.median(rows[1][2])
            # "Half that load": half the events/s measured at the big batch size, sent as 100-event batches.
            paced_rate = 0.5 * full_rate
            latencies = paced_latency(server.target, small, paced_rate / 100, options.seconds, options.concurrency)
            sweep = []
            for fraction in [float(f) for f in options.sweep.split(",") if f]:
                rate = fraction * full_rate
                sweep.append((fraction, rate, paced_latency(server.target, small, rate / 100, options.seconds,
                                                            options.concurrency)))
            creates, visible = registration_visibility(server.target, pixels[0], NEWCOMER, options.registrations)
        finally:
            server.terminate()
            empty.stdin.close()
            empty.wait(30)
            empty.stdout.close()

    print(f"rules: {options.rules} over {len(pixels)} pixels (seeded in {seeded:.1f} s); "
          f"{matches:.2f} matching conversions per event; sync={options.sync}; concurrency {options.concurrency}")
    print(f"{'target':<36} {'batch':>6} {'events/s':>12} {'calls/s':>10}   range of {options.repeat} runs (events/s)")
    for name, batch, runs in rows:
        median = statistics.median(runs)
        print(f"{name:<36} {batch:>6} {median:>12,.0f} {median / batch:>10,.1f}   {runs[0]:,.0f} .. {runs[-1]:,.0f}")
    print(f"server / ceiling at batch {options.batch}: {full_rate / statistics.median(rows[0][2]):.2f}")
    small_capacity = statistics.median(rows[3][2])
    if paced_rate > 0.8 * small_capacity:
        print(f"note: the paced rate is {paced_rate / small_capacity:.0%} of the 100-event capacity measured above; "
              "the latency below is mostly queueing")
    print(
        f"latency, 100-event batches at half the batch-{options.batch} load ({paced_rate:,.0f} events/s, {len(latencies)} calls): "
        f"{_percentiles_text(latencies)}"
    )
    for fraction, rate, values in sweep:
        print(f"  at {fraction:.0%} of that rate ({rate:,.0f} events/s, {len(values)} calls): {_percentiles_text(values)}")
    print(
        f"registration -> visible to classification ({len(visible)} creates, {options.rules} rules loaded): "
        f"p50 {statistics.median(visible) * 1e3:.2f} ms  p99 {percentile(visible, 0.99) * 1e3:.2f} ms "
        f"(the create call alone: p50 {statistics.median(creates) * 1e3:.2f} ms  p99 {percentile(creates, 0.99) * 1e3:.2f} ms)"
    )
    if options.json:
        report = {
            "rules": options.rules, "batch": options.batch, "matches_per_event": matches, "sync": options.sync,
            "throughput": [{"target": name, "batch": b, "events_per_s_runs": runs} for name, b, runs in rows],
            "server_over_ceiling": full_rate / statistics.median(rows[0][2]),
            "latency_half_load": {"events_per_s": paced_rate, **_percentiles(latencies)},
            "latency_sweep": [{"fraction": f, "events_per_s": r, **_percentiles(v)} for f, r, v in sweep],
            "registration_visible": _percentiles(visible), "registration_call": _percentiles(creates),
        }
        with open(options.json, "w") as f:
            json.dump(report, f, indent=2)
    if options.plot and sweep:
        _plot_sweep(sweep, options.plot)
        print(f"plot: {options.plot}")
    return 0


QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}


def _percentiles(values: list[float]) -> dict:
    """Latency percentiles in milliseconds."""
    return {name: percentile(values, q) * 1e3 for name, q in QUANTILES.items()}


def _percentiles_text(values: list[float]) -> str:
    return "  ".join(f"{name} {ms:.2f} ms" for name, ms in _percentiles(values).items())


def _plot_sweep(sweep: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [rate for _, rate, _ in sweep]
    for name in QUANTILES:
        ax.plot(rates, [_percentiles(values)[name] for _, _, values in sweep], marker="o", label=name)
    ax.set_xlabel("offered load (events/s, 100-event batches)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title("ClassifyPixelEvents latency against load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
