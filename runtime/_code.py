"""Where a workflow's code comes from: an import path, or a pickled copy (``CodeRef``)."""

from __future__ import annotations

import weakref
from typing import Any

import pydantic

from . import _serde
from .errors import InvalidInputError

_PICKLED: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


class CodeRef(pydantic.BaseModel):
    """A workflow's code: ``module:qualname`` when it can be imported again, else the
    definition pickled by value (defined in ``__main__``, a notebook or a function)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    path: str | None = None
    pickled: str | None = None

    @classmethod
    def of(cls, definition: Any) -> CodeRef:
        """The reference for a ``WorkflowDefinition``; a pickled copy is made once per
        function object and name (never keyed by ``id()``, which is reused)."""
        if definition.code is not None:
            return cls(path=definition.code)
        by_name = _PICKLED.setdefault(definition.fn, {})
        if definition.name not in by_name:
            by_name[definition.name] = _serde.pickle_b64(
                definition, what=f"workflow {definition.name!r}")
        return cls(pickled=by_name[definition.name])

    @classmethod
    def stored(cls, path: str | None, pickled: str | None) -> CodeRef | None:
        """The reference kept in a run record or a command (``code``, ``code_pickle``)."""
        return None if path is None and pickled is None else cls(path=path, pickled=pickled)

    @property
    def key(self) -> str:
        """A cache key for the loaded code."""
        return self.pickled or self.path or ""

    def load(self) -> Any:
        """The object referred to (a definition or a plain ``async def``).

        Raises:
            InvalidInputError: the import path does not import.
        """
        if self.pickled:
            return _serde.unpickle_b64(self.pickled)
        assert self.path is not None
        try:
            return _serde.resolve_path(self.path)
        except (ImportError, AttributeError) as exc:
            raise InvalidInputError(f"cannot import workflow code {self.path!r}: {exc}") from exc
