"""An execution: one workflow execution as an asyncio actor (its own mailbox, state and
lock), living in a host.

Invariants (storage write order and crash recovery):
- Events reach the execution through its mailbox. One activation takes everything in the
  mailbox, runs the core, and writes the events and the resulting commands as one batch
  (group commit). Only after the batch is durable are the commands carried out and the
  senders of the events (signals, cancels) answered: everything the workflow has seen is
  in storage before anything it asked for happens.
- A write that fails in any way is retried with backoff, holding the activation (no
  exception from storage ends the execution's loop); a write refused because the batch key
  holds another object (``ConflictError``) means another owner wrote the run: this execution
  is fenced, stops without acting, and hands the events it had not written (and their
  senders) back to the host, which re-reads the run and takes it back or redirects them.
- Workflow code that raises anything, ``SystemExit`` and ``KeyboardInterrupt`` included,
  fails its own run; it never ends the loop.
- A run that continues as new hands on the signals it had not consumed and the signals
  and cancels still in its mailbox: they belong to the workflow id, so the next run
  gets them.
- A recovered execution replays its timeline through the core and carries out the commands
  that were issued and not answered (activities at least once, results recorded once).
- ``lock`` is an ``aiorwlock.RWLock``: activations and termination write, queries read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable, Protocol

import aiorwlock

from .. import _backoff, _tracing
from .. import timeline as tl
from .._activity import ActivityDefinition
from .._definition import WorkflowDefinition
from .._options import ActivityOptions
from .._serde import Payload
from .._values import ObjectSpace, Values
from ..core.instance import WorkflowInstance, replay_timeline
from ..errors import ConflictError, NotHereError, WorkflowClosedError
from ..failures import failure_from
from ..messages import PendingWork, RunOutcome, RunStatus
from ..storage.runs import History, RunStore
from .blackbox import Blackbox
from .metrics import Metrics
from .watchdog import Watchdog

log = logging.getLogger("rayline.execution")
_clock = time.monotonic


def deadline_of(started: tl.WorkflowStarted) -> float | None:
    """When the run's ``execution_timeout`` ends it, if it has one."""
    timeout = started.options.execution_timeout
    return None if timeout is None else started.time + float(timeout)


def wake_of(instance: WorkflowInstance, started: tl.WorkflowStarted) -> float | None:
    """When a run waiting only on the outside must wake by itself: its next timer or its
    deadline (``None``: only a signal, a child or a cancel wakes it)."""
    wakes = [t for t in (instance.next_timer(), deadline_of(started)) if t is not None]
    return min(wakes) if wakes else None

EAGER = os.environ.get("RAYLINE_EAGER", "1") != "0"
"""Activities and timers are carried out while the batch that records them is written
(``Execution.eager``); ``RAYLINE_EAGER=0`` waits for the write."""


def _without(commands: list[tl.Command], done: list[tl.Command]) -> list[tl.Command]:
    """``commands`` but those in ``done`` (the very objects)."""
    if not done:
        return commands
    taken = {id(c) for c in done}
    return [c for c in commands if id(c) not in taken]


Mail = tuple[tl.Event, "asyncio.Future[None] | None"]
"""An event in a workflow execution's mailbox, with the future its sender awaits (if any)."""

class Environment(Protocol):
    """What a workflow execution needs from the host it lives in."""

    runs: RunStore
    space: ObjectSpace | None
    host_name: str
    draining: bool
    """The host is handing its runs to others: nothing starts before its batch is durable
    (a run moved away mid-write would run it again on its new host)."""
    watchdog: Watchdog
    blackbox: Blackbox
    metrics: Metrics

    def now(self) -> float: ...
    def io(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]: ...
    def run_activity(self, execution: Execution, seq: int, definition: ActivityDefinition[Any, Any],
                     args: tuple[Any, ...], options: ActivityOptions) -> Awaitable[tl.Event]: ...
    def start_child(self, execution: Execution,
                    command: tl.StartChild) -> Awaitable[tl.Event | None]: ...
    def signal_external(self, execution: Execution,
                        command: tl.SignalExternal) -> Awaitable[tl.Event]: ...
    def cancel_external(self, execution: Execution, seq: int, workflow_id: str,
                        run_id: str | None = None) -> Awaitable[tl.Event]: ...
    def on_fields(self, execution: Execution) -> None: ...
    def on_update(self, execution: Execution, command: tl.CompleteUpdate) -> None: ...
    def on_closed(self, execution: Execution) -> None: ...
    def on_idle(self, execution: Execution) -> None: ...
    def on_fenced(self, execution: Execution, unwritten: list[Mail]) -> None: ...
    def background(self, work: Awaitable[Any]) -> None: ...


class Execution:
    """One workflow execution (see the module docstring)."""

    def __init__(self, env: Environment, definition: WorkflowDefinition[Any, Any],
                 started: tl.WorkflowStarted, values: Values | None = None) -> None:
        self.env = env
        self.values = values or Values(env.runs, env.space)
        """The run's large values (read ahead, remembered, written before their batch)."""
        self.values.workflow_id = started.workflow_id
        self.definition = definition
        self.started = started
        self.workflow_id = started.workflow_id
        self.run_id = started.run_id
        self.lock = aiorwlock.RWLock()
        self.instance: WorkflowInstance | None = None
        self.outcome: RunOutcome | None = None
        self.slips: list[str] = []
        self.closed = asyncio.Event()
        self.fenced = False
        self.version = started.version
        """The code version the run runs (an upgrade may have moved it from its record's)."""
        self.updated_at = started.time
        self.batches_written = 0
        self._next_batch = 1
        self._mailbox: list[Mail] = []
        self._arrived = 0.0
        """When the first event in the mailbox arrived (``_clock``): a step's start."""
        self._metrics = env.metrics
        self._wakeup = asyncio.Event()
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._first = False
        self._expiry: asyncio.Task[None] | None = None
        self._closed_fields: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._hold_until: float | None = None
        """A run whose start is delayed: its first activation waits until then."""
        self.carried: list[Mail] = []
        """On continue-as-new: signals and cancels the next run takes over."""
        self.children: dict[int, tuple[str, tl.ParentClosePolicy]] = {}
        """Children the run's close must reach (``tl.track_children``), by seq."""
        self._history: list[bytes | tl.Batch] = []
        """The run's batches in order, as stored (their JSON) or as read: what a snapshot
        of the run is made of."""
        self._snapshot_at = 0
        """The seq of the run's newest snapshot (read or being written)."""

    # -------------------------------------------------------------- lifecycle

    def prepare(self, events: list[tl.Event]) -> tl.Batch:
        """Runs a new run's first activation; nothing is written or carried out yet."""
        self.instance = WorkflowInstance(  # type: ignore[abstract]
            self.definition, self.started, values=self.values)
        now = self.env.now()
        commands = self._activate(self.instance, events, now)
        return tl.Batch(seq=1, run_id=self.run_id, time=now, events=events, commands=commands,
                        owner=self.env.host_name)

    def _activate(self, instance: WorkflowInstance, events: list[tl.Event],
                  now: float) -> list[tl.Command]:
        """Runs the core; whatever workflow code raises fails this run and nothing else."""
        watchdog, blackbox = self.env.watchdog, self.env.blackbox
        instance.step = self._next_batch
        try:
            watchdog.enter(self.workflow_id, strict=self.started.options.strict)
            blackbox.running(self.workflow_id)
            try:
                return instance.activate(events, now)
            finally:
                blackbox.idle()
                watchdog.leave()
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too
            watchdog.leave()  # again: the watchdog's error may have landed in the first
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("workflow %s: activation failed", self.workflow_id)
            instance.closing = tl.FailWorkflow(failure=failure_from(exc))
            return [instance.closing]

    @property
    def deadline(self) -> float | None:
        """When ``execution_timeout`` ends the run, if it has one."""
        return deadline_of(self.started)

    def _arm_deadline(self) -> None:
        if self.deadline is not None:
            delay = max(0.0, self.deadline - self.env.now())
            handle = asyncio.get_running_loop().call_later(delay, self._on_deadline)
            self._timers[-1] = handle

    def _on_deadline(self) -> None:
        self._timers.pop(-1, None)
        if self.outcome is None:
            self._expiry = asyncio.create_task(self._expire())

    async def _expire(self) -> None:
        try:
            await self.terminate("execution_timeout exceeded")
        except WorkflowClosedError:
            pass

    def launch(self, first: tl.Batch, done: list[tl.Command] | None = None) -> None:
        """Once the run object holding ``first`` is durable: act on it (but on ``done``,
        carried out already by ``eager``), start the loop."""
        self._next_batch = 2
        self.batches_written = 1
        self._history = [first]
        self.updated_at = first.time
        tl.track_children(self.children, first)
        self._arm_deadline()
        self._loop_task = asyncio.create_task(self._loop(), name=f"execution:{self.workflow_id}")
        self._execute(_without(first.commands, done or []))
        if self.parkable():
            self.env.on_idle(self)

    def resume(self, batches: list[tl.Batch], history: History | None = None) -> None:
        """Rebuilds the run from its timeline and carries out what was left undone.

        A closed run is not replayed (its outcome and fields come from the timeline),
        except one that continued as new, whose unconsumed signals go to the next run.
        ``history`` is the run as read (when ``batches`` are its batches): their stored
        JSON and its snapshot, to snapshot the run again without encoding it.

        Raises:
            NonDeterminismError: the code no longer replays the timeline; nothing was
                started (no loop, no timers, no commands carried out).
        """
        self._next_batch = len(batches) + 1
        self.batches_written = len(batches)
        self._history = [*batches]
        if history is not None and history.batches is batches:
            self._history[:] = history.bodies
            self._snapshot_at = history.snapshot
        self.version = tl.home_of(self.started, batches)[1]
        self.updated_at = batches[-1].time if batches else self.started.time
        for batch in batches:
            tl.track_children(self.children, batch)
        outcome = RunOutcome.of_run(batches)
        if outcome is not None:
            self._closed_fields = tl.fields_of(self.started, batches)
            if outcome.status is RunStatus.CONTINUED:
                try:
                    self.instance, _ = replay_timeline(self.definition, self.started, batches,
                                                       self.values)
                except Exception:  # the run is closed: carry over nothing rather than fail
                    log.exception("workflow %s: cannot replay the closed run to find its "
                                  "unconsumed signals", self.workflow_id)
            self._finish(outcome, notify=False)
            return
        began = _clock()
        self.instance, unfinished = replay_timeline(self.definition, self.started, batches,
                                                    self.values)
        reset_from = self.started.reset_from
        if reset_from is not None and len(batches) <= reset_from.kept:
            # a reset's first activation: the children the kept steps started belonged to
            # the old run (whose close ended them): start them again for this one
            unfinished = self.instance.unfinished_commands(started_children=True)
        self._metrics.replay(_clock() - began)
        self._arm_deadline()
        self._loop_task = asyncio.create_task(self._loop(), name=f"execution:{self.workflow_id}")
        if not batches:  # the run object had no first batch: run it now (or when it may)
            self._hold_until = self.started.not_before
            self._wakeup.set()
            self._first = True
        self._execute(unfinished)
        if self.parkable():
            self.env.on_idle(self)

    def deliver(self, event: tl.Event, ack: asyncio.Future[None] | None = None) -> None:
        """Puts an event in the mailbox; ``ack`` resolves once it is durable."""
        if self.outcome is not None:
            if ack is not None and not ack.done():
                ack.set_exception(WorkflowClosedError(self.workflow_id, "deliver"))
            return
        if not self._mailbox:
            self._arrived = _clock()
        self._mailbox.append((event, ack))
        self._wakeup.set()

    async def deliver_durably(self, event: tl.Event) -> None:
        """Delivers ``event`` and returns once it is in the timeline."""
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliver(event, ack)
        await ack

    async def _loop(self) -> None:
        while self.outcome is None:
            if not self._mailbox and not self._first:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._hold_until is not None:  # a start delay: no code before it ends
                await asyncio.sleep(max(0.0, self._hold_until - self.env.now()))
                self._hold_until = None
            async with self.lock.writer:
                instance = self.instance
                if self.outcome is not None or instance is None:
                    break  # closed (its first activation may have closed it)
                items, self._mailbox = self._mailbox, []
                arrived, durable = self._arrived, 0.0
                events = instance.novel([event for event, _ in items])
                await self.values.prefetch(tl.payloads_of(events), self.env.io)
                now = self.env.now()
                commands = self._activate(instance, events, now)
                done: list[tl.Command] = []
                if events or commands or self._first:
                    batch = tl.Batch(seq=self._next_batch, run_id=self.run_id, time=now,
                                     events=events, commands=commands,
                                     owner=self.env.host_name)
                    done = self.eager(commands)
                    if not await self._persist(batch, items):
                        return
                    durable = _clock()
                self._first = False
            for _, ack in items:
                if ack is not None and not ack.done():
                    ack.set_result(None)
            self._execute(_without(commands, done))
            if durable and items:  # event in, batch durable, commands carried out
                self._metrics.step(durable - arrived, _clock() - arrived)
            if self.parkable():
                self.env.on_idle(self)

    async def _persist(self, batch: tl.Batch, items: list[Mail] | None = None) -> bool:
        """Writes ``batch``, retrying every failure but a conflict with backoff; False when
        another owner wrote this batch first (this execution is then fenced)."""
        schedule = _backoff.delays()
        while True:
            try:
                if self.values.writes:  # the large values the batch names come first
                    await self.env.io(self.values.flush)
                body = await self.env.io(self.env.runs.append, self.workflow_id,
                                         self.started.epoch, batch)
                break
            except ConflictError:
                log.warning("workflow %s: batch %d holds another owner's write; stopping",
                            self.workflow_id, batch.seq)
                self._fence(items or [])
                return False
            except Exception as exc:  # storage can fail in any way: retry, never die
                delay = next(schedule)
                log.warning("workflow %s: writing batch %d failed (%s: %s); retrying in "
                            "%.2fs", self.workflow_id, batch.seq, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
        self._next_batch += 1
        self.batches_written += 1
        self._history.append(body)
        self.updated_at = batch.time
        tl.track_children(self.children, batch)
        self.snapshot()
        return True

    # -------------------------------------------------------------- snapshots

    def snapshot(self, parking: bool = False) -> None:
        """Snapshots the run in the background when ``snapshot_every`` batches were
        written since its last one, or when it parks with ``snapshot_park_after`` since
        then and a history of at most ``snapshot_park_bytes`` (``rayline.storage.runs``)."""
        runs = self.env.runs
        written = len(self._history)
        if runs.snapshot_every <= 0 or written <= self._snapshot_at or self.fenced:
            return
        if written - self._snapshot_at < runs.snapshot_every and not (
                parking and written - self._snapshot_at >= runs.snapshot_park_after):
            return
        bodies = [b if isinstance(b, bytes) else b.model_dump_json().encode()
                  for b in self._history]
        self._history[:] = bodies
        if written - self._snapshot_at < runs.snapshot_every and \
                sum(map(len, bodies)) > runs.snapshot_park_bytes:
            return
        before, self._snapshot_at = self._snapshot_at, written
        self.env.background(self._write_snapshot(bodies, before))

    async def _write_snapshot(self, bodies: list[bytes], before: int) -> None:
        try:
            await self.env.io(self.env.runs.put_snapshot, self.started, bodies)
        except Exception as exc:  # a hint: readers read the batches instead
            log.warning("workflow %s: cannot snapshot it at batch %d (%s: %s)",
                        self.workflow_id, len(bodies), type(exc).__name__, exc)
            if self._snapshot_at == len(bodies):
                self._snapshot_at = before

    def fence(self) -> None:
        """Stops this execution as if another owner had written its next batch: the run
        moved away (an upgrade wrote its move batch) while it waited here."""
        if not self.fenced and self.outcome is None:
            self._fence([])
            if self._loop_task is not None:
                self._loop_task.cancel()

    def _fence(self, items: list[Mail]) -> None:
        """Stops acting; the events not written (and their senders) go back to the host."""
        self.fenced = True
        self._stop_work()
        unwritten = [*items, *self._mailbox]
        self._mailbox = []
        self.closed.set()
        self.env.on_fenced(self, unwritten)

    # --------------------------------------------------------------- commands

    def eager(self, commands: list[tl.Command]) -> list[tl.Command]:
        """Carries out now, before the batch that records them is durable, the commands
        that are safe to repeat (activities, timers) and returns them; the rest wait for
        the write. Safe: an activity runs at least once anyway, and if the batch is never
        written its call is issued again by replay and this attempt's result, which can
        only reach the mailbox, is recorded after the batch or dropped (``novel``). Not
        when the batch names large values still to be written (the activity reads them),
        nor on a draining host, whose runs are being moved: a run whose write another host
        fences would then run its activity twice. See docs/durability.md."""
        if not EAGER or self.values.writes or self.env.draining:
            return []
        now: list[tl.Command] = [c for c in commands
                                 if isinstance(c, (tl.ScheduleActivity, tl.StartTimer))]
        self._execute(now)
        return now

    def _execute(self, commands: list[tl.Command]) -> None:
        for command in commands:
            if self.outcome is not None or self.instance is None:
                return  # closed (or terminated meanwhile): nothing more is carried out
            if isinstance(command, tl.ScheduleActivity):
                definition, args, options = self.instance.activity_call(command.seq)
                self._spawn(command.seq, self.env.run_activity(self, command.seq, definition,
                                                               args, options), definition.name)
            elif isinstance(command, tl.StartTimer):
                self._arm(command)
            elif isinstance(command, tl.CancelTimer):
                handle = self._timers.pop(command.seq, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(command, tl.CancelActivity):
                task = self._tasks.pop(command.seq, None)
                if task is not None:
                    task.cancel()
            elif isinstance(command, tl.StartChild):
                self._spawn(command.seq, self.env.start_child(self, command))
            elif isinstance(command, tl.SignalExternal):
                self._spawn(command.seq, self.env.signal_external(self, command))
            elif isinstance(command, tl.CancelExternal):
                self._spawn(command.seq, self.env.cancel_external(
                    self, command.seq, command.workflow_id, command.run_id))
            elif isinstance(command, tl.CancelChild):  # outlives this run if it closes now
                self.env.background(self.env.cancel_external(self, command.seq,
                                                             command.workflow_id))
            elif isinstance(command, tl.UpsertFields):
                self.env.on_fields(self)
            elif isinstance(command, tl.CompleteUpdate):
                self.env.on_update(self, command)
            elif isinstance(command, tl.CLOSING_COMMANDS):
                outcome = RunOutcome.of(tl.Batch(seq=0, run_id=self.run_id, time=self.updated_at,
                                              commands=[command]))
                assert outcome is not None
                self._finish(outcome)

    def _spawn(self, seq: int, work: Awaitable[tl.Event | None],
               activity: str | None = None) -> None:
        async def run() -> None:
            try:
                event = await work
            except asyncio.CancelledError:
                return
            except Exception as exc:  # the host could not carry out the command
                log.exception("workflow %s: command %d failed", self.workflow_id, seq)
                failure = failure_from(exc)
                if activity is None:
                    event = tl.ExternalResolved(seq=seq, failure=failure)
                else:
                    event = tl.ActivityFailed(
                        seq=seq, failure=failure.model_copy(update={"activity": activity}))
            self._tasks.pop(seq, None)
            if event is not None:
                self.deliver(event)

        self._tasks[seq] = asyncio.create_task(run())

    def _arm(self, command: tl.StartTimer) -> None:
        delay = max(0.0, command.fire_at - self.env.now())
        loop = asyncio.get_running_loop()
        self._timers[command.seq] = loop.call_later(delay, self._fire, command.seq, command)

    def _fire(self, seq: int, command: tl.StartTimer | None = None) -> None:
        self._timers.pop(seq, None)
        if command is not None:
            _tracing.timer_fired(self.started, seq, command.fire_at - command.duration,
                                 self.env.now())
        self.deliver(tl.TimerFired(seq=seq))

    # ---------------------------------------------------------------- parking

    def parkable(self) -> bool:
        """True when only timers and signals can move the run on, and nothing is in flight."""
        return (self.outcome is None and not self.fenced and not self._mailbox
                and not self._tasks and not self.lock.writer.locked
                and not self.lock.reader.locked and self.instance is not None
                and self.instance.waiting_only_on_outside())

    def park(self) -> float | None:
        """Stops the execution so it can be dropped; returns when its next timer is due."""
        assert self.instance is not None
        wake = wake_of(self.instance, self.started)
        self._stop_work()
        if self._loop_task is not None:
            self._loop_task.cancel()
        return wake

    def abandon(self) -> None:
        """Stops all work without writing or answering anything (a simulated crash)."""
        self._stop_work()
        if self._loop_task is not None:
            self._loop_task.cancel()

    # ------------------------------------------------------------------ close

    def _stop_work(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()

    def _finish(self, outcome: RunOutcome, notify: bool = True) -> None:
        self.outcome = outcome
        if self._closed_fields is None:
            self._closed_fields = self.fields()
        if outcome.status is RunStatus.CONTINUED:
            rest: list[Mail] = []
            self.carried = self._unconsumed()
            for item in self._mailbox:
                is_for_the_id = isinstance(item[0], (tl.SignalReceived, tl.CancelRequested))
                (self.carried if is_for_the_id else rest).append(item)
            self._mailbox = rest
        if self.instance is not None:
            self.slips = self.instance.slips
        self.instance = None  # a closed run keeps its outcome and fields, not its coroutine
        self._stop_work()
        for _, ack in self._mailbox:
            if ack is not None and not ack.done():
                ack.set_exception(WorkflowClosedError(self.workflow_id, "signal"))
        self._mailbox.clear()
        self.closed.set()
        self._wakeup.set()
        if notify:  # closed now, not found closed in its timeline
            self._metrics.closed(self.started.workflow_name, outcome.status.value)
            _tracing.run_closed(self.started, outcome)
            self.env.on_closed(self)

    def _unconsumed(self) -> list[Mail]:
        """Signals recorded in this run that its code never took (already durable)."""
        if self.instance is None:
            return []
        return [(signal, None) for signal in self.instance.unconsumed_signals()]

    async def terminate(self, reason: str | None) -> None:
        """Stops the run now: records it, cancels its work; no workflow code runs after."""
        if self.outcome is not None:
            raise WorkflowClosedError(self.workflow_id, "terminate")
        async with self.lock.writer:
            if self.outcome is not None:
                raise WorkflowClosedError(self.workflow_id, "terminate")
            now = self.env.now()
            batch = tl.Batch(seq=self._next_batch, run_id=self.run_id, time=now,
                             terminated=tl.Terminated(reason=reason),
                             owner=self.env.host_name)
            if self.fenced or not await self._persist(batch):  # it moved meanwhile
                raise NotHereError(f"workflow {self.workflow_id} moved to another host")
            outcome = RunOutcome.of(batch)
            assert outcome is not None
            self._finish(outcome)

    # ------------------------------------------------------------------ state

    async def query(self, name: str, args: tuple[Any, ...]) -> Any:
        async with self.lock.reader:
            assert self.instance is not None
            return self.instance.query(name, args)

    async def validate_update(self, name: str, args: list[Payload]) -> None:
        """Runs the update's checks on the run's state between activations.

        Raises:
            UpdateRejectedError: no handler, arguments that do not fit, or the validator
                refused it.
            WorkflowClosedError: the run closed meanwhile.
        """
        await self.values.prefetch(args, self.env.io)
        async with self.lock.reader:
            if self.instance is None or self.outcome is not None:
                raise WorkflowClosedError(self.workflow_id, "update")
            self.instance.validate_update(name, args)

    def update_state(self, update_id: str) -> tl.CompleteUpdate | bool:
        """How update ``update_id`` ended, ``True`` while it runs, ``False`` if unknown."""
        if self.instance is None:
            return False
        return self.instance.update_state(update_id)

    def status(self) -> int:
        if self.outcome is not None:
            return self.outcome.code
        assert self.instance is not None
        return max(1, self.instance.open_obligations())

    def fields(self) -> tuple[dict[str, Any], dict[str, Any]]:
        if self._closed_fields is not None:
            return self._closed_fields
        if self.instance is None:
            return dict(self.started.search), {}
        return dict(self.instance.search_fields), dict(self.instance.enrich_fields)

    def guard_reports(self) -> list[str]:
        """What the determinism guards reported of this run's code (kept after it closes)."""
        return list(self.instance.slips if self.instance is not None else self.slips)

    def pending(self) -> list[PendingWork]:
        if self.instance is None or self.outcome is not None:
            return []
        return self.instance.pending_summary()
