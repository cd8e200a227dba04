"""What every servicer shares: store, registry, tokens, limits, clock and metrics."""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import grpc

from server.auth import Principal, TokenTable
from server.errors import InvalidArgument, LimitExceeded
from server.metrics import Metrics
from server.registry import Registry
from server.store import Store


@dataclass(frozen=True)
class Limits:
    """Request limits; over a size limit is RESOURCE_EXHAUSTED with code 368."""

    max_message_bytes: int = 16 * 1024 * 1024
    max_batch_events: int = 10_000
    conversions_per_account: int = 100
    max_name_chars: int = 255
    max_description_chars: int = 2000
    max_custom_event_name_chars: int = 50
    max_accounts_per_call: int = 100
    max_accounts_per_pixel: int = 10_000
    # Classification streams open at once. Each holds one RPC thread for its whole life, idle
    # or not: fewer than the threads, so unary calls and health checks always find one.
    # None: half the threads (``create_server`` resolves it: ``resolve_max_streams``).
    max_streams: int | None = None


def resolve_max_streams(max_streams: int | None, workers: int) -> int:
    """``max_streams`` for ``workers`` RPC threads (None: half of them); ValueError unless it
    leaves a thread for the calls that are not streams."""
    if max_streams is None:
        max_streams = workers // 2
    if not 0 <= max_streams < workers:
        raise ValueError(f"max_streams: {max_streams}, expected 0 to {workers - 1}: fewer than the "
                         f"{workers} workers, as each open stream holds one")
    return max_streams


@dataclass
class Core:
    store: Store
    registry: Registry
    tokens: TokenTable
    limits: Limits  # max_streams resolved for the server's workers (resolve_max_streams)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    _stream_slots: threading.BoundedSemaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limits.max_streams is None:  # its default depends on the server's workers
            raise ValueError("Core: limits.max_streams is None; resolve it first with "
                             "resolve_max_streams(max_streams, workers), as create_server does")
        self._stream_slots = threading.BoundedSemaphore(self.limits.max_streams)

    @contextmanager
    def stream_slot(self) -> Iterator[None]:
        """Hold one of the ``max_streams`` slots for a stream's life; none free is code 368,
        at once (a stream waiting for one would hold a thread too)."""
        if not self._stream_slots.acquire(blocking=False):
            raise LimitExceeded(
                f"streams: {self.limits.max_streams} classification streams are open, the most this process "
                "serves at once (--max-streams; each holds an RPC thread of --workers): end an idle stream, "
                "or send these batches as unary calls")
        try:
            yield
        finally:
            self._stream_slots.release()

    def now(self) -> int:
        return int(self.clock())

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        return self.tokens.authenticate(context)

    def text(self, value: str, field_name: str, *, required: bool = True, limit: int | None = None,
             lines: bool = False) -> str:
        """A validated free-text field: a name (one line), or with ``lines`` a description
        (tabs and line breaks allowed). Other control characters (NUL, ESC, ...) are refused."""
        limit = limit or self.limits.max_name_chars
        if required and not value.strip():
            raise InvalidArgument(f"{field_name}: required and must not be blank")
        if len(value) > limit:
            raise InvalidArgument(f"{field_name}: {len(value)} characters, more than the limit of {limit}")
        refuse_control_characters(value, field_name, lines=lines)
        return value


# Unicode's control characters (category Cc); descriptions may hold tabs and line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def refuse_control_characters(value: str, field_name: str, *, lines: bool = False) -> None:
    """Code 100 naming the first control character in ``value`` (with ``lines``, tabs and
    line breaks are allowed)."""
    if control := (_CONTROL_IN_LINES if lines else _CONTROL).search(value):
        raise InvalidArgument(f"{field_name}: a control character ({control[0]!r}) at index {control.start()}")
