"""Timeline models: what a run records, as versioned JSON.

A run's timeline is its run record (``WorkflowStarted``) followed by batches. A batch
is one activation: the events the workflow was given (in the order it saw them) and
the commands it answered with. Replay feeds each batch's events back to the core and
checks that the commands come out the same.

Invariants:
- Every stored object carries ``v``: the oldest timeline version that holds what it
  says (1 unless it uses a later field; ``TIMELINE_VERSION`` is the newest this rayline
  reads). A reader refuses an object of a newer version rather than guess
  (``IncompatibleTimelineError``). New fields are optional with defaults, so this
  version reads what earlier ones wrote.
- A run's home (its owner host and code version) is the run record's until a batch
  names another: ``owner`` on every batch, ``version`` on the batch an upgrade wrote
  (``home_of``).
- Models are frozen and forbid unknown fields: what is read is exactly what was written.
- A batch names its run and sequence number, so an object in the wrong place is caught.
"""

from __future__ import annotations

from typing import Annotated, Any, Iterable, Iterator, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    model_serializer,
    model_validator,
)

from ._serde import Fields, Payload

TIMELINE_VERSION = 4
"""The newest timeline format this rayline reads. 2: a batch may name the code version
its run moved to (``Batch.version``). 3: an activity's outcome may say when its last
attempt began and list the attempts that failed before it (``retries``). 4: updates
(``UpdateAccepted``, ``CompleteUpdate``), a child's close policy, cancellation type,
retry and timeout, cron runs (``RunOptions.cron``), and a run's trace context
(``WorkflowStarted.trace``)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_serializer(mode="wrap")
    def _lean(self, handler: Any) -> Any:
        """Leaves out the optional fields that are unset (``None``, their default): they
        read back the same, objects are smaller, and an older rayline reads an object
        that does not use a field it does not know (it refuses unknown keys)."""
        data = handler(self)
        if isinstance(data, dict):
            for name, spec in type(self).model_fields.items():
                if spec.default is None and name in data and data[name] is None:
                    del data[name]
        return data


class Failure(_Model):
    """An error as stored: enough to raise it again on the other side."""

    type: str
    message: str
    stack: str = ""
    code: int = 500
    kind: Literal["error", "maxed", "timeout", "fatal", "cancelled", "terminated"] = "error"
    activity: str = ""
    attempt: int = 1
    cause: Failure | None = None
    """The failure this one was raised from (``raise ... from``), if any."""


class RunOptions(_Model):
    """Options a run keeps in its record."""

    execution_timeout: float | None = None
    """Seconds from the run's start after which it is terminated."""
    strict: bool = False
    """Guard-rail slips fail the run instead of being logged: a call that breaks replay
    raises ``NonDeterministicCallError``, and blocking the event loop past the warning
    threshold raises ``DeadlockError``."""
    retry: Fields | None = None
    """The workflow's ``RetryPolicy`` (``to_json``): a run that fails with a retryable
    error is run again, as the next run of the id, after the policy's backoff."""
    cron: str | None = None
    """A cron start's expression (``rayline._cron``): each run that completes or fails
    (after its retries) is followed by the next run of the id at the next time."""
    expire: float | None = None
    """Seconds after the run closes from which ``gc`` may delete it (``None``: kept)."""


ParentClosePolicy = Literal["terminate", "request_cancel", "abandon"]
CancellationType = Literal["wait_cancellation_completed", "try_cancel"]


class ChildOptions(_Model):
    """How a parent asked for its child to be started."""

    search: Fields = {}
    memo: Fields = {}
    id_reuse_policy: str | None = None
    dedicated: bool = False
    parent_close_policy: ParentClosePolicy = "terminate"
    """What happens to the child, if still running, when the parent's run closes (it
    completes, fails, is cancelled, terminated or times out): it is terminated, asked to
    cancel, or left alone."""
    cancellation_type: CancellationType = "wait_cancellation_completed"
    """When the parent cancels the child (the parent is cancelled, or abandons the call):
    the parent's call waits until the child has finished cancelling, or raises at once."""
    retry: Fields | None = None
    """The child's ``RetryPolicy`` (``to_json``)."""
    execution_timeout: float | None = None

    @model_serializer(mode="wrap")
    def _lean(self, handler: Any) -> Any:
        """Leaves out the later fields (timeline format 4) that keep their defaults, so
        a child started without them reads in an older rayline."""
        data = handler(self)
        for key, default in _LATER_CHILD_FIELDS.items():  # (the None ones included)
            if key in data and data[key] == default:
                del data[key]
        return data


_LATER_CHILD_FIELDS: dict[str, Any] = {
    "parent_close_policy": "terminate", "cancellation_type": "wait_cancellation_completed",
    "retry": None, "execution_timeout": None}


class _Step(_Model):
    """An event or command about durable call number ``seq`` of a run."""

    seq: int


class ParentRef(_Model):
    workflow_id: str
    run_id: str
    seq: int
    host: str


# Events: what the outside world tells a workflow.


class AttemptFailed(_Model):
    """One attempt of an activity that failed and was retried, recorded with the
    activity's outcome (not a write of its own): for exports."""

    attempt: int
    started: float
    ended: float
    type: str
    message: str


class ActivityCompleted(_Step):
    """An activity attempt returned; ``result`` is its value, ``attempt`` the try that
    succeeded, ``started`` when it began (host clock), ``retries`` the tries before it."""

    type: Literal["activity_completed"] = "activity_completed"
    result: Payload
    attempt: int = 1
    started: float | None = None
    retries: list[AttemptFailed] = []


class ActivityFailed(_Step):
    """An activity gave up: its last attempt failed and the retry policy allows no more;
    ``started`` is when that attempt began, ``retries`` the tries before it."""

    type: Literal["activity_failed"] = "activity_failed"
    failure: Failure
    started: float | None = None
    retries: list[AttemptFailed] = []


class TimerFired(_Step):
    """The timer of ``StartTimer`` number ``seq`` came due."""

    type: Literal["timer_fired"] = "timer_fired"


class SignalReceived(_Model):
    """A signal arrived. ``request_id`` makes a signal sent twice count once; a signal that
    came before the workflow waited for it may carry ``expire_at`` (see ``DropSignal``)."""

    type: Literal["signal_received"] = "signal_received"
    signal_id: str
    data: Payload
    expire_at: float | None = None
    request_id: str | None = None


class CancelRequested(_Model):
    """Someone asked the run to cancel; the workflow sees ``CancelledError`` at its next
    durable call."""

    type: Literal["cancel_requested"] = "cancel_requested"
    reason: str | None = None


class ChildStarted(_Step):
    """The child of ``StartChild`` number ``seq`` has a run: ``run_id`` is the run the
    parent follows (a child that continues as new keeps its id, not its run)."""

    type: Literal["child_started"] = "child_started"
    workflow_id: str
    run_id: str


class ChildCompleted(_Step):
    """The child of ``StartChild`` number ``seq`` returned ``result``; the parent's
    ``execute_child`` call returns it."""

    type: Literal["child_completed"] = "child_completed"
    result: Payload


class ChildFailed(_Step):
    """The child of ``StartChild`` number ``seq`` could not start, failed, was cancelled or
    was terminated."""

    type: Literal["child_failed"] = "child_failed"
    failure: Failure


class UpdateAccepted(_Model):
    """An update passed its validator (if any) and was taken: the run's handler for
    ``name`` runs with ``args``; ``update_id`` makes an update sent twice count once and
    names the ``CompleteUpdate`` that answers it."""

    type: Literal["update_accepted"] = "update_accepted"
    update_id: str
    name: str
    args: list[Payload] = []


class ExternalResolved(_Step):
    """A signal or cancel sent to another workflow was delivered, or ``failure`` says why
    not (no such workflow, or it had closed): the sender's call returns or raises it."""

    type: Literal["external_resolved"] = "external_resolved"
    failure: Failure | None = None


Event = Annotated[
    Union[
        ActivityCompleted, ActivityFailed, TimerFired, SignalReceived, CancelRequested,
        ChildStarted, ChildCompleted, ChildFailed, ExternalResolved, UpdateAccepted,
    ],
    Field(discriminator="type"),
]  # fmt: skip


# Commands: what a workflow asks for.


class ScheduleActivity(_Step):
    """Run an activity. ``seq`` numbers every durable call of the run in the order the
    workflow made it; the event that answers carries the same number."""

    type: Literal["schedule_activity"] = "schedule_activity"
    activity: str
    args: list[Payload]
    options: Fields = {}
    """The activity's options as ``ActivityOptions.to_json`` wrote them."""


class CancelActivity(_Step):
    """Stop waiting for activity ``seq`` (its attempt is abandoned)."""

    type: Literal["cancel_activity"] = "cancel_activity"


class StartTimer(_Step):
    """A durable sleep of ``duration`` seconds, due at ``fire_at`` (the run's clock, so a
    replay fires it at the same point whatever the wall clock says)."""

    type: Literal["start_timer"] = "start_timer"
    fire_at: float
    duration: float


class StartWait(_Step):
    """The workflow began waiting for a signal (no action: recorded for replay and export)."""

    type: Literal["start_wait"] = "start_wait"
    signal_id: str
    timeout: float | None = None


class CancelTimer(_Step):
    """The timer ``seq`` is no longer wanted."""

    type: Literal["cancel_timer"] = "cancel_timer"


class StartChild(_Step):
    """Start a child workflow, by import path (``code``), by value (``code_pickle``) or by
    name on the child's task queue. ``wait`` is False for ``start_child`` (fire and forget)."""

    type: Literal["start_child"] = "start_child"
    workflow_name: str
    workflow_id: str
    args: list[Payload]
    task_queue: str | None = None
    code: str | None = None
    code_pickle: str | None = None
    options: ChildOptions = ChildOptions()
    wait: bool = True


class CancelChild(_Step):
    """Ask child ``workflow_id`` (started by command ``seq``) to cancel."""

    type: Literal["cancel_child"] = "cancel_child"
    workflow_id: str


class SignalExternal(_Step):
    """Send a signal to another workflow, exactly once (``request_id`` dedupes a resend)."""

    type: Literal["signal_external"] = "signal_external"
    workflow_id: str
    signal_id: str
    data: Payload
    request_id: str
    run_id: str | None = None
    """Only this run of the workflow takes it (``get_external_handle(id, run_id)``)."""


class CancelExternal(_Step):
    """Ask another workflow, not a child, to cancel."""

    type: Literal["cancel_external"] = "cancel_external"
    workflow_id: str
    run_id: str | None = None


class UpsertFields(_Model):
    """Set search fields (``indexed``) or enrich fields on the run."""

    type: Literal["upsert_fields"] = "upsert_fields"
    seq: int = 0
    fields: Fields
    indexed: bool


class RecordPatch(_Model):
    """``workflow.patched(patch_id)`` answered True: later replays of this run take the new
    branch too."""

    type: Literal["record_patch"] = "record_patch"
    patch_id: str


class DropSignal(_Model):
    """A buffered signal expired (``expire_at``, the run's clock) before the workflow
    waited for it: replay drops it at the same point."""

    type: Literal["drop_signal"] = "drop_signal"
    signal_id: str
    expire_at: float


class CompleteUpdate(_Model):
    """The handler of update ``update_id`` returned ``result`` or raised ``failure``: the
    caller of ``execute_update`` is answered once this is durable."""

    type: Literal["complete_update"] = "complete_update"
    update_id: str
    result: Payload | None = None
    failure: Failure | None = None


class CompleteWorkflow(_Model):
    """The workflow returned: ``result`` is what every ``result()`` call gets, and what a
    parent's child call returns. With ``next_run_at`` (a cron start) the next run of the
    id starts then, with the same arguments (the run reads as ``continued``)."""

    type: Literal["complete_workflow"] = "complete_workflow"
    result: Payload
    next_run_at: float | None = None


class FailWorkflow(_Model):
    """The workflow raised: ``failure`` is rebuilt (see ``failures``) into the exception
    that ``result()`` and a parent's child call raise, its cause chained. With
    ``retry_in``, the run's retry policy runs it again: the next run of the id starts
    that many seconds after this batch (the run reads as ``continued``)."""

    type: Literal["fail_workflow"] = "fail_workflow"
    failure: Failure
    retry_in: float | None = None
    next_run_at: float | None = None
    """As for ``CompleteWorkflow``: a cron start goes on after a failure too."""


class ContinueAsNewWorkflow(_Model):
    """The run closes and a new run of the same id starts with ``args``; signals this run
    never consumed are carried to it. With ``workflow_name`` the next run runs that
    workflow (by import path ``code``, by value ``code_pickle``, or by name on the
    queue) instead of this one."""

    type: Literal["continue_as_new"] = "continue_as_new"
    args: list[Payload]
    workflow_name: str | None = None
    code: str | None = None
    code_pickle: str | None = None
    task_queue: str | None = None
    """The next run runs on this task queue's hosts (default: this run's)."""


Command = Annotated[
    Union[
        ScheduleActivity, CancelActivity, StartTimer, StartWait, CancelTimer, StartChild,
        CancelChild,
        SignalExternal, CancelExternal, UpsertFields, RecordPatch, DropSignal, CompleteUpdate,
        CompleteWorkflow, FailWorkflow, ContinueAsNewWorkflow,
    ],
    Field(discriminator="type"),
]  # fmt: skip

CLOSING_COMMANDS = (CompleteWorkflow, FailWorkflow, ContinueAsNewWorkflow)


class ResetFrom(_Model):
    """A run made by a reset or a fork: the run whose first ``kept`` batches it took
    over (their recorded results replay; it went on live from there)."""

    workflow_id: str
    run_id: str
    kept: int
    reason: str | None = None


class WorkflowStarted(_Model):
    """The run record: everything needed to run (or re-run) this execution."""

    type: Literal["workflow_started"] = "workflow_started"
    v: int = 1
    workflow_id: str
    run_id: str
    epoch: int
    workflow_name: str
    code: str | None = None
    code_pickle: str | None = None
    args: list[Payload]
    task_queue: str
    host: str
    time: float
    seed: int
    attempt: int = 1
    parent: ParentRef | None = None
    continued_from: str | None = None
    search: Fields = {}
    memo: Fields = {}
    options: RunOptions = RunOptions()
    request_id: str | None = None
    """The id of the start request that made this run: a start sent again is answered
    with this run instead of a duplicate."""
    version: str | None = None
    """The code version of the host that started the run: it resumes only there."""
    not_before: float | None = None
    """``start(..., start_delay=)``: the run's code starts at this time (the run's clock),
    not before; signals sent meanwhile wait for it."""
    reset_from: ResetFrom | None = None
    """Set on a run made by ``reset`` or ``fork``: where its first batches come from."""
    trace: dict[str, str] | None = None
    """The OpenTelemetry context the start carried (W3C ``traceparent``), kept so that
    a host recovering the run continues its trace (``rayline._tracing``)."""

    @model_validator(mode="before")
    @classmethod
    def _versioned(cls, data: Any) -> Any:
        """``v`` is at least 3 for a run with a retry policy or a start delay, 4 for a
        cron start."""
        if not isinstance(data, dict):
            return data
        options = data.get("options") or {}
        needed = 4 if _field(options, "cron") is not None or data.get("reset_from") \
            is not None or data.get("trace") is not None \
            or _field(options, "expire") is not None else \
            3 if _field(options, "retry") or data.get("not_before") is not None else 1
        return {**data, "v": max(data.get("v", 1), needed)} if needed > 1 else data


class Terminated(_Model):
    """Written by the host, not the workflow: the run was stopped from outside."""

    type: Literal["terminated"] = "terminated"
    reason: str | None = None


class ResetTo(_Model):
    """Written after a run's last batch when it was reset: ``run_id`` (of the same id)
    took over its first ``kept`` batches and went on from there."""

    run_id: str
    kept: int
    reason: str | None = None


class Batch(_Model):
    """One activation, written as one object."""

    v: int = 1
    seq: int
    run_id: str
    time: float
    events: list[Event] = []
    commands: list[Command] = []
    terminated: Terminated | None = None
    reset: ResetTo | None = None
    """Set (alone) on the batch that marks a closed run as reset."""
    owner: str = ""
    version: str | None = None
    """Set (with ``v=2``) on the batch that moved the run to a host of this code version
    (``rayline versions upgrade``); the run's later batches run that version's code."""

    @model_validator(mode="before")
    @classmethod
    def _versioned(cls, data: Any) -> Any:
        """``v`` is at least what the batch's fields need: 2 for a ``version``, 3 for an
        activity outcome that says when its attempt began or lists retries, 4 for an
        update or a child started with a later option."""
        if not isinstance(data, dict):
            return data
        needed = max([1, 2 if data.get("version") is not None else 1,
                      4 if data.get("reset") is not None else 1,
                      *(_event_format(e) for e in data.get("events") or ()),
                      *(_command_format(c) for c in data.get("commands") or ())])
        return {**data, "v": max(data.get("v", 1), needed)} if needed > 1 else data


def _field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else getattr(item, key, None)


def _event_format(event: Any) -> int:
    if _field(event, "type") == "update_accepted":
        return 4
    return 3 if _field(event, "started") is not None or _field(event, "retries") else 1


def _command_format(command: Any) -> int:
    kind = _field(command, "type")
    if kind == "complete_update" or _field(command, "next_run_at") is not None \
            or _field(command, "task_queue") is not None and kind == "continue_as_new" \
            or _field(command, "run_id") is not None and kind in ("signal_external",
                                                               "cancel_external"):
        return 4
    if kind == "start_child":
        options = _field(command, "options") or {}
        if any(_field(options, key) not in (None, default)
               for key, default in _LATER_CHILD_FIELDS.items()):
            return 4
    if _field(command, "retry_in") is not None or (
            kind == "continue_as_new" and _field(command, "workflow_name") is not None):
        return 3
    return 1


class RunRecord(_Model):
    """The stored run object: the run record and, folded in, the run's first activation.

    Writing both as one object makes a start one durable write; the exclusive create of
    the run object is then also the fencing token of batch 1.
    """

    started: WorkflowStarted
    first: Batch | None = None


BATCH_ADAPTER: TypeAdapter[Batch] = TypeAdapter(Batch)


def home_of(started: WorkflowStarted, batches: list[Batch]) -> tuple[str, str | None]:
    """The host that owns the run and the code version it runs: the last batch's owner
    (the run record's host before any batch names one) and the last version a batch
    moved it to (else the run record's)."""
    host = next((b.owner for b in reversed(batches) if b.owner), started.host)
    version = next((b.version for b in reversed(batches) if b.version is not None),
                   started.version)
    return host, version


def track_children(children: dict[int, tuple[str, ParentClosePolicy]], batch: Batch) -> None:
    """Brings ``children`` (seq -> (workflow id, close policy)) up to ``batch``: the
    children the run started, not seen to end, that its close must reach (every policy
    but ``abandon``). A ``start_child`` child's end is never recorded: it stays."""
    for event in batch.events:
        if isinstance(event, (ChildCompleted, ChildFailed)):
            children.pop(event.seq, None)
    for command in batch.commands:
        if isinstance(command, StartChild) and command.options.parent_close_policy != "abandon":
            children[command.seq] = (command.workflow_id, command.options.parent_close_policy)


def fields_of(started: WorkflowStarted, batches: list[Batch]) -> tuple[Fields, Fields]:
    """The run's ``search`` and ``enrich`` fields as its timeline left them."""
    search, enrich = dict(started.search), Fields()
    for batch in batches:
        for command in batch.commands:
            if isinstance(command, UpsertFields):
                (search if command.indexed else enrich).update(command.fields)
    return search, enrich


def payloads_of(events: Iterable[Event], started: WorkflowStarted | None = None
                ) -> Iterator[Payload]:
    """The values a replay of ``events`` (and of ``started``'s input) decodes."""
    if started is not None:
        yield from started.args
    for event in events:
        if isinstance(event, (ActivityCompleted, ChildCompleted)):
            yield event.result
        elif isinstance(event, SignalReceived):
            yield event.data
