"""Fixtures shared by the tests/test_service_*.py modules (imported there by name): a real
server on loopback with a fresh SQLite file per test, and clients for the test tokens."""

import grpc
import pytest

from server.client import Client
from server.testing import running_server


@pytest.fixture
def service(tmp_path):
    """(server, target) of a server with default limits."""
    with running_server(tmp_path / "matcher.db") as running:
        yield running


@pytest.fixture
def owner(service):
    """Acts for act_1 and act_2."""
    with Client(service[1], "owner-token") as client:
        yield client


@pytest.fixture
def other(service):
    """Acts for act_3 only."""
    with Client(service[1], "other-token") as client:
        yield client


@pytest.fixture
def ingest(service):
    """Ingest scope only."""
    with Client(service[1], "ingest-token") as client:
        yield client


def rejected(call, *args, **kwargs) -> grpc.RpcError:
    """The error ``call(*args, **kwargs)`` fails with (the test fails when it succeeds)."""
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value
