"""Assembling the gRPC server: servicers, interceptors, health, reflection, lifecycle."""

from __future__ import annotations

import dataclasses
import logging
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server.ads import AdServicer
from server.auth import TokenTable
from server.classification import ClassificationServicer
from server.core import Core, Limits, resolve_max_streams
from server.custom_conversions import CustomConversionServicer
from server.errors import ErrorInterceptor
from server.gen.conversion_matcher.v1 import (
    ads_pb2,
    ads_pb2_grpc,
    classification_pb2,
    classification_pb2_grpc,
    custom_conversions_pb2,
    custom_conversions_pb2_grpc,
    pixels_pb2,
    pixels_pb2_grpc,
)
from server.metrics import Metrics
from server.pixels import PixelServicer
from server.registry import Registry
from server.store import SQLiteStore

log = logging.getLogger("server")

SERVICE_NAMES = (
    pixels_pb2.DESCRIPTOR.services_by_name["PixelService"].full_name,
    custom_conversions_pb2.DESCRIPTOR.services_by_name["CustomConversionService"].full_name,
    ads_pb2.DESCRIPTOR.services_by_name["AdService"].full_name,
    classification_pb2.DESCRIPTOR.services_by_name["ClassificationService"].full_name,
)
# Per-call access logs for these would drown everything else; metrics count them instead.
_QUIET_PREFIX = "/" + SERVICE_NAMES[3] + "/"


class Server:
    """A running service: the gRPC server plus the state it owns. Build with :func:`create_server`."""

    def __init__(self, grpc_server: grpc.Server, core: Core, health_servicer: health.HealthServicer) -> None:
        self.grpc_server = grpc_server
        self.core = core
        self.health = health_servicer
        self.sync_interval = 0.0  # change-log poll interval (seconds; 0: never), set by create_server
        self._stopped = False

    def start(self) -> None:
        self.grpc_server.start()
        self.core.registry.start_following(self.sync_interval)
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)

    def stop(self, grace: float = 10.0) -> None:
        """Graceful stop: health says NOT_SERVING first (load balancers drain), new calls are
        refused, in-flight calls get ``grace`` seconds to finish (a recording call commits
        before it replies), then the store is checkpointed and closed."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        self.core.registry.stop_following()
        self.core.store.close()
        self.core.metrics.close()
        log.info("stopped")


def create_server(
    addr: str = "127.0.0.1:0",
    *,
    db_path: str | Path,
    tokens: TokenTable,
    limits: Limits | None = None,
    workers: int = 16,
    metrics_port: int | None = None,
    sync: str = "FULL",
    sync_interval: float = 0.05,
    share_port: bool = False,
) -> tuple[Server, int]:
    """Build the server bound to ``addr`` (port 0 picks one) with its store loaded and
    compiled; returns ``(server, port)``. Call ``server.start()`` to serve; from then on the
    registry applies what other processes register in the same database every
    ``sync_interval`` seconds (0: never).

    ``share_port``: bind with ``SO_REUSEPORT``, so the workers of ``--processes N`` serve one
    port (the kernel spreads connections over them). Without it (one process), a port another
    server listens on is refused (OSError) rather than shared with it by accident."""
    limits = limits or Limits()
    limits = dataclasses.replace(limits, max_streams=resolve_max_streams(limits.max_streams, workers))
    store = SQLiteStore(db_path, synchronous=sync)
    registry = Registry(store)
    metrics = Metrics()
    core = Core(store=store, registry=registry, tokens=tokens, limits=limits, metrics=metrics)
    registry.listeners.append(metrics.observe_snapshot)
    metrics.follow_registry(registry)
    registry.load()

    # The labelled children per (method, code), looked up once: labels() takes a lock and hashes
    # the labels on every call. Methods are the registered ones (unknown methods never reach
    # the interceptor's wrapper) and codes a fixed set, so these stay small.
    request_counters: dict[tuple[str, str], Any] = {}
    latencies: dict[str, Any] = {}

    def observe(method: str, code: str, seconds: float) -> None:
        counter = request_counters.get((method, code))
        if counter is None:
            counter = request_counters[method, code] = metrics.requests.labels(method, code)
        counter.inc()
        latency = latencies.get(method)
        if latency is None:
            latency = latencies[method] = metrics.latency.labels(method)
        latency.observe(seconds)
        if code != "OK" or not method.startswith(_QUIET_PREFIX):
            log.info("call", extra={"method": method, "code": code, "ms": round(seconds * 1000, 3)})

    grpc_server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"),
        interceptors=[ErrorInterceptor(observe)],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            # On by default in gRPC on Linux: explicit both ways.
            ("grpc.so_reuseport", 1 if share_port else 0),
        ],
    )
    pixels_pb2_grpc.add_PixelServiceServicer_to_server(PixelServicer(core), grpc_server)
    custom_conversions_pb2_grpc.add_CustomConversionServiceServicer_to_server(CustomConversionServicer(core), grpc_server)
    ads_pb2_grpc.add_AdServiceServicer_to_server(AdServicer(core), grpc_server)
    classification_pb2_grpc.add_ClassificationServiceServicer_to_server(ClassificationServicer(core), grpc_server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), grpc_server)
    try:
        port = grpc_server.add_insecure_port(addr)  # gRPC answers 0 or raises, depending on its version
    except RuntimeError:
        port = 0
    if port == 0:
        store.close()
        raise OSError(f"cannot bind {addr} (in use, or not an address of this host)")
    if metrics_port is not None:
        metrics.serve_http(metrics_port)
    log.info(
        "loaded",
        extra={"rules": registry.snapshot.rule_count, "ads": len(registry.snapshot.ad_specs), "db": str(db_path)},
    )
    server = Server(grpc_server, core, health_servicer)
    server.sync_interval = sync_interval
    return server, port
