"""The sync client's objects: each a twin of an async one whose coroutine methods it
offers as blocking calls, run on the sync client's own event loop thread.

A twin class names the async class it stands for (``class WorkflowHandle(Facade,
twin_of=AsyncWorkflowHandle)``); a blocking call whose result is an object with a twin
returns the twin, so handles got from a sync client are sync too.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Coroutine, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    """Runs a coroutine to its end on the sync client's loop."""

    def run(self, coro: Coroutine[Any, Any, T]) -> T: ...


class Facade:
    """Exposes an async object's coroutine methods as blocking calls."""

    _twins: ClassVar[dict[type, type[Facade]]] = {}

    def __init_subclass__(cls, twin_of: type | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if twin_of is not None:
            Facade._twins[twin_of] = cls

    def __init__(self, target: Any, runner: Runner) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not inspect.iscoroutinefunction(value):
            return value

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return twin(self._runner.run(value(*args, **kwargs)), self._runner)

        blocking.__doc__ = value.__doc__
        return blocking


def twin(value: Any, runner: Runner) -> Any:
    """``value``'s sync twin, if its class has one; else ``value``."""
    cls = Facade._twins.get(type(value))
    return cls(value, runner) if cls is not None else value
