"""Backoff: the one schedule of delays between retries, and the retry loops built on it.

Every retry in the engine (a failed storage write, a read, a delivery to another
workflow, a parked run that could not be woken) waits by this schedule: exponential from
``first`` to ``cap`` seconds, with jitter so that many retrying actors do not beat in step.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, Iterator, TypeVar

from .errors import StorageError

T = TypeVar("T")
log = logging.getLogger("rayline.host")

FIRST = 0.05
CAP = 5.0


def delays(first: float | None = None, cap: float | None = None) -> Iterator[float]:
    """An endless schedule: ``first``, twice that, ... up to ``cap``, each with ±20% jitter
    (``FIRST`` and ``CAP`` of this module by default)."""
    first = FIRST if first is None else first
    cap = CAP if cap is None else min(cap, CAP)
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, cap)


def transient(exc: BaseException) -> bool:
    """True for a storage failure worth retrying. ``RunStore`` maps every failure of its
    store to ``StorageError``; its subclasses (a conflict, a corrupt or newer object) and
    every other error would come out the same next time."""
    if isinstance(exc, OSError):
        return not isinstance(exc, FileNotFoundError)
    return type(exc) is StorageError


async def retrying(call: Callable[[], Awaitable[T]], what: str, *,
                   attempts: int | None = 6, cap: float | None = 1.0) -> T:
    """Awaits ``call()``, retrying transient failures by the schedule; ``attempts=None``
    retries for as long as it takes. The last failure is raised as it came."""
    schedule = delays(cap=cap)
    tried = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            tried += 1
            if not transient(exc) or (attempts is not None and tried >= attempts):
                raise
            delay = next(schedule)
            log.warning("%s failed (%s: %s); retry %d in %.2fs", what, type(exc).__name__,
                        exc, tried, delay)
            await asyncio.sleep(delay)
