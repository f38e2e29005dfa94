"""Optional OpenTelemetry spans (``pip install 'rayline[otel]'``).

Tracing is off unless a process sets ``RAYLINE_OTEL_EXPORTER=module:function`` (in the
cluster's environment, or a job's ``runtime_env`` ``env_vars``, which hosts and their
activities inherit) or calls :func:`configure`. ``function()`` returns an OpenTelemetry
``SpanExporter`` (sent in batches by a ``BatchSpanProcessor``) or a ``SpanProcessor``
(used as it is). rayline builds a ``TracerProvider`` on it, which also becomes the
process's global provider when none was set, so spans made by an activity's own code go
to the same place. A host reads the variable when its first run needs a span, an activity
worker when an attempt carries a trace context. Without the ``opentelemetry`` packages
nothing here imports them and every function is a no-op returning ``None``.

Spans (see docs/operations.md):
- ``workflow <name>``: one per run, from its start to its close, emitted by the host that
  writes the close (never for a run found closed when it is replayed). Its parent is the
  context the start carried: the client's current span, or a child run's parent run span.
  That context is recorded in the run record (``WorkflowStarted.trace``), so the host that
  recovers a run continues its trace.
- ``activity <name>``: one per attempt, under its run's span, made by the host around
  the attempt; the worker runs the activity with that span as its current context, so
  spans the activity's code makes are its children.
- ``timer``: one per timer that fires, under its run's span, from when it was set.
- Nothing is emitted while a run replays: replay runs no activity and arms no timer that
  fired already, and a run's span comes from its close, which replay does not repeat.

Invariant: a run's span id is derived from its run id (and its trace id too when the
start carried no context), so every host that holds the run, before and after a crash,
hangs activity spans under the same parent; rayline's provider gives that planned id to
the run's span when it is emitted (``_PlannedIds``).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .messages import RunOutcome
    from .timeline import WorkflowStarted

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator: Any = TraceContextTextMapPropagator()
except ImportError:  # the otel extra is not installed: tracing stays off
    otel_trace = None  # type: ignore[assignment]

log = logging.getLogger("rayline.tracing")

EXPORTER_ENV = "RAYLINE_OTEL_EXPORTER"
"""``module:function`` giving the span exporter (or processor) of this process."""

Carrier = dict[str, str]
"""A W3C trace context (``traceparent``, maybe ``tracestate``), as starts carry it."""

_NOOP: AbstractContextManager[None] = nullcontext()


class _State:
    read_env = False
    tracer: Any = None
    provider: Any = None


_state = _State()
_planned = threading.local()


def enabled() -> bool:
    """Whether this process emits spans (reads ``RAYLINE_OTEL_EXPORTER`` once)."""
    return _tracer() is not None


def _tracer() -> Any:
    if not _state.read_env:
        _state.read_env = True
        if otel_trace is not None and os.environ.get(EXPORTER_ENV):
            try:
                configure()
            except Exception:  # a bad setting must not stop a host: it runs untraced
                log.exception("tracing is off: %s=%s could not be used", EXPORTER_ENV,
                              os.environ.get(EXPORTER_ENV))
    return _state.tracer


def configure(exporter: Any = None) -> bool:
    """Turns tracing on in this process; returns whether it is on.

    Args:
        exporter: an OpenTelemetry ``SpanExporter`` (batched) or ``SpanProcessor``; by
            default what ``RAYLINE_OTEL_EXPORTER=module:function`` makes (unset: off).

    Raises:
        ImportError: the ``opentelemetry`` packages are missing (``rayline[otel]``).
    """
    _state.read_env = True
    if exporter is None:
        spec = os.environ.get(EXPORTER_ENV)
        if not spec:
            return False
        module, _, function = spec.partition(":")
        exporter = getattr(importlib.import_module(module), function or "exporter")()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    processor = exporter if isinstance(exporter, SpanProcessor) else \
        BatchSpanProcessor(exporter)
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                 "rayline")}),
        id_generator=_planned_ids())
    provider.add_span_processor(processor)
    if isinstance(otel_trace.get_tracer_provider(), otel_trace.ProxyTracerProvider):
        otel_trace.set_tracer_provider(provider)  # the activity's own spans go there too
    _state.provider = provider
    _state.tracer = provider.get_tracer("rayline")
    return True


def shutdown() -> None:
    """Sends what is still buffered and turns tracing off in this process."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def _planned_ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class _PlannedIds(IdGenerator):
        """Random ids, except the ones planned for the next span made on this thread."""

        def __init__(self) -> None:
            self.random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            planned = getattr(_planned, "span", None)
            if planned is not None:
                _planned.span = None
                return int(planned)
            return self.random.generate_span_id()

        def generate_trace_id(self) -> int:
            planned = getattr(_planned, "trace", None)
            if planned is not None:
                _planned.trace = None
                return int(planned)
            return self.random.generate_trace_id()

    return _PlannedIds()


# ---------------------------------------------------------------- contexts


def carrier() -> Carrier | None:
    """The caller's current trace context, for a start to carry (``None``: none)."""
    if otel_trace is None or not otel_trace.get_current_span().get_span_context().is_valid:
        return None
    found: Carrier = {}
    _propagator.inject(found)
    return found or None


def _derived(run_id: str, size: int) -> int:
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=size,
                                          person=b"rayline-span").digest(), "big") or 1


def _run_context(started: WorkflowStarted) -> Any:
    """The span context of the run's span (planned ids), as its children's parent."""
    parent = _parent_context(started)
    parent_span = otel_trace.get_current_span(parent).get_span_context()
    trace_id = parent_span.trace_id if parent_span.is_valid else _derived(started.run_id, 16)
    flags = parent_span.trace_flags if parent_span.is_valid else \
        otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED)
    return otel_trace.SpanContext(trace_id, _derived(started.run_id, 8), is_remote=True,
                                  trace_flags=flags)


def _parent_context(started: WorkflowStarted) -> Any:
    return _propagator.extract(started.trace) if started.trace else otel_context.Context()


def _under_run(started: WorkflowStarted) -> Any:
    return otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(_run_context(started)))


def child_carrier(started: WorkflowStarted) -> Carrier | None:
    """The context a child of this run carries: the run's span (``None`` when off)."""
    if _tracer() is None:
        return None
    found: Carrier = {}
    _propagator.inject(found, context=_under_run(started))
    return found


def attached(trace: Carrier | None) -> AbstractContextManager[Any]:
    """Runs the block (an activity attempt) in the context ``trace`` names."""
    if trace is None or otel_trace is None:
        return _NOOP
    _tracer()  # this worker's own spans go where the host's do
    return _Attached(_propagator.extract(trace))


class _Attached:
    def __init__(self, context: Any) -> None:
        self.context = context

    def __enter__(self) -> None:
        self.token = otel_context.attach(self.context)

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self.token)


# ------------------------------------------------------------------- spans


def _attributes(started: WorkflowStarted) -> dict[str, Any]:
    return {"rayline.workflow_id": started.workflow_id, "rayline.run_id": started.run_id,
            "rayline.workflow_name": started.workflow_name,
            "rayline.task_queue": started.task_queue}


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def activity_span(started: WorkflowStarted, activity: str, seq: int, attempt: int) -> Any:
    """Starts the span of an activity attempt (``None`` when tracing is off)."""
    tracer = _tracer()
    if tracer is None:
        return None
    attributes = _attributes(started)
    attributes.update({"rayline.activity": activity, "rayline.seq": seq,
                       "rayline.attempt": attempt})
    return tracer.start_span(f"activity {activity}", context=_under_run(started),
                             attributes=attributes)


def carrier_of(span: Any) -> Carrier | None:
    """The context an attempt carries to its worker: its span's."""
    if span is None:
        return None
    found: Carrier = {}
    _propagator.inject(found, context=otel_trace.set_span_in_context(span))
    return found


def end_activity(span: Any, outcome: str) -> None:
    """Ends an attempt's span: ``ok``, ``failed`` or ``cancelled``."""
    if span is None:
        return
    span.set_attribute("rayline.outcome", outcome)
    if outcome != "ok":
        span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, outcome))
    span.end()


def timer_fired(started: WorkflowStarted, seq: int, set_at: float, fired_at: float) -> None:
    """Emits the span of a timer that fired (no-op when tracing is off)."""
    tracer = _tracer()
    if tracer is None:
        return
    attributes = _attributes(started)
    attributes["rayline.seq"] = seq
    span = tracer.start_span("timer", context=_under_run(started), attributes=attributes,
                             start_time=_ns(set_at))
    span.end(end_time=_ns(max(set_at, fired_at)))


def run_closed(started: WorkflowStarted, outcome: RunOutcome) -> None:
    """Emits the span of a run that has just closed (no-op when tracing is off)."""
    tracer = _tracer()
    if tracer is None:
        return
    planned = _run_context(started)
    attributes = _attributes(started)
    attributes.update({"rayline.status": outcome.status.value,
                       "rayline.attempt": started.attempt})
    _planned.trace, _planned.span = planned.trace_id, planned.span_id
    try:
        span = tracer.start_span(f"workflow {started.workflow_name}",
                                 context=_parent_context(started), attributes=attributes,
                                 start_time=_ns(started.time))
    finally:
        _planned.trace = _planned.span = None
    if outcome.code < 0:
        span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, outcome.status.value))
    span.end(end_time=_ns(max(started.time, outcome.time)))
