"""Run the service: ``python -m server --port 50051 --db var/matcher.db --tokens var/tokens.json``.

Every flag has an environment variable (shown in ``--help``); flags win. SIGTERM and
SIGINT stop gracefully: health NOT_SERVING, in-flight calls finish (``--grace``), the
store is checkpointed and closed. SIGHUP reloads the token file.

``--processes N`` (N > 1) makes this process a parent that starts N worker processes
(``python -m server`` again, each loading and compiling the store) serving the same port
with ``SO_REUSEPORT``; it forwards SIGTERM/SIGINT/SIGHUP to them, and when a worker dies
unexpectedly it stops the others and exits 1 so a supervisor restarts the whole service.
Registrations reach every worker through the store's change log (``--sync-interval``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import time

from server import logs
from server.app import create_server
from server.auth import TokenTable
from server.core import Core, Limits, resolve_max_streams

log = logging.getLogger("server")

#: Exit status of a parent whose worker died (or failed to start), and of a worker that could not start.
WORKER_FAILED = 1
#: How long after ``--grace`` a parent waits for its stopping workers before killing them.
STOP_MARGIN_SECONDS = 15.0

EPILOG = """\
Several processes (--processes N, N > 1): this process becomes a parent that picks the port
(for --port 0 it binds a free one and hands the same port to all workers), starts N worker
processes that each load and compile the store and serve that port with SO_REUSEPORT (the
kernel spreads connections over them), forwards SIGTERM/SIGINT (graceful stop of all
workers within --grace) and SIGHUP (token reload) to every worker, and logs its own
'serving' line once all workers serve. Worker log lines carry "worker": <index>. If a
worker dies unexpectedly, the parent logs it, stops the others and exits 1: run it under a
supervisor that restarts the whole service. Metrics with N > 1: worker i serves
/metrics on --metrics-port + i (0: each picks a free port, logged in its 'serving' line).

Registrations made through any process (or any other server on the same --db) reach
every process's classification within about --sync-interval: each process polls the
store's change log and applies what others registered. The process that handled a
registration sees it as soon as the call returns.
"""


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="python -m server", description="conversion-matcher gRPC service", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=_env("CM_HOST", "127.0.0.1"), help="listen address (CM_HOST)")
    parser.add_argument("--port", type=int, default=int(_env("CM_PORT", "50051")), help="listen port, 0 picks one (CM_PORT)")
    parser.add_argument("--db", default=_env("CM_DB", "var/matcher.db"), help="SQLite file (CM_DB)")
    parser.add_argument("--tokens", default=_env("CM_TOKENS", "var/tokens.json"), help="token file (CM_TOKENS)")
    parser.add_argument(
        "--metrics-port", type=int, default=int(_env("CM_METRICS_PORT", "-1")),
        help="Prometheus /metrics port on the listen host; 0 picks one, -1 disables; with --processes N, "
        "worker i uses this port + i (CM_METRICS_PORT)",
    )
    parser.add_argument("--workers", type=int, default=int(_env("CM_WORKERS", "16")), help="RPC threads per process (CM_WORKERS)")
    parser.add_argument(
        "--max-streams", type=int, default=_env("CM_MAX_STREAMS", None),
        help="classification streams open at once per process, fewer than --workers (each holds a thread); "
        "more are refused with code 368; default half the workers (CM_MAX_STREAMS)",
    )
    parser.add_argument(
        "--processes", type=int, default=int(_env("CM_PROCESSES", "1")),
        help="server processes sharing the port and the database; 1 serves in this process (CM_PROCESSES)",
    )
    parser.add_argument(
        "--sync-interval", type=float, default=float(_env("CM_SYNC_INTERVAL", "0.05")),
        help="seconds between polls of the store's change log for registrations made by other processes; "
        "0 never polls (only when this is the one process using the database) (CM_SYNC_INTERVAL)",
    )
    parser.add_argument("--grace", type=float, default=float(_env("CM_GRACE", "10")), help="shutdown grace seconds (CM_GRACE)")
    parser.add_argument(
        "--max-batch-events", type=int, default=int(_env("CM_MAX_BATCH_EVENTS", str(defaults.max_batch_events))),
        help="events or actions per classification request (CM_MAX_BATCH_EVENTS)",
    )
    parser.add_argument(
        "--max-message-bytes", type=int, default=int(_env("CM_MAX_MESSAGE_BYTES", str(defaults.max_message_bytes))),
        help="largest request or reply (CM_MAX_MESSAGE_BYTES)",
    )
    parser.add_argument(
        "--sync", default=_env("CM_SYNC", "FULL").upper(), choices=("FULL", "NORMAL"),
        help="SQLite synchronous mode: FULL fsyncs every commit (survives power loss), NORMAL only "
        "survives a process crash (CM_SYNC)",
    )
    parser.add_argument("--log-level", default=_env("CM_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING (CM_LOG_LEVEL)")
    # Set by a --processes parent for its workers only.
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.argv = list(sys.argv[1:] if argv is None else argv)
    if options.processes < 1:
        parser.error("--processes must be at least 1")
    if options.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        options.max_streams = resolve_max_streams(options.max_streams, options.workers)
    except ValueError:
        parser.error(f"--max-streams must be 0 to {options.workers - 1}: fewer than --workers, "
                     "so calls other than streams always find a thread")
    if options.sync_interval < 0:
        parser.error("--sync-interval must be >= 0")
    if options.processes > 1 and options.sync_interval == 0:
        parser.error("--sync-interval 0 never reads what other processes register: "
                     "with --processes above 1 it must be above 0")
    return options


def next_signal(received: queue.SimpleQueue[int], parent_pid: int | None = None) -> int:
    """The next signal the handlers queued (SIGTERM when ``parent_pid`` is given and that
    parent is gone, so an orphaned worker stops).

    The OS may deliver a signal to any thread (gRPC has several); Python then runs the
    handler in the main thread only when that thread next runs Python code. So the main
    thread never blocks for long: it wakes every 0.2 s to let pending handlers run.
    """
    while True:
        try:
            return received.get(timeout=0.2)
        except queue.Empty:
            if parent_pid is not None and os.getppid() != parent_pid:
                log.error("parent process gone; stopping", extra={"parent_pid": parent_pid})
                return signal.SIGTERM


def reload_tokens(core: Core, path: str) -> None:
    """SIGHUP: read the token file again; a bad file keeps the tokens in use."""
    try:
        core.tokens = TokenTable.load(path)
    except (OSError, ValueError) as error:
        log.error("token file not reloaded; the previous tokens stay in use", extra={"path": path, "error": str(error)})
        return
    log.info("tokens reloaded", extra={"path": path})


def _queue_signals() -> queue.SimpleQueue[int]:
    # Handlers only queue the signal; the main thread acts on it outside signal context.
    received: queue.SimpleQueue[int] = queue.SimpleQueue()
    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, lambda number, frame: received.put(number))
    return received


def serve(options: argparse.Namespace) -> int:
    """One serving process: the whole service (``--processes 1``) or one worker of a parent."""
    worker = options.worker_index
    if worker is None:
        logs.configure(options.log_level)
    else:
        logs.configure(options.log_level, worker=worker)
    parent_pid = os.getppid() if worker is not None else None
    try:
        tokens = TokenTable.load(options.tokens)
    except (OSError, ValueError) as error:
        log.error("cannot load the token file", extra={"path": options.tokens, "error": str(error)})
        return 2
    limits = Limits(max_batch_events=options.max_batch_events, max_message_bytes=options.max_message_bytes,
                    max_streams=options.max_streams)
    metrics_port = options.metrics_port if options.metrics_port >= 0 else None
    try:
        server, port = create_server(
            f"{options.host}:{options.port}", db_path=options.db, tokens=tokens, limits=limits,
            workers=options.workers, metrics_port=metrics_port, sync=options.sync, sync_interval=options.sync_interval,
            share_port=worker is not None,  # one process never shares its port with another server
        )
    except OSError as error:
        log.error("cannot start", extra={"host": options.host, "port": options.port, "error": str(error)})
        return 2
    # Everything loaded so far (modules, the compiled rules and ads) lives as long as the
    # process: out of the cyclic collector's sight it is not rescanned by every full
    # collection the batches' allocations trigger (~16% of a classification's CPU at
    # 10,000 rules). Snapshots built later stay collectable as usual.
    gc.freeze()
    received = _queue_signals()
    server.start()
    log.info("serving", extra={"host": options.host, "port": port, "metrics_port": server.core.metrics.port})
    if options.ready_fd is not None:
        with os.fdopen(options.ready_fd, "w") as ready:
            ready.write(json.dumps({"port": port, "metrics_port": server.core.metrics.port}) + "\n")
    while (signum := next_signal(received, parent_pid)) == signal.SIGHUP:
        reload_tokens(server.core, options.tokens)
    log.info("stopping", extra={"signal": signal.Signals(signum).name, "grace_seconds": options.grace})
    server.stop(options.grace)
    return 0


# -- several processes -----------------------------------------------------------------------

def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _reserve_port(host: str, port: int) -> socket.socket:
    """Port 0: bind a free port with SO_REUSEPORT and hold it (not listening, so it takes no
    connections) until the workers listen on it too. A given port: check that nothing
    (not even another SO_REUSEPORT server) listens there, so two services never share it."""
    if port:
        _bind(host, port, reuse_port=False).close()
    return _bind(host, port, reuse_port=True)


def _worker_command(options: argparse.Namespace, port: int, index: int, ready_fd: int) -> list[str]:
    """The parent's own arguments (workers inherit its environment too), then what differs:
    argparse keeps the last value of a repeated flag."""
    metrics_port = options.metrics_port + index if options.metrics_port > 0 else options.metrics_port
    return [
        sys.executable, "-m", "server", *options.argv,
        "--port", str(port), "--processes", "1", "--metrics-port", str(metrics_port),
        "--worker-index", str(index), "--ready-fd", str(ready_fd),
    ]


class _Workers:
    def __init__(self, options: argparse.Namespace, port: int) -> None:
        self.options = options
        self.processes: list[subprocess.Popen] = []
        self.ready_pipes: dict[int, int] = {}  # read fd -> worker index
        self.ready: dict[int, dict] = {}  # worker index -> its ready message
        for index in range(options.processes):
            read_fd, write_fd = os.pipe()
            self.processes.append(
                subprocess.Popen(_worker_command(options, port, index, write_fd), pass_fds=(write_fd,))
            )
            os.close(write_fd)
            self.ready_pipes[read_fd] = index

    def collect_ready(self, timeout: float) -> None:
        """Read the ready messages that arrive within ``timeout`` seconds."""
        if not self.ready_pipes:
            return
        readable, _, _ = select.select(list(self.ready_pipes), [], [], timeout)
        for fd in readable:
            data = os.read(fd, 4096)  # one short line, written at once
            index = self.ready_pipes.pop(fd)
            os.close(fd)
            if data:
                self.ready[index] = json.loads(data)

    def exited(self) -> list[tuple[int, int]]:
        return [(index, p.returncode) for index, p in enumerate(self.processes) if p.poll() is not None]

    def signal(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def stop(self, grace: float) -> list[int | None]:
        """SIGTERM every live worker, wait for them (``grace`` + a margin), kill stragglers."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace + STOP_MARGIN_SECONDS
        for index, process in enumerate(self.processes):
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not stop in time; killed", extra={"worker_index": index, "pid": process.pid})
                process.kill()
                process.wait()
        for fd in self.ready_pipes:
            os.close(fd)
        self.ready_pipes.clear()
        return [process.returncode for process in self.processes]


def supervise(options: argparse.Namespace) -> int:
    """The parent of ``--processes N`` workers; returns the exit status."""
    logs.configure(options.log_level)
    try:
        TokenTable.load(options.tokens)  # fail fast, once, with the same message a worker would log
    except (OSError, ValueError) as error:
        log.error("cannot load the token file", extra={"path": options.tokens, "error": str(error)})
        return 2
    try:
        held = _reserve_port(options.host, options.port)
    except OSError as error:
        log.error("cannot bind the listen port", extra={"host": options.host, "port": options.port, "error": str(error)})
        return 2
    port = held.getsockname()[1]
    received = _queue_signals()
    workers = _Workers(options, port)
    log.info("starting workers", extra={"processes": options.processes, "port": port,
                                        "pids": [p.pid for p in workers.processes]})
    stop_signal: int | None = None
    try:
        while len(workers.ready) < options.processes and stop_signal is None:
            workers.collect_ready(0.2)
            while not received.empty():
                signum = received.get()
                if signum != signal.SIGHUP:  # a reload before serving changes nothing: tokens load at start
                    stop_signal = signum
            dead = workers.exited()
            if dead and stop_signal is None:
                index, code = dead[0]
                log.error("worker failed to start; stopping the others",
                          extra={"worker_index": index, "exit_status": code})
                workers.stop(options.grace)
                return WORKER_FAILED
    finally:
        held.close()  # every worker listens now (or we are stopping): the placeholder goes
    if stop_signal is None:
        log.info("serving", extra={
            "host": options.host, "port": port, "processes": options.processes,
            "pids": [p.pid for p in workers.processes],
            "metrics_ports": [workers.ready[i].get("metrics_port") for i in range(options.processes)],
        })
    while stop_signal is None:
        try:
            signum = received.get(timeout=0.2)
        except queue.Empty:
            dead = workers.exited()
            if dead:
                index, code = dead[0]
                log.error("worker exited unexpectedly; stopping the others and exiting",
                          extra={"worker_index": index, "exit_status": code, "pid": workers.processes[index].pid})
                workers.stop(options.grace)
                log.info("stopped", extra={"exit_status": WORKER_FAILED})
                return WORKER_FAILED
            continue
        if signum == signal.SIGHUP:
            log.info("reloading tokens in every worker")
            workers.signal(signal.SIGHUP)
        else:
            stop_signal = signum
    log.info("stopping", extra={"signal": signal.Signals(stop_signal).name, "grace_seconds": options.grace})
    codes = workers.stop(options.grace)
    # A worker stopped before it installed its handlers dies of the SIGTERM itself: still a clean stop.
    clean = all(code in (0, -signal.SIGTERM) for code in codes)
    status = 0 if clean else WORKER_FAILED
    log.info("stopped", extra={"exit_statuses": codes, "exit_status": status})
    return status


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.processes > 1 and options.worker_index is None:
        return supervise(options)
    return serve(options)


if __name__ == "__main__":
    sys.exit(main())
