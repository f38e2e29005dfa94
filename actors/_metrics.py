"""Each host's numbers in Ray's metrics: what ``rayline status`` shows, for Prometheus.

Ray's metrics agent on every node serves them at its metrics export port with a ``ray_``
prefix (``ray_rayline_host_runs{host=..., state="parked"}``), beside Ray's own; the host
sets them every ``RAYLINE_METRICS_EVERY`` seconds (default 5) from its ``HostStats``, and
hands over then what its ``MetricsBuffer`` gathered (runs by workflow, activity attempts,
steps, storage calls, signals, replays and wakes: ``rayline.engine.metrics``), so that
no step pays for Ray's metrics calls. docs/operations.md lists every metric.
"""

from __future__ import annotations

import os
from typing import Any

from ray.util import metrics

from rayline.engine.metrics import MetricsReport
from rayline.messages import HostStats

METRICS_EVERY = float(os.environ.get("RAYLINE_METRICS_EVERY", "5"))
"""Seconds between two updates of a host's metrics."""

QUICK = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
         10.0, 30.0]
"""Bucket bounds (seconds) of the host's own work: steps, storage calls, signals, replays."""
LONG = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        900.0, 3600.0, 14400.0]
"""Bucket bounds (seconds) of activity attempts, which may run for hours."""


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

        def histogram(name: str, description: str, bounds: list[float], *more: str) -> Any:
            metric = metrics.Histogram(name, description=description, boundaries=bounds,
                                       tag_keys=(*keys, *more))
            metric.set_default_tags(tags)
            return metric

        self.workflows_started = made(metrics.Counter, "rayline_workflow_started",
                                      "Runs started, by workflow name", "workflow_name")
        self.workflows_closed = made(metrics.Counter, "rayline_workflow_closed",
                                     "Runs closed, by workflow name and status",
                                     "workflow_name", "status")
        self.activity_seconds = histogram(
            "rayline_activity_seconds", "Activity attempts and how long each took, by "
            "activity and outcome (ok, failed, cancelled)", LONG, "activity", "outcome")
        self.activity_failures = made(metrics.Counter, "rayline_activity_failures",
                                      "Activity attempts that failed or timed out, by "
                                      "activity", "activity")
        self.step_seconds = histogram(
            "rayline_step_seconds", "Steps: from an event reaching its run to its batch "
            "being durable (phase=durable) and its commands carried out (phase=acted)",
            QUICK, "phase")
        self.storage_seconds = histogram("rayline_storage_seconds",
                                         "Storage calls and their latency, by operation",
                                         QUICK, "op")
        self.storage_errors = made(metrics.Counter, "rayline_storage_errors",
                                   "Storage calls that failed, by operation", "op")
        self.signal_seconds = histogram(
            "rayline_signal_seconds", "Signals: from reaching the host to durable in the "
            "run's timeline", QUICK)
        self.replay_seconds = histogram("rayline_replay_seconds",
                                        "Replays of a run's timeline (recovery, wake, move)",
                                        QUICK)
        self.wake_seconds = histogram("rayline_wake_seconds",
                                      "Parked runs brought back: timeline read and replayed",
                                      QUICK)
        self.dropped = made(metrics.Counter, "rayline_metric_samples_dropped",
                            "Latency samples not kept (more than a report holds)")

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

    def send(self, report: MetricsReport) -> None:
        """Hands what a ``MetricsBuffer`` gathered to Ray's metrics, in one go."""
        for name, count in report.started.items():
            self.workflows_started.inc(count, tags={"workflow_name": name})
        for (name, status), count in report.closed.items():
            self.workflows_closed.inc(count, tags={"workflow_name": name, "status": status})
        for outcome, by_activity in report.attempts.items():
            for activity, samples in by_activity.items():
                _observe(self.activity_seconds, samples,
                         {"activity": activity, "outcome": outcome})
                if outcome == "failed" and samples:
                    self.activity_failures.inc(len(samples), tags={"activity": activity})
        _observe(self.step_seconds, report.durable, {"phase": "durable"})
        _observe(self.step_seconds, report.acted, {"phase": "acted"})
        for op, samples in report.storage.items():
            _observe(self.storage_seconds, samples, {"op": op})
        for op, count in report.storage_errors.items():
            self.storage_errors.inc(count, tags={"op": op})
        _observe(self.signal_seconds, report.signals, None)
        _observe(self.replay_seconds, report.replays, None)
        _observe(self.wake_seconds, report.wakes, None)
        if report.dropped:
            self.dropped.inc(report.dropped)


def _observe(histogram: Any, samples: list[float], tags: dict[str, str] | None) -> None:
    observe = histogram.observe
    for value in samples:
        observe(value, tags)
