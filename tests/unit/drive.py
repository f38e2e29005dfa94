"""Drives a WorkflowInstance through scripted activations, without Ray or storage."""

from __future__ import annotations

from typing import Any, Callable

from rayline import _serde
from rayline._activity import ActivityInfo
from rayline.core import WorkflowInstance, replay_timeline
from rayline.engine.activities import invoke_async, run_with_retries
from rayline.timeline import (
    Batch,
    Command,
    Event,
    ScheduleActivity,
    StartTimer,
    TimerFired,
    WorkflowStarted,
)

START = 1_000_000.0


def started_record(definition: Any, *args: Any, seed: int = 7, workflow_id: str = "wf-1",
                   run_id: str = "run-1") -> WorkflowStarted:
    return WorkflowStarted(workflow_id=workflow_id, run_id=run_id, epoch=1,
                           workflow_name=definition.name, args=_serde.encode_args(args, what="t"),
                           task_queue="default", host="h0", time=START, seed=seed)


class Script:
    """Records activations as batches, the way a host would, for replay checks."""

    def __init__(self, definition: Any, *args: Any, seed: int = 7) -> None:
        self.definition = definition
        self.started = started_record(definition, *args, seed=seed)
        self.instance = WorkflowInstance(definition, self.started)
        self.batches: list[Batch] = []
        self.time = START

    def step(self, events: list[Event] = (), advance: float = 0.0) -> list[Command]:  # type: ignore[assignment]
        self.time += advance
        commands = self.instance.activate(list(events), self.time)
        self.batches.append(Batch(seq=len(self.batches) + 1, run_id=self.started.run_id,
                                  time=self.time, events=list(events), commands=commands))
        return commands

    def run_activity(self, command: ScheduleActivity) -> Event:
        """Runs the activity inline with its retry policy (no waiting between attempts)."""
        import asyncio

        definition, args, options = self.instance.activity_call(command.seq)

        async def attempt(number: int) -> Any:
            info = ActivityInfo(self.started.workflow_id, self.started.run_id, definition.name,
                                command.seq, number)
            return await invoke_async(definition.fn, args, info)

        async def no_wait(_: float) -> None:
            return None

        return asyncio.run(run_with_retries(command.seq, definition.name, options, attempt,
                                            sleep=no_wait))

    def run_to_end(self, on_signal: Callable[[list[Command]], list[Event]] | None = None,
                   limit: int = 1000) -> list[Command]:
        """Answers every activity and timer until the workflow closes or nothing is left."""
        commands = self.batches[-1].commands if self.batches else self.step()
        for _ in range(limit):
            if self.instance.closing is not None:
                return commands
            events: list[Event] = []
            advance = 0.0
            for command in commands:
                if isinstance(command, ScheduleActivity):
                    events.append(self.run_activity(command))
                elif isinstance(command, StartTimer):
                    advance = max(advance, command.fire_at - self.time)
                    events.append(TimerFired(seq=command.seq))
            if on_signal is not None:
                events.extend(on_signal(commands))
            if not events:
                return commands
            commands = self.step(events, advance)
        raise AssertionError("workflow did not finish")

    def replay(self) -> tuple[WorkflowInstance, list[Command]]:
        return replay_timeline(self.definition, self.started, self.batches)
