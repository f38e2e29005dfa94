"""The host's dealings with other workflows: starting children, delivering a child's
outcome to its parent, and signals and cancels sent from one workflow to another.

Every call goes to whichever host runs the other workflow, found through the registry
and followed when it moves. A child's start carries a request id made from the parent's
run and marker, so starting it again (after a failure, or a recovery) attaches to the
same child; a child's outcome is delivered until the parent has it durably (or its run
is over), for as long as the host lives, and again by the child's host after a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

from .. import _backoff, _tracing
from .._code import CodeRef
from ..errors import (
    DuplicateWorkflowError,
    InvalidInputError,
    NotHereError,
    RaylineError,
    WorkflowClosedError,
    WorkflowNotFoundError,
)
from ..failures import failure_from, terminated
from ..messages import RunOutcome, RunStatus, StartRequest
from ..timeline import (
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    Event,
    ExternalResolved,
    ParentRef,
    RunOptions,
    SignalExternal,
    StartChild,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from .api import HostAPI
    from .execution import Execution
    from .host import Backend

log = logging.getLogger("rayline.host")

class Routing:
    """The commands of a host's executions that reach other workflows (and the host's
    own, when the other workflow lives here)."""

    def __init__(self, host_name: str, backend: Backend, local: HostAPI,
                 is_here: Callable[[str], bool]) -> None:
        self.host_name = host_name
        self.backend = backend
        self.local = local
        self.is_here = is_here

    def host(self, name: str) -> HostAPI:
        return self.local if name == self.host_name else self.backend.host(name)

    async def start_child(self, execution: Execution, command: StartChild) -> Event | None:
        queue = command.task_queue or execution.started.task_queue
        options = command.options
        request = StartRequest(
            workflow_id=command.workflow_id, workflow_name=command.workflow_name,
            code=CodeRef.stored(command.code, command.code_pickle), args=command.args,
            task_queue=queue, search=options.search, memo=options.memo,
            id_reuse_policy=options.id_reuse_policy,
            options=RunOptions(strict=execution.started.options.strict, retry=options.retry,
                               execution_timeout=options.execution_timeout,
                               expire=execution.started.options.expire),
            parent=ParentRef(workflow_id=execution.workflow_id, run_id=execution.run_id,
                             seq=command.seq, host=self.host_name),
            request_id=f"{execution.workflow_id}:{execution.run_id}:child-{command.seq}",
            trace=_tracing.child_carrier(execution.started))
        for delay in _backoff.delays():
            try:
                host = await self.backend.place(queue, command.workflow_id, options.dedicated)
                reply = await self.host(host).start(request)
                break
            except (DuplicateWorkflowError, InvalidInputError) as exc:
                return ChildFailed(seq=command.seq, failure=failure_from(exc))
            except Exception as exc:
                if not (_backoff.transient(exc) or isinstance(exc, NotHereError)):
                    raise
                log.warning("workflow %s: starting child %s failed (%s); again in %.2fs",
                            execution.workflow_id, command.workflow_id, exc, delay)
                await asyncio.sleep(delay)
        started = ChildStarted(seq=command.seq, workflow_id=reply.workflow_id,
                               run_id=reply.run_id)
        outcome = reply.outcome
        if outcome is None:
            return started
        # re-attached to a child that already finished: its start, then its outcome
        execution.deliver(started)
        execution.deliver(child_event(command.seq, outcome))
        return None

    async def signal_external(self, execution: Execution, command: SignalExternal) -> Event:
        try:
            await self.route(command.workflow_id, lambda host: host.signal(
                command.workflow_id, command.signal_id, command.data, None,
                command.request_id, False, command.run_id))
        except RaylineError as exc:
            return ExternalResolved(seq=command.seq, failure=failure_from(exc))
        return ExternalResolved(seq=command.seq)

    async def cancel_external(self, execution: Execution, seq: int, workflow_id: str,
                              run_id: str | None = None) -> Event:
        try:
            await self.route(workflow_id, lambda host: host.cancel(
                workflow_id, f"by {execution.workflow_id}", run_id))
        except WorkflowClosedError:
            pass
        except RaylineError as exc:
            return ExternalResolved(seq=seq, failure=failure_from(exc))
        return ExternalResolved(seq=seq)

    async def route(self, workflow_id: str, call: Callable[[HostAPI], Awaitable[T]]) -> T:
        """Makes ``call`` on whichever host runs ``workflow_id``, following moves."""
        for delay in itertools.islice(_backoff.delays(cap=1.0), 20):
            try:
                if self.is_here(workflow_id):
                    return await call(self.local)
                return await call(self.host(await self.backend.locate(workflow_id)))
            except NotHereError:
                await asyncio.sleep(delay)
        raise WorkflowNotFoundError(workflow_id, "no host has it")

    async def deliver_to(self, workflow_id: str, host: str, event: Event,
                         run_id: str | None = None) -> None:
        """Delivers ``event`` to run ``run_id`` of ``workflow_id`` (last seen on ``host``)
        until it is durable there or that run is over; never gives up."""
        for attempt, delay in enumerate(_backoff.delays()):
            try:
                await self.host(host).deliver(workflow_id, event, run_id)
                return
            except WorkflowClosedError:
                return
            except Exception as exc:
                if attempt >= 3:
                    log.warning("delivering %s to %s failed (%s: %s); again in %.2fs",
                                event.type, workflow_id, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                try:
                    host = await self.backend.locate(workflow_id)
                except Exception:
                    continue  # try the same host again


def child_event(seq: int, outcome: RunOutcome) -> Event:
    """What a parent records when its child closed with ``outcome``."""
    if outcome.status is RunStatus.COMPLETED and outcome.result is not None:
        return ChildCompleted(seq=seq, result=outcome.result)
    if outcome.status is RunStatus.TERMINATED:
        return ChildFailed(seq=seq, failure=terminated(outcome.reason))
    assert outcome.failure is not None, outcome
    return ChildFailed(seq=seq, failure=outcome.failure)
