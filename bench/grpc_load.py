"""Load benchmark of the gRPC service: client processes and server processes on this machine, real SQLite file.

    .venv/bin/python -m bench grpc [--rules 10000] [--batch 1000] [--form columns,buffers]
                                   [--server-processes 1,2] [--clients 1,2]
                                   [--concurrency 4] [--rate 50000,100000] [--sweep 0.25,0.5,0.75]
                                   [--seconds 3] [--repeat 3] [--seed 20261122] [--json F] [--plot F.png] [--progress]
                                   [--workload urls [--operators KIND=W,...] [--event-mix EVENT=W,...] [--skew 1]
                                    [--rules-per-pixel N]]

For each rule count in ``--rules`` (a comma list, e.g. 100,1000,10000,100000):
1. seed that many custom conversions straight into a fresh SQLite file (one transaction),
   each count from a generator of its own seeded with ``--seed`` (``count_workload``: a
   count's workload is the same whichever counts come before it). Without ``--workload``:
   seed-style rules over 100 pixels in 100 ad accounts (this bench's own workload,
   ``make_rule`` and ``make_events``). With ``--workload NAME`` (and its knobs, as ``bench
   rules`` takes them): ``bench.workload``'s rules and events of that mix, ``--rules-per-pixel``
   rules on each of count / that many pixels (one pixel below it), the pixels' creators taking
   turns over the same 100 accounts; the events are sent without their ``content_ids`` lists
   (``bench.workload.wire_events``: no request form but JSON could carry them, no rule reads them);
2. for each count N in ``--server-processes``, start ``python -m server --processes N`` on that
   file (N workers on one port, ``SO_REUSEPORT``, each compiling every rule: waited for, up to
   ``--startup-timeout``), and N empty-handler processes on another port (``bench.servers``);
3. for each count in ``--clients`` (load-generating *processes*, each with ``--concurrency``
   caller threads and connections; ``bench.loadgen``):
   - throughput, closed loop, for each request form in ``--form`` (columns: repeated fields;
     buffers: Arrow's layouts in bytes fields; ``+reply``: the matches come back as buffers
     too): ``--batch``-event pre-serialised requests back to back for
     ``--seconds``, ``--repeat`` times (median and range; the forms take turns, round after round,
     so drift of the VM's speed falls on all of them), against the empty handler (the
     transport ceiling: it reads the request bytes and replies with nothing) and the service;
     every figure is also shown as a fraction of that ceiling; ``--stream`` adds the
     bidirectional stream. Every server process and empty handler has the same RPC thread pool,
     whether or not ``--stream`` is given: a thread for each caller thread of the most
     ``--clients`` times ``--concurrency`` (a call or an open stream each; a stream holds its
     thread for its whole life) and 8 more, at least the service's default 16
     (``bench.servers.server_workers``; ``server_workers`` in the JSON's setup);
   - latency, open loop at fixed rates: ``--rate`` (events/s) and ``--sweep`` (fractions of the
     closed-loop throughput at ``--latency-batch``-event requests, measured just before for the
     service and the empty handler when that differs from ``--batch``: smaller requests cost more
     per event), ``--latency-batch``-event requests sent on a schedule, latency
     from the *intended* send time (p50/p90/p99/p999), the achieved rate next to the target,
     and the empty handler at the same rate;
   - calls per server process (client side: each connection finds its worker by whose
     /metrics request counter moved) and events classified per process (each worker's own
     /metrics), printed so an idle process shows;
   - CPU per event of the server processes and of the client processes (from /proc and the
     clients' own process time), and the servers' busy cores: whether the server or the load
     was the bound, and what a call costs the server besides the handler (``bench service``);
4. with one server process: the time from a create call until classification sees the new
   conversion (``--registrations``, one connection; other workers would follow the store's
   change log within ``--sync-interval``, see docs/service.md).

With ``--target HOST:PORT`` it loads a server that is already running instead (its own rules
and processes; nothing seeded or started): the events of ``--events FILE`` (JSON array or
lines) or generated over ``--pixels``, the token of ``--token`` or ``CM_BENCH_TOKEN``, and a
ceiling only from an empty handler at ``--ceiling-target`` (``python -m bench.servers --host
0.0.0.0 --port P`` on the server's machine). Each form's request is sent once first, so a
refused token or request stops the run with the server's answer (``preflight``).

Prints tables; ``--json`` writes every figure, ``--plot`` a PNG of throughput against rule
count (client processes, for ``--target``) and latency against load. Client processes,
server processes and the empty handlers all share this machine's cores, so a ceiling is a
ceiling *on this machine*. Never asserts on timings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench import cli
from bench.grpc_report import percentiles, plot, print_tables
from bench.loadgen import Job, LoadGenerators, Result
from bench.servers import RemoteTarget, ServerGroup
from bench.workload import (FIRST_PIXEL_ID, RULES_PER_PIXEL, Mix, add_mix_options, layout, make_workload, optional_mix,
                            wire_events, workload_hash)
from server.client import EVENT_FORMS, Client, error_code
from server.gen.conversion_matcher.v1 import classification_pb2 as pb, custom_conversions_pb2 as cc_pb
from server.store import CustomConversionRecord, SQLiteStore

METHOD = "/conversion_matcher.v1.ClassificationService/ClassifyPixelEvents"
CEILING, SERVICE = "empty handler (transport ceiling)", "ClassifyPixelEvents"  # a throughput row's target
FORMS = EVENT_FORMS  # --form: how a request carries its events
STREAM_METHOD = "/conversion_matcher.v1.ClassificationService/StreamClassifyPixelEvents"
ACCOUNTS = [f"act_{i}" for i in range(1, 101)]
# Registers the conversions whose visibility is timed, on pixel 0 (shared with it), since
# the seeded accounts are at or over their 100-conversion limit.
NEWCOMER = "act_101"
TOKENS = {"tokens": {"bench": {"accounts": [*ACCOUNTS, NEWCOMER], "ingest": True}}}
WORDS = ["shoe", "hat", "thankyou", "confirm", "cart", "blue", "red", "sale", "promo", "checkout"]
EVENTS = ["Purchase", "Lead", "AddToCart", "PageView", "ViewContent", "item-sold"]


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


def seed_rules(db_path: Path, rules: list[str], on_pixels: list[int] | None = None,
               pixel_count: int = len(ACCOUNTS)) -> list[str]:
    """``pixel_count`` pixels, pixel j created by (so registered to) ``ACCOUNTS[j % 100]``, then the
    conversions (rule texts) in one bulk import (100,000 in a few seconds, where one create call
    per conversion takes ~20 s), rule i on pixel ``on_pixels[i]`` (default: i % 100) in that
    pixel's account. Returns the pixel ids (the store draws them at random: they differ from
    file to file)."""
    store = SQLiteStore(db_path, synchronous="OFF")
    try:
        pixels = [store.create_pixel(f"pixel {j}", "OTHER", ACCOUNTS[j % len(ACCOUNTS)], 0).id
                  for j in range(pixel_count)]
        store.add_authorized_accounts(pixels[0], [NEWCOMER])
        where = on_pixels if on_pixels is not None else [i % len(ACCOUNTS) for i in range(len(rules))]
        store.import_custom_conversions(
            CustomConversionRecord(
                id=str(10**17 + i), account_id=ACCOUNTS[j % len(ACCOUNTS)], name=f"cc {i}", description="",
                rule=rule, event_source_id=pixels[j],
                event_source_type="pixel", custom_event_type="OTHER", default_conversion_value=1.0, creation_time=0,
            )
            for i, (rule, j) in enumerate(zip(rules, where, strict=True))
        )
    finally:
        store.close()
    return pixels


def count_workload(db_path: Path, rule_count: int, seed_value: int, events: int, spec: Mix | None = None,
                   rules_per_pixel: int | None = RULES_PER_PIXEL) -> tuple[list[str], list[dict], str]:
    """One rule count's workload, seeded into ``db_path``: (pixel ids, ``events`` events, its
    SHA-256). Each count draws from a generator of its own seeded with ``seed_value``, so its
    workload does not depend on the counts listed before it and is what ``--rules N`` alone
    gives (as it did before counts had their own generator, when the first count's was this
    one). ``spec`` None: the seed-style workload, whose hash covers the rule texts and the
    events with each pixel id as its index (the ids themselves are the store's, random);
    else ``named_workload``'s, laid out ``rules_per_pixel`` a pixel. Only a named workload
    reads ``rules_per_pixel``: None (what the options hold without ``--workload``) is for
    the seed-style one."""
    if spec is not None:
        return named_workload(db_path, rule_count, seed_value, events, spec, rules_per_pixel)
    rng = random.Random(seed_value)
    rules = [json.dumps(make_rule(rng, i)) for i in range(rule_count)]
    pixels = seed_rules(db_path, rules)
    made = make_events(rng, pixels, events)
    index = {pixel: i for i, pixel in enumerate(pixels)}
    digest = hashlib.sha256(json.dumps([rules, [{**e, "pixel_id": index[e["pixel_id"]]} for e in made]]).encode())
    return pixels, made, digest.hexdigest()


def named_workload(db_path: Path, rule_count: int, seed_value: int, events: int, spec: Mix,
                   rules_per_pixel: int = RULES_PER_PIXEL) -> tuple[list[str], list[dict], str]:
    """``bench.workload``'s workload of ``spec`` laid out as ``layout(rule_count, rules_per_pixel)``
    (ValueError for a count it cannot lay out), seeded into ``db_path`` (each pixel's rules on a
    pixel of the store, in that pixel's account): (the store's pixel ids, in the workload's
    pixel order; the ``events`` events with those ids, as ``wire_events`` sends them; the
    ``bench.workload.workload_hash`` of the workload as generated, which ``bench rules`` and
    ``scaling`` record for the same pixels, rules per pixel, events, seed and mix)."""
    pixel_count, per_pixel = layout(rule_count, rules_per_pixel)
    work = make_workload(pixel_count, per_pixel, events, seed_value, spec)
    pixels = seed_rules(db_path, list(work.rules.values()),
                        [int(source) - FIRST_PIXEL_ID for source in work.sources.values()], pixel_count)
    sent = [{**event, "pixel_id": pixels[int(event["pixel_id"]) - FIRST_PIXEL_ID]}
            for event in wire_events(work.events)]
    return pixels, sent, workload_hash(work)


def add_seeded_workload_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """``--workload``, its knobs and ``--rules-per-pixel`` (returned, as added), for the benches
    that seed a store (``bench grpc``, ``bench service``): without ``--workload``, the seed-style
    workload. (``bench.workload.add_workload_options`` is the in-process benches' set.)"""
    mix_options = add_mix_options(parser, default=None, otherwise="this bench's own seed-style rules and events "
                                                                  "(make_rule, make_events), spread over 100 pixels")
    return [*mix_options, parser.add_argument(
        "--rules-per-pixel", type=cli.positive_int, metavar="N",
        help=f"with --workload: its rules on each pixel (default {RULES_PER_PIXEL}, as bench rules and scaling); "
             f"each rule count is laid out as count / this many pixels, or one pixel when the count is at most "
             f"this, so a larger count must be a multiple of it; the pixels' creators take turns over 100 accounts")]


def workload_from(parser: argparse.ArgumentParser, options: argparse.Namespace, rule_counts: list) -> Mix | None:
    """The named workload the options give (None: the seed-style one), ``options.rules_per_pixel``
    filled in; argparse errors naming the option for a knob or ``--rules-per-pixel`` without
    ``--workload`` and for a rule count that cannot be laid out."""
    spec = optional_mix(parser, options)
    if spec is None:
        if options.rules_per_pixel is not None:
            parser.error("argument --rules-per-pixel: lays out a named workload: give --workload too")
        return None
    if options.rules_per_pixel is None:
        options.rules_per_pixel = RULES_PER_PIXEL
    for count in rule_counts:
        try:
            layout(count, options.rules_per_pixel)
        except ValueError as error:
            parser.error(f"argument --rules: {error} (--rules-per-pixel {options.rules_per_pixel})")
    return spec


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


def _list(parser: argparse.ArgumentParser, option: str, text: str, item) -> list:
    """A comma-list option's values, each checked by ``item`` (a ``bench.cli`` type); an
    argparse error naming the option otherwise. (Parsed here, not by ``type=``: the local-run
    defaults are filled in after parsing, only when no --target is given.)"""
    try:
        return cli.comma_list(item)(text)
    except argparse.ArgumentTypeError as error:
        parser.error(f"argument {option}: {error}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.parser("grpc", __doc__)
    parser.add_argument("--rules", help="rule counts, a comma list (e.g. 100,1000,10000,100000); default 10000")
    parser.add_argument("--batch", type=cli.positive_int, default=1_000, help="events per request in the throughput runs")
    parser.add_argument("--form", default="columns",
                        help="how requests carry the events, a comma list: columns (repeated fields), buffers "
                             "(Arrow's layouts in bytes fields), either with +reply (asking for the matches as "
                             "buffers too: reply_as_buffers); each measured against its own ceiling")
    parser.add_argument("--latency-batch", type=cli.positive_int, default=100,
                        help="events per request in the fixed-rate runs")
    parser.add_argument("--seconds", type=cli.positive_float, default=3.0, help="per throughput or latency measurement")
    parser.add_argument("--repeat", type=cli.positive_int, default=3,
                        help="throughput measurements per row (median and range shown)")
    parser.add_argument("--server-processes", help="server process counts, a comma list (e.g. 1,2); default 1")
    parser.add_argument("--clients", default="1", help="load-generating client process counts, a comma list (e.g. 1,2)")
    parser.add_argument("--concurrency", type=cli.positive_int, default=4,
                        help="caller threads (and connections) per client process")
    parser.add_argument("--rate", default="", help="fixed request rates in events/s, a comma list (open loop)")
    parser.add_argument("--sweep", default="0.5",
                        help="fixed rates as fractions of the closed-loop throughput at --latency-batch-event "
                             "requests, measured just before, e.g. 0.25,0.5,0.75")
    parser.add_argument("--stream", action="store_true", help="also measure StreamClassifyPixelEvents")
    parser.add_argument("--registrations", type=cli.nonnegative_int,
                        help="creates timed until visible (one server process; 0: none); default 50")
    parser.add_argument("--sync", choices=("FULL", "NORMAL"), help="the started servers' SQLite mode; default FULL")
    parser.add_argument("--startup-timeout", type=cli.positive_float,
                        help="seconds for servers to load and compile; default 600")
    parser.add_argument("--seed", type=int, default=20261122,
                        help="the workload's random seed (each rule count's generator starts from it; the events of "
                             "--pixels too)")
    workload_options = add_seeded_workload_options(parser)
    remote = parser.add_argument_group(
        "a running server", "Load a server this command does not start (its own rules, pixels and tokens; "
        "no seeding, so none of --rules, --server-processes, --registrations, --sync, --startup-timeout, "
        "--workload and its options).")
    remote.add_argument("--target", metavar="HOST:PORT", help="the server to load")
    remote.add_argument("--token", help="its bearer token, one with ingest rights "
                                        "(default: the CM_BENCH_TOKEN environment variable)")
    remote.add_argument("--events", metavar="FILE",
                        help="the events to send: a JSON array, or one JSON object a line, each an event as "
                             "ClassifyPixelEvents takes it (pixel_id, event, url, device_type, event_time, "
                             "custom_data); a request is the next --batch of them, the file taken round again")
    remote.add_argument("--pixels", metavar="ID,ID",
                        help="instead of --events: the bench's generated events, over these pixel ids")
    remote.add_argument("--ceiling-target", metavar="HOST:PORT",
                        help="an empty handler on the server's machine (python -m bench.servers --host 0.0.0.0 "
                             "--port P), measured alongside as the ceiling; without it no ceiling is measured")
    parser.add_argument("--json", help="write every figure as JSON to this file")
    parser.add_argument("--plot", help="write a PNG: throughput against rule count, latency against load")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar on stderr (default: when stderr is a terminal)")
    options = parser.parse_args(argv)
    local = {"rules": "10000", "server_processes": "1", "registrations": 50, "sync": "FULL", "startup_timeout": 600}
    if options.target is None:
        given = [name for name in ("token", "events", "pixels", "ceiling_target") if getattr(options, name) is not None]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} goes with --target (a running server)")
        for name, value in local.items():
            if getattr(options, name) is None:
                setattr(options, name, value)
        options.rule_counts = _list(parser, "--rules", options.rules, cli.positive_int)
        options.process_counts = _list(parser, "--server-processes", options.server_processes, cli.positive_int)
        options.token = "bench"  # the seeded token file's
        options.spec = workload_from(parser, options, options.rule_counts)
    else:
        given = [f"--{name.replace('_', '-')}" for name in local if getattr(options, name) is not None] + [
            action.option_strings[0] for action in workload_options if getattr(options, action.dest) is not None]
        if given:
            parser.error(f"{given[0]} applies to the servers this command starts, not to "
                         f"--target (which serves its own rules)")
        options.token = options.token if options.token is not None else os.environ.get("CM_BENCH_TOKEN")
        if not options.token:
            parser.error("--target needs --token (or CM_BENCH_TOKEN): the server accepts no call without one")
        if (options.events is None) == (options.pixels is None):
            parser.error("--target needs the events to send: --events FILE or --pixels ID,ID (one of them)")
        if options.pixels is not None:
            options.pixels = [pixel.strip() for pixel in options.pixels.split(",") if pixel.strip()]
            if not options.pixels:
                parser.error("--pixels needs at least one pixel id")
        options.rule_counts, options.process_counts = [None], [None]  # the server's own: not known here
        options.registrations = 0
        options.spec = None
    options.rates = _list(parser, "--rate", options.rate, cli.positive_float)
    options.fractions = _list(parser, "--sweep", options.sweep, cli.positive_float)
    options.client_counts = _list(parser, "--clients", options.clients, cli.positive_int)
    if not options.rule_counts or not options.process_counts or not options.client_counts:
        parser.error("--rules, --server-processes and --clients need at least one count each")
    options.callers = max(options.client_counts) * options.concurrency  # caller threads at once, at most
    options.forms = [form.strip() for form in options.form.split(",") if form.strip()]
    try:
        for form in options.forms or [""]:  # (none: an error too)
            _form(form)
    except ValueError:
        parser.error(f"--form: a comma list of {', '.join(FORMS)}, each optionally with +reply, got {options.form!r}")
    return options


def _progress(options: argparse.Namespace):
    from tqdm import tqdm

    points = len(options.rates) + len(options.fractions)
    sides = 1 if options.target is not None and options.ceiling_target is None else 2  # the service, its ceiling
    bases = sides * options.repeat if points and options.latency_batch != options.batch else 0
    per_combo = options.repeat * (sides + options.stream) * len(options.forms) + bases + sides * points
    total = len(options.rule_counts) * len(options.process_counts) * (1 + len(options.client_counts) * per_combo)
    enabled = sys.stderr.isatty() if options.progress is None else options.progress
    return tqdm(total=total, desc="grpc bench", unit="step", disable=not enabled, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")


def run_measured(gens: LoadGenerators, group: ServerGroup, job: Job, clients: int) -> Result:
    """``gens.run`` with the CPU time the server processes used meanwhile (their connections'
    warm-up calls included: a few calls next to the seconds of load)."""
    before = group.cpu_seconds()
    result = gens.run(job, clients)
    after = group.cpu_seconds()
    result.server_cpu_s = after - before if before is not None and after is not None else None
    return result


def _summary(result: Result) -> dict:
    """What JSON and the tables keep of one measurement (latencies as percentiles only). CPU:
    microseconds per event of the server processes and of the client processes, and the
    server's busy cores (its CPU seconds per second of the measurement)."""
    return {"events_per_s": result.events_per_s, "calls": result.calls, "errors": result.errors,
            "planned": result.planned, "unsent": result.unsent, "seconds": result.elapsed,
            "per_server_calls": result.per_server, "connections_per_server": result.connections_per_server,
            "server_cpu_us_per_event": result.cpu_us_per_event(result.server_cpu_s),
            "client_cpu_us_per_event": result.cpu_us_per_event(result.client_cpu_s),
            "server_busy_cores": (result.server_cpu_s / result.elapsed
                                  if result.server_cpu_s is not None and result.elapsed > 0 else math.nan),
            **percentiles(result.latencies)}


def _cpu_medians(results: list[Result]) -> dict:
    """The throughput row's CPU figures: medians over its runs."""
    summaries = [_summary(r) for r in results]
    return {name: statistics.median(s[name] for s in summaries)
            for name in ("server_cpu_us_per_event", "client_cpu_us_per_event", "server_busy_cores")}


def measure_combo(gens: LoadGenerators, options, empty: ServerGroup | RemoteTarget | None,
                  server: ServerGroup | RemoteTarget, clients: int, payloads: dict[str, tuple[bytes, bytes]], key: dict,
                  bar) -> tuple[list[dict], list[dict]]:
    """Throughput rows (per request form: its ceiling, then the service) and fixed-rate rows (the
    first form) for one (rules, server processes, clients). Without ``empty`` (a running server
    given no ``--ceiling-target``) there is no ceiling: its figures are None."""
    def job(group: ServerGroup | RemoteTarget, payload: bytes, **kw) -> Job:
        base = dict(mode="closed", target=group.target, method=METHOD, payload=payload, events_per_call=options.batch,
                    seconds=options.seconds, concurrency=options.concurrency, probe=group.probe(), warmup_method=METHOD,
                    token=options.token)
        return Job(**{**base, **kw})

    def runs(label: str, group: ServerGroup, make: Job) -> list[Result]:
        done = []
        for _ in range(options.repeat):
            bar.set_postfix_str(f"{key['rules']} rules, {key['server_processes']} srv, {clients} cl: {label}")
            done.append(run_measured(gens, group, make, clients))
            bar.update(1)
        return done

    # Every form's measurements taken in turn, round after round: the VM's speed drifts over a
    # run, and so every form sees the same stretches of it.
    measured: dict[str, dict[str, list[Result]]] = {form: {} for form in payloads}
    for _ in range(options.repeat):
        for form, (big, _) in payloads.items():
            jobs = [(CEILING, "ceiling", empty, job(empty, big))] if empty is not None else []
            jobs.append((SERVICE, "unary", server, job(server, big)))
            if options.stream:
                jobs.append(("StreamClassifyPixelEvents", "stream", server,
                             job(server, big, mode="stream", method=STREAM_METHOD)))
            for name, label, group, made in jobs:
                bar.set_postfix_str(f"{key['rules']} rules, {key['server_processes']} srv, {clients} cl: {label}, {form}")
                measured[form].setdefault(name, []).append(run_measured(gens, group, made, clients))
                bar.update(1)
    throughput = []
    for form, targets in measured.items():
        ceiling_rate = statistics.median(r.events_per_s for r in targets[CEILING]) if CEILING in targets else None
        for name, results in targets.items():
            rates = sorted(r.events_per_s for r in results)
            median = statistics.median(rates)
            throughput.append({**key, "clients": clients, "form": form, "target": name, "batch": options.batch,
                               "events_per_s": median, "events_per_s_runs": rates, "ceiling_events_per_s": ceiling_rate,
                               "fraction_of_ceiling": _fraction(median, ceiling_rate),
                               **_cpu_medians(results), "runs": [_summary(r) for r in results]})
    points = [(None, rate) for rate in options.rates] + [(f, None) for f in options.fractions]
    if not points:
        return throughput, []
    small = next(iter(payloads.values()))[1]
    if options.latency_batch == options.batch:
        first = {row["target"]: row["events_per_s"] for row in throughput if row["form"] == next(iter(payloads))}
        ceiling_rate, max_rate = first.get(CEILING), first[SERVICE]
    else:
        # The fixed rates send --latency-batch-event requests, which cost more per event than
        # --batch-event ones: the sweep's fractions (and 'of max', 'of ceiling') are of the closed
        # loop at that same request size, measured here, or the open loop would fall behind.
        small_job = dict(events_per_call=options.latency_batch)
        ceiling_rate = statistics.median(r.events_per_s for r in runs(
            f"ceiling, {options.latency_batch}-event requests", empty, job(empty, small, **small_job))) \
            if empty is not None else None
        max_rate = statistics.median(r.events_per_s for r in runs(
            f"unary, {options.latency_batch}-event requests", server, job(server, small, **small_job)))
    points = [(f, rate if f is None else f * max_rate) for f, rate in points]
    latency = []
    for fraction, rate in points:
        per_second = rate / options.latency_batch
        results = {}
        for label, group in (("server", server), ("ceiling", empty)):
            if group is None:
                continue
            bar.set_postfix_str(f"{key['rules']} rules, {key['server_processes']} srv, {clients} cl: "
                                f"{rate:,.0f} events/s ({label})")
            results[label] = run_measured(gens, group, job(group, small, mode="open",
                                                           events_per_call=options.latency_batch,
                                                           calls_per_second=per_second), clients)
            bar.update(1)
        latency.append({**key, "clients": clients, "form": next(iter(payloads)), "batch": options.latency_batch, "fraction": fraction,
                        "target_events_per_s": rate, "max_events_per_s": max_rate, "ceiling_events_per_s": ceiling_rate,
                        "of_max": rate / max_rate if max_rate else 0.0, "of_ceiling": _fraction(rate, ceiling_rate),
                        "achieved_events_per_s": results["server"].events_per_s, **_summary(results["server"]),
                        "ceiling": _summary(results["ceiling"]) if "ceiling" in results else None})
    return throughput, latency


def _fraction(rate: float, ceiling: float | None) -> float | None:
    """``rate`` as a fraction of the ceiling; None when no ceiling was measured."""
    if ceiling is None:
        return None
    return rate / ceiling if ceiling else 0.0


def request_bytes(events: list[dict], form: str) -> bytes:
    """A serialised ClassifyPixelEventsRequest holding ``events`` as ``form`` (see ``FORMS``;
    ``+reply``: asking for the matches as buffers, ``reply_as_buffers``)."""
    carried, reply = _form(form)
    return pb.ClassifyPixelEventsRequest(**{carried: FORMS[carried](events)}, reply_as_buffers=reply).SerializeToString()


def _form(form: str) -> tuple[str, bool]:
    """(how the request carries its events, whether it asks for the matches as buffers)."""
    carried, plus, reply = form.partition("+")
    if carried not in FORMS or (plus and reply != "reply"):
        raise ValueError(form)
    return carried, bool(plus)


def read_events(path: str) -> list[dict]:
    """The events of an ``--events`` file: a JSON array, or one JSON object a line (blank lines
    skipped). ValueError naming the file and the line (or the array's index) of the first bad one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read it: {error}") from None
    items: list = []
    places: list[str] = []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: not JSON: {error.msg}") from None
        places = [f"{path}: event [{index}]" for index in range(len(items))]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON: {error.msg}") from None
            places.append(f"{path}:{number}")
    if not items:
        raise ValueError(f"{path}: no events in it")
    for item, place in zip(items, places):
        pixel = item.get("pixel_id") if isinstance(item, dict) else None
        if type(pixel) not in (str, int) or pixel == "":
            raise ValueError(f"{place}: an event is a JSON object with a pixel_id (a text or an integer)")
    return items


def _payloads(events: list[dict], options, source: str) -> dict[str, tuple[bytes, bytes]]:
    """Per form: the throughput request (``--batch`` events) and the fixed-rate one (``--latency-batch``)."""
    payloads = {}
    for form in options.forms:
        try:
            payloads[form] = (request_bytes(events[:options.batch], form),
                              request_bytes(events[:options.latency_batch], form))
        except (ValueError, TypeError) as error:
            raise SystemExit(f"bench grpc: {source} cannot travel as --form {form}: {error}") from None
    return payloads


def preflight(target: str, token: str, payloads: dict[str, tuple[bytes, bytes]], batch: int) -> float:
    """Sends each form's throughput request once, before any load; the matches per event.
    SystemExit naming the server, the form and its answer when it refuses one (an unknown
    token, one without ingest rights, a request over its limits, a server that is not there)."""
    with Client(target, token, timeout=60) as client:
        call = client.channel.unary_unary(METHOD)  # the request is already bytes
        for form, (request, _) in payloads.items():
            try:
                reply = call(request, metadata=client.metadata, timeout=client.timeout)
            except grpc.RpcError as error:
                code = error_code(error)
                raise SystemExit(f"bench grpc: {target} refused a {batch}-event request ({form}): "
                                 f"{error.code().name}{f' (code {code})' if code is not None else ''}: "
                                 f"{error.details()}") from None
            results = client.event_results(pb.ClassifyPixelEventsResponse.FromString(reply))
            matches = sum(len(result.conversions) for result in results) / max(1, len(results))
    return matches


def run_local(options, report: dict, gens: LoadGenerators, bar) -> None:
    """Seeds each rule count, starts the servers and their empty handlers, and measures."""
    with tempfile.TemporaryDirectory() as tmp:
        for rule_count in options.rule_counts:
            directory = Path(tmp) / f"rules-{rule_count}"
            directory.mkdir()
            bar.set_postfix_str(f"seeding {rule_count:,} rules")
            t0 = time.perf_counter()
            pixels, events, digest = count_workload(directory / "matcher.db", rule_count, options.seed,
                                                    max(options.batch, options.latency_batch), options.spec,
                                                    options.rules_per_pixel)
            seeded = time.perf_counter() - t0
            (directory / "tokens.json").write_text(json.dumps(TOKENS))
            payloads = _payloads(events, options, "the generated events")
            # seed_s: all of count_workload, the workload's generating and hashing as well as the store's seeding.
            info = {"rules": rule_count, "seed_s": seeded, "workload_sha256": digest}
            if options.spec is not None:  # (the seed-style workload's report stays as it was)
                pixel_count, per_pixel = layout(rule_count, options.rules_per_pixel)
                info |= {"pixels": pixel_count, "rules_per_pixel": per_pixel}
            for processes in options.process_counts:
                bar.set_postfix_str(f"{rule_count:,} rules: starting {processes} server process(es)")
                t0 = time.perf_counter()
                # The most caller threads at once, each with one call or stream in flight: every server
                # and empty handler gets the pool that needs (bench.servers.server_workers), --stream or not.
                with ServerGroup("empty", processes, timeout=options.startup_timeout, callers=options.callers) as empty, \
                        ServerGroup("server", processes, db=directory / "matcher.db", tokens=directory / "tokens.json",
                                    sync=options.sync, timeout=options.startup_timeout,
                                    callers=options.callers) as server:
                    started = time.perf_counter() - t0
                    report["setup"]["server_workers"] = server.workers  # what the started ones were given
                    bar.update(1)
                    if server.rules_loaded != [rule_count] * processes:
                        raise RuntimeError(f"server processes loaded {server.rules_loaded} rules, not {rule_count}")
                    if "matches_per_event" not in info:
                        info["matches_per_event"] = preflight(server.target, options.token, payloads, options.batch)
                    key = {"rules": rule_count, "server_processes": processes}
                    before = server.events_classified()
                    for clients in options.client_counts:
                        throughput, latency = measure_combo(gens, options, empty, server, clients, payloads, key, bar)
                        report["throughput"] += throughput
                        report["latency"] += latency
                    after = server.events_classified()
                    report["server_share"].append({**key, "startup_s": started, "pids": server.pids,
                                                   "rules_loaded": server.rules_loaded,
                                                   "events_classified": [b - a for a, b in zip(before, after)]})
                    if processes == 1 and options.registrations > 0:
                        bar.set_postfix_str(f"{rule_count:,} rules: registrations")
                        creates, visible = registration_visibility(server.target, pixels[0], NEWCOMER,
                                                                   options.registrations)
                        report["registration"].append({"rules": rule_count, "count": len(visible),
                                                       "visible": percentiles(visible), "call": percentiles(creates)})
            report["rules"].append(info)


def run_remote(options, report: dict, gens: LoadGenerators, bar) -> None:
    """Measures a running server (``--target``) with the events of ``--events`` or generated over
    ``--pixels``; its ceiling only when ``--ceiling-target`` names an empty handler."""
    count = max(options.batch, options.latency_batch)
    if options.events is not None:
        try:
            source = read_events(options.events)
        except ValueError as error:
            raise SystemExit(f"bench grpc: {error}") from None
        where = options.events
    else:
        source, where = make_events(random.Random(options.seed), options.pixels, count), "the generated events"
    events = [source[index % len(source)] for index in range(count)]
    payloads = _payloads(events, options, where)
    bar.set_postfix_str(f"{options.target}: first requests")
    info = {"rules": None, "target": options.target, "events_from": where, "distinct_events": len(source),
            "matches_per_event": preflight(options.target, options.token, payloads, options.batch)}
    empty = None
    if options.ceiling_target is not None:
        empty = RemoteTarget(options.ceiling_target)
        preflight(options.ceiling_target, options.token, payloads, options.batch)
    bar.update(1)
    key = {"rules": None, "server_processes": None}
    for clients in options.client_counts:
        throughput, latency = measure_combo(gens, options, empty, RemoteTarget(options.target), clients, payloads,
                                            key, bar)
        report["throughput"] += throughput
        report["latency"] += latency
    report["rules"].append(info)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    report = {"setup": {key: getattr(options, key) for key in (
                  "rule_counts", "batch", "form", "latency_batch", "seconds", "repeat", "process_counts", "client_counts",
                  "concurrency", "rates", "fractions", "sync", "target", "ceiling_target")},
              "cores": os.cpu_count(), "rules": [], "throughput": [], "latency": [], "server_share": [],
              "registration": []}
    # An --events file's events: no generator drew them, so no seed (and no seed-style workload) heads them.
    report["setup"]["seed"] = options.seed if options.events is None else None
    # RPC threads per started server process and empty handler (run_local records them; None:
    # --target, the server's own).
    report["setup"]["server_workers"] = None
    if options.spec is not None:  # (the seed-style workload's report stays as it was)
        report["setup"] |= {"workload": options.spec.as_json(), "rules_per_pixel": options.rules_per_pixel}
    bar = _progress(options)
    try:
        with LoadGenerators(max(options.client_counts)) as gens:
            (run_local if options.target is None else run_remote)(options, report, gens, bar)
    finally:
        bar.close()
    print_tables(report)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(report, f, indent=2)
    if options.plot:
        plot(report, options.plot)
        print(f"plot: {options.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
