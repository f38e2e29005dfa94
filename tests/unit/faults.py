"""A fault-injecting ``Store``: wraps a real store and fails chosen calls on purpose.

Each call is classified into an operation kind from its method and key:

    create_run    put  <ns>/wf/<id>/runs/<epoch>
    open_marker   put  <ns>/open/<host>/<id> whose note has ``parked_until`` null
    park_hint     put  <ns>/open/<host>/<id> whose note has a ``parked_until``
    append        put  <ns>/wf/<id>/t/<epoch>/<seq>
    clear         delete <ns>/open/<host>/<id>
    list          any list
    read          any get

(anything else: ``early``, ``config``, ``delete``, ``other``; never injected unless named).
A fault is armed with ``inject`` (the next N calls of one operation) or ``randomize``;
``injected`` counts the faults that fired, per (operation, kind).
"""

from __future__ import annotations

import collections
import errno
import json
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from rayline.errors import StorageError
from rayline.storage import Store

OPS = ("create_run", "open_marker", "park_hint", "append", "clear", "list", "read")
KINDS = ("storage_error", "os_error", "foreign", "landed", "slow")
SLOW_SECONDS = 0.2

_RUN = re.compile(r"^wf/[^/]+/runs/\d+$")
_BATCH = re.compile(r"^wf/[^/]+/t/\d+/\d+$")


class EndpointConnectionError(Exception):
    """A foreign error: neither an ``OSError`` nor a ``RaylineError`` (as botocore raises)."""


@dataclass
class Fired:
    """One injected fault."""

    op: str
    kind: str
    key: str


def classify(method: str, key: str, data: bytes | None = None) -> str:
    """The operation kind of a store call (see the module docstring)."""
    if method == "list":
        return "list"
    if method == "get":
        return "read"
    rest = key.split("/", 1)[1] if "/" in key else key  # drop the namespace
    if method == "delete":
        return "clear" if rest.startswith("open/") else "delete"
    if _RUN.match(rest):
        return "create_run"
    if _BATCH.match(rest):
        return "append"
    if rest.startswith("open/"):
        try:
            note = json.loads(data or b"")
        except ValueError:
            return "open_marker"
        return "open_marker" if note.get("parked_until") is None else "park_hint"
    if rest.startswith("early/"):
        return "early"
    if rest.startswith("config/"):
        return "config"
    return "other"


class FaultyStore:
    """Wraps ``inner`` (any ``Store``) and injects faults into the calls it classifies."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.quick = inner.quick
        self.injected: collections.Counter[tuple[str, str]] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.fired: list[Fired] = []
        self._armed: dict[str, collections.deque[str]] = {}
        self._random: tuple[random.Random, float, tuple[str, ...], tuple[str, ...], int] | None \
            = None
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- hooks

    def inject(self, op: str, kind: str, times: int = 1) -> None:
        """Fails the next ``times`` calls of ``op`` with ``kind``."""
        assert op in OPS and kind in KINDS, (op, kind)
        with self._lock:
            self._armed.setdefault(op, collections.deque()).extend([kind] * times)

    def randomize(self, seed: int, rate: float, kinds: tuple[str, ...] = KINDS,
                  ops: tuple[str, ...] = OPS, max_faults: int = 20) -> None:
        """Fails each call of ``ops`` with probability ``rate`` (a random kind of ``kinds``),
        at most ``max_faults`` times in all."""
        with self._lock:
            self._random = (random.Random(seed), rate, tuple(kinds), tuple(ops), max_faults)

    def disarm(self) -> None:
        """No more faults (armed ones are dropped)."""
        with self._lock:
            self._armed.clear()
            self._random = None

    def fired_count(self, op: str | None = None, kind: str | None = None) -> int:
        return sum(n for (o, k), n in self.injected.items()
                   if (op is None or o == op) and (kind is None or k == kind))

    def _choose(self, op: str, key: str) -> str | None:
        with self._lock:
            self.calls[op] += 1
            kind: str | None = None
            queue = self._armed.get(op)
            if queue:
                kind = queue.popleft()
            elif self._random is not None:
                rng, rate, kinds, ops, cap = self._random
                if op in ops and sum(self.injected.values()) < cap and rng.random() < rate:
                    kind = rng.choice(kinds)
            if kind is not None:
                self.injected[(op, kind)] += 1
                self.fired.append(Fired(op, kind, key))
            return kind

    # -------------------------------------------------------------- failing

    @staticmethod
    def _raise(kind: str, op: str, key: str) -> None:
        what = f"injected {kind} on {op} {key}"
        if kind in ("storage_error", "landed"):
            raise StorageError(what)
        if kind == "os_error":
            raise OSError(errno.EIO, what)
        if kind == "foreign":
            raise EndpointConnectionError(what)
        raise AssertionError(kind)

    def _call(self, op: str, key: str, perform: Any) -> Any:
        kind = self._choose(op, key)
        if kind is None:
            return perform()
        if kind == "slow":
            time.sleep(SLOW_SECONDS)
            return perform()
        if kind == "landed" and op not in ("list", "read"):
            perform()  # the write lands, then the call reports a failure
        self._raise(kind, op, key)

    # ------------------------------------------------------------ protocol

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        self._call(classify("put", key, data), key,
                   lambda: self.inner.put(key, data, exclusive=exclusive, durable=durable))

    def get(self, key: str) -> bytes:
        return self._call("read", key, lambda: self.inner.get(key))  # type: ignore[no-any-return]

    def delete(self, key: str) -> None:
        self._call(classify("delete", key), key, lambda: self.inner.delete(key))

    def list(self, prefix: str) -> list[str]:
        return self._call("list", prefix, lambda: self.inner.list(prefix))  # type: ignore[no-any-return]
