"""What runs an activity attempt in the process that runs it: a Ray task's worker, or a
warm runner actor (``_runners``). The host sends each attempt its function, namespace,
storage and codec as one pickled ``Context`` (made once per function), its
``ActivityInfo`` and its arguments."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import ray
from ray import cloudpickle  # as Ray pickles task arguments (keeps file names)
from ray.exceptions import RayError

from rayline import _activity
from rayline._activity import ActivityInfo
from rayline._values import Stored, store_if_large
from rayline.engine.activities import Outcome, run_sync_or_async
from rayline.engine.host import STARTED
from rayline.errors import SerializationError
from rayline.failures import attempt_failure
from rayline.storage import RunStore, open_store
from rayline.storage.codec import Codec

from ._names import get_actor


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
class Context:
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
def unpack(blob: bytes) -> Context:
    context: Context = cloudpickle.loads(blob)
    return context


def attempt(blob: bytes, info: ActivityInfo, args: tuple[Any, ...]) -> tuple[Outcome, Any]:
    """One attempt, in the process that runs it (a Ray task's worker, or a warm runner):
    its outcome, and for a large result the value, which stays in Ray's object store
    (the outcome holds the reference the host records). ``blob`` is the activity's
    pickled ``Context``."""
    context = unpack(blob)
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
