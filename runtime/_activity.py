"""Activities: the steps a workflow runs outside itself, as Ray tasks.

``@rayline.activity`` marks a function (sync or async) as an activity and stores its
default options; ``workflow.proxy_activities`` and ``workflow.execute_activity`` call it
durably. Inside a running activity, :func:`info` tells which workflow and attempt it
belongs to; ``info().idempotency_key`` is stable across retries and recoveries.
:func:`heartbeat` tells the workflow's host the activity is alive (and what it has done
so far, for the next attempt); it raises ``ActivityCancelledError`` once the attempt is
cancelled (its workflow cancelled or terminated, or the attempt timed out).
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass
from typing import Any, Callable, Generic, ParamSpec, TypeVar, overload

from ._options import ActivityOptions
from ._serde import import_path
from .errors import ActivityCancelledError

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ActivityInfo:
    """Where a running activity comes from."""

    workflow_id: str
    run_id: str
    activity: str
    seq: int
    attempt: int
    heartbeat_details: Any = None
    """What the last attempt of this call passed to ``heartbeat`` (``None`` if nothing):
    a retried attempt resumes from there (a training step, a file offset)."""
    host: str | None = None
    """The host the workflow runs on (where heartbeats go)."""
    trace: dict[str, str] | None = None
    """The attempt's OpenTelemetry span context (W3C ``traceparent``), when the host
    traces: the activity runs with it as its current context (``rayline._tracing``)."""

    def is_cancelled(self) -> bool:
        """Whether this attempt has been cancelled, as of its last ``heartbeat``."""
        return self._attempt in _cancelled

    @property
    def _attempt(self) -> tuple[str, str, int, int]:
        return (self.workflow_id, self.run_id, self.seq, self.attempt)

    @property
    def idempotency_key(self) -> str:
        """Same for every attempt and every replay of this one call, and different for
        every other call: workflow id, run id and marker (a run that continues as new
        calls its activities again under new keys)."""
        return f"{self.workflow_id}:{self.run_id}:-proxy-{self.seq}-"


_current: contextvars.ContextVar[ActivityInfo | None] = contextvars.ContextVar(
    "rayline_activity", default=None
)
Beat = Callable[[ActivityInfo, Any], bool]
"""Sends a heartbeat (info, details) to the host; whether the attempt was cancelled."""
_beat: contextvars.ContextVar[Beat | None] = contextvars.ContextVar(
    "rayline_heartbeat", default=None)
_cancelled: set[tuple[str, str, int, int]] = set()
"""Attempts in this process told they are cancelled (``ActivityInfo.is_cancelled``)."""


def heartbeat(details: Any = None) -> None:
    """Tells the workflow's host this activity attempt is alive, with ``details`` of its
    progress (kept by the host: the next attempt reads them as
    ``activity_info().heartbeat_details``; ``describe()`` shows them). An attempt with a
    ``heartbeat_timeout`` that stays silent longer than that is stopped and retried.
    Cheap: it does not wait for the host.

    Raises:
        ActivityCancelledError: the attempt was cancelled; clean up and return or raise.
        LookupError: called outside an activity.
    """
    current = info()
    beat = _beat.get()
    if beat is not None and beat(current, details):
        _cancelled.add(current._attempt)
    if current.is_cancelled():
        raise ActivityCancelledError(
            f"activity {current.activity} (call {current.seq}, attempt {current.attempt}) "
            f"of workflow {current.workflow_id} was cancelled")


def info() -> ActivityInfo:
    """The running activity's info; raises ``LookupError`` outside an activity."""
    current = _current.get()
    if current is None:
        raise LookupError("rayline.activity_info() called outside an activity")
    return current


class ActivityDefinition(Generic[P, R]):
    """A function marked with ``@rayline.activity``; calling it runs the function directly."""

    def __init__(self, fn: Callable[P, R], name: str, options: ActivityOptions) -> None:
        self.fn = fn
        self.name = name
        self.defaults = options
        self.code = import_path(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def options(self, **options: Any) -> ActivityDefinition[P, R]:
        """A copy with these options layered over the defaults (as Ray's ``.options``)."""
        merged = self.defaults.merged(ActivityOptions.build(**options))
        return ActivityDefinition(self.fn, self.name, merged)

    def __repr__(self) -> str:
        return f"<activity {self.name}>"


class ActivityDecorator:
    """What ``@rayline.activity(...)`` with options returns: the decorator proper."""

    def __init__(self, name: str | None, options: ActivityOptions) -> None:
        self._name = name
        self._options = options

    def __call__(self, fn: Callable[P, R], /) -> ActivityDefinition[P, R]:
        target: Callable[P, R] = fn.fn if isinstance(fn, ActivityDefinition) else fn
        return ActivityDefinition(target, self._name or target.__name__, self._options)


@overload
def activity(fn: Callable[P, R], /) -> ActivityDefinition[P, R]: ...
@overload
def activity(*, name: str | None = None, **options: Any) -> ActivityDecorator: ...
def activity(fn: Callable[P, R] | None = None, /, *, name: str | None = None,
             **options: Any) -> ActivityDefinition[P, R] | ActivityDecorator:
    """Marks a function as an activity; the definition keeps its signature, so
    ``workflow.execute_activity(defn, *args)`` is checked by type checkers.

    Use bare (``@rayline.activity``) or with options (``@rayline.activity(num_gpus=1,
    retry=RetryPolicy(maximum_attempts=5), start_to_close="10m", local=True)``). Any Ray
    task resource option is accepted.
    """
    decorator = ActivityDecorator(name, ActivityOptions.build(**options))
    return decorator(fn) if fn is not None else decorator


def as_activity(fn: Any) -> ActivityDefinition[Any, Any]:
    """The definition for ``fn``; a plain function becomes an activity with defaults."""
    if isinstance(fn, ActivityDefinition):
        return fn
    if callable(fn):
        return ActivityDefinition(fn, fn.__name__, ActivityOptions())
    raise TypeError(f"not an activity: {fn!r}")
