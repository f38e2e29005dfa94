"""Determinism guards: workflow code that calls something replay cannot repeat is told so.

A workflow's code runs again on every replay, so it must get time, randomness and the
outside world only through rayline (``workflow.now()``, ``workflow.random()``,
``workflow.sleep``, an activity). While an activation runs, the guards watch for the
usual slips (the wall clock, ``time.sleep``, the ``random`` module's functions,
``uuid.uuid4``, starting threads, and file, network and process I/O through the standard
library) and report each with its rayline replacement: a warning in the host's log by
default, a ``NonDeterministicCallError`` raised at the call when the run is strict
(``DeadlockError`` for ``time.sleep``, which would also block the host).

How: ``install()`` swaps the guarded module functions for thin wrappers (``datetime`` for
a subclass that forwards everything and is equal in ``isinstance``) and adds one audit
hook for I/O. Only a call made by workflow code is reported: its caller (for I/O, the
first caller outside the standard library) must not be the standard library, rayline or
a library rayline itself uses; the standard library reading a file while importing or
logging is not the workflow's doing.

Invariants:
- Outside an activation a guarded function costs one global read more than the
  original; ``RAYLINE_GUARDS=0`` installs nothing.
- Guards are per thread: an activity running in a thread of the host is never reported.
- A warning is logged once per workflow name, call and call site in a process.
"""

from __future__ import annotations

import copyreg
import datetime as _datetime
import functools
import logging
import os
import random as _random
import sys
import threading
import time as _time
import uuid as _uuid
from types import FrameType
from typing import Any, Callable

from ..errors import DeadlockError, NonDeterministicCallError

log = logging.getLogger("rayline.guards")

ENABLED = os.environ.get("RAYLINE_GUARDS", "1") != "0"

Report = Callable[[str, str, str], None]
"""``report(call, replacement, site)``: what the running activation does with a slip."""

_active: tuple[int, Report] | None = None
_installed = False
_OURS = frozenset({"rayline", "pydantic", "pydantic_core", "cloudpickle", "ray",
                   "aiorwlock", "typing_extensions", "_pytest", "pytest", "pluggy"})
_QUIET_STDLIB = frozenset({"importlib", "logging", "linecache", "traceback", "warnings",
                           "inspect", "tokenize", "zipimport", "pkgutil", "encodings"})
_STDLIB = frozenset(sys.stdlib_module_names)

_CLOCK = "workflow.now() (the activation's time)"
_SLEEP = "await workflow.sleep(...) (durable) or an activity"
_RANDOM = "workflow.random() (seeded per run)"
_IO = "an activity (or a local=True activity for a short call)"
_AUDITED = {
    "open": ("open()", _IO), "socket.connect": ("socket connect", _IO),
    "socket.getaddrinfo": ("DNS lookup", _IO), "subprocess.Popen": ("subprocess", _IO),
    "os.system": ("os.system", _IO), "urllib.Request": ("urllib request", _IO),
}


def activating(report: Report) -> None:
    """Workflow code is about to run on this thread: slips go to ``report``."""
    global _active
    _active = (threading.get_ident(), report)


def done() -> None:
    global _active
    _active = None


def _top(frame: FrameType) -> str:
    return str(frame.f_globals.get("__name__", "")).partition(".")[0]


def _site(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _by_workflow(frame: FrameType | None) -> FrameType | None:
    """``frame`` when it is workflow code's, else ``None``."""
    if frame is None:
        return None
    top = _top(frame)
    return None if top in _STDLIB or top in _OURS else frame


def _check(call: str, replacement: str, frame: FrameType | None) -> None:
    active = _active
    if active is None or active[0] != threading.get_ident():
        return
    caller = _by_workflow(frame)
    if caller is not None:
        active[1](call, replacement, _site(caller))


def _wrap(module: Any, name: str, call: str, replacement: str) -> None:
    original = getattr(module, name)

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _active is not None:
            _check(call, replacement, sys._getframe(1))
        return original(*args, **kwargs)

    setattr(module, name, guarded)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _active is None or event not in _AUDITED:
        return
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _top(frame) in _STDLIB:
        if _top(frame) in _QUIET_STDLIB:
            return
        frame = frame.f_back
    call, replacement = _AUDITED[event]
    _check(call, replacement, frame)


class _SameDatetime(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _ORIGINAL_DATETIME)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _ORIGINAL_DATETIME)


_ORIGINAL_DATETIME = _datetime.datetime


class _GuardedDatetime(_datetime.datetime, metaclass=_SameDatetime):
    """``datetime.datetime`` whose clock readings are guarded; it makes plain datetimes."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _ORIGINAL_DATETIME(*args, **kwargs)

    @classmethod
    def now(cls, tz: _datetime.tzinfo | None = None) -> Any:
        if _active is not None:
            _check("datetime.now()", _CLOCK, sys._getframe(1))
        return _ORIGINAL_DATETIME.now(tz)

    @classmethod
    def utcnow(cls) -> Any:
        if _active is not None:
            _check("datetime.utcnow()", _CLOCK, sys._getframe(1))
        return _ORIGINAL_DATETIME.utcnow()

    @classmethod
    def today(cls) -> Any:
        if _active is not None:
            _check("datetime.today()", _CLOCK, sys._getframe(1))
        return _ORIGINAL_DATETIME.today()


_GuardedDatetime.__name__ = _GuardedDatetime.__qualname__ = "datetime"
_GuardedDatetime.__module__ = "datetime"


def datetime_from(*state: Any) -> Any:
    """A ``datetime.datetime`` from its pickled state: how datetimes pickle while the
    guard stands in for the class (pickle finds ``datetime.datetime`` is not the class
    of the value, and refuses to name the class)."""
    return _ORIGINAL_DATETIME(*state)


def _reduce_datetime(value: Any) -> Any:
    return (datetime_from, value.__reduce__()[1])


def install() -> None:
    """Puts the guards in place in this process (once; a no-op with RAYLINE_GUARDS=0)."""
    global _installed
    if _installed or not ENABLED:
        return
    _installed = True
    for name in ("time", "time_ns", "monotonic", "perf_counter"):
        _wrap(_time, name, f"time.{name}()", _CLOCK)
    _wrap(_time, "sleep", "time.sleep()", _SLEEP)
    for name in ("random", "randint", "randrange", "choice", "choices", "shuffle", "sample",
                 "uniform", "gauss", "getrandbits", "randbytes"):
        _wrap(_random, name, f"random.{name}()", _RANDOM)
    _wrap(_uuid, "uuid1", "uuid.uuid1()", "workflow.uuid4() (seeded per run)")
    _wrap(_uuid, "uuid4", "uuid.uuid4()", "workflow.uuid4() (seeded per run)")
    _wrap(os, "urandom", "os.urandom()", _RANDOM)
    _wrap(threading.Thread, "start", "starting a thread", _IO)
    _datetime.datetime = _GuardedDatetime  # type: ignore[misc]
    copyreg.pickle(_ORIGINAL_DATETIME, _reduce_datetime)  # datetimes still pickle
    sys.addaudithook(_audit)


_warned: set[tuple[str, str, str]] = set()


def warn_once(workflow: str, call: str, replacement: str, site: str) -> str:
    """The message for a slip; logged the first time this process sees it."""
    message = (f"workflow {workflow}: {call} at {site} breaks replay (it gives another "
               f"answer when the run is replayed): use {replacement}")
    key = (workflow, call, site)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)
    return message


def refuse(call: str, replacement: str, site: str) -> None:
    """A strict run's slip: ``time.sleep`` blocks the host (``DeadlockError``, before it
    sleeps), anything else breaks replay (``NonDeterministicCallError``)."""
    error = DeadlockError if call == "time.sleep()" else NonDeterministicCallError
    raise error(f"{call} at {site} is not allowed in workflow code (the run is strict): "
                f"use {replacement}")
