"""Load-generating client processes for the gRPC benchmark.

``LoadGenerators(n)`` spawns n client processes that live for the whole run and take jobs
over a pipe. For a job each process opens ``concurrency`` connections (one gRPC channel each,
never shared: ``grpc.use_local_subchannel_pool``), one caller thread per connection, and all
processes start at the same instant (a ``time.monotonic`` deadline the parent hands out once
every process is connected). Requests are pre-serialised bytes and replies are not decoded,
so the client's own cost stays small next to the server's.

Modes:
- ``closed``: each thread calls back to back for ``seconds``; the figure is events/s.
- ``open``: a fixed request rate, open loop. Calls are scheduled at ``start + g / rate`` for
  the global call number g (interleaved over processes, then threads); a thread that is late
  sends at once, and every latency is measured from the *intended* send time, so a stalled
  server shows up as latency instead of as fewer calls (no coordinated omission).
- ``stream``: bidirectional streams, each keeping 4 batches in flight (events/s; a stream that
  fails, refused say, is one error).

Several server processes on one port (``SO_REUSEPORT``) get connections from the kernel's
hash, not calls; so each connection first identifies its server process (``probe``: an empty
handler's Whoami, or which server's request counter moved), and a connection to a process
that already has its share is closed and opened again. Calls are then counted per process.

Results are merged exactly: call counts summed, raw latency samples concatenated. Each
process also reports the CPU time it used during the job (sending, receiving, its threads):
what the load itself costs on a machine whose cores the servers share.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
import traceback
from dataclasses import dataclass, field

CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.use_local_subchannel_pool", 1)]
MAX_SERVERS = 64


@dataclass
class Job:
    mode: str  # "closed", "open" or "stream"
    target: str
    method: str
    payload: bytes
    events_per_call: int
    seconds: float
    concurrency: int
    calls_per_second: float = 0.0  # open: over all client processes together
    probe: dict = field(default_factory=dict)  # {"whoami": [pid, ...]} or {"metrics": [port, ...]}
    warmup_method: str = ""  # the unary method of the probe/warm-up call (defaults to ``method``)
    token: str = "bench"  # sent as "authorization: Bearer <token>"

    @property
    def metadata(self) -> tuple:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass
class Result:
    """One measurement over every client process, merged."""
    mode: str
    clients: int
    calls: int = 0
    errors: int = 0
    planned: int = 0  # open: calls scheduled within ``seconds``
    unsent: int = 0  # open: scheduled but not sent before the hard stop
    elapsed: float = 0.0  # from the common start to the last reply
    events_per_call: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, every call
    per_server: list[int] = field(default_factory=list)  # calls answered by each server process
    connections_per_server: list[int] = field(default_factory=list)
    client_cpu_s: float = 0.0  # CPU time of the client processes (all their threads) during the job
    server_cpu_s: float | None = None  # set by the caller, which knows the server processes

    @property
    def events_per_s(self) -> float:
        return self.calls * self.events_per_call / self.elapsed if self.elapsed > 0 else 0.0

    def cpu_us_per_event(self, seconds: float | None) -> float:
        """CPU microseconds per classified event (nan when unknown or nothing was classified)."""
        events = self.calls * self.events_per_call
        return seconds * 1e6 / events if seconds is not None and events else math.nan


class LoadGenerators:
    """``clients`` spawned processes; ``run(job, n)`` runs ``job`` on the first n of them."""

    def __init__(self, clients: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.lock = context.Lock()
        self.shares = context.Array("i", MAX_SERVERS, lock=False)  # connections per server, guarded by ``lock``
        self.pipes, self.processes = [], []
        for index in range(clients):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(index, child, self.lock, self.shares), daemon=True,
                                      name=f"bench-client-{index}")
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def __enter__(self) -> "LoadGenerators":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in self.pipes:
            pipe.close()

    def run(self, job: Job, clients: int) -> Result:
        pipes = self.pipes[:clients]
        servers = max(1, len(next(iter(job.probe.values()), [])))
        with self.lock:
            for i in range(MAX_SERVERS):
                self.shares[i] = 0
        quota = math.ceil(clients * job.concurrency / servers)
        for index, pipe in enumerate(pipes):
            pipe.send((job, index, clients, quota))
        for pipe in pipes:
            _expect(pipe, "ready")
        start = time.monotonic() + 0.05
        for pipe in pipes:
            pipe.send(start)
        parts = [_expect(pipe, "done") for pipe in pipes]
        merged = Result(mode=job.mode, clients=clients, events_per_call=job.events_per_call,
                        per_server=[0] * servers, connections_per_server=[0] * servers)
        for part in parts:
            merged.calls += part["calls"]
            merged.errors += part["errors"]
            merged.planned += part["planned"]
            merged.unsent += part["unsent"]
            merged.elapsed = max(merged.elapsed, part["end"] - start)
            merged.latencies.extend(part["latencies"])
            merged.client_cpu_s += part["cpu_s"]
            for server, calls in enumerate(part["per_server"]):
                merged.per_server[server] += calls
            for server in part["connections"]:
                merged.connections_per_server[server] += 1
        if job.mode == "open":  # the schedule spans ``seconds``; a server that falls behind stretches it
            merged.elapsed = max(merged.elapsed, job.seconds)
        return merged


def _expect(pipe, kind: str):
    got, value = pipe.recv()
    if got == "error":
        raise RuntimeError(f"client process failed:\n{value}")
    assert got == kind, (got, kind)
    return value


# -- inside a client process -----------------------------------------------------------------

def _worker(index: int, pipe, lock, shares) -> None:
    import grpc  # noqa: F401  (imported here: the parent never forks a process that holds gRPC state)

    while True:
        message = pipe.recv()
        if message is None:
            return
        job, client, clients, quota = message
        channels = []
        try:
            connections = [_connect(job, lock, shares, quota, channels) for _ in range(job.concurrency)]
            pipe.send(("ready", None))
            start = pipe.recv()
            cpu = time.process_time()  # this process, every thread (gRPC's own included)
            part = _RUNNERS[job.mode](job, connections, start, client, clients)
            part["cpu_s"] = time.process_time() - cpu
            part["connections"] = [server for _, server in connections]
            pipe.send(("done", part))
        except Exception:
            pipe.send(("error", traceback.format_exc()))
        finally:
            for channel in channels:
                channel.close()


def _connect(job: Job, lock, shares, quota: int, opened: list):
    """A new connection, warmed up, and the index of the server process it reached."""
    import grpc

    warmup = job.warmup_method or job.method
    for attempt in range(100):
        channel = grpc.insecure_channel(job.target, options=CHANNEL_OPTIONS)
        call = channel.unary_unary(warmup)
        if not job.probe or len(next(iter(job.probe.values()))) <= 1:
            call(job.payload, metadata=job.metadata, timeout=60)
            opened.append(channel)
            return channel, 0
        with lock:  # one probe at a time over all client processes: counters move for one call only
            server = _identify(job, channel, call)
            if shares[server] < quota or attempt == 99:
                shares[server] += 1
                opened.append(channel)
                return channel, server
        channel.close()
    raise AssertionError("unreachable")


def _identify(job: Job, channel, call) -> int:
    from bench.servers import WHOAMI, scrape

    if "whoami" in job.probe:
        call(job.payload, metadata=job.metadata, timeout=60)
        pid = int(channel.unary_unary(WHOAMI)(b"", timeout=60))
        return job.probe["whoami"].index(pid)
    ports = job.probe["metrics"]
    before = [scrape(port).get("cm_requests_total", 0.0) for port in ports]
    call(job.payload, metadata=job.metadata, timeout=60)
    for _ in range(100):  # the counter moves as the handler returns; normally already seen
        moved = [i for i, port in enumerate(ports) if scrape(port).get("cm_requests_total", 0.0) > before[i]]
        if len(moved) == 1:
            return moved[0]
        time.sleep(0.01)
    raise RuntimeError(f"cannot tell which server process answered (moved: {moved})")


def _part(servers: int) -> dict:
    return {"calls": 0, "errors": 0, "planned": 0, "unsent": 0, "end": 0.0, "latencies": [], "per_server": [0] * servers}


def _servers(job: Job) -> int:
    return max(1, len(next(iter(job.probe.values()), [])))


def _run_threads(target, connections) -> None:
    threads = [threading.Thread(target=target, args=(slot, channel, server))
               for slot, (channel, server) in enumerate(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _drive(job: Job, connections, calls, planned: int = 0) -> dict:
    """One thread per connection runs ``calls(slot, send)``, which returns its (latencies,
    errors, unsent); ``send(since)`` makes one call and gives its latency counted from
    ``since``, None when it failed. The threads' results add up in this process's part."""
    import grpc

    part = _part(_servers(job))
    part["planned"] = planned
    lock = threading.Lock()

    def caller(slot: int, channel, server: int) -> None:
        call = channel.unary_unary(job.method)

        def send(since: float) -> float | None:
            try:
                call(job.payload, metadata=job.metadata, timeout=60)
            except grpc.RpcError:
                return None
            return time.monotonic() - since

        _add(part, lock, server, *calls(slot, send))

    _run_threads(caller, connections)
    part["end"] = time.monotonic()
    return part


def _closed(job: Job, connections, start: float, client: int, clients: int) -> dict:
    deadline = start + job.seconds

    def calls(slot: int, send) -> tuple[list[float], int, int]:
        latencies, errors = [], 0
        _sleep_until(start)
        while (began := time.monotonic()) < deadline:
            latency = send(began)
            if latency is None:
                errors += 1
            else:
                latencies.append(latency)
        return latencies, errors, 0

    return _drive(job, connections, calls)


def _add(part: dict, lock: threading.Lock, server: int, latencies: list[float], errors: int, unsent: int = 0) -> None:
    """One caller thread's results into its process's part."""
    with lock:
        part["latencies"] += latencies
        part["calls"] += len(latencies)
        part["errors"] += errors
        part["unsent"] += unsent
        part["per_server"][server] += len(latencies)


def _open(job: Job, connections, start: float, client: int, clients: int) -> dict:
    rate = job.calls_per_second
    threads = len(connections)
    # This process's calls are the global numbers g = n * clients + client; thread t sends n = t mod threads.
    planned = [n for n in range(math.ceil(job.seconds * rate)) if (n * clients + client) / rate < job.seconds]
    hard_stop = start + 2 * job.seconds + 10  # a stalled server: stop scheduling, count what was not sent

    def calls(slot: int, send) -> tuple[list[float], int, int]:
        latencies, errors, unsent = [], 0, 0
        for n in planned[slot::threads]:
            intended = start + (n * clients + client) / rate
            if time.monotonic() > hard_stop:
                unsent += 1
                continue
            _sleep_until(intended)
            latency = send(intended)
            if latency is None:
                errors += 1
            else:
                latencies.append(latency)
        return latencies, errors, unsent

    return _drive(job, connections, calls, len(planned))


def _stream(job: Job, connections, start: float, client: int, clients: int) -> dict:
    import grpc

    part = _part(_servers(job))
    deadline = start + job.seconds
    lock = threading.Lock()
    window = 4  # batches sent ahead of their replies

    def caller(slot: int, channel, server: int) -> None:
        stream = channel.stream_stream(job.method)
        credits = threading.Semaphore(window)
        done = 0

        def requests():
            while True:
                credits.acquire()
                if time.monotonic() >= deadline:
                    return
                yield job.payload

        _sleep_until(start)
        failed = 0
        try:
            for _ in stream(requests(), metadata=job.metadata, timeout=job.seconds + 60):
                done += 1
                credits.release()
        except grpc.RpcError:  # the stream ends; counted, so a refused stream cannot pass unseen
            failed = 1
        with lock:
            part["calls"] += done
            part["errors"] += failed
            part["per_server"][server] += done

    _run_threads(caller, connections)
    part["end"] = time.monotonic()
    return part


_RUNNERS = {"closed": _closed, "open": _open, "stream": _stream}
