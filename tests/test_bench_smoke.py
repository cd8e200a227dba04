"""The benchmark tools run end to end on tiny workloads (figures are not checked: no timing asserts)."""

import json
import os
import random
import subprocess
import sys

import pytest

from bench.__main__ import main as bench_main
from bench.grpc_load import TOKENS, seed
from bench.servers import ServerGroup
from matcher._ruleset import USING_EXTENSION
from server.testing import ServerProcess


def test_scaling_writes_json_and_a_png(tmp_path):
    out, png = tmp_path / "scaling.json", tmp_path / "scaling.png"
    assert bench_main(["scaling", "--counts", "10,200", "--events", "300", "--sample", "50",
                       "--json", str(out), "--plot", str(png)]) == 0
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


def test_service_path_bench_times_every_stage(tmp_path):
    out = tmp_path / "service.json"
    assert bench_main(["service", "--rules", "200", "--batch", "50", "--batches", "4", "--repeat", "1",
                       "--json", str(out)]) == 0
    data = json.loads(out.read_text())
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


def test_unknown_command_prints_the_list():
    assert bench_main(["nope"]) == 2


def _grpc_bench(tmp_path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """``python -m bench grpc`` on a tiny workload with short measurements; its JSON report and the process."""
    out = tmp_path / "grpc.json"
    done = subprocess.run([sys.executable, "-m", "bench", "grpc", "--batch", "200", "--seconds", "0.3", "--repeat", "1",
                           "--concurrency", "2", "--json", str(out), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done


def test_grpc_bench_runs_against_a_real_server(tmp_path):
    png = tmp_path / "latency.png"
    data, done = _grpc_bench(tmp_path, "--rules", "40", "--registrations", "2", "--sweep", "0.2,0.4", "--stream",
                             "--plot", str(png))
    assert [row["target"] for row in data["throughput"]] == [
        "empty handler (transport ceiling)", "ClassifyPixelEvents", "StreamClassifyPixelEvents"]
    assert all(row["events_per_s"] > 0 and row["fraction_of_ceiling"] > 0 for row in data["throughput"])
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


def test_grpc_bench_two_client_processes_at_a_fixed_rate_against_two_server_processes(tmp_path):
    data, done = _grpc_bench(tmp_path, "--rules", "40", "--clients", "2", "--server-processes", "2",
                             "--rate", "4000", "--sweep", "", "--registrations", "0")
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
    seed(tmp_path / "matcher.db", 30, random.Random(1))
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    with ServerGroup("server", 2, db=tmp_path / "matcher.db", tokens=tmp_path / "tokens.json", timeout=120) as group:
        parent = group.service.process.pid
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


def test_grpc_bench_on_a_running_server_without_a_ceiling_measures_none(tmp_path, running):
    data, done = _grpc_bench(tmp_path, "--target", running["target"], "--token", "ingest-token",
                             "--pixels", running["pixel"], "--form", "buffers", "--sweep", "", "--rate", "2000",
                             "--clients", "1,2")
    assert [(row["clients"], row["target"]) for row in data["throughput"]] == [(1, "ClassifyPixelEvents"),
                                                                               (2, "ClassifyPixelEvents")]
    assert all(row["fraction_of_ceiling"] is None and row["ceiling_events_per_s"] is None for row in data["throughput"])
    assert all(row["runs"][0]["calls"] > 0 and row["runs"][0]["errors"] == 0 for row in data["throughput"])
    assert [point["ceiling"] for point in data["latency"]] == [None, None]
    assert all(point["calls"] > 0 and point["of_ceiling"] is None for point in data["latency"])
    assert "no ceiling was measured" in done.stdout and "none matched" not in done.stdout


def test_grpc_bench_says_when_no_event_matched_on_a_running_server(tmp_path, running):
    data, done = _grpc_bench(tmp_path, "--target", running["target"], "--token", "ingest-token",
                             "--pixels", "999999", "--sweep", "")
    assert data["rules"][0]["matches_per_event"] == 0 and "none matched: are these pixels registered" in done.stdout


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
