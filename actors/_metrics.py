"""Each host's numbers in Ray's metrics: what ``rayline status`` shows, for Prometheus.

Ray's metrics agent on every node serves them at its metrics export port with a ``ray_``
prefix (``ray_rayline_host_runs{host=..., state="parked"}``), beside Ray's own; the host
sets them every ``RAYLINE_METRICS_EVERY`` seconds (default 5) from its ``HostStats``.
"""

from __future__ import annotations

import os
from typing import Any

from ray.util import metrics

from rayline.messages import HostStats

METRICS_EVERY = float(os.environ.get("RAYLINE_METRICS_EVERY", "5"))
"""Seconds between two updates of a host's metrics."""


class HostMetrics:
    """The gauges and counters of one host, tagged with its name and code version."""

    def __init__(self, host: str, version: str | None) -> None:
        tags = {"host": host, "version": version or ""}
        keys = ("host", "version")

        def made(kind: Any, name: str, description: str, *more: str) -> Any:
            metric = kind(name, description=description, tag_keys=(*keys, *more))
            metric.set_default_tags(tags)
            return metric

        self.runs = made(metrics.Gauge, "rayline_host_runs",
                         "Runs on the host: live (in memory), parked, stuck", "state")
        self.load = made(metrics.Gauge, "rayline_host_load",
                         "Share of time the host's event loop was busy (0 to 1)")
        self.draining = made(metrics.Gauge, "rayline_host_draining",
                             "1 while the host is being emptied")
        self.started = made(metrics.Counter, "rayline_runs_started",
                            "Runs started on the host")
        self.closed = made(metrics.Counter, "rayline_runs_closed",
                           "Runs closed on the host, by status", "status")
        self.attempts = made(metrics.Counter, "rayline_activity_attempts",
                             "Activity attempts made by the host's runs (retries count)")
        self.adopted = made(metrics.Counter, "rayline_runs_adopted",
                            "Runs moved to the host from another one")
        self._last = HostStats(host=host)

    def record(self, stats: HostStats) -> None:
        """Sets the gauges and adds to the counters what happened since the last call."""
        for state, count in (("live", stats.running), ("parked", stats.parked),
                             ("stuck", stats.stuck)):
            self.runs.set(count, tags={"state": state})
        self.load.set(stats.load)
        self.draining.set(1 if stats.draining else 0)
        last = self._last
        for counter, now, before in ((self.started, stats.started, last.started),
                                     (self.attempts, stats.attempts, last.attempts),
                                     (self.adopted, stats.adopted, last.adopted)):
            if now > before:
                counter.inc(now - before)
        for status, count in stats.closed.items():
            if count > last.closed.get(status, 0):
                self.closed.inc(count - last.closed.get(status, 0), tags={"status": status})
        self._last = stats
