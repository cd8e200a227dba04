"""The server as a process: flags, health, reflection, metrics, restart, graceful SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from server.app import SERVICE_NAMES
from server.auth import TokenTable
from server.client import Client
from server.gen.conversion_matcher.v1 import classification_pb2 as pb
from server.testing import ServerProcess, running_server


@pytest.fixture
def process(tmp_path):
    server = ServerProcess(tmp_path, "--metrics-port", "0", "--grace", "20")
    yield server
    server.kill()


def pixel_fires(client, conversion_id):
    return sum(row.value for row in client.stats(conversion_id, "pixel_fire", 1, 2 * 10**9).rows)


def test_health_reflection_and_metrics(process):
    channel = grpc.insecure_channel(process.target)
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICE_NAMES):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    database = ProtoReflectionDescriptorDatabase(channel)
    assert set(SERVICE_NAMES) <= set(database.get_services())
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("conversion_matcher.v1.ClassificationService").FindMethodByName("ClassifyPixelEvents")
    assert method.input_type.full_name == "conversion_matcher.v1.ClassifyPixelEventsRequest"
    channel.close()

    with Client(process.target, "owner-token") as owner:
        pixel = owner.create_pixel("act_1", "p")
        owner.create_custom_conversion("act_1", "c", pixel.id, {"event": "Lead"})
    with Client(process.target, "ingest-token") as ingest:
        ingest.classify_pixel_events([{"pixel_id": "1", "event": "x"}] * 7)
    with urllib.request.urlopen(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=10) as response:
        body = response.read().decode()
    assert 'cm_requests_total{code="OK",method="/conversion_matcher.v1.PixelService/CreatePixel"} 1.0' in body
    assert 'cm_events_classified_total{kind="pixel_event"} 7.0' in body
    assert "cm_request_seconds_bucket" in body and "cm_rules_loaded 1.0" in body and "cm_ads_loaded 0.0" in body


def test_logs_are_json_lines_without_tokens(process):
    with Client(process.target, "owner-token") as owner:
        owner.create_pixel("act_1", "p")
    with Client(process.target, "secret-looking-token") as stranger:
        with pytest.raises(grpc.RpcError):
            stranger.create_pixel("act_1", "p")
    assert process.terminate() == 0
    calls = [line for line in process.log_lines if line.get("msg") == "call"]
    assert {c["code"] for c in calls} == {"OK", "UNAUTHENTICATED"}
    assert not any("raw" in line for line in process.log_lines)
    assert "secret-looking-token" not in json.dumps(process.log_lines)
    assert "owner-token" not in json.dumps(process.log_lines)


def test_restart_keeps_registrations_and_stats(tmp_path):
    db = tmp_path / "matcher.db"
    with running_server(db) as (_, target):
        with Client(target, "owner-token") as owner, Client(target, "ingest-token") as ingest:
            pixel = owner.create_pixel("act_1", "p")
            created = owner.create_custom_conversion("act_1", "c", pixel.id, {"event": "Lead"}, default_conversion_value=2)
            owner.register_ad(
                {"id": "ad1", "account_id": "act_1", "objective": "PAGE_LIKES", "creative": {"kind": "page_like", "page_id": "P1"}}
            )
            ingest.classify_pixel_events([{"pixel_id": pixel.id, "event": "Lead"}] * 3, record=True)
    with running_server(db) as (server, target):
        assert server.core.registry.snapshot.rule_count == 1
        with Client(target, "owner-token") as owner, Client(target, "ingest-token") as ingest:
            assert owner.get_pixel(pixel.id).status == "ACTIVE"
            assert [r.value for r in owner.stats(created.id).rows] == [3]
            results = ingest.classify_pixel_events([{"pixel_id": pixel.id, "event": "Lead"}])
            assert [(m.custom_conversion_id, m.value) for m in results[0].conversions] == [(created.id, 2)]
            assert [[a.ad_id for a in r] for r in ingest.classify_actions([{"action.type": "like", "page": "P1"}])] == [["ad1"]]


def test_sigterm_under_load_loses_no_recorded_stats(tmp_path):
    process = ServerProcess(tmp_path, "--grace", "20")
    try:
        with Client(process.target, "owner-token") as owner:
            pixel = owner.create_pixel("act_1", "p").id
            conversion = owner.create_custom_conversion("act_1", "c", pixel, {"event": "Lead"}).id
        acknowledged = []
        started = threading.Event()

        def produce():
            with Client(process.target, "ingest-token") as ingest:
                while True:
                    try:
                        ingest.classify_pixel_events([{"pixel_id": pixel, "event": "Lead"}] * 25, record=True)
                    except grpc.RpcError:
                        return
                    acknowledged.append(25)
                    started.set()

        producers = [threading.Thread(target=produce) for _ in range(3)]
        for producer in producers:
            producer.start()
        assert started.wait(60)
        # A stream open across the signal: its in-flight batch is still answered and recorded.
        with Client(process.target, "ingest-token") as streamer:
            replies = streamer.stream_pixel_events(
                iter([[{"pixel_id": pixel, "event": "Lead"}] * 5, [{"pixel_id": pixel, "event": "Lead"}] * 5]), record=True
            )
            next(replies)
            acknowledged.append(5)
            assert process.terminate() == 0
            for _ in replies:
                acknowledged.append(5)
        for producer in producers:
            producer.join()
        assert any(line.get("msg") == "stopped" for line in process.log_lines)
    finally:
        process.kill()
    with running_server(tmp_path / "matcher.db") as (_, target):
        with Client(target, "owner-token") as owner:
            assert pixel_fires(owner, conversion) == sum(acknowledged)
            assert sum(r.value for r in owner.stats(conversion, "count", 1, 2 * 10**9).rows) == sum(acknowledged)


def test_health_turns_not_serving_on_sigterm(tmp_path):
    process = ServerProcess(tmp_path)
    try:
        channel = grpc.insecure_channel(process.target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        process.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # An open Watch is an in-flight call: a client that keeps it holds the stop for the grace period.
        watch.cancel()
        assert process.process.wait(30) == 0
        channel.close()
    finally:
        process.kill()


def test_environment_variables_and_bad_token_file(tmp_path):
    bad = tmp_path / "tokens.json"
    bad.write_text('{"tokens": {"t": {"accounts": ["acct-1"]}}}')
    env = {**os.environ, "CM_TOKENS": str(bad), "CM_DB": str(tmp_path / "x.db"), "CM_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", "server"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry["msg"] == "cannot load the token file" and "accounts" in entry["error"]
    assert '"t"' not in result.stderr  # the token itself is never logged


@pytest.mark.parametrize("accounts, error", [
    (["act_1", "act_007"], "token file: entry 1: accounts[1]: an ad account id has no leading zeros (act_7), got 'act_007'"),
    (["act_0"], "token file: entry 1: accounts[0]: an ad account id is act_ and a number from 1 up, got 'act_0'"),
    (["act_1", "acct-1"], "token file: entry 1: accounts[1]: expected an ad account id like act_123, got 'acct-1'"),
    (["act_1", 7], "token file: entry 1: accounts[1]: expected an ad account id like act_123, got int"),
    ("act_1", "token file: entry 1: accounts must be a list of ad account ids like act_123"),
])
def test_a_token_file_account_is_an_ad_account_id_as_requests_give_it(accounts, error):
    """An account the file names with a leading zero (``act_007``) could never be asked for, as
    requests refuse that form: the file is refused at start, naming the entry and the place."""
    data = {"tokens": {"good": {"accounts": ["act_7"]}, "secret-token": {"accounts": accounts}}}
    with pytest.raises(ValueError) as caught:
        TokenTable.from_mapping(data)
    assert str(caught.value) == error and "secret-token" not in str(caught.value)


def test_sighup_reloads_the_token_file_and_keeps_it_when_bad(tmp_path):
    process = ServerProcess(tmp_path)
    try:
        tokens = tmp_path / "tokens.json"
        with Client(process.target, "new-token") as newcomer:
            with pytest.raises(grpc.RpcError):
                newcomer.create_pixel("act_7", "p")
            tokens.write_text(json.dumps({"tokens": {"new-token": {"accounts": ["act_7"]}}}))
            process.process.send_signal(signal.SIGHUP)
            process.wait_for_log("tokens reloaded")
            assert newcomer.create_pixel("act_7", "p").creator == "act_7"
            tokens.write_text("{not json")
            process.process.send_signal(signal.SIGHUP)
            process.wait_for_log("token file not reloaded; the previous tokens stay in use")
            assert newcomer.create_pixel("act_7", "q").creator == "act_7"
        with Client(process.target, "owner-token") as old:
            with pytest.raises(grpc.RpcError) as caught:
                old.create_pixel("act_1", "p")
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert process.terminate() == 0
    finally:
        process.kill()
