"""The Ray implementation of the host's ``Backend``.

Every activity runs as a Ray task with its Ray options (num_cpus, num_gpus, memory,
resources, runtime_env, ...), so Ray counts and limits what it uses: one that asks for
nothing reserves what a plain Ray task does (1 CPU). ``local=True`` activities run in
the host process instead: async ones on its event loop, sync ones on a thread of their
own, so neither blocks the other workflows of the host. A cancelled attempt's task is
interrupted (``ray.cancel``: ``KeyboardInterrupt`` in the activity) and, if it is still
running ``STOP_GRACE`` seconds later, its worker process is stopped. Heartbeats from an
activity go to its host as actor calls, not awaited. Calls to other hosts and the
registry are actor method calls."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle
import ray
from ray.exceptions import RayError

from rayline import _activity
from rayline._activity import ActivityDefinition, ActivityInfo
from rayline._options import ActivityOptions
from rayline._values import Stored, store_if_large
from rayline.engine.activities import Outcome, invoke, invoke_async, run_sync_or_async
from rayline.engine.host import STARTED
from rayline.errors import SerializationError
from rayline.failures import attempt_failure
from rayline.messages import CodeVersion, RunSummary
from rayline.storage import RunStore, open_store
from rayline.storage.codec import Codec

from ._directory import ActorDirectory
from ._names import REGISTRY, get_actor

log = logging.getLogger("rayline.actors")
REPORT_INTERVAL = 0.05
STOP_GRACE = float(os.environ.get("RAYLINE_STOP_GRACE", "5"))
"""Seconds a cancelled activity has to stop by itself before its process is stopped."""
LOCAL_THREADS = int(os.environ.get("RAYLINE_LOCAL_THREADS", "16"))
"""Threads of a host for sync ``local=True`` activities."""


class _Beats:
    """Sends an activity's heartbeats to its host (in the activity's worker process):
    each an actor call, not awaited; the answers read so far say whether the attempt
    was cancelled."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.handles: dict[str, Any] = {}
        self.sent: list[Any] = []
        self.number = 0

    def __call__(self, info: ActivityInfo, details: Any, number: int | None = None) -> bool:
        if info.host is None:
            return False
        handle = self.handles.get(info.host)
        if handle is None:
            handle = self.handles[info.host] = get_actor(self.namespace, info.host)
        if number is None:
            self.number += 1  # the host keeps the newest: calls may run out of order
            number = self.number
        self.sent.append(handle.heartbeat.remote(info, details, number))
        answered, self.sent = ray.wait(self.sent, num_returns=len(self.sent), timeout=0)
        cancelled = False
        for ref in answered:
            try:
                cancelled = cancelled or bool(ray.get(ref))
            except RayError:  # the host is away: the next attempt is its business
                pass
        return cancelled


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every attempt of one activity on one host shares: sent as one pickled blob
    (``RayBackend._context``) that a worker unpickles once, instead of five task
    arguments that Ray would serialize one by one on every call."""

    fn: Any
    namespace: str
    storage_url: str
    codec: Codec | None
    watched: bool
    """The activity has a ``heartbeat_timeout``: an attempt tells its host it runs."""


@functools.lru_cache(maxsize=256)
def _unpack(blob: bytes) -> _Context:
    context: _Context = cloudpickle.loads(blob)
    return context


@ray.remote(num_returns=2)
def _activity_task(blob: bytes, info: ActivityInfo, *args: Any) -> tuple[Outcome, Any]:
    """One attempt, as a Ray task (its args one by one, so Ray resolves ``ObjectRef``\ s):
    its outcome, and for a large result the value, which stays in Ray's object store
    (the outcome holds the reference the host records). ``blob`` is the activity's
    pickled ``_Context``."""
    context = _unpack(blob)
    beats = _Beats(context.namespace)
    if context.watched:
        beats(info, None, STARTED)
    token = _activity._beat.set(beats)
    try:
        kind, value = run_sync_or_async(context.fn, args, info)
    finally:
        _activity._beat.reset(token)
    if kind != "ok":
        return (kind, value), None
    obj = isinstance(value, ray.ObjectRef)  # the workflow gets an ObjectRef back
    try:
        plain = ray.get(value) if obj else value
        ref = store_if_large(_runs(context.storage_url, context.namespace, context.codec),
                             plain, obj=obj,
                             what=f"result of activity {info.activity!r}")
    except Exception as exc:  # it cannot be pickled (fatal), or storage failed (retried)
        return ("err", attempt_failure(exc, fatal=isinstance(exc, SerializationError))), None
    if ref is None:
        return ("ok", value), None
    return ("ok", Stored(ref)), plain


@functools.lru_cache(maxsize=8)
def _runs(storage_url: str, namespace: str, codec: Codec | None) -> RunStore:
    return RunStore(open_store(storage_url), namespace, codec)


class RaySpace:
    """Ray's object store, where a host keeps large values for the next activity."""

    @staticmethod
    def is_ref(value: Any) -> bool:
        return isinstance(value, ray.ObjectRef)

    @staticmethod
    def put(value: Any) -> Any:
        return ray.put(value)

    @staticmethod
    def get(ref: Any) -> Any:
        return ray.get(ref)

    @staticmethod
    async def fetch(ref: Any) -> Any:
        return await ref


class RayBackend(ActorDirectory):
    """Backend for a host running inside a Ray actor."""

    def __init__(self, namespace: str, storage_url: str,
                 version: CodeVersion | None = None, codec: Codec | None = None) -> None:
        super().__init__(namespace, version)
        self.storage_url = storage_url
        self.codec = codec
        """Sent with each activity task (which keeps a large result in storage)."""
        self.space = RaySpace()
        self._reports: dict[str, RunSummary] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._task_options: dict[str, Any] = {}
        self._contexts: dict[tuple[int, bool], tuple[Any, bytes]] = {}
        self._local = ThreadPoolExecutor(LOCAL_THREADS, thread_name_prefix="rayline-local")
        self._stopping: set[asyncio.Task[None]] = set()

    def _task(self, ray_options: dict[str, Any]) -> Any:
        key = repr(sorted(ray_options.items()))
        task = self._task_options.get(key)
        if task is None:  # retries are the activity's RetryPolicy's alone, not Ray's too
            task = self._task_options[key] = _activity_task.options(
                **ray_options, max_retries=0, num_returns=2)
        return task

    def _context(self, fn: Any, watched: bool) -> bytes:
        """The pickled ``_Context`` of ``fn``'s attempts, made once per function."""
        key = (id(fn), watched)
        known = self._contexts.get(key)
        if known is not None and known[0] is fn:
            return known[1]
        blob = cloudpickle.dumps(_Context(fn, self.namespace, self.storage_url, self.codec,
                                          watched))
        self._contexts[key] = (fn, blob)  # holds fn, so its id is not reused meanwhile
        return blob

    async def run_attempt(self, definition: ActivityDefinition[Any, Any], args: tuple[Any, ...],
                          options: ActivityOptions, info: ActivityInfo) -> Outcome:
        if options.local:
            if asyncio.iscoroutinefunction(definition.fn):
                return await invoke_async(definition.fn, args, info)
            return await asyncio.get_running_loop().run_in_executor(
                self._local, invoke, definition.fn, args, info)
        ref, value_ref = self._task(options.ray).remote(
            self._context(definition.fn, options.heartbeat_timeout is not None), info, *args)
        try:
            kind, value = await ref
            if isinstance(value, Stored):  # this host owns the task's returns: it keeps it
                value = dataclasses.replace(value, object_ref=value_ref)
            return kind, value
        except asyncio.CancelledError:
            stopping = asyncio.get_running_loop().create_task(self._stop(ref, info))
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
            raise
        except RayError as exc:  # the worker died, or Ray could not run the task
            return ("err", {"type": f"ray.exceptions.{type(exc).__name__}", "message": str(exc),
                            "stack": "", "fatal": False})

    @staticmethod
    async def _stop(ref: Any, info: ActivityInfo) -> None:
        """Interrupts a cancelled activity's task, then stops its process if it goes on."""
        ray.cancel(ref)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ref.future())),
                                   STOP_GRACE)
        except asyncio.TimeoutError:
            log.warning("activity %s (call %d, attempt %d) of workflow %s did not stop %gs "
                        "after it was cancelled: stopping its process", info.activity,
                        info.seq, info.attempt, info.workflow_id, STOP_GRACE)
            ray.cancel(ref, force=True)
        except Exception:
            pass  # it stopped (cancelled, or failed on its way out)

    def report(self, summary: RunSummary) -> None:
        self._reports[summary.workflow_id] = summary
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(REPORT_INTERVAL)
        batch, self._reports = list(self._reports.values()), {}
        try:  # not awaited: the registry is off the hot path
            self.handle(REGISTRY).report.remote(batch)
        except Exception:  # the registry rebuilds its index from storage when it restarts
            log.warning("could not report %d updates to the registry", len(batch))

    def retire(self, host: str) -> None:
        try:  # not awaited: the registry stops this very process
            self.handle(REGISTRY).retire.remote(host)
        except Exception:  # its next retire_idle round stops the host instead
            log.warning("could not ask the registry to stop idle host %s", host)
