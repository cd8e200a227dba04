"""Run the service: ``python -m server --port 50051 --db var/matcher.db --tokens var/tokens.json``.

Every flag has an environment variable (shown in ``--help``); flags win. SIGTERM and
SIGINT stop gracefully: health NOT_SERVING, in-flight calls finish (``--grace``), the
store is checkpointed and closed. SIGHUP reloads the token file.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import queue

from server import logs
from server.app import create_server
from server.auth import TokenTable
from server.core import Core, Limits

log = logging.getLogger("server")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="python -m server", description="conversion-matcher gRPC service")
    parser.add_argument("--host", default=_env("CM_HOST", "127.0.0.1"), help="listen address (CM_HOST)")
    parser.add_argument("--port", type=int, default=int(_env("CM_PORT", "50051")), help="listen port, 0 picks one (CM_PORT)")
    parser.add_argument("--db", default=_env("CM_DB", "var/matcher.db"), help="SQLite file (CM_DB)")
    parser.add_argument("--tokens", default=_env("CM_TOKENS", "var/tokens.json"), help="token file (CM_TOKENS)")
    parser.add_argument(
        "--metrics-port", type=int, default=int(_env("CM_METRICS_PORT", "-1")),
        help="Prometheus /metrics port on the listen host; 0 picks one, -1 disables (CM_METRICS_PORT)",
    )
    parser.add_argument("--workers", type=int, default=int(_env("CM_WORKERS", "16")), help="RPC threads (CM_WORKERS)")
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
    return parser.parse_args(argv)


def next_signal(received: queue.SimpleQueue[int]) -> int:
    """The next signal the handlers queued.

    The OS may deliver a signal to any thread (gRPC has several); Python then runs the
    handler in the main thread only when that thread next runs Python code. So the main
    thread never blocks for long: it wakes every 0.2 s to let pending handlers run.
    """
    while True:
        try:
            return received.get(timeout=0.2)
        except queue.Empty:
            continue


def reload_tokens(core: Core, path: str) -> None:
    """SIGHUP: read the token file again; a bad file keeps the tokens in use."""
    try:
        core.tokens = TokenTable.load(path)
    except (OSError, ValueError) as error:
        log.error("token file not reloaded; the previous tokens stay in use", extra={"path": path, "error": str(error)})
        return
    log.info("tokens reloaded", extra={"path": path})


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logs.configure(options.log_level)
    try:
        tokens = TokenTable.load(options.tokens)
    except (OSError, ValueError) as error:
        log.error("cannot load the token file", extra={"path": options.tokens, "error": str(error)})
        return 2
    limits = Limits(max_batch_events=options.max_batch_events, max_message_bytes=options.max_message_bytes)
    metrics_port = options.metrics_port if options.metrics_port >= 0 else None
    server, port = create_server(
        f"{options.host}:{options.port}", db_path=options.db, tokens=tokens, limits=limits,
        workers=options.workers, metrics_port=metrics_port, sync=options.sync,
    )
    # Handlers only queue the signal; the main thread acts on it outside signal context.
    received: queue.SimpleQueue[int] = queue.SimpleQueue()
    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(handled, lambda number, frame: received.put(number))
    server.start()
    log.info("serving", extra={"host": options.host, "port": port, "metrics_port": server.core.metrics.port})
    while (signum := next_signal(received)) == signal.SIGHUP:
        reload_tokens(server.core, options.tokens)
    log.info("stopping", extra={"signal": signal.Signals(signum).name, "grace_seconds": options.grace})
    server.stop(options.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
