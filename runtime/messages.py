"""What crosses a process: requests and replies between clients, hosts and the registry.

Every call that leaves a process carries one of these typed models (pydantic, frozen),
never a bare ``dict``; the Ray actors in ``rayline.actors`` forward them to ``HostAPI``
and ``RegistryAPI`` (``rayline.engine.api``), which the engine implements.
"""

from __future__ import annotations

import enum
from typing import Literal, Sequence

import pydantic

from ._code import CodeRef
from ._serde import Fields, Payload
from .timeline import (
    Batch,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    Failure,
    FailWorkflow,
    ParentRef,
    RunOptions,
)


class _Message(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class RunStatus(str, enum.Enum):
    """Where a run is: open (running; stuck: it cannot be replayed; quarantined: it
    crashed its host and is held until released) or how it closed."""

    RUNNING = "running"
    STUCK = "stuck"
    QUARANTINED = "quarantined"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    CONTINUED = "continued"
    RESET = "reset"
    """Closed, then reset: a later run of the id took over its first steps."""

    @property
    def code(self) -> int:
        """HotMesh's status: 0 completed (or continued), < 0 closed otherwise, 1 open."""
        return _CODES[self]


_CODES = {RunStatus.RUNNING: 1, RunStatus.STUCK: 1, RunStatus.QUARANTINED: 1,
          RunStatus.COMPLETED: 0,
          RunStatus.CONTINUED: 0, RunStatus.FAILED: -1, RunStatus.CANCELLED: -2,
          RunStatus.TERMINATED: -3, RunStatus.RESET: -4}


class RunOutcome(_Message):
    """How a run closed: the one type for it everywhere."""

    status: RunStatus
    run_id: str
    time: float
    result: Payload | None = None
    """The encoded result of a completed run."""
    failure: Failure | None = None
    """Why a failed or cancelled run failed."""
    reason: str | None = None
    """Why a terminated run was terminated."""
    args: list[Payload] = []
    """The next run's arguments, for a run that continued as new."""
    retry_at: float | None = None
    """For a failed run its retry policy runs again (status ``continued``): when the
    next run starts; it takes this run's arguments."""
    continue_with: ContinueAsNewWorkflow | None = None
    """For a run that continued as new into another workflow: which one."""
    next_run_at: float | None = None
    """For a run of a cron start (status ``continued``): when the next run starts; it
    takes this run's arguments."""
    reset_to: str | None = None
    """For a run that was reset (status ``reset``): the run that took over from it."""

    @property
    def code(self) -> int:
        return self.status.code

    @classmethod
    def of_run(cls, batches: Sequence[Batch]) -> RunOutcome | None:
        """How the run whose timeline is ``batches`` closed; ``None`` while it is open."""
        return cls.of(batches[-1]) if batches else None

    @classmethod
    def of(cls, batch: Batch) -> RunOutcome | None:
        """The run's outcome if ``batch`` closed it, else ``None``."""
        if batch.terminated is not None:
            return cls(status=RunStatus.TERMINATED, run_id=batch.run_id, time=batch.time,
                       reason=batch.terminated.reason)
        if batch.reset is not None:
            return cls(status=RunStatus.RESET, run_id=batch.run_id, time=batch.time,
                       reason=batch.reset.reason, reset_to=batch.reset.run_id)
        for command in batch.commands:
            if isinstance(command, CompleteWorkflow):
                if command.next_run_at is not None:  # a cron start: the next run follows
                    return cls(status=RunStatus.CONTINUED, run_id=batch.run_id,
                               time=batch.time, result=command.result,
                               next_run_at=command.next_run_at)
                return cls(status=RunStatus.COMPLETED, run_id=batch.run_id, time=batch.time,
                           result=command.result)
            if isinstance(command, FailWorkflow):
                if command.retry_in is not None:  # the next run of the id tries again
                    return cls(status=RunStatus.CONTINUED, run_id=batch.run_id,
                               time=batch.time, failure=command.failure,
                               retry_at=batch.time + command.retry_in)
                if command.next_run_at is not None:
                    return cls(status=RunStatus.CONTINUED, run_id=batch.run_id,
                               time=batch.time, failure=command.failure,
                               next_run_at=command.next_run_at)
                cancelled = command.failure.kind == "cancelled"
                return cls(status=RunStatus.CANCELLED if cancelled else RunStatus.FAILED,
                           run_id=batch.run_id, time=batch.time, failure=command.failure)
            if isinstance(command, ContinueAsNewWorkflow):
                return cls(status=RunStatus.CONTINUED, run_id=batch.run_id, time=batch.time,
                           args=command.args, continue_with=command
                           if command.workflow_name is not None
                           or command.task_queue is not None else None)
        return None


class UpdateOutcome(_Message):
    """What a host answers an update: taken and running (``done`` False, for
    ``start_update``), or ended with ``result`` or ``failure`` (durable)."""

    update_id: str
    done: bool
    result: Payload | None = None
    failure: Failure | None = None


class ResetRequest(_Message):
    """``handle.reset`` (``new_workflow_id`` unset) or ``client.workflow.fork``."""

    workflow_id: str
    to: int | str
    """Where the new run goes on live (``rayline.engine.reset``)."""
    reason: str | None = None
    reapply_signals: bool = True
    """Signals recorded after that point go to the new run."""
    new_workflow_id: str | None = None
    """A fork: the new run is run 1 of this id; the original is left as it is."""
    request_id: str | None = None
    """Sent again with the same id, the reset is answered with the run it made."""


class SignalIn(_Message):
    """A signal sent with a start (``signal_with_start``, ``signals=``)."""

    signal_id: str
    data: Payload
    request_id: str | None = None


class StartRequest(_Message):
    """``start``: what ``client.workflow.start`` (or a parent) asks of a host."""

    workflow_id: str
    task_queue: str
    workflow_name: str | None = None
    code: CodeRef | None = None
    args: list[Payload] = []
    search: Fields = {}
    memo: Fields = {}
    options: RunOptions = RunOptions()
    id_reuse_policy: str | None = None
    start_delay: float | None = None
    """Seconds before the run's code starts (the run exists at once)."""
    not_before: float | None = None
    """The time the run's code starts (a cron start's next run); over ``start_delay``."""
    id_conflict_policy: str | None = None
    """What a start does when the id's run is open: ``fail`` (the default),
    ``use_existing`` (answer with that run; ``signals`` go to it) or
    ``terminate_existing``."""
    signals: list[SignalIn] = []
    parent: ParentRef | None = None
    continued_from: str | None = None
    request_id: str | None = None
    """Sent again with the same id, the start is answered with the run it made."""
    attempt: int = 1
    epoch: int | None = None
    """A continue-as-new onto another task queue: the run to make is this epoch of the
    id (no reuse rule applies; if it exists, it was made before and is answered)."""
    wait: bool = False
    """``client.workflow.execute``: the reply comes when the workflow has finished, with
    its outcome (one call instead of a start and a result); a run that moved to another
    host meanwhile is answered without it, and the client asks for the result."""
    trace: dict[str, str] | None = None
    """The OpenTelemetry context the start was made in (W3C ``traceparent``): the
    client's current span, or a parent run's span; the run's span goes under it."""


class StartReply(_Message):
    workflow_id: str
    run_id: str
    host: str
    outcome: RunOutcome | None = None
    """Set when the start attached to a run that had already closed, and for a start
    that waited (``StartRequest.wait``) once its workflow finished."""
    existing: bool = False
    """The id's run was open and the start used it (``id_conflict_policy="use_existing"``):
    no new run was made."""


class RunSummary(_Message):
    """One run in the index: what hosts report to the registry and ``list()`` returns."""

    workflow_id: str
    run_id: str
    workflow_name: str
    host: str
    task_queue: str
    status: int
    state: RunStatus
    started_at: float
    search: Fields = {}
    error: str | None = None
    version: str | None = None
    closed_at: float | None = None
    """When the run closed (``None`` while it is open)."""
    updated_at: float = 0.0
    """When the host last saw the run change: of two reports of one run, the index keeps
    the later."""


SearchOperator = Literal["=", "!=", ">", ">=", "<", "<=", "in"]
SEARCH_OPERATORS: tuple[str, ...] = ("=", "!=", ">", ">=", "<", "<=", "in")


class WorkflowFilter(_Message):
    """Which workflows ``list`` and ``count`` look at: every condition given must hold.
    Times are seconds since the epoch (UTC)."""

    status: RunStatus | None = None
    workflow_name: str | None = None
    task_queue: str | None = None
    version: str | None = None
    started_after: float | None = None
    started_before: float | None = None
    closed_after: float | None = None
    closed_before: float | None = None
    search: dict[str, dict[SearchOperator, pydantic.JsonValue]] | None = None
    """Per search field, conditions that must all hold (``{"score": {">=": 0.9}}``);
    ``=`` on a list field holds when the list contains the value."""


ListOrder = Literal["started_at", "-started_at", "closed_at", "-closed_at", "workflow_id",
                    "-workflow_id"]


class ListRequest(WorkflowFilter):
    order_by: ListOrder = "-started_at"
    """The sort key; ``-`` for descending. Runs with no value for it (open runs, for
    ``closed_at``) come last."""
    limit: int = 100
    page_token: str | None = None
    """``next_page_token`` of the page before: the page after it."""


class ListReply(_Message):
    items: list[RunSummary]
    next_page_token: str | None = None
    """Set when more workflows match: pass it as ``page_token`` for the next page."""


class WorkflowPage(list[RunSummary]):
    """What ``client.workflow.list`` returns: a page of summaries (a list), and the
    ``next_page_token`` to pass for the page after it (``None`` on the last page)."""

    def __init__(self, items: Sequence[RunSummary] = (),
                 next_page_token: str | None = None) -> None:
        super().__init__(items)
        self.next_page_token = next_page_token


CountGroup = Literal["status", "workflow_name", "task_queue", "version"]


class CountRequest(WorkflowFilter):
    group_by: CountGroup | None = None


class CountReply(_Message):
    count: int
    groups: dict[str, int] = {}
    """With ``group_by``: the count per value (``""`` for none)."""


WorkKind = Literal["activity", "timer", "wait", "child", "external", "asyncio_timer"]


class PendingWork(_Message):
    """One open obligation of a running run (``describe().pending``)."""

    seq: int
    kind: WorkKind
    signal_id: str | None = None
    """For a ``wait``: the signal it waits for."""
    attempt: int | None = None
    """For a running ``activity``: its attempt number."""
    heartbeat_details: pydantic.JsonValue = None
    """For an ``activity``: what its last ``rayline.heartbeat`` said (as JSON, or its
    ``repr`` when it is not JSON)."""
    heartbeat_age: float | None = None
    """For an ``activity``: seconds since its attempt began or last sent a heartbeat."""


class WorkflowDescription(pydantic.BaseModel):
    """What ``handle.describe()`` returns: the latest run of a workflow id."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    workflow_id: str
    run_id: str
    workflow_name: str
    task_queue: str
    status: int
    """0 completed; > 0 running (open obligations); < 0 failed, cancelled, terminated."""
    state: RunStatus
    """running, completed, failed, cancelled, terminated, continued, or stuck (the run
    cannot be replayed by the code its host has: see ``error``)."""
    started_at: float
    updated_at: float
    host: str
    attempt: int
    parent: str | None
    search: Fields
    enrich: Fields
    memo: Fields
    pending: list[PendingWork]
    """Open obligations: each activity, timer, signal wait and child the run awaits."""
    outcome: RunOutcome | None
    error: str | None = None
    """Why a ``stuck`` run cannot run (its replay failed, or its code cannot be loaded)."""
    slips: list[str] = []
    """What the determinism guards reported of this run's code: each call that breaks
    replay, where it was made, and what to use instead."""
    blocked: str | None = None
    """The last report of this workflow's code blocking its host's event loop: how
    long, where (the stack), and how to fix it."""
    version: str | None = None
    """The code version the run runs (``None``: started before versions were kept)."""
    reset_from: str | None = None
    """For a run made by ``reset`` or ``fork``: the run it took its first steps from
    (``workflow_id/run_id`` for a fork). A run that was reset says where it went in
    ``outcome.reset_to``."""


class CodeVersion(_Message):
    """The code a run runs (see ``rayline.versions``): hosts of a version are created with
    its ``runtime_env``, so their processes import exactly that code."""

    id: str
    runtime_env: Fields = {}
    """Ray's ``runtime_env`` of the version's hosts (and, inherited, their activities)."""


class VersionSummary(_Message):
    """A code version and its runs, as ``client.versions()`` and ``rayline versions``
    show it."""

    id: str | None
    """``None``: runs started before versions were kept."""
    runs: dict[str, int]
    """How many runs of the version are in each state (running, completed, ...)."""
    hosts: list[str]
    """The hosts its open runs live on."""
    runtime_env: Fields = {}


class UpgradeReport(_Message):
    """What ``client.upgrade`` / ``rayline versions upgrade`` did: the open runs of
    version ``old`` now on ``new``, and the ones left on ``old`` with why."""

    old: str
    new: str
    moved: list[str] = []
    left: dict[str, str] = {}
    """Workflow id -> why it stays (its timeline does not replay on the new code, an
    activity of it is running, ...)."""


class DrainReport(_Message):
    """What draining a host did (``rayline hosts drain``): the runs moved to the rest of
    its pool, those that could not move (with why), and whether the host stopped."""

    host: str
    moved: list[str] = []
    left: dict[str, str] = {}
    retired: bool = False


class HostOptions(_Message):
    """How the hosts of a task queue are created, and how many (``Worker.create``)."""

    memory: int | None = None
    """Bytes of memory Ray reserves for each host process of the queue (Ray's ``memory``
    option): Ray places a host only where that much is free and counts it as used, so one
    queue's hosts cannot take the memory another queue was promised. ``None``: no
    reservation."""
    node: str | None = None
    """A Ray node to start the host on if it can (an elastic pool growing onto a node that
    joined); set per host by the registry, never kept in the queue's config."""
    min_hosts: int | None = None
    """The fewest hosts the queue's elastic pool shrinks to (default 1)."""
    max_hosts: int | None = None
    """The most hosts the queue's elastic pool grows to (default ``RAYLINE_MAX_HOSTS``)."""
    node_labels: dict[str, str] | None = None
    """Ray node labels a node must have for the queue's hosts (Ray's label scheduling),
    such as ``{"rayline": "orchestration"}``: the hosts go only there, and an elastic pool
    counts only those nodes. ``None``: any node."""


class HostStats(_Message):
    """One host's load, as ``rayline hosts`` shows it."""

    host: str
    running: int = 0
    """Executions in memory (live runs, waiting or working)."""
    parked: int = 0
    """Runs out of memory until their timer or a signal (parking)."""
    finished_cached: int = 0
    stuck: int = 0
    """Runs that cannot replay or are quarantined."""
    draining: bool = False
    """The host takes no new run: its runs are moving to the rest of its pool."""
    node: str | None = None
    """The Ray node the host process runs on."""
    load: float = 0.0
    """The share of the last few seconds its event loop was busy (CPU time of the loop's
    thread over wall time, 0 to 1): near 1, its workflows wait for each other."""
    started: int = 0
    """Runs started here since the host process started (each run of a continue-as-new
    chain counts)."""
    closed: dict[str, int] = pydantic.Field(default_factory=dict)
    """Runs closed here since the host process started, by status (``completed``,
    ``failed``, ``cancelled``, ``terminated``, ``continued``)."""
    attempts: int = 0
    """Activity attempts made here since the host process started (retries count)."""
    adopted: int = 0
    """Runs moved here from another host (a drain, a rebalance, an upgrade)."""


class RegistryStats(_Message):
    calls: dict[str, int]
    """How many calls of each kind the registry answered (it should be off hot paths)."""
    directory: int
    hosts: list[str]


class RegistryInfo(_Message):
    storage: str
    namespace: str
    resumed: int
    codec: str = "none"
    """The fingerprint of the codec the registry reads and writes storage with (stages,
    key ids and their check values, never keys); a client must have the same."""
