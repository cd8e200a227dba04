"""The benchmark tools run end to end on tiny workloads (figures are not checked: no timing asserts)."""

import json
import subprocess
import sys

from bench.__main__ import main as bench_main


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
    assert "compiled (kernel), warm" in done.stdout


def test_unknown_command_prints_the_list():
    assert bench_main(["nope"]) == 2


def test_grpc_bench_runs_against_a_real_server(tmp_path):
    out, png = tmp_path / "grpc.json", tmp_path / "latency.png"
    done = subprocess.run([sys.executable, "-m", "bench", "grpc", "--rules", "40", "--batch", "200", "--seconds", "0.3",
                           "--repeat", "1", "--registrations", "2", "--sweep", "0.2,0.4", "--json", str(out),
                           "--plot", str(png)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {row["target"] for row in data["throughput"]} >= {"empty handler (transport ceiling)", "ClassifyPixelEvents"}
    assert [point["fraction"] for point in data["latency_sweep"]] == [0.2, 0.4]
    assert set(data["latency_half_load"]) >= {"p50", "p90", "p99", "p999"}
    assert png.read_bytes()[:4] == b"\x89PNG"
