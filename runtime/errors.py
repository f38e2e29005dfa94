"""The rayline error hierarchy.

Everything rayline raises on purpose descends from one of two roots::

    RaylineError (Exception)
    ├── InvalidInputError (also ValueError)   bad ids, options, durations, arguments
    │   └── SerializationError                a value that cannot be stored
    ├── WorkflowNotFoundError
    │   └── ScheduleNotFoundError
    ├── DuplicateWorkflowError
    │   └── ScheduleAlreadyExistsError
    ├── WorkflowClosedError                   signal/terminate to a finished workflow
    ├── NotHereError                          the run is not on the host asked: look again
    │   └── HostDiedError                     its host died while handling the call
    ├── WorkflowFailedError                   result() of a failed workflow (cause, code, stack)
    │   ├── WorkflowTerminatedError           code 410
    │   └── ChildWorkflowError                a child failed, was terminated or timed out
    ├── UpdateRejectedError                   an update's validator or a missing handler refused it
    ├── UpdateFailedError                     an update's handler raised (the workflow goes on)
    ├── ActivityError                         an activity failed (type, message, stack)
    │   ├── MaxedError                        retries exhausted, code 597
    │   └── TimeoutFailure                    an activity or wait timed out, code 596
    ├── FatalError                            raise in an activity: never retried, code 598
    ├── NonDeterminismError                   replay disagrees with the timeline
    ├── DeadlockError                         workflow code blocked its host's event loop
    ├── NonDeterministicCallError             a strict run's code called time, random, I/O
    ├── QuarantinedError                      the run crashed its host; held until released
    ├── QueryError                            a query handler is missing or raised
    └── StorageError
        ├── ConflictError                     another owner wrote the run (fencing)
        ├── CorruptTimelineError              a torn or foreign timeline object
        ├── IncompatibleTimelineError         written by a newer rayline: upgrade to read it
        ├── IntegrityError                    an object's MAC fails (altered, or another key)
        └── CodecError                        no key for an object, or codecs that disagree

    ControlFlow (BaseException): cannot be swallowed by ``except Exception``
    ├── CancelledFailure                      the workflow was cancelled
    └── ContinueAsNew                         raised by workflow.continue_as_new()

Every class survives pickling with its fields (Ray pickles exceptions between
processes), through one ``__reduce__`` on the mixin below.
"""

from __future__ import annotations

import threading
from typing import Any


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class _Picklable:
    """Pickles an error as (class, args, fields) without calling ``__init__``."""

    def __reduce__(self) -> Any:
        assert isinstance(self, BaseException)
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class RaylineError(_Picklable, Exception):
    """Root of every error rayline raises on purpose."""

    code: int = 500


class InvalidInputError(RaylineError, ValueError):
    """An id, option, duration or argument that rayline cannot accept."""

    code = 400


class SerializationError(InvalidInputError):
    """A value could not be serialised for storage."""


class WorkflowNotFoundError(RaylineError):
    """No workflow with this id exists in the namespace."""

    code = 404

    def __init__(self, workflow_id: str, detail: str = "") -> None:
        super().__init__(f"workflow {workflow_id!r} not found" + (f": {detail}" if detail else ""))
        self.workflow_id = workflow_id


SCHEDULE_PREFIX = "rayline:schedule:"
"""A schedule's workflow id is this and its schedule id (``rayline.schedules``)."""


class ScheduleNotFoundError(WorkflowNotFoundError):
    """No running schedule has this id (never created, or deleted)."""

    def __init__(self, schedule_id: str, detail: str = "") -> None:
        RaylineError.__init__(self, f"schedule {schedule_id!r} not found"
                              + (f": {detail}" if detail else ""))
        self.workflow_id = SCHEDULE_PREFIX + schedule_id
        self.schedule_id = schedule_id


class DuplicateWorkflowError(RaylineError):
    """A workflow with this id exists and the id reuse policy forbids another run."""

    code = 409

    def __init__(self, workflow_id: str, detail: str = "") -> None:
        super().__init__(
            f"workflow {workflow_id!r} already exists" + (f" ({detail})" if detail else "")
        )
        self.workflow_id = workflow_id


class ScheduleAlreadyExistsError(DuplicateWorkflowError):
    """``client.schedule.create`` of a schedule id whose schedule is running."""

    def __init__(self, schedule_id: str) -> None:
        RaylineError.__init__(self, f"schedule {schedule_id!r} already exists")
        self.workflow_id = SCHEDULE_PREFIX + schedule_id
        self.schedule_id = schedule_id


class WorkflowClosedError(RaylineError):
    """The workflow has finished, so it takes no more signals or terminations."""

    code = 410

    def __init__(self, workflow_id: str, action: str) -> None:
        super().__init__(f"cannot {action}: workflow {workflow_id!r} has already finished")
        self.workflow_id = workflow_id


class NotHereError(RaylineError):
    """The workflow is not on the host that was asked (it moved, or that host is
    restarting): clients and hosts look it up again and retry."""

    code = 503


class WorkflowFailedError(RaylineError):
    """The workflow ended without a result.

    Attributes:
        cause_type: the qualified name of the exception the workflow raised.
        code: HotMesh-style status code (500 by default).
        stack: the formatted traceback from inside the workflow.
    """

    def __init__(
        self, message: str, *, cause_type: str = "", code: int = 500, stack: str = ""
    ) -> None:
        super().__init__(message)
        self.cause_type = cause_type
        self.code = code
        self.stack = stack


class WorkflowTerminatedError(WorkflowFailedError):
    """The workflow was terminated: no code ran after it, status is negative."""

    def __init__(self, message: str = "workflow terminated", *, stack: str = "") -> None:
        super().__init__(message, cause_type="WorkflowTerminatedError", code=410, stack=stack)


class ChildWorkflowError(WorkflowFailedError):
    """A child workflow ended without a result; raised in the parent at the child's
    await. ``workflow_id`` names the child, ``__cause__`` is the child's own error (a
    ``WorkflowTerminatedError`` when it was terminated)."""

    def __init__(self, message: str, *, workflow_id: str = "", cause_type: str = "",
                 code: int = 500, stack: str = "") -> None:
        super().__init__(message, cause_type=cause_type, code=code, stack=stack)
        self.workflow_id = workflow_id


class UpdateRejectedError(RaylineError):
    """An update was refused before anything was recorded: its validator raised, or the
    workflow has no handler of that name. ``cause_type`` names what the validator raised."""

    code = 422

    def __init__(self, message: str, *, cause_type: str = "") -> None:
        super().__init__(message)
        self.cause_type = cause_type


class UpdateFailedError(RaylineError):
    """An update's handler raised; the caller of ``execute_update`` gets this, with the
    handler's error as ``__cause__``. The workflow itself goes on."""

    def __init__(self, message: str, *, cause_type: str = "", stack: str = "") -> None:
        super().__init__(message)
        self.cause_type = cause_type
        self.stack = stack


class ActivityError(RaylineError):
    """An activity failed; raised inside the workflow at the activity's await.

    Attributes:
        activity: the activity's name.
        cause_type: the qualified name of the exception the activity raised.
        message: its message.
        stack: its formatted traceback.
        attempt: how many attempts ran.
    """

    def __init__(
        self,
        message: str,
        *,
        activity: str = "",
        cause_type: str = "",
        stack: str = "",
        attempt: int = 1,
        code: int = 500,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.activity = activity
        self.cause_type = cause_type
        self.stack = stack
        self.attempt = attempt
        self.code = code

    def __str__(self) -> str:
        head = f"activity {self.activity!r} failed" if self.activity else "activity failed"
        kind = f"{self.cause_type}: " if self.cause_type else ""
        return f"{head} ({kind}{self.message})"


class MaxedError(ActivityError):
    """The activity's retry policy ran out of attempts (code 597)."""


class TimeoutFailure(ActivityError):
    """An activity exceeded start_to_close or schedule_to_close (code 596)."""


class ActivityCancelledError(RaylineError):
    """Raised by ``rayline.heartbeat()`` in an activity attempt that was cancelled (its
    workflow was cancelled or terminated, or the attempt timed out): clean up and stop."""

    code = 499


class FatalError(RaylineError):
    """Raise inside an activity to fail it at once, without retries (code 598)."""

    code = 598


class NonDeterminismError(RaylineError):
    """Replaying the workflow's code issued different calls than its timeline records.

    Attributes (when replay found it): ``activation``, the batch number where the code
    went another way; ``recorded`` and ``produced``, the calls the timeline holds there
    and the calls the code made instead (``(kind, call number, name)`` tuples).
    """

    def __init__(self, message: str, *, activation: int | None = None,
                 recorded: list[tuple[Any, ...]] | None = None,
                 produced: list[tuple[Any, ...]] | None = None) -> None:
        super().__init__(message)
        self.activation = activation
        self.recorded = recorded or []
        self.produced = produced or []


class DeadlockError(RaylineError):
    """Workflow code held its host's event loop too long (a blocking call in a workflow):
    the workflow fails with it. Use an activity, ``workflow.sleep`` or a ``local=True``
    activity instead."""

    def __init__(self, message: str | None = None) -> None:
        if message is None:  # raised into the blocked thread by the host's watchdog
            message = DEADLOCK_MESSAGES.pop(threading.get_ident(),
                                            "workflow code blocked its host's event loop")
        super().__init__(message)


class NonDeterministicCallError(RaylineError):
    """A strict run's workflow code called something replay cannot repeat (the wall clock,
    ``time.sleep``, the ``random`` module, ``uuid.uuid4``, threads, I/O). The message
    names the call, where it was made and the rayline replacement."""


class QuarantinedError(RaylineError):
    """The run's replay or activation coincided with its host's death more than once in a
    row, so it is no longer loaded: fix the code, then ``handle.release()`` (or
    ``rayline workflow release ID``), or terminate it."""


class CodeUnavailableError(RaylineError):
    """The code of a run's version cannot be brought back: its package is gone from Ray
    and was never kept in storage. Start a driver with that code (same ``working_dir``)
    to bring it back, or terminate the run."""


class ClusterUnavailableError(RaylineError, ConnectionError):
    """No Ray cluster answers at the address given (``Client(address=...)``)."""

    code = 503


class HostDiedError(NotHereError):
    """The host handling the call died and did not come back in time (the call may or
    may not have taken effect)."""


DEADLOCK_MESSAGES: dict[int, str] = {}
"""What the watchdog found, by thread, for the ``DeadlockError`` it raises there."""


class QueryError(RaylineError):
    """A query could not be answered: no such handler, or the handler raised."""


class StorageError(RaylineError):
    """Storage failed to read or write an object."""


class ConflictError(StorageError):
    """Another owner already wrote this key: this writer has lost ownership of the run."""

    code = 409


class CorruptTimelineError(StorageError):
    """A stored timeline object is torn, truncated or does not belong to this run."""


class IncompatibleTimelineError(StorageError):
    """A stored run or batch was written by a newer rayline (a higher timeline version).

    It is refused, never treated as torn, and left in place for the newer rayline.
    """


class IntegrityError(StorageError):
    """A stored object's MAC does not verify (or it has none where the codec has keys): it
    was altered or forged, or sealed with another key of the same id. It is refused and
    nothing in it is read. Not a ``CorruptTimelineError``: it is never taken for a torn
    write and dropped.

    Attributes:
        key_id: the key it was checked with (``""``: it names none).
    """

    def __init__(self, message: str, *, key_id: str = "") -> None:
        super().__init__(message)
        self.key_id = key_id


class CodecError(StorageError):
    """An object cannot be opened here: it is sealed with a key the keyring lacks (or this
    process has no keys), or needs a module missing here; or a client's codec differs from
    the one its namespace's registry runs with (see docs/codec.md).

    Attributes:
        key_id: the key id the object records (``""``: none in question).
        codec: the codec (stages) in question.
    """

    def __init__(self, message: str, *, key_id: str = "", codec: str = "") -> None:
        super().__init__(message)
        self.key_id = key_id
        self.codec = codec


class ControlFlow(_Picklable, BaseException):
    """Root of signals that must not be swallowed by ``except Exception``."""


class CancelledFailure(ControlFlow):
    """The workflow was cancelled; raised at its current or next durable operation."""

    code = 499


class ContinueAsNew(ControlFlow):
    """Raised by ``workflow.continue_as_new``: ends this run, starts the next."""

    def __init__(self, args: tuple[Any, ...] = (), workflow: Any = None,
                 task_queue: str | None = None) -> None:
        super().__init__("continue as new")
        self.new_args = args
        self.workflow = workflow
        """Another workflow (function or registered name) the next run runs, if any."""
        self.task_queue = task_queue
        """Another task queue whose hosts run the next run, if any."""


def is_cancellation(err: BaseException | None) -> bool:
    """True when ``err`` (or an error it was raised from) is a cancellation."""
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, CancelledFailure):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False
