"""Helpers for tests and benchmarks: a real server on loopback with a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from server.app import Server, create_server
from server.auth import TokenTable
from server.core import Limits

#: Tokens used by the tests: an owner of two ad accounts, an owner of another, an ingest-only producer.
TEST_TOKENS = {
    "tokens": {
        "owner-token": {"accounts": ["act_1", "act_2"], "ingest": False},
        "other-token": {"accounts": ["act_3"], "ingest": False},
        "ingest-token": {"accounts": [], "ingest": True},
    }
}


@contextmanager
def running_server(db_path: str | Path, *, limits: Limits | None = None, **kwargs) -> Iterator[tuple[Server, str]]:
    """An in-process server on 127.0.0.1 (a free port); yields (server, target)."""
    server, port = create_server(
        "127.0.0.1:0", db_path=db_path, tokens=TokenTable.from_mapping(TEST_TOKENS), limits=limits, **kwargs
    )
    server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=5)


class ServerProcess:
    """``python -m server`` as a child process; the port is read from its 'serving' log line
    (with ``--processes N``, the parent's: the one without a ``worker`` field; the workers'
    lines come through the same stderr and are in :attr:`log_lines` too).

    The database is ``directory/matcher.db`` and the token file ``directory/tokens.json``,
    written from ``tokens_file`` (default :data:`TEST_TOKENS`), unless ``db`` / ``tokens``
    name existing ones. ``start_timeout``: seconds to wait for 'serving' (loading and
    compiling 100,000 rules takes ~10 s per process)."""

    def __init__(self, directory: Path, *args: str, tokens_file: dict | None = None, db: Path | None = None,
                 tokens: Path | None = None, start_timeout: float = 30.0) -> None:
        if tokens is None:
            tokens = directory / "tokens.json"
            tokens.write_text(json.dumps(tokens_file or TEST_TOKENS))
        self.log_lines: list[dict] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", "0", "--db", str(db or directory / "matcher.db"),
             "--tokens", str(tokens), *args],
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._ready = threading.Event()
        self.port = 0
        self.metrics_port: int | None = None
        self.serving: dict = {}  # the 'serving' log entry
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"server did not start within {start_timeout} s: {self.log_lines[-20:]}")

    def _read_logs(self) -> None:
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"raw": line}
            self.log_lines.append(entry)
            if entry.get("msg") == "serving" and "worker" not in entry:
                self.serving = entry
                self.port = entry["port"]
                self.metrics_port = entry.get("metrics_port", (entry.get("metrics_ports") or [None])[0])
                self._ready.set()
        self._ready.set()

    def wait_for_log(self, message: str, timeout: float = 30) -> dict:
        """The first log entry with ``msg == message``, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.log_lines):
                if entry.get("msg") == message:
                    return entry
            time.sleep(0.01)
        raise TimeoutError(f"no {message!r} in the server log: {self.log_lines}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the exit, collect the remaining logs; returns the exit status."""
        self.process.terminate()
        status = self.process.wait(timeout)
        self._close()
        return status

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a ``--processes`` parent stops its workers too), SIGKILL if it outlasts ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        self._reader.join(30)
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.process.stderr.close()
