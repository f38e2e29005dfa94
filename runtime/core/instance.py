"""The deterministic workflow instance.

Invariants:
- The instance is an asyncio event loop of its own. ``activate(events, time)`` applies
  the events in the order given (resolving the futures they complete), then runs ready
  callbacks until none are left, and returns the commands the workflow issued meanwhile.
  Nothing else ever runs workflow code, so the same events in the same order give the
  same commands: live execution and replay are one code path.
- Every durable call takes the next sequence number, in call order; its marker key is
  ``-<kind>-<seq>-``. Events name the sequence number they complete.
- Time inside the workflow is the activation's timestamp; randomness comes from the
  seed in the run record.
- Cancellation is cooperative: it fails every pending cancellable durable operation with
  ``CancelledFailure`` and makes later ones fail at once, except inside
  ``workflow.non_cancellable()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import datetime
import inspect
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .. import _serde
from .._activity import ActivityDefinition
from .._code import CodeRef
from .._cron import cron_spec
from .._definition import WorkflowDefinition, as_workflow
from .._options import ActivityOptions, RetryPolicy
from .._search import search_value
from .._validate import validate_args
from .._values import Values
from ..errors import (
    ActivityError,
    CancelledFailure,
    ContinueAsNew,
    InvalidInputError,
    NonDeterminismError,
    QueryError,
    RaylineError,
    UpdateRejectedError,
)
from ..failures import FATAL, MAXED, activity_error, child_error, failure_from, qualified_name
from ..messages import PendingWork, WorkKind
from ..timeline import (
    ActivityCompleted,
    ActivityFailed,
    Batch,
    CancelActivity,
    CancelChild,
    CancelExternal,
    CancelRequested,
    CancelTimer,
    ChildCompleted,
    ChildFailed,
    ChildOptions,
    ChildStarted,
    Command,
    CompleteUpdate,
    CompleteWorkflow,
    ContinueAsNewWorkflow,
    DropSignal,
    Event,
    ExternalResolved,
    Failure,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    SignalExternal,
    SignalReceived,
    StartChild,
    StartTimer,
    StartWait,
    TimerFired,
    UpdateAccepted,
    UpsertFields,
    WorkflowStarted,
)
from . import guards

log = logging.getLogger("rayline.core")

_shielded: contextvars.ContextVar[int] = contextvars.ContextVar("rayline_shielded", default=0)
_MAX_STEPS = 1_000_000


@dataclass
class _Pending:
    """One open obligation: a durable call the workflow is waiting on."""

    kind: WorkKind
    future: asyncio.Future[Any]
    cancellable: bool
    command: Command | None = None
    on_fire: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkflowInfo:
    """What a workflow knows about itself (``workflow.info()``)."""

    workflow_id: str
    run_id: str
    workflow_name: str
    task_queue: str
    attempt: int
    is_replaying: bool
    parent: str | None
    start_time: datetime.datetime = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)
    """When the run started (UTC)."""
    namespace: str = ""
    continued_from: str | None = None
    """The run this one continues (continue-as-new, or a retry's previous attempt)."""
    history_length: int = 0
    """Events and commands in the run's history so far."""
    search: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)
    scheduled_time: datetime.datetime | None = None
    """When a cron run (or a delayed start) was due to start."""
    cron_schedule: str | None = None

    def is_continue_as_new_suggested(self) -> bool:
        """Whether the history is long enough that continuing as new would keep replays
        (host restarts, moves, wakes) quick: past ``CONTINUE_AS_NEW_AFTER`` entries."""
        return self.history_length >= CONTINUE_AS_NEW_AFTER


CONTINUE_AS_NEW_AFTER = 10_000
"""History entries (events and commands) from which ``is_continue_as_new_suggested``."""


class WorkflowInstance(asyncio.AbstractEventLoop):
    """One workflow run as a deterministic state machine (see the module docstring)."""

    def __init__(
        self,
        definition: WorkflowDefinition[Any, Any],
        started: WorkflowStarted,
        *,
        recorded_patches: Iterable[str] = (),
        values: Values | None = None,
    ) -> None:
        self.definition = definition
        self.values = values
        """The run's large values (``None``: every value is small, or none is read)."""
        self.started = started
        self.is_replaying = False
        self.step = 0
        """The activation running (the seq of the batch it is recorded in), set by whoever
        activates: ``workflow.logger`` tells it."""
        self.search_fields: dict[str, Any] = dict(started.search)
        self.enrich_fields: dict[str, Any] = {}
        self.closing: Command | None = None
        self._time = started.time
        self._rng = random.Random(started.seed)
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._waiters: dict[str, collections.deque[int]] = {}
        self._signals: dict[str, collections.deque[SignalReceived]] = {}
        self._seen_requests: set[str] = set()
        self._timer_handles: dict[asyncio.TimerHandle, int] = {}
        self._commands: list[Command] = []
        self._main: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._patches: dict[str, bool] = {}
        self._recorded_patches = frozenset(recorded_patches)
        self._queries: dict[str, Callable[..., Any]] = {}
        self._handlers: dict[str | None, Callable[..., Any]] = {}
        """Signal handlers by signal name; ``None``: the default one (any other name)."""
        self._arrived = 0
        self._arrival: dict[int, int] = {}  # id(buffered signal) -> its arrival number
        self._predicates: list[tuple[Callable[[], Any], asyncio.Future[bool], bool]] = []
        """``condition(predicate)`` waits: the predicate, its future, whether a cancel of
        the workflow reaches it (not inside ``non_cancellable``)."""
        self._update_handlers: dict[str, tuple[Callable[..., Any],
                                               Callable[..., Any] | None]] = {}
        """Update handlers by name, each with its validator (if any)."""
        self._updates: dict[str, CompleteUpdate | None] = {}
        """Updates this run took, by update id: how each ended (``None``: running)."""
        self._deprecated: set[str] = set()  # patches whose old branch is gone
        self._history = 0  # events and commands so far (workflow.info().history_length)
        self.slips: list[str] = []
        """What the determinism guards reported of this run's code (distinct, at most 10)."""

    # ----------------------------------------------------------------- activation

    def activate(self, events: Sequence[Event], time: float) -> list[Command]:
        """Applies ``events`` in order at ``time`` and runs the workflow until it blocks."""
        self._time = max(self._time, time)
        self._commands = []
        if self.closing is not None:
            return []
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        guards.activating(self._slip)
        try:
            self._history += len(events)
            if self._main is None:
                self._start_main()
            for event in events:
                self._apply(event)
            self._run_ready()
        finally:
            guards.done()
            asyncio.events._set_running_loop(previous)
        commands, self._commands = self._commands, []
        self._history += len(commands)
        return commands

    def _slip(self, call: str, replacement: str, site: str) -> None:
        if self.started.options.strict:
            guards.refuse(call, replacement, site)
        message = guards.warn_once(self.started.workflow_name, call, replacement, site)
        if message not in self.slips and len(self.slips) < 10:
            self.slips.append(message)

    def _start_main(self) -> None:
        try:
            args = tuple(_serde.decode(p, self.values) for p in self.started.args)
            coro = self.definition.fn(*args)
        except BaseException as exc:  # noqa: BLE001 - any failure to begin fails the run
            self._close(self._failed(exc))
            return
        self._main = self.create_task(coro, name=f"workflow:{self.started.workflow_id}")
        self._main.add_done_callback(self._on_main_done)

    def _run_ready(self) -> None:
        steps = 0
        while True:
            while self._ready:
                handle = self._ready.popleft()
                if not handle._cancelled:
                    handle._run()
                steps += 1
                if steps > _MAX_STEPS:
                    raise NonDeterminismError(
                        "workflow never blocks: it loops without a durable call")
            if not self._check_predicates():
                return

    def _check_predicates(self) -> bool:
        """Resolves the ``condition(predicate)`` waits whose predicate now holds; whether
        any did (their code then runs)."""
        moved = False
        for entry in list(self._predicates):
            predicate, future, _ = entry
            if future.done():
                self._predicates.remove(entry)
                continue
            error: Exception | None = None
            try:
                met = bool(predicate())
            except Exception as exc:  # the waiting code raises it
                met, error = True, exc
            if met:
                self._predicates.remove(entry)
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(True)
                moved = True
        return moved

    def wait_predicate(self, predicate: Callable[[], Any]) -> asyncio.Future[bool]:
        """A future that resolves once ``predicate()`` holds, checked whenever the
        workflow's code has run."""
        future: asyncio.Future[bool] = self.create_future()
        if self._cancelled_now():
            future.set_exception(CancelledFailure("workflow cancelled"))
            return future
        self._predicates.append((predicate, future, _shielded.get() == 0))
        return future

    def _on_main_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            self._close(FailWorkflow(failure=failure_from(CancelledFailure("workflow cancelled"))))
            return
        exc = task.exception()
        if exc is None:
            try:
                result = _serde.encode(task.result(), what="workflow result",
                                       values=self.values)
            except RaylineError as err:
                self._close(FailWorkflow(failure=failure_from(err)))
                return
            self._close(CompleteWorkflow(result=result))
        elif isinstance(exc, ContinueAsNew):
            try:
                args = _serde.encode_args(exc.new_args, what="continue_as_new",
                                          values=self.values)
                name, code = _workflow_ref(exc.workflow)
            except RaylineError as err:
                self._close(FailWorkflow(failure=failure_from(err)))
                return
            self._close(ContinueAsNewWorkflow(args=args, workflow_name=name, code=code[0],
                                              code_pickle=code[1], task_queue=exc.task_queue))
        else:
            self._close(self._failed(exc))

    def _close(self, command: Command) -> None:
        command = self._next_cron_run(command)
        self.closing = command
        self._commands.append(command)

    def _next_cron_run(self, command: Command) -> Command:
        """For a cron start, a run that completed or failed for good (not cancelled)
        names when the next run of the id starts: the expression's next time."""
        cron = self.started.options.cron
        if cron is None or not isinstance(command, (CompleteWorkflow, FailWorkflow)):
            return command
        if isinstance(command, FailWorkflow) and (
                command.retry_in is not None or command.failure.kind == "cancelled"):
            return command
        next_run = cron_spec(cron).next_after(self._time)
        return command if next_run is None else \
            command.model_copy(update={"next_run_at": next_run})

    def _failed(self, exc: BaseException) -> FailWorkflow:
        """How the workflow raising ``exc`` closes the run: failed, or (by the run's retry
        policy) failed and run again after a backoff, or failed for good once the policy
        allows no more attempts (code 597, the last attempt's failure as its cause)."""
        failure = failure_from(exc)
        stored = self.started.options.retry
        if stored is None or failure.kind == "cancelled" or failure.code == FATAL:
            return FailWorkflow(failure=failure)
        kept: dict[str, Any] = dict(stored)
        policy = RetryPolicy(**kept)
        attempt = self.started.attempt
        if not policy.retryable(failure.type):
            return FailWorkflow(failure=failure)
        if policy.allows_another(attempt):
            return FailWorkflow(failure=failure, retry_in=policy.delay(attempt))
        return FailWorkflow(failure=Failure(
            type=failure.type, code=MAXED, kind="maxed", cause=failure, stack=failure.stack,
            message=f"workflow {self.started.workflow_name!r} failed on each of its "
                    f"{attempt} attempt(s); the last: {failure.message}"))

    # --------------------------------------------------------------------- events

    def _apply(self, event: Event) -> None:
        if isinstance(event, ActivityCompleted):
            self._resolve(event.seq, lambda: _serde.decode(event.result, self.values))
        elif isinstance(event, ActivityFailed):
            self._reject(event.seq, activity_error(event.failure))
        elif isinstance(event, TimerFired):
            pending = self._pending.pop(event.seq, None)
            if pending is not None and pending.on_fire is not None:
                pending.on_fire()
        elif isinstance(event, SignalReceived):
            self._on_signal(event)
        elif isinstance(event, UpdateAccepted):
            self._on_update(event)
        elif isinstance(event, CancelRequested):
            self._on_cancel()
        elif isinstance(event, ChildStarted):
            pending = self._pending.get(event.seq)
            if pending is not None:
                pending.extra["run_id"] = event.run_id
                started = pending.extra.get("started")
                if started is not None and not started.done():
                    started.set_result(event.workflow_id)
                if pending.extra.get("cancelling"):  # asked before the child existed
                    self._commands.append(CancelChild(seq=event.seq,
                                                      workflow_id=event.workflow_id))
                if not pending.extra.get("wait", True):
                    self._pending.pop(event.seq)
        elif isinstance(event, ChildCompleted):
            if self._child_cancelled(event.seq, None):
                return
            self._resolve(event.seq, lambda: _serde.decode(event.result, self.values))
        elif isinstance(event, ChildFailed):
            pending = self._pending.get(event.seq)
            if pending is not None:
                error = child_error(event.failure, pending.extra.get("workflow_id"))
                if self._child_cancelled(event.seq, error):
                    return
                started = pending.extra.get("started")
                if started is not None and not started.done():
                    started.set_exception(error)
                self._reject(event.seq, error)
        elif isinstance(event, ExternalResolved):
            if event.failure is None:
                self._resolve(event.seq, lambda: None)
            else:
                self._reject(event.seq, child_error(event.failure))

    def _child_cancelled(self, seq: int, error: BaseException | None) -> bool:
        """A child this run's cancel reached has ended: however it ended, the parent's
        call raises ``CancelledFailure`` (the child's own error as its cause)."""
        pending = self._pending.get(seq)
        if pending is None or not pending.extra.get("cancelling"):
            return False
        cancelled = CancelledFailure("workflow cancelled")
        if error is not None and not isinstance(error, CancelledFailure):
            cancelled.__cause__ = error
        self._reject(seq, cancelled)
        return True

    def _resolve(self, seq: int, value: Callable[[], Any]) -> None:
        pending = self._pending.pop(seq, None)
        if pending is None or pending.future.done():
            return
        try:
            pending.future.set_result(value())
        except Exception as exc:  # a stored value that no longer decodes
            pending.future.set_exception(exc)

    def _reject(self, seq: int, error: BaseException) -> None:
        pending = self._pending.pop(seq, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(error)

    def _on_signal(self, event: SignalReceived) -> None:
        if event.request_id is not None:
            if event.request_id in self._seen_requests:
                return
            self._seen_requests.add(event.request_id)
        handler = self._handlers.get(event.signal_id)
        if handler is not None or (None in self._handlers
                                   and not self._waiters.get(event.signal_id)):
            self._handle(event)
            return
        waiters = self._waiters.get(event.signal_id)
        while waiters:
            seq = waiters.popleft()
            pending = self._pending.pop(seq, None)
            if pending is None or pending.future.done():
                continue
            if pending.extra.get("timer"):
                self._commands.append(CancelTimer(seq=seq))
            pending.future.set_result(_serde.decode(event.data, self.values))
            return
        self._signals.setdefault(event.signal_id, collections.deque()).append(event)
        self._arrival[id(event)] = self._arrived
        self._arrived += 1

    def _handle(self, event: SignalReceived) -> None:
        """Runs the signal's handler (its own, else the default one with the name first):
        a sync one now, an async one as a task of the workflow; what it raises fails
        the run, as the workflow's own code would."""
        specific = self._handlers.get(event.signal_id)
        data = _serde.decode(event.data, self.values)
        args = (data,) if specific is not None else (event.signal_id, data)
        handler = specific or self._handlers[None]
        try:
            result = handler(*args)
        except Exception as exc:
            self._fail_now(exc)
            return
        if inspect.isawaitable(result):
            task = self.create_task(_awaited(result), name=f"signal:{event.signal_id}")
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fail_now(task.exception())  # type: ignore[arg-type]

    def _fail_now(self, exc: BaseException) -> None:
        if self.closing is None:
            if self._main is not None and not self._main.done():
                self._main.remove_done_callback(self._on_main_done)
                self._main.cancel()
            self._close(self._failed(exc))

    def set_update_handler(self, name: str, fn: Callable[..., Any],
                           validator: Callable[..., Any] | None) -> None:
        self._update_handlers[name] = (fn, validator)

    def update_state(self, update_id: str) -> CompleteUpdate | bool:
        """How update ``update_id`` ended (its ``CompleteUpdate``), ``True`` while its
        handler runs, ``False`` when this run never took it."""
        if update_id not in self._updates:
            return False
        return self._updates[update_id] or True

    def validate_update(self, name: str, args: Sequence[Any]) -> None:
        """Checks an update before anything is recorded: there is a handler for it, its
        arguments fit the handler, and its validator (run on the workflow's state as it
        is now; it must not change it) accepts them.

        Raises:
            UpdateRejectedError: naming what refused it.
        """
        found = self._update_handlers.get(name)
        if found is None:
            known = ", ".join(sorted(self._update_handlers)) or "none"
            raise UpdateRejectedError(f"workflow {self.started.workflow_id!r} has no update "
                                      f"handler {name!r} (known: {known})")
        fn, validator = found
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)  # workflow.info() and the like work in it
        try:
            decoded = tuple(_serde.decode(p, self.values) for p in args)
            validate_args(fn, decoded, what=f"update {name!r}")
            if validator is not None:
                validator(*decoded)
        except Exception as exc:
            raise UpdateRejectedError(f"update {name!r} rejected: {exc}",
                                      cause_type=qualified_name(type(exc))) from None
        finally:
            asyncio.events._set_running_loop(previous)

    def _on_update(self, event: UpdateAccepted) -> None:
        """Runs the handler of an accepted update as a task of the workflow; what it
        returns or raises is recorded as the update's ``CompleteUpdate`` (an update's
        error fails the update, not the workflow)."""
        if event.update_id in self._updates:
            return
        self._updates[event.update_id] = None
        found = self._update_handlers.get(event.name)
        if found is None:  # the code changed since it was taken
            self._complete_update(event.update_id, None, UpdateRejectedError(
                f"no update handler {event.name!r}"))
            return
        self.create_task(self._run_update(event, found[0]), name=f"update:{event.name}")

    async def _run_update(self, event: UpdateAccepted, fn: Callable[..., Any]) -> None:
        try:
            args = tuple(_serde.decode(p, self.values) for p in event.args)
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            payload = _serde.encode(result, what=f"update {event.name!r} result",
                                    values=self.values)
        except BaseException as exc:  # noqa: BLE001 - a cancel of the run too
            self._complete_update(event.update_id, None, exc)
            return
        self._complete_update(event.update_id, payload, None)

    def _complete_update(self, update_id: str, result: Any,
                         error: BaseException | None) -> None:
        command = CompleteUpdate(update_id=update_id, result=result,
                                 failure=None if error is None else failure_from(error))
        self._updates[update_id] = command
        if self.closing is None:
            self._commands.append(command)

    def set_signal_handler(self, name: str | None, fn: Callable[..., Any]) -> None:
        """Registers a signal handler (``None``: the default one) and hands it, in the
        order they came, the signals buffered for it until now."""
        self._handlers[name] = fn
        names = [name] if name is not None else \
            [n for n in self._signals if n not in self._handlers]
        buffered = sorted((event for n in names for event in self._signals.pop(n, ())),
                          key=lambda event: self._arrival.get(id(event), 0))
        for event in buffered:
            self._arrival.pop(id(event), None)
            self._handle(event)

    def _on_cancel(self) -> None:
        if self._cancel_requested:
            return
        self._cancel_requested = True
        for seq, pending in list(self._pending.items()):
            if pending.cancellable:
                self._cancel_pending(seq, pending, CancelledFailure("workflow cancelled"))
        for entry in [e for e in self._predicates if e[2]]:
            self._predicates.remove(entry)
            if not entry[1].done():
                entry[1].set_exception(CancelledFailure("workflow cancelled"))

    def _cancel_pending(self, seq: int, pending: _Pending, error: BaseException) -> None:
        if pending.kind == "child" and not pending.future.done() and \
                pending.extra.get("cancellation_type") == "wait_cancellation_completed":
            # the call stays open until the child has ended (how it ended is its answer)
            if not pending.extra.get("cancelling"):
                pending.extra["cancelling"] = True
                self._commands.append(CancelChild(seq=seq,
                                                  workflow_id=pending.extra["workflow_id"]))
            return
        del self._pending[seq]
        if pending.kind == "activity":
            self._commands.append(CancelActivity(seq=seq))
        elif pending.kind in ("timer", "asyncio_timer") or pending.extra.get("timer"):
            self._commands.append(CancelTimer(seq=seq))
        elif pending.kind == "child":
            self._commands.append(CancelChild(seq=seq, workflow_id=pending.extra["workflow_id"]))
        if pending.kind == "wait":
            self._waiters.get(pending.extra["signal_id"], collections.deque()).remove(seq)
        if not pending.future.done():
            pending.future.set_exception(error)

    # --------------------------------------------------------------- durable calls

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _cancelled_now(self) -> bool:
        return self._cancel_requested and _shielded.get() == 0

    def _open(self, kind: WorkKind, seq: int, command: Command | None,
              future: asyncio.Future[Any] | None = None, **extra: Any) -> _Pending:
        future = future if future is not None else self.create_future()
        pending = _Pending(kind, future, _shielded.get() == 0, command, extra=extra)
        if self._cancelled_now():
            future.set_exception(CancelledFailure("workflow cancelled"))
            return pending
        self._pending[seq] = pending
        if command is not None:
            self._commands.append(command)
        future.add_done_callback(lambda f: self._on_abandoned(seq, f))
        return pending

    def _on_abandoned(self, seq: int, future: asyncio.Future[Any]) -> None:
        """The workflow cancelled a durable future itself (e.g. asyncio.wait_for)."""
        if future.cancelled() and seq in self._pending:
            self._cancel_pending(seq, self._pending[seq], CancelledFailure("abandoned"))

    def schedule_activity(
        self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
        options: ActivityOptions,
    ) -> asyncio.Future[Any]:
        checked = validate_args(definition.fn, args, what=f"activity {definition.name!r}")
        if self.values is not None:  # a large value the run holds goes on as itself (by
            checked = tuple(  # reference), not as the copy validation made of it
                arg if type(arg) is type(new) and self.values.knows(arg) else new
                for arg, new in zip(args, checked, strict=True))
        args = checked
        payloads = _serde.encode_args(args, what=f"activity {definition.name!r}",
                                      values=self.values)
        seq = self._next_seq()
        command = ScheduleActivity(
            seq=seq, activity=definition.name, args=payloads, options=options.to_json()
        )
        pending = self._open("activity", seq, command)
        pending.extra.update(definition=definition, args=args, options=options)
        return pending.future

    def activity_call(self, seq: int) -> tuple[ActivityDefinition[Any, Any], tuple[Any, ...],
                                                ActivityOptions]:
        """What the host needs to run activity ``seq``: the function, its args and options."""
        extra = self._pending[seq].extra
        return extra["definition"], extra["args"], extra["options"]

    def sleep(self, seconds: float) -> asyncio.Future[float]:
        seq = self._next_seq()
        if seconds <= 0:
            future = self.create_future()
            future.set_result(0.0)
            return future
        command = StartTimer(seq=seq, fire_at=self._time + seconds, duration=seconds)
        pending = self._open("timer", seq, command)
        def fire() -> None:
            if not pending.future.done():
                pending.future.set_result(seconds)

        pending.on_fire = fire
        return pending.future

    def condition(self, signal_id: str, timeout: float | None) -> asyncio.Future[Any]:
        seq = self._next_seq()
        if not self._cancelled_now():
            self._commands.append(StartWait(seq=seq, signal_id=signal_id, timeout=timeout))
        buffered = self._take_signal(signal_id)
        if buffered is not None:
            future = self.create_future()
            future.set_result(_serde.decode(buffered.data, self.values))
            return future
        if timeout is None:
            pending = self._open("wait", seq, None, signal_id=signal_id)
        else:
            command = StartTimer(seq=seq, fire_at=self._time + timeout, duration=timeout)
            pending = self._open("wait", seq, command, signal_id=signal_id, timer=True)

            def on_timeout() -> None:
                waiters = self._waiters.get(signal_id)
                if waiters and seq in waiters:
                    waiters.remove(seq)
                if not pending.future.done():
                    pending.future.set_result(False)

            pending.on_fire = on_timeout
        if seq in self._pending:
            self._waiters.setdefault(signal_id, collections.deque()).append(seq)
        return pending.future

    def _take_signal(self, signal_id: str) -> SignalReceived | None:
        queue = self._signals.get(signal_id)
        while queue:
            event = queue.popleft()
            if event.expire_at is None or event.expire_at >= self._time:
                return event
            self._commands.append(DropSignal(signal_id=signal_id, expire_at=event.expire_at))
        return None

    def start_child(
        self, name: str, code: tuple[str | None, str | None], args: tuple[Any, ...],
        workflow_id: str | None, task_queue: str | None, options: ChildOptions, wait: bool,
    ) -> tuple[asyncio.Future[str], asyncio.Future[Any]]:
        """Starts a child; ``code`` is (import path, pickled definition), either or none."""
        payloads = _serde.encode_args(args, what=f"child workflow {name!r}",
                                      values=self.values)
        seq = self._next_seq()
        child_id = workflow_id or f"{self.started.workflow_id}-{name}-{seq}"
        command = StartChild(
            seq=seq, workflow_name=name, workflow_id=child_id, args=payloads,
            task_queue=task_queue, code=code[0], code_pickle=code[1], options=options, wait=wait,
        )
        started = self.create_future()
        pending = self._open("child", seq, command, workflow_id=child_id, wait=wait,
                             started=started, cancellation_type=options.cancellation_type)
        if pending.future.done() and not started.done():
            started.set_exception(CancelledFailure("workflow cancelled"))
        return started, pending.future

    def signal_external(self, workflow_id: str, signal_id: str, data: Any,
                        run_id: str | None = None) -> asyncio.Future[Any]:
        payload = _serde.encode(data, what=f"signal {signal_id!r} data", values=self.values)
        seq = self._next_seq()
        request_id = f"{self.started.workflow_id}:{self.started.run_id}:{seq}"
        command = SignalExternal(seq=seq, workflow_id=workflow_id, signal_id=signal_id,
                                 data=payload, request_id=request_id, run_id=run_id)
        return self._open("external", seq, command).future

    def cancel_external(self, workflow_id: str, run_id: str | None = None) -> asyncio.Future[Any]:
        seq = self._next_seq()
        command = CancelExternal(seq=seq, workflow_id=workflow_id, run_id=run_id)
        return self._open("external", seq, command).future

    def upsert(self, fields: dict[str, Any], *, indexed: bool) -> None:
        if indexed:  # typed, so the index can compare them
            fields = {key: self._searchable(key, value) for key, value in fields.items()}
        for key, value in fields.items():
            if not _serde._is_json(value):
                raise InvalidInputError(f"enrich field {key!r} must be a JSON value")
        (self.search_fields if indexed else self.enrich_fields).update(fields)
        self._commands.append(UpsertFields(seq=self._next_seq(), fields=dict(fields),
                                           indexed=indexed))

    def _searchable(self, key: str, value: Any) -> Any:
        """``search_value``, except that a replay keeps a value an older rayline took
        (any JSON), so the run replays as it was recorded."""
        try:
            return search_value(key, value)
        except InvalidInputError:
            if self.is_replaying:
                return value
            raise

    def deprecate_patch(self, patch_id: str) -> None:
        """The code no longer has the branch before ``patch_id``: a replay of a run that
        recorded the patch accepts its marker without the ``patched()`` call."""
        self._deprecated.add(patch_id)

    def patched(self, patch_id: str) -> bool:
        if patch_id not in self._patches:
            use = not self.is_replaying or patch_id in self._recorded_patches
            self._patches[patch_id] = use
            if use:
                self._commands.append(RecordPatch(patch_id=patch_id))
        return self._patches[patch_id]

    # --------------------------------------------------------- plain calls, state

    def now(self) -> float:
        return self._time

    def random(self) -> float:
        return self._rng.random()

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4)

    def info(self) -> WorkflowInfo:
        s = self.started
        runs = getattr(self.values, "runs", None)
        return WorkflowInfo(
            s.workflow_id, s.run_id, s.workflow_name, s.task_queue, s.attempt,
            self.is_replaying, s.parent.workflow_id if s.parent else None,
            start_time=datetime.datetime.fromtimestamp(s.time, datetime.timezone.utc),
            namespace=getattr(runs, "namespace", ""), continued_from=s.continued_from,
            history_length=self._history, search=dict(self.search_fields), memo=dict(s.memo),
            scheduled_time=None if s.not_before is None else
            datetime.datetime.fromtimestamp(s.not_before, datetime.timezone.utc),
            cron_schedule=s.options.cron)

    def set_query_handler(self, name: str, fn: Callable[..., Any]) -> None:
        self._queries[name] = fn

    def query(self, name: str, args: Sequence[Any]) -> Any:
        handler = self._queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self._queries)) or "none"
            raise QueryError(f"no query handler {name!r} (known: {known})")
        try:
            return handler(*args)
        except Exception as exc:
            raise QueryError(f"query handler {name!r} raised {type(exc).__name__}: {exc}") from exc

    def novel(self, events: Sequence[Event]) -> list[Event]:
        """``events`` without answers to calls that are no longer open (a timer that fired
        after its wait was satisfied, a child's result delivered twice after a recovery)
        and without signals whose request id this run has seen: they would change
        nothing, so they need not be recorded."""
        out, answered, requests = [], set(), set()
        for event in events:
            if isinstance(event, UpdateAccepted):  # an update sent again: taken once
                if event.update_id in self._updates or event.update_id in requests:
                    continue
                requests.add(event.update_id)
            request_id = getattr(event, "request_id", None)
            if request_id is not None:  # a signal sent again (a retry): recorded once
                if request_id in self._seen_requests or request_id in requests:
                    continue
                requests.add(request_id)
            seq = getattr(event, "seq", None)
            if seq is not None and (seq not in self._pending or seq in answered):
                continue
            if seq is not None and event.type != "child_started":
                answered.add(seq)
            out.append(event)
        return out

    def unconsumed_signals(self) -> list[SignalReceived]:
        """Signals this run received and its code never took, in arrival order per id."""
        return [signal for queue in self._signals.values() for signal in queue]

    def open_obligations(self) -> int:
        """HotMesh's semaphore: pending activities, timers, conditions and children."""
        return len(self._pending)

    def pending_summary(self) -> list[PendingWork]:
        return [PendingWork(seq=seq, kind=p.kind, signal_id=p.extra.get("signal_id"))
                for seq, p in sorted(self._pending.items())]

    def unfinished_commands(self, started_children: bool = False) -> list[Command]:
        """Commands issued but not yet answered: what a recovering host issues again. A
        child whose start is recorded is not among them (unless ``started_children``):
        its host tells this run when it closes (its open marker keeps that promise across
        crashes), so a run of many children is not re-attached to each one whenever it
        wakes."""
        return [p.command for _, p in sorted(self._pending.items()) if p.command is not None
                and (started_children or not (p.kind == "child" and "run_id" in p.extra))]

    def waiting_only_on_outside(self) -> bool:
        """True when only timers, signals and started children are pending: nothing this
        run's host is carrying out for it, so the run may be parked."""
        return bool(self._pending or self._predicates) and all(
            p.kind in ("timer", "wait", "asyncio_timer")
            or (p.kind == "child" and "run_id" in p.extra) for p in self._pending.values())

    def next_timer(self) -> float | None:
        times = [p.command.fire_at for p in self._pending.values()
                 if isinstance(p.command, StartTimer)]
        return min(times) if times else None

    # ----------------------------------------------- asyncio.AbstractEventLoop

    def time(self) -> float:
        return self._time

    def call_soon(self, callback: Callable[..., Any], *args: Any,  # type: ignore[override]
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any],  # type: ignore[override]
                   *args: Any,
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        return self.call_at(self._time + delay, callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[..., Any],  # type: ignore[override]
                *args: Any,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        """A durable timer: ``asyncio.sleep`` and ``asyncio.wait_for`` inside a workflow."""
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        delay = when - self._time
        seq = self._next_seq()
        if delay <= 0:
            self._ready.append(handle)
            return handle
        command = StartTimer(seq=seq, fire_at=when, duration=delay)
        # asyncio.sleep's own future fails with CancelledFailure when the run is cancelled
        sleeper = callback is asyncio.futures._set_result_unless_cancelled and args  # type: ignore[attr-defined]
        pending = self._open("asyncio_timer", seq, command, args[0] if sleeper else None)
        if seq not in self._pending:
            return handle
        def fire() -> None:
            if not handle.cancelled():
                self._ready.append(handle)

        pending.on_fire = fire
        handle._scheduled = True  # type: ignore[attr-defined]
        self._timer_handles[handle] = seq
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        seq = self._timer_handles.pop(handle, None)
        if seq is not None and seq in self._pending:
            del self._pending[seq]
            self._commands.append(CancelTimer(seq=seq))

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: str | None = None,
                    context: contextvars.Context | None = None) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return False

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (CancelledFailure, ActivityError)):
            return  # a sibling of a failed gather: the workflow saw the first error
        if str(context.get("message", "")).startswith("Task was destroyed"):
            return  # an instance dropped while its coroutine waits (closed, parked, replaced)
        log.warning("workflow %s: %s", self.started.workflow_id, context.get("message"),
                    exc_info=exc)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)


def _workflow_ref(workflow: Any) -> tuple[str | None, tuple[str | None, str | None]]:
    """(name, (import path, pickled definition)) of the workflow a continue-as-new names;
    ``(None, (None, None))`` for none (the same workflow)."""
    if workflow is None:
        return None, (None, None)
    if isinstance(workflow, str):
        return workflow, (None, None)
    definition: WorkflowDefinition[Any, Any] = as_workflow(workflow)
    code = CodeRef.of(definition)
    return definition.name, (code.path, code.pickled)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def replay_timeline(
    definition: WorkflowDefinition[Any, Any], started: WorkflowStarted, batches: Sequence[Batch],
    values: Values | None = None,
) -> tuple[WorkflowInstance, list[Command]]:
    """Rebuilds a run from its timeline and checks it against the code.

    Each batch's events are fed in order; the commands the code issues must match the
    commands the batch recorded. Returns the instance (ready for live activations) and
    the commands of the last replayed activation that the host must act on: everything
    issued and not answered yet.

    Raises:
        NonDeterminismError: when the code issues other durable calls than recorded.
        StorageError: (or the error reading it) a large value the timeline names could
            not be read, so the code could not replay: the cause, not a divergence.
    """
    recorded_patches = {c.patch_id for b in batches for c in b.commands
                        if isinstance(c, RecordPatch)}
    # an event loop for workflow code only: the I/O methods of AbstractEventLoop stay abstract
    instance = WorkflowInstance(  # type: ignore[abstract]
        definition, started, recorded_patches=recorded_patches, values=values)
    instance.is_replaying = True
    try:
        for batch in batches:
            instance.step = batch.seq
            produced = instance.activate(batch.events, batch.time)
            _check_same(started.workflow_id, batch, produced, instance._deprecated)
            instance._history += len(batch.commands) - len(produced)  # as recorded
            if batch.terminated is not None:
                break
    except NonDeterminismError as exc:
        unreadable = getattr(values, "failure", None)
        if unreadable is not None:
            raise unreadable from exc
        raise
    finally:
        instance.is_replaying = False
    return instance, instance.unfinished_commands()


def _signature(command: Command) -> tuple[Any, ...]:
    if isinstance(command, ScheduleActivity):
        return ("activity", command.seq, command.activity)
    if isinstance(command, StartTimer):
        return ("timer", command.seq, round(command.duration, 6))
    if isinstance(command, StartChild):
        return ("child", command.seq, command.workflow_name, command.workflow_id)
    if isinstance(command, SignalExternal):
        return ("signal", command.seq, command.workflow_id, command.signal_id)
    if isinstance(command, StartWait):
        return ("wait", command.seq, command.signal_id)
    if isinstance(command, CompleteUpdate):
        return ("update", command.update_id)
    if isinstance(command, (CompleteWorkflow, FailWorkflow, ContinueAsNewWorkflow)):
        return ("close", command.type)
    return (command.type, getattr(command, "seq", None))


def _check_same(workflow_id: str, batch: Batch, produced: list[Command],
                deprecated: Iterable[str] = ()) -> None:
    want = [_signature(c) for c in batch.commands
            if not (isinstance(c, RecordPatch) and c.patch_id in deprecated)]
    got = [_signature(c) for c in produced]
    if want != got:
        raise NonDeterminismError(
            f"workflow {workflow_id!r} replay diverged at activation {batch.seq}: "
            f"the timeline recorded {want}, the code now issues {got}",
            activation=batch.seq, recorded=want, produced=got)
