"""Batch operations: one action on every workflow a visibility query matches.

``client.workflow.batch(query, action)`` lists the workflows ``query`` matches (the
filters of ``client.workflow.list``) once, keeps that list and its progress in storage
as a job, and applies ``action`` (``signal``, ``cancel``, ``terminate`` or ``reset``) to
each, at most ``rate`` per second, ``concurrency`` at a time. Interrupted (the calling
process killed, a network failure), the same call again resumes the job: the workflows
done are not touched again, the rest are.

Invariants:
- A job's id is given, or derived from the query, the action and its arguments, so the
  same call finds its job again.
- Each action is safe to repeat, so one done but not yet recorded as done before an
  interruption is harmless the second time: a signal carries a request id per job and
  workflow (taken once), a reset one too (answered with the run it made), and a cancel or
  terminate of a workflow that has already closed counts as done.
- Progress is written at least every ``SAVE_EVERY`` seconds and at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .errors import InvalidInputError, WorkflowClosedError
from .messages import ListRequest, ResetRequest

if TYPE_CHECKING:
    from .client import AsyncClient

ACTIONS = ("signal", "cancel", "terminate", "reset")
SAVE_EVERY = 0.5
"""Seconds between writes of a job's progress."""
PAGE = 1000


@dataclass
class BatchReport:
    """How a batch job went: every workflow it matched, done or failed."""

    job_id: str
    action: str
    matched: int
    succeeded: int
    failed: dict[str, str] = field(default_factory=dict)
    """Workflow id -> the error its action raised."""
    resumed: int = 0
    """Workflows done by an earlier, interrupted call of this job."""

    @property
    def ok(self) -> bool:
        return not self.failed and self.succeeded == self.matched


Progress = Callable[[int, int], None]
"""``progress(done, matched)``, called as the job goes."""


def job_id_of(query: dict[str, Any], action: str, arguments: dict[str, Any]) -> str:
    text = json.dumps([query, action, arguments], sort_keys=True, default=str)
    return "batch-" + hashlib.sha256(text.encode()).hexdigest()[:16]


async def run_batch(client: AsyncClient, query: dict[str, Any], action: str, *,
                    job_id: str | None, rate: float, concurrency: int,
                    arguments: dict[str, Any], progress: Progress | None) -> BatchReport:
    """See ``AsyncWorkflowClient.batch``."""
    if action not in ACTIONS:
        raise InvalidInputError(f"batch action must be one of {', '.join(ACTIONS)}, got "
                                f"{action!r}")
    if not rate > 0 or concurrency < 1:
        raise InvalidInputError("batch rate and concurrency must be positive")
    if action == "signal" and not arguments.get("signal_id"):
        raise InvalidInputError("a batch signal needs signal_id")
    job_id = job_id or job_id_of(query, action, arguments)
    runs = client.runs()
    key = f"batch:{job_id}"
    job = await asyncio.to_thread(runs.get_config, key)
    if job is None:
        job = {"action": action, "query": json.loads(json.dumps(query, default=str)),
               "ids": await _matching(client, query), "done": {}, "failed": {}}
        await asyncio.to_thread(runs.put_config, key, job)
    elif job["action"] != action:
        raise InvalidInputError(f"batch job {job_id} is a {job['action']!r} job")
    ids: list[str] = job["ids"]
    done: dict[str, bool] = job["done"]
    resumed = len(done)
    failed: dict[str, str] = {}
    todo = [w for w in ids if w not in done]
    act = await _action(client, action, job_id, arguments)
    gate = asyncio.Semaphore(concurrency)
    interval = 1.0 / rate
    next_slot = time.monotonic()
    last_save = time.monotonic()

    async def one(workflow_id: str) -> None:
        nonlocal last_save
        try:
            await act(workflow_id)
            done[workflow_id] = True
            failed.pop(workflow_id, None)
        except Exception as exc:
            failed[workflow_id] = f"{type(exc).__name__}: {exc}"
        finally:
            gate.release()
        if progress is not None:
            progress(len(done), len(ids))
        if time.monotonic() - last_save >= SAVE_EVERY:
            last_save = time.monotonic()
            await asyncio.to_thread(runs.put_config, key, _snapshot(job, done, failed))

    tasks = []
    for workflow_id in todo:
        await gate.acquire()
        delay = next_slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        next_slot = max(next_slot, time.monotonic()) + interval
        tasks.append(asyncio.ensure_future(one(workflow_id)))
    await asyncio.gather(*tasks)
    await asyncio.to_thread(runs.put_config, key, _snapshot(job, done, failed))
    return BatchReport(job_id=job_id, action=action, matched=len(ids),
                       succeeded=len(done), failed=failed, resumed=resumed)


def _snapshot(job: dict[str, Any], done: dict[str, bool],
              failed: dict[str, str]) -> dict[str, Any]:
    """The job as it stands, copied on the event loop (the write runs on a thread)."""
    return {**job, "done": dict(done), "failed": dict(failed)}


async def _matching(client: AsyncClient, query: dict[str, Any]) -> list[str]:
    """Every workflow id ``query`` matches now (all pages)."""
    unknown = set(query) - {"status", "workflow_name", "search", "task_queue", "version",
                            "started_after", "started_before", "closed_after",
                            "closed_before"}
    if unknown:
        raise InvalidInputError(f"unknown batch query key(s): {', '.join(sorted(unknown))}")
    conditions = client.workflow._filter(
        query.get("status"), query.get("workflow_name"), query.get("search"),
        query.get("task_queue"), query.get("version"), query.get("started_after"),
        query.get("started_before"), query.get("closed_after"), query.get("closed_before"))
    conn = await client.connection()
    ids: list[str] = []
    token: str | None = None
    while True:
        reply = await conn.registry().list(ListRequest(
            **conditions, order_by="workflow_id", limit=PAGE, page_token=token))
        ids += [s.workflow_id for s in reply.items]
        token = reply.next_page_token
        if token is None:
            return ids


async def _action(client: AsyncClient, action: str, job_id: str,
                  arguments: dict[str, Any]) -> Callable[[str], Any]:
    """The action on one workflow id, safe to repeat (see the module docstring)."""
    if action == "signal":
        payload = await client.encode(arguments.get("data"),
                                      what=f"signal {arguments['signal_id']!r} data")

    async def act(workflow_id: str) -> None:
        handle = await client.workflow.get_handle(workflow_id)
        try:
            if action == "signal":
                await handle._on_host(lambda host: host.signal(
                    workflow_id, arguments["signal_id"], payload, None,
                    f"{job_id}:{workflow_id}"))
            elif action == "cancel":
                await handle.cancel()
            elif action == "terminate":
                await handle.terminate(arguments.get("reason"))
            else:
                request = ResetRequest(workflow_id=workflow_id,
                                       to=arguments.get("to", "last_failure"),
                                       reason=arguments.get("reason"),
                                       request_id=f"{job_id}:{workflow_id}")
                await handle._on_host(lambda host: host.reset(request))
        except WorkflowClosedError:
            if action in ("signal", "reset"):
                raise
            # cancelled or terminated already: by this job before an interruption, or
            # it closed on its own; either way there is nothing left to do

    return act
