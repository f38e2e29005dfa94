"""Running one activity call: a single attempt, and the retry loop around attempts.

A single attempt (:func:`invoke`) runs wherever the activity runs (a Ray task, a
runner execution, or inline in the host) and never raises: it returns ``("ok", value)``
or ``("err", failure_fields)``, so that Ray never wraps, logs or re-pickles the user's
exception. The retry loop (:func:`run_with_retries`) runs in the host; how an attempt
is carried out is the caller's ``attempt`` function.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable

from .. import _serde, _tracing, failures
from .._activity import ActivityInfo, _current
from .._options import ActivityOptions
from .._values import Values
from ..errors import FatalError
from ..failures import attempt_failure
from ..timeline import ActivityCompleted, ActivityFailed, AttemptFailed, Event

Outcome = tuple[str, Any]
KEEP_RETRIES = 20
"""Failed attempts an activity's outcome lists at most (the first and the latest)."""


def invoke(fn: Callable[..., Any], args: tuple[Any, ...], info: ActivityInfo) -> Outcome:
    """Runs a sync activity function once, in this thread."""
    token = _current.set(info)
    try:
        with _tracing.attached(info.trace):
            return ("ok", fn(*args))
    except Exception as exc:
        return ("err", attempt_failure(exc, fatal=isinstance(exc, FatalError)))
    finally:
        _current.reset(token)


async def invoke_async(fn: Callable[..., Any], args: tuple[Any, ...],
                       info: ActivityInfo) -> Outcome:
    """Runs an activity function once: awaited if async, called inline if sync."""
    if not inspect.iscoroutinefunction(fn):
        return invoke(fn, args, info)
    token = _current.set(info)
    try:
        with _tracing.attached(info.trace):
            return ("ok", await fn(*args))
    except Exception as exc:
        return ("err", attempt_failure(exc, fatal=isinstance(exc, FatalError)))
    finally:
        _current.reset(token)


def run_sync_or_async(fn: Callable[..., Any], args: tuple[Any, ...], info: ActivityInfo) -> Outcome:
    """For a worker process: runs an async activity on a fresh event loop, a sync one inline."""
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(invoke_async(fn, args, info))
    return invoke(fn, args, info)


Attempt = Callable[[int], Awaitable[Outcome]]


async def run_with_retries(
    seq: int, name: str, options: ActivityOptions, attempt: Attempt,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, *,
    values: Values | None = None, now: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> Event:
    """Runs attempts until one succeeds or the policy says stop; returns the event to record.

    ``attempt(n)`` runs attempt ``n`` and returns its outcome; it may raise
    ``asyncio.TimeoutError`` when ``start_to_close`` passes. A result is encoded with the
    run's ``values`` (a large one as a reference). The event says when the last attempt
    began and lists the failed attempts before it (by ``now``, the host's clock);
    ``schedule_to_close`` is measured by ``monotonic``.
    """
    policy = options.retry_policy
    deadline = (monotonic() + options.schedule_to_close
                if options.schedule_to_close is not None else None)
    number = 0
    retries: list[AttemptFailed] = []
    while True:
        number += 1
        began = now()
        timed: dict[str, Any] = {"started": began, "retries": list(retries)}
        try:
            if options.start_to_close is not None:
                kind, value = await asyncio.wait_for(attempt(number), options.start_to_close)
            else:
                kind, value = await attempt(number)
        except asyncio.TimeoutError:
            kind, value = "err", {"type": "rayline.errors.TimeoutFailure", "fatal": False,
                                  "message": f"attempt exceeded start_to_close "
                                             f"({options.start_to_close}s)", "stack": "",
                                  "timeout": True}
        if kind == "ok":
            try:
                result = _serde.encode(value, what=f"result of activity {name!r}",
                                       values=values)
            except Exception as exc:
                reported = attempt_failure(exc, fatal=True)
                return _failed(seq, name, reported, number, "fatal", failures.FATAL, timed)
            return ActivityCompleted(seq=seq, result=result, attempt=number, **timed)
        reported = value
        out_of_time = deadline is not None and monotonic() + policy.delay(number) > deadline
        if reported["fatal"] or not policy.retryable(reported["type"]):
            return _failed(seq, name, reported, number, "fatal", failures.FATAL, timed)
        if not policy.allows_another(number):
            if reported.get("timeout"):
                return _failed(seq, name, reported, number, "timeout", failures.TIMED_OUT,
                               timed)
            return _failed(seq, name, reported, number, "maxed", failures.MAXED, timed)
        if out_of_time:
            return _failed(seq, name, reported, number, "timeout", failures.TIMED_OUT, timed)
        retries.append(AttemptFailed(attempt=number, started=began, ended=now(),
                                     type=reported["type"],
                                     message=str(reported.get("message", ""))[:1000]))
        if len(retries) > KEEP_RETRIES:  # the first ones and the latest: bounded
            del retries[KEEP_RETRIES // 2]
        await sleep(policy.delay(number))


def _failed(seq: int, name: str, reported: dict[str, Any], attempt: int, kind: failures.Kind,
            code: int, timed: dict[str, Any]) -> ActivityFailed:
    return ActivityFailed(seq=seq, failure=failures.activity_failure(
        reported, activity=name, attempt=attempt, kind=kind, code=code), **timed)
