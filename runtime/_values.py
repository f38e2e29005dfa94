"""Large values by reference.

A value whose pickle is larger than ``LARGE_VALUE`` bytes (256 KiB unless the
``RAYLINE_LARGE_VALUE`` environment variable says otherwise) is kept once in the
namespace's storage as ``objects/<sha256>``; a timeline holds only its reference, a
payload ``{"r": {"digest", "size", "type"}}``. Who keeps it:

- the Ray task of an activity, for a large result (the host never sees the bytes: it
  gets the reference and an ``ObjectRef`` to the value in Ray's object store);
- the client, for large workflow inputs and signal payloads;
- the host, for a large value the workflow code makes itself (written before the batch
  that names it).

A run's ``Values`` remembers, for its lifetime on a host, each large value the
workflow was handed: passing one on to an activity sends its ``ObjectRef`` (Ray hands
the value to the task on whichever node it runs) and records the same reference again,
with no pickling. A value that is only a reference (after a host restart, or a run
that parked) is read back from storage when the run needs it.

An activity that returns a Ray ``ObjectRef`` hands the workflow an ``ObjectRef`` (the
reference is marked ``obj``): its value is stored all the same, since an object that
lives only in Ray's object store is lost with the cluster.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Protocol

import cloudpickle

from ._serde import Ref
from .errors import SerializationError

if TYPE_CHECKING:
    from .storage import RunStore

log = logging.getLogger("rayline.values")

LARGE_VALUE = int(os.environ.get("RAYLINE_LARGE_VALUE", str(256 * 1024)))
"""Bytes (pickled) above which a value is stored by reference."""

_SMALL = (int, float, bool, type(None))


@dataclass(frozen=True)
class Stored:
    """What an activity attempt returns in place of a large result: its reference (the
    value itself travels through Ray's object store, not through the host)."""

    ref: Ref
    object_ref: Any = field(default=None, compare=False)
    """Where the host's backend holds the value in the cluster (not sent by the task)."""


class ObjectSpace(Protocol):
    """The cluster's object store as a host uses it (Ray's, in ``rayline.actors``)."""

    def is_ref(self, value: Any) -> bool: ...
    def put(self, value: Any) -> Any: ...
    def get(self, ref: Any) -> Any: ...
    def fetch(self, ref: Any) -> Awaitable[Any]: ...


def type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def dumps(value: Any, *, what: str) -> bytes:
    try:
        return cloudpickle.dumps(value)  # type: ignore[no-any-return]
    except Exception as exc:  # pickling raises many types: TypeError, PicklingError, ...
        raise SerializationError(
            f"cannot serialise {what} of type {type(value).__name__}: {exc}") from exc


def reference(data: bytes, value: Any, *, obj: bool = False) -> Ref:
    ref = Ref(digest=hashlib.sha256(data).hexdigest(), size=len(data), type=type_name(value))
    if obj:
        ref["obj"] = True
    return ref


def store_if_large(runs: RunStore, value: Any, *, what: str, obj: bool = False,
                   threshold: int | None = None) -> Ref | None:
    """Keeps ``value`` in storage and returns its reference if it is large (or ``obj``),
    else ``None``: where a value is made outside a host (an activity's task, a client)."""
    if not obj and type(value) in _SMALL:
        return None
    data = dumps(value, what=what)
    if not obj and len(data) <= (LARGE_VALUE if threshold is None else threshold):
        return None
    ref = reference(data, value, obj=obj)
    runs.put_object(ref["digest"], data)
    return ref


def is_ref(payload: Any) -> bool:
    return isinstance(payload, dict) and "r" in payload


class Values:
    """The large values of one run on a host (or of a client's calls): see the module
    docstring."""

    def __init__(self, runs: RunStore | None, space: ObjectSpace | None = None,
                 threshold: int | None = None) -> None:
        self.runs = runs
        self.space = space
        self.threshold = LARGE_VALUE if threshold is None else threshold
        self.writes: dict[str, bytes] = {}
        """Objects to write before the batch that first names them."""
        self._known: dict[int, tuple[Ref, Any]] = {}  # id(value) -> its ref, the value
        self._refs: dict[str, Any] = {}  # digest -> the value's ObjectRef in the cluster
        self._ready: dict[str, Any] = {}  # digest -> value fetched ahead of its decoding
        self.failure: Exception | None = None
        self.workflow_id = ""
        """The run's workflow id, for the log (set by its execution)."""
        """The last error reading a stored value (see ``_load``)."""

    # ----------------------------------------------------------------- encode

    def reference(self, value: Any, *, what: str) -> Ref | None:
        """The reference to encode ``value`` as, or ``None`` if it is small."""
        if isinstance(value, Stored):
            return value.ref
        if self.knows(value):
            return self._known[id(value)][0]
        if type(value) in _SMALL:
            return None
        space = self.space
        obj = space is not None and space.is_ref(value)
        plain = space.get(value) if space is not None and obj else value  # code made it
        data = dumps(plain, what=what)
        if not obj and len(data) <= self.threshold:
            return None
        ref = reference(data, plain, obj=obj)
        self.writes[ref["digest"]] = data
        if obj:
            self._refs[ref["digest"]] = value
        else:  # the next activation may decode it (an activity result made in the host)
            self._ready[ref["digest"]] = value
        self._remember(ref, value)
        return ref

    def received(self, stored: Stored) -> None:
        """An activity's large result arrived (its value in the cluster, if it says)."""
        if stored.object_ref is not None:
            self._refs[stored.ref["digest"]] = stored.object_ref

    def flush(self) -> None:
        """Writes the objects the next batch names (in a thread: they may be large)."""
        assert self.runs is not None
        while self.writes:
            digest, data = next(iter(self.writes.items()))
            self.runs.put_object(digest, data)
            del self.writes[digest]

    # ----------------------------------------------------------------- decode

    async def prefetch(self, payloads: Iterable[Any],
                       io: Callable[..., Awaitable[Any]]) -> None:
        """Reads ahead the large values that ``payloads`` name, off the event loop, so
        that decoding them in the workflow's activation does not block. Never raises: a
        value that cannot be read ahead is read again when it is decoded, and a failure
        there reaches the workflow code as the call's error."""
        for payload in payloads:
            if not is_ref(payload) or payload["r"]["digest"] in self.writes:
                continue  # small, or made here and not written yet (``value`` has it)
            try:
                await self._fetch(payload["r"], io)
            except Exception as exc:  # storage or the object store failed: decode says so
                log.warning("workflow %s: large value %s: reading ahead failed (%s: %s)",
                            self.workflow_id, payload["r"]["digest"][:12],
                            type(exc).__name__, exc)

    async def _fetch(self, ref: Ref, io: Callable[..., Awaitable[Any]]) -> None:
        digest = ref["digest"]
        if ref.get("obj"):
            if digest not in self._refs and self.space is not None:
                value = await io(self._load, digest)
                self._refs[digest] = await io(self.space.put, value)
        elif digest not in self._ready:
            held = self._refs.get(digest)
            if held is not None and self.space is not None:
                self._ready[digest] = await self.space.fetch(held)
            else:
                self._ready[digest] = await io(self._load, digest)

    def value(self, ref: Ref) -> Any:
        """The value a reference names (as an ``ObjectRef`` if it is marked ``obj``)."""
        digest = ref["digest"]
        if ref.get("obj") and self.space is not None:
            value = self._refs.get(digest)
            if value is None:
                value = self._refs[digest] = self.space.put(self._load(digest))
        elif digest in self._ready:
            value = self._ready.pop(digest)
        elif digest in self._refs and self.space is not None:
            value = self.space.get(self._refs[digest])
        elif digest in self.writes:
            value = cloudpickle.loads(self.writes[digest])
        else:
            value = self._load(digest)
        self._remember(ref, value)
        return value

    def task_args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` for an activity's Ray task: each large value the run knows goes as
        its ``ObjectRef``, so Ray hands it over without the host."""
        if self.space is None:
            return args
        found = []
        for arg in args:
            ref = self._known[id(arg)][0] if self.knows(arg) else None
            if ref is not None and not ref.get("obj"):
                digest = ref["digest"]
                held = self._refs.get(digest)
                if held is None:
                    held = self._refs[digest] = self.space.put(arg)
                arg = held
            found.append(arg)
        return tuple(found)

    def knows(self, value: Any) -> bool:
        """Whether ``value`` is a large value of this run (it goes by reference)."""
        known = self._known.get(id(value))
        return known is not None and known[1] is value

    def _remember(self, ref: Ref, value: Any) -> None:
        self._known[id(value)] = (ref, value)

    def _load(self, digest: str) -> Any:
        """A stored value, read now. A failure is also kept in ``failure``: a replay that
        diverges because workflow code could not get a value reports this cause."""
        if self.runs is None:
            raise SerializationError(f"large value {digest[:12]}: no storage to read it from")
        try:
            return cloudpickle.loads(self.runs.get_object(digest))
        except Exception as exc:
            self.failure = exc
            raise
