"""Server processes for the gRPC benchmark: N processes serving one port.

``ServerGroup("server", N)`` runs the service as it is deployed: one ``python -m server
--processes N`` (for N = 1 the single process, no parent), whose N workers share one
SQLite file and one port (``SO_REUSEPORT``: the kernel spreads incoming *connections*, not
calls, over them), each compiling every rule itself. Each worker serves ``/metrics`` on a
port of its own (``--metrics-port 0``: listed in the parent's ``serving`` line), which tells
which worker served what: the load generator identifies the worker a connection landed on by
whose ``cm_requests_total`` moved, and counts calls per worker (see ``bench.loadgen``).

``ServerGroup("empty", N)`` starts N empty-handler processes on one explicit port: ``python
-m bench.servers --port P``, where ClassifyPixelEvents takes the request bytes and replies
with nothing (the transport ceiling), and ``bench.Empty/Whoami`` answers the process id
(the load generator uses it to tell the processes apart).

Both kinds get ``server_workers(callers)`` RPC threads per process, ``callers`` being the most
caller threads the run has at once: the same pool whether or not the run opens streams, and
the same for the service and its ceiling.

``RemoteTarget(address)`` is a server the bench did not start (``bench grpc --target``, and
an empty handler run by hand on that server's machine for ``--ceiling-target``: ``python -m
bench.servers --host 0.0.0.0 --port P``): its processes are not told apart and their CPU
time is not known.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

from bench import cli

ROOT = Path(__file__).resolve().parent.parent
WHOAMI = "/bench.Empty/Whoami"


def free_port() -> int:
    """A port nothing listens on now (the group binds it explicitly right after)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, every thread) process ``pid`` has used so far; None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def scrape(metrics_port: int) -> dict[str, float]:
    """A server's Prometheus counters summed by metric name (labels dropped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$", line)
        if match and line[0] != "#":
            totals[match[1]] = totals.get(match[1], 0.0) + float(match[3])
    return totals


# The service's own --workers default (RPC threads per process), and the threads a started
# server has beyond one per caller thread of the run.
DEFAULT_WORKERS = 16
SPARE_WORKERS = 8


def server_workers(callers: int) -> int:
    """RPC threads per server process (``--workers``) for a run of at most ``callers`` caller
    threads over all client processes. Each caller has one call or one stream in flight at a
    time, and an open stream holds a thread for its whole life (``docs/service.md``), so one
    thread per caller (the kernel may put every connection on one process) and
    ``SPARE_WORKERS`` more, at least ``DEFAULT_WORKERS``. The unary calls need no more than
    the streams, so the pool does not depend on whether the run opens streams: a unary row is
    measured on the same pool with ``--stream`` as without."""
    return max(DEFAULT_WORKERS, callers + SPARE_WORKERS)


class _Child:
    """One empty-handler process; its stderr JSON log is read on a thread until it says 'serving'."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                        text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.serving = threading.Event()
        self.logged: dict[str, dict] = {}  # the 'serving' and 'loaded' entries
        self.entries: list[dict] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"raw": line.rstrip()}
            self.entries.append(entry)
            del self.entries[:-200]  # keep the tail for error messages
            if entry.get("msg") in ("serving", "loaded"):
                self.logged[entry["msg"]] = entry
            if entry.get("msg") == "serving":
                self.serving.set()
        self.serving.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(10)
        self.process.stderr.close()


class ServerGroup:
    """N server processes on one port. ``kind`` is "server" (``python -m server --processes N``
    on ``db`` with the token file ``tokens``) or "empty" (N empty handlers). Use as a context
    manager; ``target`` is ``127.0.0.1:port``; ``timeout`` bounds the start (loading and
    compiling 100,000 rules takes ~10 s per process, more when they share the cores).
    ``callers``: the most caller threads (connections, each with one call or stream in flight)
    the run has at once; each process gets ``workers = server_workers(callers)`` RPC threads
    and, the service, ``--max-streams`` all of them but the ``SPARE_WORKERS`` (at least
    ``callers``: no stream of the run is refused), whether or not the run opens streams (not
    the defaults, which ``CM_WORKERS`` and ``CM_MAX_STREAMS`` in the environment could change)."""

    def __init__(self, kind: str, count: int, *, db: Path | None = None, tokens: Path | None = None,
                 sync: str = "FULL", timeout: float = 600, callers: int = 0) -> None:
        self.kind, self.count, self.timeout = kind, count, timeout
        self.workers = server_workers(callers)
        self.db, self.tokens, self.sync = db, tokens, sync
        self.children: list[_Child] = []  # the empty handlers
        self.service = None  # the real service: a server.testing.ServerProcess
        self.port = 0

    def __enter__(self) -> "ServerGroup":
        if self.kind == "server":
            self._start_service()
        else:
            self._start_empty()
        return self

    def _start_service(self) -> None:
        from server.testing import ServerProcess  # not at the top: the empty handlers need none of the service

        # --port 0: the parent binds a free port itself and hands it to every worker. The kernel
        # may put every connection, so every stream, on one process.
        self.service = ServerProcess(
            self.db.parent, "--processes", str(self.count), "--metrics-port", "0", "--sync", self.sync,
            "--grace", "1", "--workers", str(self.workers), "--max-streams", str(self.workers - SPARE_WORKERS),
            db=self.db, tokens=self.tokens, start_timeout=self.timeout,
        )
        self.port = self.service.port

    def _start_empty(self) -> None:
        for attempt in range(3):  # another program may take the free port before we bind it
            self.port = free_port()
            self.children = [_Child([sys.executable, "-m", "bench.servers", "--port", str(self.port),
                                     "--workers", str(self.workers)]) for _ in range(self.count)]
            deadline = time.monotonic() + self.timeout
            for child in self.children:
                child.serving.wait(max(0.0, deadline - time.monotonic()))
            if all("serving" in child.logged for child in self.children):
                return
            failed = [child.entries[-5:] for child in self.children if "serving" not in child.logged]
            self.stop()
            if time.monotonic() >= deadline:
                break
        raise RuntimeError(f"{self.kind} processes did not start on port {self.port}: {failed}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        for child in self.children:
            child.stop()
        if self.service is not None:
            self.service.stop()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The serving processes: the workers (or the one server process), or the empty handlers."""
        if self.service is None:
            return [child.process.pid for child in self.children]
        return self.service.serving.get("pids") or [self.service.process.pid]

    @property
    def metrics_ports(self) -> list[int]:
        """Per worker, in worker order (worker i is ``pids[i]``)."""
        if self.service is None:
            return []
        serving = self.service.serving
        return serving["metrics_ports"] if "metrics_ports" in serving else [serving["metrics_port"]]

    @property
    def rules_loaded(self) -> list[int]:
        """Per worker, the rules its 'loaded' log line reports."""
        if self.service is None:
            return []
        loaded = {line.get("worker", 0): line["rules"] for line in self.service.log_lines if line.get("msg") == "loaded"}
        return [loaded.get(index) for index in range(self.count)]

    def probe(self) -> dict:
        """How the load generator tells the processes apart: by Whoami (empty handler) or by
        which worker's request counter moved (real server)."""
        if self.kind == "empty":
            return {"whoami": self.pids}
        return {"metrics": self.metrics_ports}

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by all the group's processes together (None without /proc)."""
        times = [cpu_seconds(pid) for pid in self.pids]
        return None if None in times else sum(times)

    def events_classified(self) -> list[float]:
        """Per worker: events classified so far, from its own /metrics (real servers)."""
        return [scrape(port).get("cm_events_classified_total", 0.0) for port in self.metrics_ports]


class RemoteTarget:
    """A server at ``address`` that this machine did not start: what ``ServerGroup`` offers the
    load generator, without the per-process accounting (one process as far as the bench can
    tell; CPU time unknown)."""

    def __init__(self, address: str) -> None:
        self.target = address

    def probe(self) -> dict:
        return {}

    def cpu_seconds(self) -> float | None:
        return None


def serve_empty(port: int, host: str = "127.0.0.1", workers: int = DEFAULT_WORKERS) -> None:
    """ClassifyPixelEvents takes the request bytes and replies with nothing; Whoami says the pid.
    ``workers``: RPC threads, as the service's ``--workers``."""
    import grpc

    empty = grpc.method_handlers_generic_handler(
        "conversion_matcher.v1.ClassificationService",
        {"ClassifyPixelEvents": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
    )
    pid = str(os.getpid()).encode()
    whoami = grpc.method_handlers_generic_handler(
        "bench.Empty", {"Whoami": grpc.unary_unary_rpc_method_handler(lambda request, context: pid)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((empty, whoami))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        sys.exit(f"cannot bind {host}:{port}")
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(json.dumps({"msg": "serving", "port": bound, "pid": os.getpid()}), file=sys.stderr, flush=True)
    while not stop.wait(0.2):
        pass
    server.stop(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the empty-handler server (transport ceiling)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="listen address (0.0.0.0: reachable from a load generator on another machine)")
    parser.add_argument("--workers", type=cli.positive_int, default=DEFAULT_WORKERS,
                        help=f"RPC threads (default {DEFAULT_WORKERS}; bench grpc gives its started servers' "
                             "--workers: by hand, the --target server's, for a ceiling on the same pool)")
    arguments = parser.parse_args()
    serve_empty(arguments.port, arguments.host, arguments.workers)
