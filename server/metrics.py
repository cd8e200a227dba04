"""Prometheus metrics: request counts and latencies, events classified, rules loaded.

Each :class:`Metrics` has its own registry so several servers (tests) can live in one
process; ``serve_http`` exposes it on a separate port for scraping.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.port: int | None = None  # the /metrics HTTP port once serving
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cm_requests", "gRPC requests handled, by method and status code", ["method", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "cm_request_seconds",
            "gRPC request latency by method (streams: whole stream)",
            ["method"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.events = Counter(
            "cm_events_classified", "Pixel events and actions classified", ["kind"], registry=self.registry
        )
        self.rules = Gauge("cm_rules_loaded", "Custom conversion rules compiled for classification", registry=self.registry)
        self.ads = Gauge("cm_ads_loaded", "Ads whose specs are compiled for classification", registry=self.registry)
        self.change_position = Gauge(
            "cm_change_log_position", "Change-log seq this process's snapshot reflects (equal across processes when in step)",
            registry=self.registry,
        )
        self.reloads = Gauge(
            "cm_change_log_reloads", "Full reloads since start (the change log was pruned past this process, or a change "
            "could not be applied incrementally)", registry=self.registry,
        )

    def follow_registry(self, registry) -> None:
        """Export the registry's change-log position and reload count (read at scrape time)."""
        self.change_position.set_function(lambda: registry.position)
        self.reloads.set_function(lambda: registry.reloads)

    def observe_snapshot(self, snapshot) -> None:
        """Registry listener: the gauges follow every published snapshot."""
        self.rules.set(snapshot.rule_count)
        self.ads.set(len(snapshot.ad_specs))

    def serve_http(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on ``addr:port`` (0 picks a port); returns the port."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._http = server
        self.port = server.server_address[1]
        return self.port

    def close(self) -> None:
        http = getattr(self, "_http", None)
        if http is not None:
            http.shutdown()
            http.server_close()
