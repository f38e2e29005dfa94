"""Loggers that say where a line comes from: ``workflow.logger`` and ``rayline.activity_logger``.

Both are standard ``logging.LoggerAdapter``\\ s (of the loggers ``rayline.workflow`` and
``rayline.activity``): set their level and handlers as any logger's. Each record gets
the attributes ``workflow_id`` and ``run_id``, and ``workflow_name`` and ``step`` (the
workflow's activation: the batch it is recorded in) or ``activity``, ``seq`` and
``attempt``, for formatters (``%(workflow_id)s``) and structured handlers; the message
itself starts with them, so plain formatters show them too.

``workflow.logger`` emits nothing while the run replays (a host recovering or waking it),
so each line appears once per step however often the run is rebuilt. Outside a workflow
or an activity the adapters log plainly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from ._activity import _current as _current_activity
from .core.instance import WorkflowInstance

_Adapter = logging.LoggerAdapter[logging.Logger]


def _running_instance() -> WorkflowInstance | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if isinstance(loop, WorkflowInstance) else None


class _Line:
    """A message with where it comes from in front, formatted when a handler asks."""

    __slots__ = ("head", "msg", "args")

    def __init__(self, head: str, msg: object, args: Any) -> None:
        self.head, self.msg, self.args = head, msg, args

    def __str__(self) -> str:
        text = str(self.msg)
        if self.args:
            text = text % self.args
        return f"{self.head}: {text}"


class _ContextLogger(_Adapter):
    def context(self) -> tuple[str, dict[str, Any]] | None:
        """What the line is about: its head and the record's attributes."""
        raise NotImplementedError

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        found = self.context()
        if found is None:
            self.logger.log(level, msg, *args, **kwargs)
            return
        head, fields = found
        extra = kwargs.get("extra")
        kwargs["extra"] = {**fields, **extra} if extra else fields
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the caller's line
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]  # type: ignore[assignment]  # logging's "%(name)s" form
        self.logger.log(level, _Line(head, msg, args), **kwargs)


class WorkflowLogger(_ContextLogger):
    """``workflow.logger`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("rayline.workflow"), {})

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        instance = _running_instance()
        if instance is not None and instance.is_replaying:
            return False
        return self.logger.isEnabledFor(level)

    def context(self) -> tuple[str, dict[str, Any]] | None:
        instance = _running_instance()
        if instance is None:
            return None
        s = instance.started
        return (f"workflow {s.workflow_id} (run {s.run_id}, step {instance.step})",
                {"workflow_id": s.workflow_id, "run_id": s.run_id,
                 "workflow_name": s.workflow_name, "step": instance.step})


class ActivityLogger(_ContextLogger):
    """``rayline.activity_logger`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("rayline.activity"), {})

    def context(self) -> tuple[str, dict[str, Any]] | None:
        info = _current_activity.get()
        if info is None:
            return None
        return (f"activity {info.activity} of workflow {info.workflow_id} (run {info.run_id},"
                f" call {info.seq}, attempt {info.attempt})",
                {"workflow_id": info.workflow_id, "run_id": info.run_id,
                 "activity": info.activity, "seq": info.seq, "attempt": info.attempt})


workflow_logger = WorkflowLogger()
"""``workflow.logger``."""
activity_logger = ActivityLogger()
"""``rayline.activity_logger``."""
