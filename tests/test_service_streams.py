"""Open classification streams each hold an RPC thread: past ``max_streams`` they are refused
(code 368) so unary calls and health checks always find a thread, however many idle."""

import queue
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.__main__ import parse_args
from server.client import Client, error_code
from server.core import Limits
from server.gen.conversion_matcher.v1 import classification_pb2 as pb
from server.testing import running_server

WORKERS = 4


class OpenStream:
    """A stream the test feeds one request at a time and can leave idle."""

    def __init__(self, client: Client, method) -> None:
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.replies = method(iter(self.requests.get, None), metadata=client.metadata, timeout=30)

    def ask(self, request):
        self.requests.put(request)
        return next(self.replies)

    def close(self) -> None:
        self.requests.put(None)
        assert list(self.replies) == []


@pytest.fixture
def served(tmp_path):
    with running_server(tmp_path / "matcher.db", workers=WORKERS, limits=Limits(max_streams=2)) as (server, target):
        with Client(target, "owner-token") as owner, Client(target, "ingest-token", timeout=5) as ingest:
            px = owner.create_pixel("act_1", "p").id
            owner.create_custom_conversion("act_1", "lead", px, {"event": "Lead"})
            yield server, target, ingest, px


def lead_request(px):
    return pb.ClassifyPixelEventsRequest(columns=pb.PixelEventColumns(pixel_id=[px], event=["Lead"]))


def test_streams_past_the_limit_are_refused_and_idle_ones_leave_threads_for_other_calls(served):
    server, target, ingest, px = served
    streams = [OpenStream(ingest, ingest.classification.StreamClassifyPixelEvents) for _ in range(2)]
    for stream in streams:
        assert list(stream.ask(lead_request(px)).conversion_counts) == [1]
    # As many streams as threads: without the limit the last two would take the last threads.
    for method, request in [(ingest.classification.StreamClassifyPixelEvents, lead_request(px)),
                            (ingest.classification.StreamClassifyActions, pb.ClassifyActionsRequest(actions=["{}"]))]:
        extra = OpenStream(ingest, method)
        with pytest.raises(grpc.RpcError) as caught:
            extra.ask(request)
        error = caught.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and error_code(error) == 368
        assert error.details().startswith("streams: 2 classification streams are open, the most this process serves")
    # The two open streams idle; unary calls and health checks are answered at once.
    reply = ingest.call(ingest.classification.ClassifyPixelEvents, lead_request(px))
    assert list(reply.conversion_counts) == [1]
    health = health_pb2_grpc.HealthStub(ingest.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    # A stream that ends gives its slot back, as does one the client cancels.
    streams[0].close()
    streams[1].replies.cancel()
    for _ in range(2):
        again = OpenStream(ingest, ingest.classification.StreamClassifyPixelEvents)
        for _ in range(3):
            assert list(again.ask(lead_request(px)).conversion_counts) == [1]
        again.close()
    refused = server.core.metrics.requests.labels("/conversion_matcher.v1.ClassificationService/StreamClassifyActions",
                                                  "RESOURCE_EXHAUSTED")
    assert refused._value.get() == 1


def test_a_stream_refused_by_its_token_keeps_no_slot(served):
    server, target, ingest, px = served
    with Client(target, "owner-token") as owner:  # no ingest scope
        for _ in range(3):
            stream = OpenStream(owner, owner.classification.StreamClassifyPixelEvents)
            with pytest.raises(grpc.RpcError) as caught:
                stream.ask(lead_request(px))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    streams = [OpenStream(ingest, ingest.classification.StreamClassifyPixelEvents) for _ in range(2)]
    assert [list(s.ask(lead_request(px)).conversion_counts) for s in streams] == [[1], [1]]
    for stream in streams:
        stream.close()


@pytest.mark.parametrize(("workers", "max_streams"), [(4, 4), (4, -1), (1, 1)])
def test_max_streams_must_leave_a_thread_for_other_calls(tmp_path, workers, max_streams):
    with pytest.raises(ValueError, match=f"max_streams: {max_streams}, expected 0 to {workers - 1}"):
        with running_server(tmp_path / "matcher.db", workers=workers, limits=Limits(max_streams=max_streams)):
            pass
    assert not (tmp_path / "matcher.db").exists()


def test_the_command_line_defaults_max_streams_to_half_the_workers(monkeypatch, capsys):
    assert parse_args([]).max_streams == 8
    assert parse_args(["--workers", "5"]).max_streams == 2
    assert parse_args(["--workers", "1"]).max_streams == 0  # no streams: every call is unary
    monkeypatch.setenv("CM_MAX_STREAMS", "3")
    assert parse_args(["--workers", "4"]).max_streams == 3
    assert parse_args(["--workers", "4", "--max-streams", "1"]).max_streams == 1
    for argv in (["--workers", "4"] + extra for extra in (["--max-streams", "4"], ["--max-streams", "-1"])):
        with pytest.raises(SystemExit) as caught:
            parse_args(argv)
        assert caught.value.code == 2
        assert "--max-streams must be 0 to 3: fewer than --workers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_a_core_needs_max_streams_resolved_for_its_workers(tmp_path):
    # Limits() leaves max_streams to the server's worker count: a Core built without
    # create_server is told so, not handed a semaphore of None.
    from server.auth import TokenTable
    from server.core import Core, resolve_max_streams
    from server.registry import Registry
    from server.store import SQLiteStore
    store = SQLiteStore(tmp_path / "matcher.db")
    with pytest.raises(ValueError, match="limits.max_streams is None; resolve it first"):
        Core(store=store, registry=Registry(store), tokens=TokenTable({}), limits=Limits())
    core = Core(store=store, registry=Registry(store), tokens=TokenTable({}),
                limits=Limits(max_streams=resolve_max_streams(None, WORKERS)))
    assert core.limits.max_streams == WORKERS // 2
    store.close()


def test_a_stream_the_client_cancels_is_counted_once_never_internal(served, caplog):
    # It was counted and logged INTERNAL, which the docs keep for bugs.
    server, target, ingest, px = served
    method = "/conversion_matcher.v1.ClassificationService/StreamClassifyPixelEvents"
    counted = server.core.metrics.registry.get_sample_value
    slots = server.core._stream_slots  # (2: the fixture's max_streams)

    def wait_for(condition) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)

    def count(code: str) -> float:
        return counted("cm_requests_total", {"method": method, "code": code}) or 0

    # Cancelled after a reply (the server waiting on the next request), and before any request
    # once the server is in the call (it holds a slot). gRPC may hand the handler the end of its
    # requests before it learns of the cancellation; the handler then completes (OK). Either
    # way each call is counted once, and never INTERNAL.
    for cancelled, cancel_at in enumerate((1, 0), start=1):
        stream = OpenStream(ingest, ingest.classification.StreamClassifyPixelEvents)
        if cancel_at:
            assert list(stream.ask(lead_request(px)).conversion_counts) == [1]
        else:
            wait_for(lambda: slots._value < 2)
        stream.replies.cancel()
        wait_for(lambda: count("CANCELLED") + count("OK") >= cancelled and slots._value == 2)
        assert count("CANCELLED") + count("OK") == cancelled
    assert counted("cm_requests_total", {"method": method, "code": "INTERNAL"}) is None
    assert "unexpected error" not in caplog.text
