"""The blocking watchdog: notices workflow code that holds a host's event loop.

Executions share their host's event loop, so workflow code that blocks (``time.sleep``,
a slow computation, blocking I/O) stalls every workflow on the host. Each activation is
bracketed by ``enter``/``leave``; one monitor thread per process looks at the open
brackets:

- past ``warn_after`` seconds it logs the workflow id with the stack of the blocking
  frame and how to fix it, once per activation, and records the message for
  ``describe()``;
- past ``fail_after`` seconds (or ``warn_after`` with ``strict``) it raises
  ``DeadlockError`` in the loop thread, at the next Python instruction of the blocking
  code (a call inside C, such as ``time.sleep``, returns first); the execution fails
  its workflow with it.

Invariants: an exception is only ever raised inside an open bracket, at most once per
activation, and a pending one is withdrawn when the bracket closes first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from typing import Callable

from ..errors import DEADLOCK_MESSAGES, DeadlockError

log = logging.getLogger("rayline.watchdog")

WARN_AFTER = float(os.environ.get("RAYLINE_BLOCK_WARN", "1"))
FAIL_AFTER = float(os.environ.get("RAYLINE_BLOCK_FAIL", "10"))
STRICT = os.environ.get("RAYLINE_STRICT", "0") == "1"
HINT = ("workflow code must not block the host's event loop: use an activity for work, "
        "workflow.sleep for waiting, or a local=True activity for short blocking calls")


class Watchdog:
    """The brackets of one host's activations (see the module docstring)."""

    def __init__(self, report: Callable[[str, str], None], *, warn_after: float = WARN_AFTER,
                 fail_after: float = FAIL_AFTER, strict: bool = STRICT) -> None:
        self.report = report
        self.warn_after = warn_after
        self.fail_after = warn_after if strict else max(fail_after, warn_after)
        self._lock = threading.Lock()
        self._open: tuple[str, float, int] | None = None  # workflow id, since, thread
        self._warned = False
        self._raised = False
        self._fail_after = self.fail_after
        self.message = ""
        _Monitor.watch(self)

    def enter(self, workflow_id: str, *, strict: bool = False) -> None:
        """An activation of ``workflow_id`` begins; a strict one fails at ``warn_after``."""
        with self._lock:
            self._open = (workflow_id, time.monotonic(), threading.get_ident())
            self._warned = self._raised = False
            self._fail_after = self.warn_after if strict else self.fail_after

    def leave(self) -> None:
        with self._lock:
            bracket, self._open = self._open, None
            if self._raised and bracket is not None:  # withdraw one not delivered yet
                _raise_in(bracket[2], None)
                DEADLOCK_MESSAGES.pop(bracket[2], None)

    def check(self, now: float) -> None:
        """Called by the monitor thread."""
        with self._lock:
            if self._open is None:
                return
            workflow_id, since, thread = self._open
            held = now - since
            if held >= self.warn_after and not self._warned:
                self._warned = True
                self.message = (f"workflow {workflow_id} has held its host's event loop for "
                                f"{held:.1f}s at:\n{_stack(thread)}{HINT}")
                log.warning("%s", self.message)
                self.report(workflow_id, self.message)
            if held >= self._fail_after and not self._raised:
                self._raised = True
                self.message = (f"workflow {workflow_id} held its host's event loop for "
                                f"{held:.1f}s (limit {self._fail_after:g}s) at:\n"
                                f"{_stack(thread)}{HINT}")
                DEADLOCK_MESSAGES[thread] = self.message
                _raise_in(thread, DeadlockError)


def _stack(thread: int) -> str:
    frame = sys._current_frames().get(thread)
    return "".join(traceback.format_stack(frame, limit=8)) if frame is not None else ""


def _raise_in(thread: int, error: type[BaseException] | None) -> None:
    """Raises ``error`` in ``thread`` at its next instruction (``None`` withdraws it)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread), ctypes.py_object(error) if error is not None else None)


class _Monitor:
    """One daemon thread per process checks every watchdog a few times a second."""

    _watchdogs: weakref.WeakSet[Watchdog] = weakref.WeakSet()
    _thread: threading.Thread | None = None
    _guard = threading.Lock()
    PERIOD = 0.1

    @classmethod
    def watch(cls, watchdog: Watchdog) -> None:
        with cls._guard:
            cls._watchdogs.add(watchdog)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="rayline-watchdog",
                                               daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            time.sleep(cls.PERIOD)
            now = time.monotonic()
            for watchdog in list(cls._watchdogs):
                try:
                    watchdog.check(now)
                except Exception:  # never let the monitor die
                    log.exception("watchdog check failed")
