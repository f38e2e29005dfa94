"""Workflow definitions: what ``@rayline.workflow`` makes of an ``async def``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Awaitable, Callable, Generic, ParamSpec, TypeVar, overload

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


class WorkflowDecorator:
    """What ``@rayline.workflow(name=...)`` returns: the decorator proper."""

    def __init__(self, name: str | None) -> None:
        self._name = name

    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> WorkflowDefinition[P, R]:
        if isinstance(fn, WorkflowDefinition):
            return fn
        return WorkflowDefinition(fn, self._name or fn.__name__)


@overload
def define(fn: Callable[P, Awaitable[R]], /) -> WorkflowDefinition[P, R]: ...
@overload
def define(*, name: str | None = None) -> WorkflowDecorator: ...
def define(fn: Callable[P, Awaitable[R]] | None = None, /, *,
           name: str | None = None) -> WorkflowDefinition[P, R] | WorkflowDecorator:
    """``@rayline.workflow`` or ``@rayline.workflow(name="orderWorkflow")``: the
    definition keeps the function's signature and result type."""
    decorator = WorkflowDecorator(name)
    return decorator(fn) if fn is not None else decorator


def as_workflow(fn: Any) -> WorkflowDefinition[Any, Any]:
    if isinstance(fn, WorkflowDefinition):
        return fn
    if inspect.iscoroutinefunction(fn):
        return WorkflowDefinition(fn, fn.__name__)
    raise InvalidInputError(f"not a workflow (an async def or @rayline.workflow): {fn!r}")
