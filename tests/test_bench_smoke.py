"""The benchmark tools run end to end on tiny workloads (figures are not checked: no timing asserts)."""

import json
import os
import random
import subprocess
import sys

import pytest

from bench.__main__ import main as bench_main
from bench.grpc_load import TOKENS, count_workload
from bench.servers import ServerGroup
from matcher._ruleset import USING_EXTENSION
from server.testing import ServerProcess


def test_scaling_writes_json_and_a_png_and_prints_the_kernels_it_loaded(tmp_path, capsys):
    from bench.cli import kernels_loaded

    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    assert bench_main(["scaling", "--counts", "10,200", "--events", "300", "--sample", "50",
                       "--json", str(out), "--plot", str(png)]) == 0
    assert kernels_loaded() + "\n" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["rules"] for r in data["results"]] == [10, 200]
    assert all(r["compiled_1"] > 0 and r["naive"] > 0 for r in data["results"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rules_bench_checks_its_answers_against_the_reference(tmp_path):
    out = tmp_path / "rules.json"
    done = subprocess.run([sys.executable, "-m", "bench", "rules", "--pixels", "3", "--rules-per-pixel", "20",
                           "--events", "400", "--sample", "100", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["many_pixels"]["rules"] == 60 and data["one_pixel"]["rules"] == 1000
    assert "compiled, columns, warm" in done.stdout and "compiled, rows, warm" in done.stdout
    assert "... in buffers (Arrow)" in done.stdout and data["many_pixels"]["buffer_columns_events_per_s"] > 0
    assert "... grouped by pixel" in done.stdout and data["many_pixels"]["buffer_columns_grouped_events_per_s"] > 0


def test_service_path_bench_times_every_stage_of_the_seed_style_workload(tmp_path, monkeypatch):
    import bench.service_path

    seeded = []

    def recording_count_workload(*args, **kwargs):
        seeded.append(count_workload(*args, **kwargs))
        return seeded[-1]

    monkeypatch.setattr(bench.service_path, "count_workload", recording_count_workload)
    # The events each request form is built from, batch by batch (what is sent, not what was made).
    requested = {form: [] for form in bench.service_path.FORMS}

    def recording(form, build):
        def request(events):
            requested[form].append(events)
            return build(events)
        return request

    monkeypatch.setattr(bench.service_path, "FORMS",
                        {form: recording(form, build) for form, build in bench.service_path.FORMS.items()})
    out = tmp_path / "service.json"
    assert bench_main(["service", "--rules", "200", "--batch", "50", "--batches", "4", "--repeat", "1", "--seed", "1",
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    # Without --workload: the seed-style workload, seeded and sent as it always was, and the report as it was.
    assert [digest for _, _, digest in seeded] == [SEED_STYLE_SERVICE_SHA256]
    # Every form sends those events, each once and in their order, in 4 batches of 50: none dropped or repeated.
    [(_, made, _)] = seeded
    for batches in requested.values():
        assert [len(events) for events in batches] == [50] * 4 and [e for events in batches for e in events] == made
    assert data["workload"] == "seed-style (bench.grpc_load: make_rule, make_events)"
    assert set(data) == {"rules", "batch", "events", "matches_per_event", "workload", "seed", "compiled", "stages"}
    assert data["events"] == 200 and data["compiled"] is USING_EXTENSION
    assert list(data["stages"]) == [
        f"{stage}, {form}"
        for stage in ("protobuf decode", "decode into columns", "matcher alone", "classify + reply")
        for form in ("custom data as JSON", "custom parameters as columns", "buffers", "buffers, reply as buffers")
    ]
    assert all(stage["events_per_s"] > 0 for stage in data["stages"].values())


def test_grpc_bench_events_travel_as_typed_custom_parameters():
    # The gRPC bench sends pixel_event_columns(make_events(...)): flat int values and str colors.
    from bench.grpc_load import make_events
    from server.client import pixel_event_columns

    columns = pixel_event_columns(make_events(random.Random(1), ["1", "2"], 50))
    assert not columns.custom_data and [c.name for c in columns.custom_parameters] == ["value", "color"]
    value, color = columns.custom_parameters
    assert len(value.numbers) == 50 and not value.texts and len(color.texts) == 50 and not color.numbers


def test_unknown_command_prints_the_list(capsys):
    assert bench_main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "python -m bench: unknown command 'nope'" in err and "rules     custom-conversion rules" in err
    assert bench_main([]) == 2 and "a command is needed" in capsys.readouterr().err


def test_bench_help_lists_the_commands_and_succeeds(capsys):
    assert bench_main(["--help"]) == 0
    assert "python -m bench NAME --help" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["rules", "scaling", "actions", "service", "builds", "grpc"])
def test_each_command_names_itself_in_its_usage(command, capsys):
    with pytest.raises(SystemExit) as exited:
        bench_main([command, "--help"])
    assert exited.value.code == 0
    assert f"usage: python -m bench {command}" in capsys.readouterr().out


def _grpc_bench(tmp_path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """``python -m bench grpc`` on a tiny workload with short measurements; its JSON report and the process."""
    out = tmp_path / "grpc.json"
    done = subprocess.run([sys.executable, "-m", "bench", "grpc", "--batch", "200", "--seconds", "0.3", "--repeat", "1",
                           "--concurrency", "2", "--json", str(out), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done


def test_grpc_bench_runs_against_a_real_server(tmp_path):
    png = tmp_path / "latency.png"
    # 10 caller threads, one stream each: past the default --max-streams (8), which would refuse two.
    data, done = _grpc_bench(tmp_path, "--rules", "40", "--registrations", "2", "--sweep", "0.2,0.4", "--stream",
                             "--concurrency", "10", "--plot", str(png))
    assert [row["target"] for row in data["throughput"]] == [
        "empty handler (transport ceiling)", "ClassifyPixelEvents", "StreamClassifyPixelEvents"]
    assert all(row["events_per_s"] > 0 and row["fraction_of_ceiling"] > 0 for row in data["throughput"])
    assert all(run["errors"] == 0 for row in data["throughput"] for run in row["runs"])
    # One RPC thread per caller thread and 8 more, as a run without --stream gets.
    assert data["setup"]["server_workers"] == 18 and "18 RPC threads per server process and empty handler" in done.stdout
    # CPU per event of the server processes and of the clients, and the servers' busy cores (from /proc).
    for row in data["throughput"]:
        assert row["server_cpu_us_per_event"] > 0 and row["client_cpu_us_per_event"] > 0 and row["server_busy_cores"] > 0
        assert all(run["server_cpu_us_per_event"] > 0 for run in row["runs"])
    assert [point["fraction"] for point in data["latency"]] == [0.2, 0.4]
    # The sweep is of the closed loop at the fixed rates' own request size (100 events, not --batch 200),
    # measured in the same run: not the 200-event throughput rows above.
    [service_row] = [row for row in data["throughput"] if row["target"] == "ClassifyPixelEvents"]
    for point in data["latency"]:
        assert point["batch"] == 100 and point["max_events_per_s"] > 0 and point["ceiling_events_per_s"] > 0
        assert point["max_events_per_s"] != service_row["events_per_s"]
        assert point["target_events_per_s"] == pytest.approx(point["fraction"] * point["max_events_per_s"])
        assert point["of_max"] == pytest.approx(point["fraction"])
    assert all(set(point) >= {"p50", "p90", "p99", "p999", "achieved_events_per_s", "ceiling"} for point in data["latency"])
    assert data["registration"][0]["count"] == 2 and data["registration"][0]["visible"]["p99"] > 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "of ceiling" in done.stdout and "srv us/ev" in done.stdout and "registration -> visible" in done.stdout
    # Without --workload: the seed-style workload as it always was, and the report as it was.
    assert data["rules"][0]["workload_sha256"] == SEED_STYLE_SHA256[(40, 20261122, 200)]
    assert set(data["rules"][0]) == {"rules", "seed_s", "workload_sha256", "matches_per_event"}
    assert "workload" not in data["setup"] and "rules_per_pixel" not in data["setup"]
    assert "seed-style workload, seed 20261122" in done.stdout and "rules 40: seeded in" in done.stdout


def test_grpc_bench_two_client_processes_at_a_fixed_rate_against_two_server_processes(tmp_path):
    data, done = _grpc_bench(tmp_path, "--rules", "40", "--clients", "2", "--server-processes", "2",
                             "--rate", "4000", "--sweep", "", "--registrations", "0")
    assert data["setup"]["server_workers"] == 16  # 2 x 2 caller threads: the service's default, now explicit
    for row in data["throughput"]:
        assert (row["server_processes"], row["clients"]) == (2, 2)
        run = row["runs"][0]
        assert run["calls"] > 0 and run["errors"] == 0
        # Each of the 2 x 2 connections identified its process; they are balanced, and both answered calls.
        assert run["connections_per_server"] == [2, 2]
        assert all(calls > 0 for calls in run["per_server_calls"])
    [point] = data["latency"]
    assert point["fraction"] is None and point["target_events_per_s"] == 4000
    assert point["calls"] > 0 and point["achieved_events_per_s"] > 0 and point["planned"] >= point["calls"]
    assert all(calls > 0 for calls in point["per_server_calls"])
    assert point["ceiling"]["calls"] > 0 and all(calls > 0 for calls in point["ceiling"]["per_server_calls"])
    [share] = data["server_share"]
    assert len(share["pids"]) == 2 and share["rules_loaded"] == [40, 40]
    assert all(events > 0 for events in share["events_classified"])  # the servers' own /metrics
    assert "every process received load" in done.stdout


def test_grpc_bench_sweeps_rule_counts_with_json_plot_and_progress(tmp_path):
    png = tmp_path / "scaling.png"
    data, done = _grpc_bench(tmp_path, "--rules", "20,60", "--sweep", "0.3", "--registrations", "0", "--progress",
                             "--plot", str(png), "--form", "buffers+reply,columns")
    assert [info["rules"] for info in data["rules"]] == [20, 60]

    # Each count's workload is the one that count alone gives (its own generator, from --seed).
    assert data["rules"][1]["workload_sha256"] == count_workload(tmp_path / "alone.db", 60, 20261122, 200)[2]
    assert data["setup"]["seed"] == 20261122
    assert all(row["runs"][0]["errors"] == 0 and row["runs"][0]["calls"] > 0 for row in data["throughput"])
    assert [(row["rules"], row["form"], row["target"]) for row in data["throughput"]] == [
        (rules, form, target) for rules in (20, 60) for form in ("buffers+reply", "columns")
        for target in ("empty handler (transport ceiling)", "ClassifyPixelEvents")]
    assert [(point["rules"], point["form"]) for point in data["latency"]] == [(20, "buffers+reply"), (60, "buffers+reply")]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "grpc bench" in done.stderr  # the progress bar, forced on without a terminal


def test_server_group_runs_the_service_with_processes_n(tmp_path):
    """The bench's N servers are one ``python -m server --processes N``: N workers under one
    parent, each with its own /metrics port (how the bench counts calls per worker)."""
    count_workload(tmp_path / "matcher.db", 30, 1, 0)
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    with ServerGroup("server", 2, db=tmp_path / "matcher.db", tokens=tmp_path / "tokens.json", timeout=120,
                     callers=10) as group:
        parent = group.service.process.pid
        # Every worker: a thread for each of the 10 callers and 8 more, a stream for each caller.
        assert group.workers == 18
        for pid in group.pids:
            with open(f"/proc/{pid}/cmdline") as cmdline:
                argv = cmdline.read().split("\0")
            assert argv[argv.index("--workers") + 1] == "18" and argv[argv.index("--max-streams") + 1] == "10"
        assert group.service.serving["processes"] == 2
        assert len(set(group.pids)) == 2 and parent not in group.pids
        for pid in group.pids:
            with open(f"/proc/{pid}/stat") as stat:
                assert int(stat.read().rsplit(")", 1)[1].split()[1]) == parent  # field 4: the parent pid
        assert len(set(group.metrics_ports)) == 2 and group.rules_loaded == [30, 30]
        assert group.events_classified() == [0.0, 0.0]
        workers = group.pids
    for pid in [parent, *workers]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_server_process_start_timeout_is_the_callers(tmp_path):
    with pytest.raises(RuntimeError, match="did not start within 0.01 s"):
        ServerProcess(tmp_path, start_timeout=0.01)


def test_builds_bench_compares_two_kernel_builds_interleaved(tmp_path):
    # The same build twice, once as its file and once as the checkout holding it.
    from matcher import _ruleset_c

    checkout = os.path.dirname(os.path.dirname(_ruleset_c.__file__))
    out = tmp_path / "builds.json"
    assert bench_main(["builds", _ruleset_c.__file__, checkout, "--rounds", "4", "--pixels", "3",
                       "--rules-per-pixel", "20", "--events", "400", "--batch", "50", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert list(data["results"]) == ["buffers", "columns", "parameters", "rows"] and data["rules"] == 60
    assert all(r["pairs"] == 2 and r["old_median"] > 0 and r["ratio_median"] > 0 for r in data["results"].values())


def test_builds_bench_names_a_checkout_without_a_build(tmp_path):
    with pytest.raises(SystemExit, match="expected one matcher/_ruleset_c"):
        bench_main(["builds", str(tmp_path), str(tmp_path)])


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A server this bench did not start (``python -m server``, its metrics on), one pixel with one
    conversion, an empty handler beside it, and an events file: half its events match."""
    from bench.servers import scrape
    from server.client import Client

    directory = tmp_path_factory.mktemp("running")
    server = ServerProcess(directory, "--metrics-port", "0")
    try:
        with ServerGroup("empty", 1) as empty:
            target = f"127.0.0.1:{server.port}"
            with Client(target, "owner-token") as client:
                pixel = client.create_pixel("act_1", "shop").id
                client.create_custom_conversion("act_1", "bought", pixel, {"and": [{"event": {"eq": "Purchase"}},
                                                                                     {"url": {"i_contains": "thank"}}]})
            events = directory / "events.jsonl"
            events.write_text(json.dumps({"pixel_id": pixel, "event": "Purchase", "url": "https://shop/Thank-you"}) + "\n\n"
                              + json.dumps({"pixel_id": pixel, "event": "PageView", "url": "https://shop/",
                                            "custom_data": {"value": 3, "color": "red"}}) + "\n")
            yield {"target": target, "pixel": pixel, "events": events, "ceiling": empty.target,
                   "classified": lambda: scrape(server.metrics_port).get("cm_events_classified_total", 0.0)}
    finally:
        server.stop()


def test_grpc_bench_loads_a_running_server_with_a_file_of_its_events(tmp_path, running):
    png = tmp_path / "running.png"
    before = running["classified"]()
    data, done = _grpc_bench(tmp_path, "--target", running["target"], "--token", "ingest-token",
                             "--events", str(running["events"]), "--ceiling-target", running["ceiling"],
                             "--form", "buffers+reply,columns", "--sweep", "0.3", "--plot", str(png))
    [info] = data["rules"]
    assert info["rules"] is None and info["distinct_events"] == 2 and info["matches_per_event"] == 0.5
    assert [(row["form"], row["target"]) for row in data["throughput"]] == [
        (form, target) for form in ("buffers+reply", "columns")
        for target in ("empty handler (transport ceiling)", "ClassifyPixelEvents")]
    for row in data["throughput"]:
        run = row["runs"][0]
        assert run["calls"] > 0 and run["errors"] == 0 and row["fraction_of_ceiling"] > 0
        assert row["rules"] is None and row["server_processes"] is None
    [point] = data["latency"]
    assert point["calls"] > 0 and point["errors"] == 0 and point["ceiling"]["calls"] > 0 and point["of_ceiling"] > 0
    # The load landed on that server: its own counter moved by at least the measured calls' events.
    served = sum(run["calls"] * 200 for row in data["throughput"] if row["target"] == "ClassifyPixelEvents"
                 for run in row["runs"])
    assert running["classified"]() - before >= served
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "was running before this command" in done.stdout and "0.50 matching conversions per event" in done.stdout
    assert "seed-style workload" not in done.stdout and data["setup"]["seed"] is None  # the file's events


def test_grpc_bench_on_a_running_server_without_a_ceiling_measures_none(tmp_path, running):
    data, done = _grpc_bench(tmp_path, "--target", running["target"], "--token", "ingest-token",
                             "--pixels", running["pixel"], "--form", "buffers", "--sweep", "", "--rate", "2000",
                             "--clients", "1,2")
    assert [(row["clients"], row["target"]) for row in data["throughput"]] == [(1, "ClassifyPixelEvents"),
                                                                               (2, "ClassifyPixelEvents")]
    assert all(row["fraction_of_ceiling"] is None and row["ceiling_events_per_s"] is None for row in data["throughput"])
    assert all(row["runs"][0]["calls"] > 0 and row["runs"][0]["errors"] == 0 for row in data["throughput"])
    assert [point["ceiling"] for point in data["latency"]] == [None, None]
    assert "seed-style workload, seed 20261122" in done.stdout  # events generated over --pixels
    assert all(point["calls"] > 0 and point["of_ceiling"] is None for point in data["latency"])
    assert "no ceiling was measured" in done.stdout and "none matched" not in done.stdout


def test_grpc_bench_says_when_no_event_matched_on_a_running_server(tmp_path, running):
    data, done = _grpc_bench(tmp_path, "--target", running["target"], "--token", "ingest-token",
                             "--pixels", "999999", "--sweep", "")
    assert data["rules"][0]["matches_per_event"] == 0 and "none matched: are these pixels registered" in done.stdout


def test_grpc_bench_streams_with_one_caller_thread(tmp_path, running):
    # The stream at the low end (test_grpc_bench_runs_against_a_real_server streams with 10, past the
    # stream limit), on the server already running: no seeding or start of its own to pay for.
    data, _ = _grpc_bench(tmp_path, "--target", running["target"], "--token", "ingest-token",
                          "--events", str(running["events"]), "--stream", "--concurrency", "1", "--sweep", "")
    assert [row["target"] for row in data["throughput"]] == ["ClassifyPixelEvents", "StreamClassifyPixelEvents"]
    assert all(run["calls"] > 0 and run["errors"] == 0 for row in data["throughput"] for run in row["runs"])


@pytest.mark.parametrize("args, status, message", [
    (["--token", "wrong-token", "--pixels", "1"], 1, "refused a 200-event request (columns): UNAUTHENTICATED (code 190)"),
    (["--token", "ingest-token", "--pixels", "1", "--rules", "40"], 2, "--rules applies to the servers this command starts"),
    (["--pixels", "1"], 2, "--target needs --token"),
    (["--token", "ingest-token"], 2, "--events FILE or --pixels ID,ID"),
])
def test_grpc_bench_refuses_what_it_cannot_load_a_running_server_with(tmp_path, running, args, status, message):
    argv = [sys.executable, "-m", "bench", "grpc", "--target", running["target"], "--batch", "200", *args]
    env = {key: value for key, value in os.environ.items() if key != "CM_BENCH_TOKEN"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == status and message in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("text, message", [
    ('{"pixel_id": "1"}\n\n{"event": "Purchase"}\n', "events.txt:3: an event is a JSON object with a pixel_id"),
    ('[{"pixel_id": "1"}, 7]', "events.txt: event [1]: an event is a JSON object with a pixel_id"),
    ('{"pixel_id": "1"\n', "events.txt:1: not JSON"),
    ("\n\n", "events.txt: no events in it"),
])
def test_an_events_file_names_its_first_bad_event(tmp_path, text, message):
    from bench.grpc_load import read_events

    path = tmp_path / "events.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_events(str(path))
    assert message in str(raised.value)


def test_an_events_file_is_a_json_array_or_json_lines(tmp_path):
    from bench.grpc_load import read_events

    events = [{"pixel_id": "1", "event": "Purchase"}, {"pixel_id": 2, "custom_data": {"value": 3}}]
    (tmp_path / "a.json").write_text(json.dumps(events, indent=1))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))
    assert read_events(str(tmp_path / "a.json")) == read_events(str(tmp_path / "b.jsonl")) == events


def test_grpc_bench_tables_warn_of_failed_calls(capsys):
    from bench.grpc_report import print_tables

    run = {"errors": 3, "calls": 10, "per_server_calls": [10], "p50": 1.0, "p99": 2.0}
    row = {"rules": None, "server_processes": None, "clients": 1, "form": "columns", "target": "ClassifyPixelEvents",
           "events_per_s": 5.0, "events_per_s_runs": [5.0], "fraction_of_ceiling": None, "runs": [run],
           "server_cpu_us_per_event": float("nan"), "server_busy_cores": float("nan"), "client_cpu_us_per_event": 1.0}
    report = {"setup": {"batch": 1, "latency_batch": 1, "concurrency": 1, "seconds": 1, "repeat": 1, "sync": None,
                        "target": "h:1", "ceiling_target": None},
              "cores": 2, "rules": [], "throughput": [row], "latency": [], "server_share": [], "registration": []}
    print_tables(report)
    out = capsys.readouterr().out
    assert "WARNING: 3 calls failed (1 cl, columns, ClassifyPixelEvents)" in out
    row["runs"][0]["errors"] = 0
    print_tables(report)
    assert "WARNING" not in capsys.readouterr().out


# -- named workloads (bench.workload) ---------------------------------------------------------
# The default workload's hash (bench.workload.workload_hash) for two small sizes, computed with
# the generator as it was before presets existed (bench/rules.py at c592691): every figure
# published so far was measured on this workload, so it must not change.
DEFAULT_WORKLOAD_SHA256 = {
    (3, 20, 400, 1): "71d1902da1aa3d3d32a449701315e6152b4feb462ab8a9a92d7b28183d1177df",
    (1, 1000, 500, 1): "2c42a465611a3d7ffb5b3e431dfbd03cb1d2c9bb60f93b40caab727ed728f10f",
}


@pytest.mark.parametrize("shape", sorted(DEFAULT_WORKLOAD_SHA256))
def test_the_default_workload_is_byte_for_byte_the_published_one(shape):
    from bench.rules import make_workload
    from bench.workload import mix, workload_hash

    assert workload_hash(make_workload(*shape)) == DEFAULT_WORKLOAD_SHA256[shape]
    assert workload_hash(make_workload(*shape, mix("mixed"))) == DEFAULT_WORKLOAD_SHA256[shape]


@pytest.mark.parametrize("name", ["mixed", "urls", "regex", "numeric", "parameters"])
def test_each_named_workload_is_deterministic_for_a_seed(name):
    from bench.workload import PRESETS, make_workload, workload_hash

    one = workload_hash(make_workload(4, 30, 300, 7, PRESETS[name]))
    assert one == workload_hash(make_workload(4, 30, 300, 7, PRESETS[name]))
    assert one != workload_hash(make_workload(4, 30, 300, 8, PRESETS[name]))
    if name != "mixed":
        assert one != workload_hash(make_workload(4, 30, 300, 7, PRESETS["mixed"]))


def test_the_knobs_change_the_mix_over_the_preset():
    from collections import Counter

    from bench.workload import kind_cycle, make_workload, mix

    assert Counter(kind_cycle({"urls": 5, "regex": 1})) == {"urls": 5, "regex": 1}
    only_regex = make_workload(2, 12, 50, 1, mix("urls", operators={"regex": 1}))
    assert all("regex_match" in rule for rule in only_regex.rules.values())
    purchases = make_workload(2, 6, 200, 1, mix("mixed", event_mix={"Purchase": 1}))
    assert {event["event"] for event in purchases.events} == {"Purchase"}
    # Skew 0: the pixels alike; skew 3: nearly every event on the first pixel.
    flat = Counter(e["pixel_id"] for e in make_workload(10, 2, 2000, 1, mix(skew=0.0)).events)
    steep = Counter(e["pixel_id"] for e in make_workload(10, 2, 2000, 1, mix(skew=3.0)).events)
    assert max(flat.values()) < 400 and steep["1000"] > 1500
    given = mix("numeric", skew=0.5)
    assert (given.name, given.skew, given.overridden, given.operators) == (
        "numeric", 0.5, ("--skew",), mix("numeric").operators)
    assert "workload numeric with --skew given" in given.describe()


@pytest.mark.parametrize("name", ["mixed", "urls", "regex", "numeric", "parameters"])
def test_the_careful_hand_written_evaluator_answers_as_the_plain_one(name):
    from bench.handwritten import careful_matcher, naive_matcher
    from bench.workload import PRESETS, make_workload

    for shape in ((4, 30), (1, 300)):
        work = make_workload(*shape, 400, 3, PRESETS[name])
        plain = naive_matcher(work.rules, work.sources)(work.events)
        assert careful_matcher(work.rules, work.sources)(work.events) == plain
        assert sum(map(len, plain)) > 0  # (agreeing on no match at all would prove nothing)


def test_rules_bench_runs_a_named_workload_with_a_knob_and_both_hand_written_baselines(tmp_path):
    out = tmp_path / "rules.json"
    done = subprocess.run([sys.executable, "-m", "bench", "rules", "--pixels", "2", "--rules-per-pixel", "12",
                           "--events", "300", "--sample", "60", "--workload", "regex", "--skew", "0.5",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    for scenario in ("many_pixels", "one_pixel"):
        r = data[scenario]
        assert (r["workload"]["name"], r["workload"]["skew"], r["workload"]["overridden"]) == ("regex", 0.5, ["--skew"])
        assert r["careful_re_events_per_s"] > 0 and r["buffer_columns_vs_careful_re"] > 0
    assert data["workload"]["name"] == "regex"
    assert done.stdout.count("workload regex with --skew given") == 2
    assert "hand-written re, plain" in done.stdout and "hand-written re, careful" in done.stdout
    assert "vs careful re" in done.stdout


def test_rules_bench_shows_a_failed_scenarios_stderr(monkeypatch, capsys):
    import bench.rules

    def failing(name, args):
        return [sys.executable, "-c", "import sys; sys.stderr.write('boom: the child broke\\n'); sys.exit(3)"]

    monkeypatch.setattr(bench.rules, "scenario_command", failing)
    with pytest.raises(SystemExit) as exited:
        bench.rules.main(["--events", "10", "--no-progress"])
    assert "the many_pixels scenario's child process failed (exit status 3)" in str(exited.value.code)
    assert "boom: the child broke" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["rules", "scaling"])
def test_in_process_benches_refuse_to_report_compiled_figures_without_the_kernel(command):
    env = {**os.environ, "MATCHER_NO_EXTENSIONS": "1"}
    done = subprocess.run([sys.executable, "-m", "bench", command, "--events", "10"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 1 and "the compiled rule kernel (matcher._ruleset_c) is not in use" in done.stderr


@pytest.mark.parametrize("kernel, module, label", [
    ("rules", "matcher._ruleset", "rule kernel (matcher._ruleset_c)"),
    ("actions", "matcher._actionset", "action-set kernel (matcher._actionset_c)"),
])
def test_a_command_names_the_kernel_it_requires(kernel, module, label, monkeypatch):
    import importlib
    import re

    from bench.cli import require_compiled_kernel

    monkeypatch.setattr(importlib.import_module(module), "USING_EXTENSION", False)
    with pytest.raises(SystemExit, match=re.escape(f"python -m bench cmd: the compiled {label} is not in use")):
        require_compiled_kernel("cmd", kernel)
    monkeypatch.setattr(importlib.import_module(module), "USING_EXTENSION", True)
    require_compiled_kernel("cmd", kernel)  # loaded: no refusal


@pytest.mark.parametrize("argv, message", [
    (["rules", "--sample", "0"], "argument --sample: must be 1 or more, got 0"),
    (["rules", "--events", "-10"], "argument --events: must be 1 or more, got -10"),
    (["rules", "--pixels", "0"], "argument --pixels: must be 1 or more"),
    (["rules", "--operators", "urls=2,bogus=1"], "argument --operators: unknown rule kind 'bogus'"),
    (["rules", "--event-mix", "Purchase=0"], "argument --event-mix: at least one weight must be more than 0"),
    (["rules", "--skew", "-1"], "argument --skew: must be 0 or more"),
    (["scaling", "--counts", "0"], "argument --counts: must be 1 or more, got 0"),
    (["scaling", "--counts", "100,-5"], "argument --counts: '-5' in '100,-5': must be 1 or more"),
    (["scaling", "--counts", "abc"], "argument --counts: an integer is needed, got 'abc'"),
    (["scaling", "--counts", "150"], "argument --counts: 150 rules cannot be laid out as 100 per pixel"),
    (["scaling", "--batch", "0"], "argument --batch: must be 1 or more"),
    (["actions", "--actions", "0"], "argument --actions: must be 1 or more"),
    (["actions", "--reference-sample", "0"], "argument --reference-sample: must be 1 or more"),
    (["actions", "--repeats", "0"], "argument --repeats: must be 1 or more"),
    (["service", "--batches", "0"], "argument --batches: must be 1 or more"),
    (["service", "--repeat", "0"], "argument --repeat: must be 1 or more"),
    (["service", "--batch", "0"], "argument --batch: must be 1 or more"),
    (["builds", "a", "b", "--batch", "0"], "argument --batch: must be 1 or more"),
    (["builds", "a", "b", "--events", "0"], "argument --events: must be 1 or more"),
    (["builds", "a", "b", "--rounds", "3"], "argument --rounds: an even number of at least 2"),
    (["grpc", "--rules", "abc"], "argument --rules: an integer is needed, got 'abc'"),
    (["grpc", "--rules", "-5"], "argument --rules: must be 1 or more, got -5"),
    (["grpc", "--batch", "0"], "argument --batch: must be 1 or more"),
    (["grpc", "--repeat", "0"], "argument --repeat: must be 1 or more"),
    (["grpc", "--clients", "0"], "argument --clients: must be 1 or more"),
    (["grpc", "--rate", "-1000"], "argument --rate: must be more than 0, got -1000"),
    (["grpc", "--sweep", "0.5,x"], "argument --sweep: 'x' in '0.5,x': a number is needed"),
    # named workloads' options, for the benches that seed a store
    (["grpc", "--workload", "bogus"], "argument --workload: invalid choice: 'bogus'"),
    (["grpc", "--workload", "urls", "--operators", "urls=2,bogus=1"], "argument --operators: unknown rule kind 'bogus'"),
    (["grpc", "--workload", "urls", "--event-mix", "Purchase=0"],
     "argument --event-mix: at least one weight must be more than 0"),
    (["grpc", "--workload", "urls", "--skew", "x"], "argument --skew: a number is needed, got 'x'"),
    (["grpc", "--skew", "0.5"], "argument --skew: adjusts a named workload: give --workload too"),
    (["grpc", "--rules-per-pixel", "10"], "argument --rules-per-pixel: lays out a named workload: give --workload"),
    (["grpc", "--workload", "urls", "--rules-per-pixel", "0"], "argument --rules-per-pixel: must be 1 or more, got 0"),
    (["grpc", "--workload", "urls", "--rules", "100,150"],
     "argument --rules: 150 rules cannot be laid out as 100 per pixel"),
    (["grpc", "--workload", "urls", "--rules", "60", "--rules-per-pixel", "40"],
     "argument --rules: 60 rules cannot be laid out as 40 per pixel"),
    (["service", "--workload", "nope"], "argument --workload: invalid choice: 'nope'"),
    (["service", "--workload", "regex", "--skew", "-1"], "argument --skew: must be 0 or more"),
    (["service", "--operators", "urls=1"], "argument --operators: adjusts a named workload: give --workload too"),
    (["service", "--event-mix", "Purchase=1"], "argument --event-mix: adjusts a named workload"),
    (["service", "--workload", "numeric", "--rules", "250"],
     "argument --rules: 250 rules cannot be laid out as 100 per pixel"),
    (["service", "--workload", "numeric", "--rules-per-pixel", "-3"], "argument --rules-per-pixel: must be 1 or more"),
])
def test_bench_options_are_checked_before_any_work(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        bench_main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_grpc_bench_each_rule_count_has_a_workload_of_its_own(tmp_path):

    alone = count_workload(tmp_path / "alone.db", 60, 5, 200)
    count_workload(tmp_path / "first.db", 20, 5, 200)  # a count listed before it
    after = count_workload(tmp_path / "after.db", 60, 5, 200)
    assert after[2] == alone[2] and len(after[1]) == 200
    assert count_workload(tmp_path / "other.db", 60, 6, 200)[2] != alone[2]


def test_grpc_plot_draws_every_request_form():
    from bench.grpc_report import plot

    def row(rules, form, target, rate):
        return {"rules": rules, "server_processes": 1, "clients": 1, "form": form, "target": target,
                "events_per_s": rate}

    throughput = [row(rules, form, target, rate * rules)
                  for rules in (10, 100) for form, rate in (("columns", 1.0), ("buffers+reply", 2.0))
                  for target in ("empty handler (transport ceiling)", "ClassifyPixelEvents")]
    report = {"setup": {"batch": 200, "latency_batch": 100, "target": None}, "cores": 2, "throughput": throughput,
              "latency": []}
    import matplotlib.pyplot as plt

    figure = plot(report, os.devnull)
    try:
        labels = figure.axes[0].get_legend_handles_labels()[1]
    finally:
        plt.close(figure)
    assert any(label.startswith("columns:") for label in labels)
    assert any(label.startswith("buffers+reply:") for label in labels)
    assert len(labels) == 4  # per form, the service and its ceiling


# -- named workloads in bench grpc and bench service ------------------------------------------
# The seed-style workload (bench.grpc_load.count_workload without a mix) hashed before --workload
# came to bench grpc and bench service, and the rules and events bench service seeded and sent
# for --rules 200 --batch 50 --batches 4 --seed 1 (count_workload's hash of them): the
# default of both commands, which must not change.
SEED_STYLE_SHA256 = {
    (40, 20261122, 200): "7e2c0faabb76b2b14c8140a7678b016b956e44a6f0fbc4c8cd2c47c7f53dc255",
    (60, 20261122, 200): "4faa15518440ad00dd616da1d059823cc16466ae6beebc83de3141a6e0ce94f0",
}
SEED_STYLE_SERVICE_SHA256 = "fd16731485a9aac2c866227b804a27e1a5539dbbb62a6a754583bfb4d741669f"


@pytest.mark.parametrize("shape", sorted(SEED_STYLE_SHA256))
def test_grpc_bench_default_workload_is_the_seed_style_one(tmp_path, shape):

    assert count_workload(tmp_path / "a.db", *shape)[2] == SEED_STYLE_SHA256[shape]
    assert count_workload(tmp_path / "b.db", *shape, None)[2] == SEED_STYLE_SHA256[shape]


def _matches_per_event(work, events: int) -> float:
    """The compiled kernel's matches per event on ``work``'s first ``events`` events, in process."""
    from matcher import compile_rules

    return sum(map(len, compile_rules(work.rules, work.sources).match_batch(work.events[:events]))) / events


def test_a_named_workload_is_seeded_on_its_pixels_in_their_accounts(tmp_path):
    from bench.grpc_load import ACCOUNTS, seed_rules
    from bench.workload import PRESETS, make_workload, workload_hash
    from server.store import SQLiteStore

    pixels, events, digest = count_workload(tmp_path / "named.db", 300, 5, 120, PRESETS["urls"], 100)
    work = make_workload(3, 100, 120, 5, PRESETS["urls"])
    assert digest == workload_hash(work) != count_workload(tmp_path / "seed-style.db", 300, 5, 120)[2]
    store = SQLiteStore(tmp_path / "named.db")
    try:
        seeded = store.tracked_custom_conversions()
        owners = {pixel: store.get_pixel(pixel).creator for pixel in pixels}
    finally:
        store.close()
    # The workload's rules in its order, each on the store's pixel for its source, in that pixel's account.
    assert [record.rule for record in seeded] == list(work.rules.values())
    assert [record.event_source_id for record in seeded] == [pixels[int(s) - 1000] for s in work.sources.values()]
    assert all(record.account_id == owners[record.event_source_id] for record in seeded)
    assert owners == dict(zip(pixels, ACCOUNTS))
    # Its events, on the store's pixel ids, without the content_ids lists no typed request form carries.
    assert [event["pixel_id"] for event in events] == [pixels[int(e["pixel_id"]) - 1000] for e in work.events]
    assert all("content_ids" not in event["custom_data"] for event in events)
    assert [{**e, "pixel_id": None} for e in events] == [
        {**e, "pixel_id": None, "custom_data": {k: v for k, v in e["custom_data"].items() if k != "content_ids"}}
        for e in work.events]
    # More pixels than accounts: the creators take turns over them.
    many = seed_rules(tmp_path / "many.db", ['{"event": "Lead"}'] * 3, [0, 101, 150], 151)
    store = SQLiteStore(tmp_path / "many.db")
    try:
        assert [(r.event_source_id, r.account_id) for r in store.tracked_custom_conversions()] == [
            (many[0], ACCOUNTS[0]), (many[101], ACCOUNTS[1]), (many[150], ACCOUNTS[50])]
        assert len(many) == 151 and store.get_pixel(many[150]).creator == ACCOUNTS[50]
    finally:
        store.close()


@pytest.mark.parametrize("name", ["mixed", "urls", "regex", "numeric", "parameters"])
def test_the_events_a_service_is_sent_match_as_the_generated_ones_in_every_form(name):
    from bench.workload import PRESETS, make_workload, wire_events
    from matcher import compile_rules
    from server.client import pixel_event_buffers, pixel_event_columns

    work = make_workload(3, 40, 400, 2, PRESETS[name])
    compiled = compile_rules(work.rules, work.sources)
    sent = wire_events(work.events)
    assert compiled.match_batch(sent) == compiled.match_batch(work.events)
    assert any(map(len, compiled.match_batch(sent)))
    columns = pixel_event_columns(sent)
    assert not columns.custom_data and "category" in [c.name for c in columns.custom_parameters]
    assert pixel_event_buffers(sent).count == 400


def test_grpc_bench_runs_a_named_workload_in_every_request_form(tmp_path):
    from bench.grpc_load import named_workload
    from bench.workload import make_workload, mix

    data, done = _grpc_bench(tmp_path, "--rules", "40", "--workload", "urls", "--seconds", "0.1", "--sweep", "",
                             "--registrations", "1", "--form", "columns,buffers,columns+reply,buffers+reply")
    setup, [info] = data["setup"], data["rules"]
    assert (setup["workload"]["name"], setup["workload"]["overridden"], setup["rules_per_pixel"]) == ("urls", [], 100)
    # 40 rules: one pixel of them; the urls workload's, not the seed-style one's.
    assert (info["pixels"], info["rules_per_pixel"]) == (1, 40)
    assert info["workload_sha256"] == named_workload(tmp_path / "alone.db", 40, 20261122, 200, mix("urls"))[2]
    assert info["workload_sha256"] != SEED_STYLE_SHA256[(40, 20261122, 200)]
    # The server answered the first request as the kernel answers the workload's first 200 events in process.
    assert info["matches_per_event"] == pytest.approx(_matches_per_event(make_workload(1, 40, 200, 20261122,
                                                                                       mix("urls")), 200))
    assert info["matches_per_event"] > 0
    assert [(row["form"], row["target"]) for row in data["throughput"]] == [
        (form, target) for form in ("columns", "buffers", "columns+reply", "buffers+reply")
        for target in ("empty handler (transport ceiling)", "ClassifyPixelEvents")]
    assert all(row["events_per_s"] > 0 and row["runs"][0]["errors"] == 0 for row in data["throughput"])
    assert data["registration"][0]["count"] == 1
    assert "workload urls: rule kinds urls=3,prefix=2,filters=1" in done.stdout
    assert "seed 20261122; 100 rules per pixel" in done.stdout and "rules 40: 1 pixels x 40, seeded" in done.stdout
    assert "seed-style" not in done.stdout


def test_service_bench_runs_a_named_workload_with_its_knobs(tmp_path, capsys):
    from bench.workload import make_workload, mix, workload_hash

    out = tmp_path / "service.json"
    assert bench_main(["service", "--rules", "120", "--rules-per-pixel", "60", "--batch", "50", "--batches", "4",
                       "--repeat", "1", "--workload", "urls", "--operators", "urls=1,regex=1", "--skew", "0.5",
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    spec = mix("urls", operators={"urls": 1, "regex": 1}, skew=0.5)
    assert data["workload"] == spec.as_json() and data["workload"]["overridden"] == ["--operators", "--skew"]
    assert (data["pixels"], data["rules_per_pixel"], data["events"]) == (2, 60, 200)
    work = make_workload(2, 60, 200, 1, spec)
    assert data["workload_sha256"] == workload_hash(work)
    assert data["matches_per_event"] == pytest.approx(_matches_per_event(work, 200)) and data["matches_per_event"] > 0
    assert len(data["stages"]) == 16 and all(stage["events_per_s"] > 0 for stage in data["stages"].values())
    out = capsys.readouterr().out
    assert "workload urls with --operators, --skew given: rule kinds urls=1,regex=1;" in out
    assert "pixel skew 0.5; seed 1; 2 pixels x 60 rules" in out


def test_kernels_loaded_names_the_modules_actually_imported():
    from bench.cli import kernels_loaded
    from matcher import _actionset, _ruleset

    line = kernels_loaded()
    assert f"rules {_ruleset.engine.__name__} (" in line and f"action specs {_actionset.ActionSpecSet.__module__} (" in line
    assert ("matcher._ruleset_c (compiled)" in line) is _ruleset.USING_EXTENSION
    # Without the extensions: the twins, said so (not a fixed "loaded").
    env = {**os.environ, "MATCHER_NO_EXTENSIONS": "1"}
    done = subprocess.run([sys.executable, "-c", "from bench.cli import kernels_loaded; print(kernels_loaded())"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.strip() == ("kernels loaded: rules matcher._ruleset_py (pure-Python twin), "
                                   "action specs matcher._actionset_py (pure-Python twin)"), done.stderr


# A value for each option add_seeded_workload_options registers (a new one needs one here).
SEEDED_WORKLOAD_VALUES = {"--workload": "urls", "--operators": "urls=1", "--event-mix": "Purchase=1", "--skew": "1",
                          "--rules-per-pixel": "10"}


def test_grpc_target_refuses_every_seeded_workload_option(capsys):
    import argparse

    from bench.grpc_load import add_seeded_workload_options, parse_args

    registered = [action.option_strings[0] for action in add_seeded_workload_options(argparse.ArgumentParser())]
    assert registered == list(SEEDED_WORKLOAD_VALUES)
    for option, value in SEEDED_WORKLOAD_VALUES.items():
        with pytest.raises(SystemExit) as exited:
            parse_args(["--target", "127.0.0.1:1", "--token", "t", "--pixels", "1", option, value])
        assert exited.value.code == 2
        assert f"{option} applies to the servers this command starts, not to --target" in capsys.readouterr().err


def test_the_bench_sizes_servers_from_the_services_own_default_pool(monkeypatch):
    """bench.servers repeats the service's --workers default (importing the service's entry
    point would load it all into every empty handler): the two must not drift."""
    from bench.servers import DEFAULT_WORKERS, server_workers
    from server.__main__ import parse_args

    monkeypatch.delenv("CM_WORKERS", raising=False)
    assert parse_args([]).workers == DEFAULT_WORKERS == server_workers(0)
