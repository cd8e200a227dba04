"""What every servicer shares: store, registry, tokens, limits, clock and metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import grpc

from server.auth import Principal, TokenTable
from server.errors import InvalidArgument
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


@dataclass
class Core:
    store: Store
    registry: Registry
    tokens: TokenTable
    limits: Limits = field(default_factory=Limits)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())

    def authenticate(self, context: grpc.ServicerContext) -> Principal:
        return self.tokens.authenticate(context)

    def text(self, value: str, field_name: str, *, required: bool = True, limit: int | None = None) -> str:
        """A validated free-text field (name, description)."""
        limit = limit or self.limits.max_name_chars
        if required and not value.strip():
            raise InvalidArgument(f"{field_name}: required and must not be blank")
        if len(value) > limit:
            raise InvalidArgument(f"{field_name}: {len(value)} characters, more than the limit of {limit}")
        return value
