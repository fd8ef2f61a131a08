"""The server's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eventvault.projections import ProjectionStatus

__all__ = ["Metrics"]


class Metrics:
    """Prometheus metrics of one server (its own registry, so tests can make many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "eventvault_commands", "Commands handled", ["command", "outcome"], registry=self.registry
        )
        self.command_seconds = Histogram(
            "eventvault_command_seconds",
            "Command latency",
            ["command"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.appends = Counter("eventvault_appends", "Appends to the event store", registry=self.registry)
        self.requests = Histogram(
            "eventvault_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.lag_events = Gauge(
            "eventvault_projection_lag_events",
            "Events not yet applied",
            ["projection"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "eventvault_projection_lag_seconds",
            "Age of the oldest event not yet applied",
            ["projection"],
            registry=self.registry,
        )
        self.rate = Gauge(
            "eventvault_projection_events_per_second",
            "Events applied per second",
            ["projection"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.failed = Gauge(
            "eventvault_projection_failed",
            "1 if the projection stopped on an error",
            ["projection"],
            registry=self.registry,
        )
        self.pending_events = Gauge(
            "eventvault_store_pending_events",
            "Committed events no reader can see yet: an event writer is still open (PostgreSQL)",
            registry=self.registry,
        )
        self.holder_seconds = Gauge(
            "eventvault_store_horizon_holder_seconds",
            "How long the event writer holding readers back has been open (0: none)",
            registry=self.registry,
        )

    def command(self, command: str, outcome: str, seconds: float) -> None:
        """Count a command and its latency."""
        children = self._children.get((command, outcome))
        if children is None:
            # labels() takes a lock and builds its key on every call: look each pair up once.
            children = self._children[command, outcome] = (
                self.commands.labels(command, outcome),
                self.command_seconds.labels(command),
            )
        children[0].inc()
        children[1].observe(seconds)
        if outcome == "ok":
            self.appends.inc()

    def projections(self, statuses: list[ProjectionStatus]) -> None:
        """Refresh the projection gauges."""
        for s in statuses:
            self.lag_events.labels(s.name).set(s.lag_events)
            self.lag_seconds.labels(s.name).set(s.lag_seconds)
            self.rate.labels(s.name).set(s.events_per_second or 0.0)
            self.failed.labels(s.name).set(1 if s.state == "failed" else 0)
        held = next((s.held_back for s in statuses if s.held_back is not None), None)
        self.pending_events.set(held.pending_events if held else 0)
        self.holder_seconds.set((held.oldest_xact_seconds or 0.0) if held else 0.0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
