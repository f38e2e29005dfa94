"""The host's dealings with other workflows: starting children, delivering a child's
outcome to its parent, and signals and cancels sent from one workflow to another.

Every call goes to whichever host runs the other workflow, found through the registry
and followed when it moves; delivery retries until the other side has it durably.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from .core.instance import failure_from
from .errors import (
    ConflictError,
    DuplicateWorkflowError,
    InvalidInputError,
    RaylineError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from .timeline import (
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    Event,
    ExternalResolved,
    Failure,
    SignalExternal,
    StartChild,
)

if TYPE_CHECKING:
    from ._actor import WorkflowActor
    from ._host import Backend


class NotHereError(RaylineError):
    """The workflow is running, but not on this host: ask the registry again."""


class Routing:
    """Mixed into ``Host``: the commands that reach other workflows."""

    host_name: str
    backend: Backend
    actors: dict[str, WorkflowActor]

    deliver: Callable[[str, Event], Awaitable[None]]  # the host's own, for local targets

    async def start_child(self, actor: WorkflowActor, command: StartChild) -> Event:
        queue = command.task_queue or actor.started.task_queue
        dedicated = bool(command.options.get("dedicated"))
        request: dict[str, Any] = {
            "workflow_id": command.workflow_id, "workflow_name": command.workflow_name,
            "code": command.code, "code_pickle": command.code_pickle, "args": command.args,
            "task_queue": queue,
            "parent": {"workflow_id": actor.workflow_id, "run_id": actor.run_id,
                       "seq": command.seq, "host": self.host_name},
            **{k: command.options[k] for k in ("search", "memo", "id_reuse_policy")
               if k in command.options},
        }
        try:
            host = await self.backend.place(queue, command.workflow_id, dedicated)
            reply = await self.backend.call_host(host, "start", request)
        except (DuplicateWorkflowError, InvalidInputError) as exc:
            return ChildFailed(seq=command.seq, failure=failure_from(exc))
        outcome = reply.get("outcome")
        if outcome is not None:  # re-attached to a child that already finished
            actor.deliver(child_event(command.seq, outcome))
        return ChildStarted(seq=command.seq, workflow_id=reply["workflow_id"],
                            run_id=reply["run_id"])

    async def signal_external(self, actor: WorkflowActor, command: SignalExternal) -> Event:
        try:
            await self._route(command.workflow_id, "signal", command.workflow_id,
                              command.signal_id, command.data, None, command.request_id)
        except RaylineError as exc:
            return ExternalResolved(seq=command.seq, failure=failure_from(exc))
        return ExternalResolved(seq=command.seq)

    async def cancel_external(self, actor: WorkflowActor, seq: int, workflow_id: str) -> Event:
        try:
            await self._route(workflow_id, "cancel", workflow_id, f"by {actor.workflow_id}")
        except WorkflowClosedError:
            pass
        except RaylineError as exc:
            return ExternalResolved(seq=seq, failure=failure_from(exc))
        return ExternalResolved(seq=seq)

    async def _route(self, workflow_id: str, method: str, *args: Any) -> Any:
        """Calls ``method`` on whichever host runs ``workflow_id``, following moves."""
        for attempt in range(20):
            if workflow_id in self.actors:
                return await getattr(self, method)(*args)
            try:
                host = await self.backend.locate(workflow_id)
                return await self.backend.call_host(host, method, *args)
            except NotHereError:
                await asyncio.sleep(min(0.05 * 2 ** attempt, 1.0))
        raise WorkflowNotFoundError(workflow_id, "no host has it")

    async def deliver_to(self, workflow_id: str, host: str, event: Event) -> None:
        for attempt in range(30):
            try:
                if host == self.host_name:
                    await self.deliver(workflow_id, event)
                else:
                    await self.backend.call_host(host, "deliver", workflow_id, event)
                return
            except (NotHereError, ConflictError):
                await asyncio.sleep(min(0.05 * 2 ** attempt, 2.0))
                host = await self.backend.locate(workflow_id)
            except WorkflowClosedError:
                return



def child_event(seq: int, outcome: dict[str, Any]) -> Event:
    if outcome["status"] == "completed":
        return ChildCompleted(seq=seq, result=outcome["result"])
    if outcome["status"] == "terminated":
        failure = Failure(type="rayline.errors.WorkflowTerminatedError",
                          message=outcome.get("reason") or "child terminated", code=410,
                          kind="terminated")
        return ChildFailed(seq=seq, failure=failure)
    return ChildFailed(seq=seq, failure=Failure(**outcome["failure"]))
