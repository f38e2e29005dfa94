"""Failures: exception -> stored ``Failure`` -> exception, in one place.

A ``Failure`` (``rayline.timeline``) is how an error is stored in a timeline and sent
between processes: its type's qualified name, message, stack, status code and kind, and
the failure it was raised from (``cause``), so a chain survives storage. The status
codes are HotMesh's: 500 an error, 410 terminated, 499 cancelled, 596 timed out, 597
retries exhausted, 598 fatal (never retried).
"""

from __future__ import annotations

import traceback
from typing import Any, Literal

from .errors import (
    ActivityError,
    CancelledFailure,
    ChildWorkflowError,
    MaxedError,
    TimeoutFailure,
    UpdateFailedError,
    WorkflowFailedError,
    WorkflowTerminatedError,
)
from .timeline import Failure

ERROR = 500
TERMINATED = 410
CANCELLED = 499
TIMED_OUT = 596
MAXED = 597
FATAL = 598

Kind = Literal["error", "maxed", "timeout", "fatal", "cancelled", "terminated"]
_CAUSES = 8  # how deep a chain of causes is kept


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def failure_from(exc: BaseException, *, kind: Kind = "error", depth: int = 0) -> Failure:
    """A storable ``Failure`` for ``exc``: type, message, stack, code, and its cause."""
    code = getattr(exc, "code", ERROR)
    stack = getattr(exc, "stack", "") or "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, CancelledFailure):
        kind = "cancelled"
    cause = exc.__cause__
    return Failure(
        type=qualified_name(type(exc)), message=str(exc), stack=stack,
        code=code if isinstance(code, int) else ERROR, kind=kind,
        activity=getattr(exc, "activity", "") or "", attempt=getattr(exc, "attempt", 1) or 1,
        cause=failure_from(cause, depth=depth + 1)
        if cause is not None and depth < _CAUSES else None,
    )


def attempt_failure(exc: BaseException, *, fatal: bool) -> dict[str, Any]:
    """What one activity attempt reports when it raised (plain data: it crosses Ray)."""
    return {"type": qualified_name(type(exc)), "message": str(exc),
            "stack": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            "fatal": fatal}


def activity_failure(reported: dict[str, Any], *, activity: str, attempt: int, kind: Kind,
                     code: int) -> Failure:
    """The recorded failure of an activity call, from its last attempt's report."""
    return Failure(type=reported["type"], message=reported["message"],
                   stack=reported.get("stack", ""), kind=kind, code=code, activity=activity,
                   attempt=attempt)


def terminated(reason: str | None) -> Failure:
    return Failure(type=qualified_name(WorkflowTerminatedError),
                   message=reason or "workflow terminated", code=TERMINATED, kind="terminated")


def _chain(error: BaseException, failure: Failure) -> BaseException:
    if failure.cause is not None:
        error.__cause__ = workflow_error(failure.cause)
    return error


def activity_error(failure: Failure) -> ActivityError:
    """The error a workflow sees at the await of an activity that failed."""
    cls = {"maxed": MaxedError, "timeout": TimeoutFailure}.get(failure.kind, ActivityError)
    error = cls(failure.message, activity=failure.activity, cause_type=failure.type,
                stack=failure.stack, attempt=failure.attempt, code=failure.code)
    _chain(error, failure)
    return error


def workflow_error(failure: Failure) -> BaseException:
    """The error a caller sees for a failed, cancelled or terminated workflow (a child's
    parent, or ``result()``); a cancelled one is a ``CancelledFailure``'s consequence."""
    if failure.kind == "terminated":
        return _chain(WorkflowTerminatedError(failure.message, stack=failure.stack), failure)
    return _chain(WorkflowFailedError(failure.message, cause_type=failure.type,
                                      code=failure.code, stack=failure.stack), failure)


def update_error(failure: Failure) -> BaseException:
    """What the caller of an update whose handler raised gets."""
    error = UpdateFailedError(f"update failed: {failure.message}", cause_type=failure.type,
                              stack=failure.stack)
    error.__cause__ = workflow_error(failure)
    return error


def child_error(failure: Failure, workflow_id: str | None = None) -> BaseException:
    """What a parent sees at the await of a child (given its ``workflow_id``) or of an
    external call that failed: a cancelled child is the parent's ``CancelledFailure``;
    any other end of a child a ``ChildWorkflowError`` caused by the child's own error."""
    if failure.kind == "cancelled":
        return CancelledFailure(failure.message)
    if workflow_id is None:
        return workflow_error(failure)
    error = ChildWorkflowError(failure.message, workflow_id=workflow_id,
                               cause_type=failure.type, code=failure.code,
                               stack=failure.stack)
    error.__cause__ = workflow_error(failure)
    return error
