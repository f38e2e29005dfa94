"""Workflow definitions: what ``@rayline.workflow`` makes of an ``async def``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Awaitable, Callable, Generic, ParamSpec, TypeVar

from ._serde import import_path
from .errors import InvalidInputError

P = ParamSpec("P")
R = TypeVar("R")


class WorkflowDefinition(Generic[P, R]):
    """An ``async def`` marked as a workflow. Its ``name`` is how it is started by name."""

    def __init__(self, fn: Callable[P, Awaitable[R]], name: str) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise InvalidInputError(f"workflow {name!r} must be an async def")
        self.fn = fn
        self.name = name
        self.code = import_path(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


def define(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """``@rayline.workflow`` or ``@rayline.workflow(name="orderWorkflow")``."""

    def wrap(target: Callable[..., Any]) -> WorkflowDefinition[Any, Any]:
        if isinstance(target, WorkflowDefinition):
            return target
        return WorkflowDefinition(target, name or target.__name__)

    return wrap(fn) if fn is not None else wrap


def as_workflow(fn: Any) -> WorkflowDefinition[Any, Any]:
    if isinstance(fn, WorkflowDefinition):
        return fn
    if inspect.iscoroutinefunction(fn):
        return WorkflowDefinition(fn, fn.__name__)
    raise InvalidInputError(f"not a workflow (an async def or @rayline.workflow): {fn!r}")
