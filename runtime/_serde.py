"""Values to and from storage payloads.

A payload is a small JSON object. JSON values are stored as they are; pydantic models
and dataclasses as JSON beside the import path of their class; anything else (numpy
arrays, exceptions, custom objects) as base64 cloudpickle. Classes that cannot be
imported again (defined in ``__main__`` or a function) are pickled by value.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import math
from typing import TYPE_CHECKING, Any

import cloudpickle
import pydantic
from pydantic import JsonValue
from typing_extensions import NotRequired, TypedDict

from .errors import SerializationError

if TYPE_CHECKING:
    from ._values import Values


class Ref(TypedDict):
    """A large value in storage (see ``rayline._values``): what a payload holds in its
    place."""

    digest: str
    """sha256 of the pickled value: its name in storage."""
    size: int
    """Bytes of the pickled value."""
    type: str
    """``module.qualname`` of the value's type."""
    obj: NotRequired[bool]
    """The workflow holds it as a Ray ``ObjectRef`` (an activity returned one)."""


class Payload(TypedDict, total=False):
    """One stored value: exactly one of the shapes below (the JSON keys are short because
    timelines hold many of them)."""

    j: Any
    """A JSON value; with ``m`` or ``d``, the fields of that model or dataclass."""
    m: str
    """Import path of the pydantic model ``j`` holds."""
    d: str
    """Import path of the dataclass ``j`` holds."""
    p: str
    """base64 cloudpickle of anything else."""
    r: Ref
    """A large value, kept in storage by itself."""


Fields = dict[str, JsonValue]
"""Named JSON values: search fields, memo, enrich fields (checked by ``validate_fields``)."""


_JSON_SCALARS = (str, int, bool, type(None))


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_is_json(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(k) is str and _is_json(v, depth + 1) for k, v in value.items())
    return False


def import_path(obj: Any) -> str | None:
    """``module:qualname`` for an object that can be imported back, else ``None``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<locals>" in qualname:
        return None
    return f"{module}:{qualname}"


def resolve_path(path: str) -> Any:
    """Imports the object named by ``module:qualname``."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def encode(value: Any, *, what: str = "value", values: Values | None = None) -> Payload:
    """Encodes ``value`` as a payload; with ``values``, a large one as a reference.

    Raises:
        SerializationError: naming ``what`` when the value cannot be serialised.
    """
    if values is not None:
        ref = values.reference(value, what=what)
        if ref is not None:
            return {"r": ref}
    if _is_json(value):
        return {"j": value}
    kind = type(value)
    path = import_path(kind)
    if path is not None:
        if isinstance(value, pydantic.BaseModel):
            return {"m": path, "j": value.model_dump(mode="json")}
        if dataclasses.is_dataclass(value):
            try:
                return {"d": path, "j": pydantic.TypeAdapter(kind).dump_python(value, mode="json")}
            except (pydantic.PydanticSchemaGenerationError, pydantic.ValidationError, TypeError):
                pass  # a dataclass with fields pydantic cannot describe: pickle it
    return {"p": pickle_b64(value, what=what)}


def decode(payload: Payload, values: Values | None = None) -> Any:
    """Decodes a payload made by :func:`encode` (a reference with the ``values`` of its
    run, which read it from storage).

    Raises:
        SerializationError: a reference and no ``values``.
    """
    if "r" in payload:
        if values is None:
            raise SerializationError(f"large value {payload['r']['digest'][:12]} is kept "
                                     "in storage: decode it with its run's values")
        return values.value(payload["r"])
    if "p" in payload:
        return unpickle_b64(payload["p"])
    if "m" in payload:
        return resolve_path(payload["m"]).model_validate(payload["j"])
    if "d" in payload:
        return pydantic.TypeAdapter(resolve_path(payload["d"])).validate_python(payload["j"])
    return payload["j"]


def pickle_b64(value: Any, *, what: str = "value") -> str:
    """cloudpickle + base64, with a clear error for what cannot be pickled."""
    try:
        return base64.b64encode(cloudpickle.dumps(value)).decode("ascii")
    except Exception as exc:  # pickling raises many types: TypeError, PicklingError, ...
        raise SerializationError(
            f"cannot serialise {what} of type {type(value).__name__}: {exc}"
        ) from exc


def unpickle_b64(text: str) -> Any:
    return cloudpickle.loads(base64.b64decode(text))


def encode_args(args: tuple[Any, ...] | list[Any], *, what: str,
                values: Values | None = None) -> list[Payload]:
    """Encodes call arguments, naming the argument that fails (``what`` arg 2)."""
    return [encode(arg, what=f"{what} argument {i}", values=values)
            for i, arg in enumerate(args)]
