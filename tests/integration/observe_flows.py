"""Workflows of the observability tests, and what their processes are set up with.

``span_processor`` is what ``RAYLINE_OTEL_EXPORTER`` names in the hosts and activity
workers of a test's job: finished spans go, one JSON object a line, to a file of the
process under ``$OBSERVE_SPANS`` (written at once: a host killed later loses none).
``log_to_files`` is the job's ``worker_process_setup_hook``: it sends the ``rayline``
workflow and activity loggers' records, as JSON lines, to a file of the process under
``$OBSERVE_LOGS``. The test reads both folders.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import rayline
from rayline import workflow


@rayline.activity
def step_act(step: int) -> int:
    """One step; its own span (the user's code) goes under the attempt's."""
    rayline.activity_logger.info("working on step %d", step)
    try:
        from opentelemetry import trace
    except ImportError:
        return step * 10
    with trace.get_tracer("tests.observe").start_as_current_span("user work") as span:
        span.set_attribute("step", step)
    return step * 10


@rayline.workflow
async def child_flow(n: int) -> int:
    workflow.logger.info("child got %d", n)
    return n + 1


@rayline.workflow
async def three_steps(wait: bool, child: bool) -> int:
    """Three activities, a log line after each; with ``wait``, a wait for signal ``go``
    after the second (the test kills the host there); with ``child``, a timer and a
    child workflow at the end."""
    done = 0
    workflow.set_query_handler("done", lambda: done)
    total = 0
    for step in (1, 2, 3):
        total += await workflow.execute_activity(step_act, step)
        done = step
        workflow.logger.info("step %d done", step)
        if wait and step == 2:
            await workflow.condition("go")
    if child:
        await workflow.sleep(0.1)
        total += await workflow.execute_child(child_flow, total)
    return total


# ------------------------------------------------------------- spans and logs


def _file(env: str, kind: str) -> str:
    return os.path.join(os.environ[env], f"{kind}-{os.getpid()}.jsonl")


class JsonLinesExporter:
    """An OpenTelemetry ``SpanExporter`` that appends each span to this process's file."""

    def __init__(self) -> None:
        self.path = _file("OBSERVE_SPANS", "spans")

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        with open(self.path, "a") as out:
            for span in spans:
                context, parent = span.get_span_context(), span.parent
                out.write(json.dumps({
                    "name": span.name, "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                    "attributes": dict(span.attributes or {}), "start": span.start_time,
                    "end": span.end_time, "pid": os.getpid()}) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_processor() -> Any:
    """``RAYLINE_OTEL_EXPORTER=tests.integration.observe_flows:span_processor``."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    return SimpleSpanProcessor(JsonLinesExporter())  # type: ignore[arg-type]


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"logger": record.name, "message": record.getMessage(),
                           "workflow_id": getattr(record, "workflow_id", None),
                           "run_id": getattr(record, "run_id", None),
                           "step": getattr(record, "step", None),
                           "attempt": getattr(record, "attempt", None), "pid": os.getpid()})


def log_to_files() -> None:
    """The job's ``worker_process_setup_hook``: rayline's loggers to this process's file."""
    if "OBSERVE_LOGS" not in os.environ:
        return
    handler = logging.FileHandler(_file("OBSERVE_LOGS", "log"))
    handler.setFormatter(_JsonLines())
    for name in ("rayline.workflow", "rayline.activity"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
