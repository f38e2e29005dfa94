"""Where runs live in a store, and how their timelines are written and read.

Layout under ``<store>/<namespace>/``::

    wf/<id>/runs/<epoch>          the run object (WorkflowStarted + batch 1), created
                                  exclusively: the arbiter of "who started run N of this id"
    wf/<id>/t/<epoch>/<seq>       one batch per activation, created exclusively: the
                                  fencing token (a stale owner cannot write seq N twice)
    wf/<id>/s/<epoch>/<seq>       a snapshot: batches 1..<seq> in one object, so readers
                                  get the run with one read plus the batches after it
    open/<host>/<id>              marker: this host owns an unfinished run of <id>
    early/<id>/<stamp>            signals sent before the workflow exists
    packages/<name>               a code version's package (kept for cluster restarts)
    objects/<sha256>              a large value (pickled), named by its content
    config/<name>                 queue, host and version documents of the registry

Invariants:
- Every object is written through ``_seal`` and read through ``_open`` (``_decode``,
  ``_open_document``): with no codec they frame it as ``RL1 <sha256> <length>\\n<json>``
  (markers and config documents stay plain JSON); with one, the codec seals it
  (``rayline.storage.codec``: compressed, encrypted, MAC'd, ``RLC ...``). A torn or
  altered object fails the check. With a keyed codec an object without a valid MAC is
  refused (``IntegrityError``), never taken for torn.
- A torn *last* batch is treated as never written: readers leave it out and never
  modify storage; only the run's owner, reading with ``repair=True`` before it
  writes again, moves it aside. A bad batch in the middle raises ``CorruptTimelineError``.
- A run object or batch written by a newer rayline (``v`` above ``TIMELINE_VERSION``)
  raises ``IncompatibleTimelineError`` and is left in place, never taken for torn.
- A batch must carry its own run id and sequence number, so a foreign object is caught.
- Exclusive creates are idempotent for their writer: a create that finds the key holding
  exactly the bytes it writes is its own earlier attempt (which landed but reported a
  failure), so it succeeds; different bytes are a real conflict.
- Every failure of the store surfaces as a ``StorageError`` (even a third-party store's
  own exception class); ``FileNotFoundError`` stays the store's "absent" signal.
- A snapshot is a hint, never the truth: its owner writes it (not fsync'd) only after
  every batch it holds is durable, and removes the older ones after it; a reader uses
  the newest one if it checks out (frame, run id, every seq in order) and reads the
  batches after it, and falls back to reading every batch, saying so, when it does not.
  Taking batches from the snapshot or from their own objects gives the same list.
- Writes happen in this order: open marker (not fsync'd: the run object's fsync commits
  it on a journaling filesystem), run object, batches 2.., and the open marker is removed
  only after the closing batch is durable; recovery scans the open markers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

from pydantic import TypeAdapter, ValidationError

from ..errors import (
    CodecError,
    ConflictError,
    CorruptTimelineError,
    DuplicateWorkflowError,
    IncompatibleTimelineError,
    IntegrityError,
    InvalidInputError,
    RaylineError,
    StorageError,
    WorkflowNotFoundError,
)
from ..timeline import (
    BATCH_ADAPTER,
    TIMELINE_VERSION,
    Batch,
    RunRecord,
    SignalReceived,
    WorkflowStarted,
)
from .codec import MAGIC as _SEALED
from .codec import Codec, header_of, open_sealed
from .stores import Store

T = TypeVar("T")
log = logging.getLogger("rayline.storage")
_RECORD_ADAPTER: TypeAdapter[RunRecord] = TypeAdapter(RunRecord)

MAX_ID_LENGTH = 1000
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_PLAIN = re.compile(r"^[A-Za-z0-9_.@:=+,-]{1,150}$")
_MAGIC = b"RL1 "
_NEWER_MAGIC = re.compile(rb"RL([0-9]{1,4}) ")

SNAPSHOT_EVERY = int(os.environ.get("RAYLINE_SNAPSHOT_EVERY", "100"))
"""A run's owner snapshots it every this many batches (0: never), so a reader reads at
most one snapshot plus this many batches."""
SNAPSHOT_PARK_BYTES = int(os.environ.get("RAYLINE_SNAPSHOT_PARK_BYTES", str(1 << 20)))
"""A run that parks with ``SNAPSHOT_PARK_AFTER`` batches or more since its last snapshot
is snapshotted too, while its history is at most this many bytes (a larger one only every
``SNAPSHOT_EVERY`` batches: a snapshot rewrites the whole history)."""
SNAPSHOT_PARK_AFTER = int(os.environ.get("RAYLINE_SNAPSHOT_PARK_AFTER", "16"))
"""See ``SNAPSHOT_PARK_BYTES``: a wake then reads at most this many batches past the
snapshot (one round of reads on S3, ``READ_AHEAD`` at a time)."""
_SNAPSHOT_FORMAT = 2


@dataclass
class History:
    """A run as read from storage: its record, its batches and their stored JSON."""

    started: WorkflowStarted
    batches: list[Batch]
    bodies: list[bytes]
    """Each batch's JSON as stored (what a snapshot of the run is made of)."""
    snapshot: int = 0
    """The seq of the snapshot the first batches came from (0: read one by one)."""


def validate_id(value: object, *, what: str = "workflow id") -> str:
    """Returns ``value`` if it is a usable id, else raises ``InvalidInputError`` saying why."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInputError(f"{what} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInputError(f"{what} is {len(value)} characters; the limit is {MAX_ID_LENGTH}")
    if _UNSAFE.search(value):
        raise InvalidInputError(f"{what} {value[:80]!r} contains a path separator or a "
                                "control character")
    if ".." in value or value.startswith("."):
        raise InvalidInputError(f"{what} {value[:80]!r} must not contain '..' or start with '.'")
    return value


def id_key(workflow_id: str) -> str:
    """The storage name for an id: itself when short and plain, else a stable digest."""
    if _PLAIN.match(workflow_id):
        return workflow_id
    digest = hashlib.sha256(workflow_id.encode()).hexdigest()[:40]
    return f"~{digest}"


def frame(body: bytes) -> bytes:
    """``body`` framed for storage: ``RL1 <sha256> <length>\\n<body>``."""
    return b"%s%s %d\n%s" % (_MAGIC, hashlib.sha256(body).hexdigest().encode(), len(body), body)


def unframe(data: bytes, key: str) -> bytes:
    """The body of a framed object; ``CorruptTimelineError`` if it is torn or altered,
    ``IncompatibleTimelineError`` if a newer rayline framed it differently, ``CodecError``
    if a codec sealed it (read it with ``RunStore._open``)."""
    sealed = header_of(data)
    if sealed is not None:
        raise CodecError(f"{key} is sealed by codec {sealed[0]} with key {sealed[1]!r}: "
                         "read it with the codec and keys it was written with "
                         "($RAYLINE_CODEC, $RAYLINE_KEYS or Client(codec=...))",
                         key_id=sealed[1], codec=sealed[0])
    head, sep, body = data.partition(b"\n")
    parts = head.split(b" ")
    newer = _NEWER_MAGIC.match(head)
    if newer and int(newer.group(1)) > 1:  # a torn RL1 object keeps its header: not torn
        raise IncompatibleTimelineError(
            f"{key} was written by a newer rayline (object format RL{newer.group(1).decode()}, "
            "this rayline reads RL1): upgrade rayline")
    if not sep or len(parts) != 3 or parts[0] + b" " != _MAGIC:
        raise CorruptTimelineError(f"{key}: not a rayline object (bad header)")
    if not parts[2].isdigit() or int(parts[2]) != len(body) or \
            hashlib.sha256(body).hexdigest().encode() != parts[1]:
        raise CorruptTimelineError(f"{key}: checksum mismatch (torn or altered write)")
    return body


def _written_version(body: bytes) -> int:
    """The highest timeline version ``v`` in a stored object that failed validation."""
    try:
        doc = json.loads(body)
    except ValueError:
        return 0
    parts = [doc, doc.get("started"), doc.get("first")] if isinstance(doc, dict) else []
    versions = [p.get("v") for p in parts if isinstance(p, dict)]
    return max((v for v in versions if isinstance(v, int)), default=0)


def _model_version(value: object) -> int:
    """The highest timeline version in a validated batch or run object."""
    if isinstance(value, RunRecord):
        return max(value.started.v, value.first.v if value.first is not None else 0)
    return value.v if isinstance(value, Batch) else 0


def _refuse_if_newer(version: int, key: str) -> None:
    """Raises ``IncompatibleTimelineError`` when ``version`` is newer than this rayline's."""
    if version > TIMELINE_VERSION:
        raise IncompatibleTimelineError(
            f"{key} was written by a newer rayline (timeline version {version}, this rayline "
            f"reads {TIMELINE_VERSION}): upgrade rayline")


def decode(data: bytes, key: str, adapter: TypeAdapter[T]) -> T:
    """Unframes and validates a stored object; ``IncompatibleTimelineError`` if a newer
    rayline wrote it, else ``CorruptTimelineError`` if it is torn or malformed."""
    return _validated(unframe(data, key), key, adapter)


def _validated(body: bytes, key: str, adapter: TypeAdapter[T]) -> T:
    """``body`` validated by ``adapter`` (see ``decode``)."""
    try:
        value = adapter.validate_json(body)
    except ValidationError as exc:
        _refuse_if_newer(_written_version(body), key)  # newer objects may fail validation
        raise CorruptTimelineError(f"{key}: {exc}") from exc
    _refuse_if_newer(_model_version(value), key)  # ... or pass it, with a higher ``v``
    return value


READ_AHEAD = 16
"""Batches of a run read at once from a store of remote calls (S3)."""
_reader_pool: ThreadPoolExecutor | None = None
_reader_guard = threading.Lock()


def _readers() -> ThreadPoolExecutor:
    """The threads that read batches ahead (one pool per process, made when first used)."""
    global _reader_pool
    with _reader_guard:
        if _reader_pool is None:
            _reader_pool = ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="rayline-read")
        return _reader_pool


class RunStore:
    """Runs and timelines of one rayline namespace in a store.

    Args:
        store: where the objects live.
        namespace: the rayline namespace (a folder of the store).
        codec: what is done to every object's bytes (``None``: framed as they are).
    """

    def __init__(self, store: Store, namespace: str, codec: Codec | None = None, *,
                 snapshot_every: int = SNAPSHOT_EVERY,
                 snapshot_park_bytes: int = SNAPSHOT_PARK_BYTES,
                 snapshot_park_after: int = SNAPSHOT_PARK_AFTER) -> None:
        self.store = store
        self.namespace = validate_id(namespace, what="namespace")
        self.codec = codec
        self.snapshot_every = snapshot_every
        """Owners snapshot a run every this many batches (0: never)."""
        self.snapshot_park_bytes = snapshot_park_bytes
        """... and when it parks, while its history is at most this many bytes ..."""
        self.snapshot_park_after = snapshot_park_after
        """... and this many batches came after its last snapshot."""
        self._base = f"{self.namespace}"

    # ------------------------------------------------------------ the codec

    def _seal(self, body: bytes, key: str) -> bytes:
        """The bytes to store at ``key`` for ``body``: every write goes through here (or
        ``_seal_document``). ``frame(body)`` with no codec."""
        if self.codec is None:
            return frame(body)
        return self.codec.seal(body, self._name(key))

    def _open(self, data: bytes, key: str) -> bytes:
        """The body of the object stored at ``key`` (``_seal``'s inverse, checked).

        Raises:
            CorruptTimelineError: it is torn or (keyless) altered.
            IncompatibleTimelineError: a newer rayline framed it.
            IntegrityError: the codec has keys and its MAC fails, or it has none.
            CodecError: it is sealed with a key (or codec) this store lacks.
        """
        if data.startswith(_SEALED):
            keyring = self.codec.keyring if self.codec is not None else None
            return open_sealed(data, self._name(key), keyring,
                               self.codec.name if self.codec is not None else "none")
        self._refuse_unsealed(data, key)
        return unframe(data, key)

    def _decode(self, data: bytes, key: str, adapter: TypeAdapter[T]) -> T:
        """``_open`` and validate a run object or batch (see ``decode``)."""
        return _validated(self._open(data, key), key, adapter)

    def _seal_document(self, document: Any, key: str) -> bytes:
        """A marker or config document for ``key``: plain JSON with no codec (as older
        rayline wrote them), else sealed."""
        body = json.dumps(document).encode()
        return body if self.codec is None else self._seal(body, key)

    def _open_document(self, data: bytes, key: str) -> Any:
        """A marker or config document (see ``_seal_document``); ``ValueError`` if it is
        not JSON, ``CorruptTimelineError`` if a sealed one is torn."""
        if data.startswith(_SEALED):
            return json.loads(self._open(data, key))
        self._refuse_unsealed(data, key)
        return json.loads(data)

    def _refuse_unsealed(self, data: bytes, key: str) -> None:
        """With a keyed codec, ``IntegrityError`` for an object that is not sealed (it
        carries no MAC: an older object, or a forged one); a few bytes that could begin a
        sealed object are a torn write (``CorruptTimelineError``)."""
        if self.codec is None or self.codec.keyring is None:
            return
        if _SEALED.startswith(data):
            raise CorruptTimelineError(f"{key}: {len(data)} bytes (torn write)")
        raise IntegrityError(
            f"{self._name(key)}: refused: it is not sealed (no MAC), and codec "
            f"{self.codec.name} has keys ({', '.join(self.codec.keyring.ids)}): written "
            "before the codec was configured, or forged; nothing in it was read")

    def _name(self, key: str) -> str:
        """``key`` within the namespace: what a seal binds an object to (a namespace may
        be moved whole, an object not within it)."""
        return key[len(self._base) + 1:] if key.startswith(self._base + "/") else key

    def _io(self, call: Callable[..., T], key: str, *args: Any, **kwargs: Any) -> T:
        """``call(key, ...)`` on the store, a foreign exception raised as ``StorageError``:
        a third-party store may raise its own classes, and callers handle only ours."""
        try:
            return call(key, *args, **kwargs)
        except (RaylineError, FileNotFoundError):
            raise
        except Exception as exc:
            what = getattr(call, "__name__", "call")
            raise StorageError(f"{self.store.url}: {what} {key} failed: "
                               f"{type(exc).__name__}: {exc}") from exc

    def check_writable(self) -> None:
        """Raises ``StorageError`` unless runs can be written to the store (see
        ``FsspecStore.check_writable``); a host may call it at start-up to fail early."""
        check = getattr(self.store, "check_writable", None)
        if callable(check):
            self._io(lambda _url: check(), self.store.url)

    def _create(self, key: str, data: bytes) -> None:
        """An exclusive put that succeeds when ``key`` already holds exactly ``data``: this
        writer's earlier attempt landed but reported a failure, and this is its retry."""
        try:
            self._io(self.store.put, key, data, exclusive=True)
        except ConflictError:
            if not self._holds(key, data):
                raise

    def _holds(self, key: str, data: bytes) -> bool:
        try:
            return self._io(self.store.get, key) == data
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ runs

    def _runs(self, workflow_id: str) -> str:
        return f"{self._base}/wf/{id_key(workflow_id)}/runs"

    def epochs(self, workflow_id: str) -> list[int]:
        return [int(n) for n in self._io(self.store.list, self._runs(workflow_id))
                if n.isdigit()]

    def latest_epoch(self, workflow_id: str) -> int | None:
        epochs = self.epochs(workflow_id)
        return max(epochs) if epochs else None

    def create_run(self, started: WorkflowStarted, first: Batch | None = None) -> None:
        """Writes the run object (record + first batch); ``DuplicateWorkflowError`` if the
        epoch is taken by another run (a retry of this very write succeeds)."""
        key = f"{self._runs(started.workflow_id)}/{started.epoch:08d}"
        body = RunRecord(started=started, first=first).model_dump_json().encode()
        try:
            self._create(key, self._seal(body, key))
        except ConflictError:
            raise DuplicateWorkflowError(started.workflow_id, "started concurrently") from None

    def read_run(self, workflow_id: str, epoch: int | None = None) -> WorkflowStarted:
        return self.read_record(workflow_id, epoch).started

    def read_record(self, workflow_id: str, epoch: int | None = None) -> RunRecord:
        if epoch is None:
            epoch = self.latest_epoch(workflow_id)
            if epoch is None:
                raise WorkflowNotFoundError(workflow_id)
        key = f"{self._runs(workflow_id)}/{epoch:08d}"
        try:
            data = self._io(self.store.get, key)
        except FileNotFoundError:
            raise WorkflowNotFoundError(workflow_id, f"no run {epoch}") from None
        record = self._decode(data, key, _RECORD_ADAPTER)
        if record.started.workflow_id != workflow_id:
            raise CorruptTimelineError(f"{key} belongs to workflow {record.started.workflow_id!r}")
        return record

    # ------------------------------------------------------------- timelines

    def _timeline(self, workflow_id: str, epoch: int) -> str:
        return f"{self._base}/wf/{id_key(workflow_id)}/t/{epoch:08d}"

    def append(self, workflow_id: str, epoch: int, batch: Batch) -> bytes:
        """Writes batch ``batch.seq`` and returns its JSON; raises ``ConflictError`` if
        another owner wrote it (a retry of this very write succeeds)."""
        key = f"{self._timeline(workflow_id, epoch)}/{batch.seq:08d}"
        body = batch.model_dump_json().encode()
        self._create(key, self._seal(body, key))
        return body

    def load(self, workflow_id: str, epoch: int | None = None, *,
             repair: bool = False) -> tuple[WorkflowStarted, list[Batch]]:
        """A run's record and its batches in order (the latest run by default).

        ``repair=True`` is for the run's owner about to write to it: a torn last batch is
        moved aside so that its sequence number can be written again. Readers leave it.
        """
        history = self.load_history(workflow_id, epoch, repair=repair)
        return history.started, history.batches

    def load_history(self, workflow_id: str, epoch: int | None = None, *,
                     repair: bool = False) -> History:
        """``load`` with each batch's stored JSON, for the owner that snapshots the run."""
        return self._history(self.read_record(workflow_id, epoch), repair=repair)

    def read_batches(self, workflow_id: str, epoch: int, run_id: str, *,
                     repair: bool = False) -> list[Batch]:
        """The batches of run ``run_id`` (epoch ``epoch``), checked (``repair``: see load)."""
        record = self.read_record(workflow_id, epoch)
        if record.started.run_id != run_id:
            raise CorruptTimelineError(f"run {epoch} of {workflow_id!r} is not run {run_id}")
        return self._history(record, repair=repair).batches

    def _history(self, record: RunRecord, *, repair: bool = False) -> History:
        """The run's batches: from its newest usable snapshot and the stored batches after
        it (or all stored ones), the first one from the run object, checked (see above)."""
        started = record.started
        history = self._snapshot_of(record)
        if history is None:
            history = History(started, [], [])
            if record.first is not None:
                history.batches.append(record.first)
                history.bodies.append(record.first.model_dump_json().encode())
        prefix = self._timeline(started.workflow_id, started.epoch)
        if history.snapshot and not self.store.quick:  # no listing of every batch name
            names, fetched = self._after(prefix, history.snapshot)
        else:
            names = [n for n in self._io(self.store.list, prefix)
                     if n.isdigit() and int(n) > history.snapshot]
            fetched = self._prefetch([f"{prefix}/{name}" for name in names])
        for index, name in enumerate(names):
            key = f"{prefix}/{name}"
            read = self._read_batch(key, last=index == len(names) - 1, repair=repair,
                                    fetched=fetched[index])
            if read is None:
                break
            batch, body = read
            expected = len(history.batches) + 1
            if batch.run_id != started.run_id or batch.seq != expected or \
                    int(name) != batch.seq:
                raise CorruptTimelineError(
                    f"{key} does not belong to run {started.run_id} at {expected}")
            history.batches.append(batch)
            history.bodies.append(body)
        return history

    def _prefetch(self, keys: list[str], force: bool = False
                  ) -> list[Callable[[], bytes] | None]:
        """For a store of remote calls (S3), or with ``force``, reads ``keys``
        ``READ_AHEAD`` at a time and returns, per key, a call giving its bytes (or raising
        what the read raised); ``None`` per key for a local store, read when needed."""
        if not force and (self.store.quick or len(keys) < 2):
            return [None] * len(keys)
        def get(key: str) -> Callable[[], bytes]:
            try:
                data = self._io(self.store.get, key)
            except (RaylineError, FileNotFoundError) as exc:
                failure = exc
                def fail() -> bytes:
                    raise failure
                return fail
            return lambda: data
        return list(_readers().map(get, keys))

    def _after(self, prefix: str, seq: int
               ) -> tuple[list[str], list[Callable[[], bytes] | None]]:
        """The batches after ``seq`` found by reading ``READ_AHEAD`` names at a time until
        one is missing (batches are written in order, with no gap): on S3 a listing of a
        long run's names costs a request per thousand of them."""
        names: list[str] = []
        fetched: list[Callable[[], bytes] | None] = []
        while True:
            round_names = [f"{n:08d}" for n in range(seq + len(names) + 1,
                                                       seq + len(names) + 1 + READ_AHEAD)]
            reads = self._prefetch([f"{prefix}/{name}" for name in round_names], force=True)
            for name, read in zip(round_names, reads, strict=True):
                assert read is not None
                try:
                    read()
                except FileNotFoundError:
                    return names, fetched
                except RaylineError:
                    pass  # read again by the caller, which says what is wrong
                names.append(name)
                fetched.append(read)

    def _read_batch(self, key: str, *, last: bool, repair: bool,
                    fetched: Callable[[], bytes] | None = None) -> tuple[Batch, bytes] | None:
        """A stored batch and its JSON (``fetched``: its bytes, read ahead); ``None`` for a
        torn (or vanished) last one, which is treated as never written and moved aside
        only when ``repair``."""
        try:
            data = self._io(self.store.get, key) if fetched is None else fetched()
            body = self._open(data, key)
            return _validated(body, key, BATCH_ADAPTER), body
        except (CorruptTimelineError, FileNotFoundError) as exc:
            if not last:
                raise CorruptTimelineError(f"{key}: {exc}") from exc
        if repair:
            self._set_aside(key)
        return None

    def _set_aside(self, key: str) -> None:
        try:
            data = self._io(self.store.get, key)
        except FileNotFoundError:
            return  # already moved aside
        self._io(self.store.put, f"{key}.torn-{uuid.uuid4().hex[:8]}", data)
        self._io(self.store.delete, key)

    # ------------------------------------------------------------- snapshots

    def _snapshots(self, workflow_id: str, epoch: int) -> str:
        return f"{self._base}/wf/{id_key(workflow_id)}/s/{epoch:08d}"

    def put_snapshot(self, started: WorkflowStarted, bodies: list[bytes]) -> None:
        """Writes a snapshot of batches 1..len(bodies) of a run (their stored JSON, every
        one durable already), then removes the run's older snapshots."""
        folder = self._snapshots(started.workflow_id, started.epoch)
        seq = len(bodies)
        data = b"\n".join(bodies)
        packed = self.codec is None or self.codec.compression is None  # else the codec does
        head = json.dumps({"v": _SNAPSHOT_FORMAT, "run_id": started.run_id, "seq": seq,
                           "z": "zlib" if packed else None})
        key = f"{folder}/{seq:08d}"
        body = head.encode() + b"\n" + (zlib.compress(data, 1) if packed else data)
        self._io(self.store.put, key, self._seal(body, key), durable=False)
        for name in self._io(self.store.list, folder):
            if name.isdigit() and int(name) < seq:
                self._io(self.store.delete, f"{folder}/{name}")

    def _snapshot_of(self, record: RunRecord) -> History | None:
        """The run from its newest snapshot; ``None`` (said in the log when one is there
        but unusable) to read every batch instead."""
        started = record.started
        folder = self._snapshots(started.workflow_id, started.epoch)
        names = [n for n in self._io(self.store.list, folder) if n.isdigit()]
        if not names:
            return None
        key = f"{folder}/{max(names)}"
        try:
            first, _, data = self._open(self._io(self.store.get, key), key).partition(b"\n")
            head = json.loads(first)
            if head.get("v") != _SNAPSHOT_FORMAT or head.get("run_id") != started.run_id:
                raise CorruptTimelineError(f"snapshot format {head.get('v')} of run "
                                           f"{head.get('run_id')}")
            if head.get("z") == "zlib":
                data = zlib.decompress(data)
            bodies = data.split(b"\n")
            batches = [_validated(body, key, BATCH_ADAPTER) for body in bodies]
            if [b.seq for b in batches] != list(range(1, len(batches) + 1)) or \
                    len(batches) != int(max(names)) or \
                    any(b.run_id != started.run_id for b in batches):
                raise CorruptTimelineError("its batches are not the run's 1..N")
        except (FileNotFoundError, RaylineError, ValueError, zlib.error) as exc:
            if type(exc) is StorageError:  # the store failed: not the snapshot's fault
                raise
            say = log.error if isinstance(exc, IntegrityError) else log.warning
            say("%s: snapshot unusable (%s): reading every batch instead", key, exc)
            return None
        return History(started, batches, bodies, snapshot=len(batches))

    # ------------------------------------------------------ open markers

    def mark_open(self, host: str, workflow_id: str, parked_until: float | None = None) -> None:
        """Marks the run open on ``host``; ``parked_until`` records a parked run's next wake
        (``inf`` for a run waiting only on signals) so a restarting host need not replay it."""
        note = {"id": workflow_id, "parked_until": parked_until}
        key = f"{self._base}/open/{host}/{id_key(workflow_id)}"
        self._io(self.store.put, key, self._seal_document(note, key), durable=False)

    def clear_open(self, host: str, workflow_id: str) -> None:
        self._io(self.store.delete, f"{self._base}/open/{host}/{id_key(workflow_id)}")

    def open_hosts(self) -> list[str]:
        return self._io(self.store.list, f"{self._base}/open")

    def has_open(self, host: str) -> bool:
        """Whether ``host`` owns an unfinished run (its markers are listed, not read)."""
        return bool(self._io(self.store.list, f"{self._base}/open/{host}"))

    def open_workflows(self, host: str) -> list[tuple[str, float | None]]:
        """(workflow id, parked-until or None) for each run open on ``host``."""
        prefix = f"{self._base}/open/{host}"
        out = []
        for name in self._io(self.store.list, prefix):
            key = f"{prefix}/{name}"
            try:
                note = self._open_document(self._io(self.store.get, key), key)
            except (FileNotFoundError, ValueError, CorruptTimelineError):
                continue  # closed while we listed, or a torn hint: the run is in wf/
            out.append((note["id"], note.get("parked_until")))
        return out

    def open_keys(self, host: str) -> list[str]:
        """The storage keys (``id_key``) of the runs open on ``host``: listed, not read."""
        return self._io(self.store.list, f"{self._base}/open/{host}")

    def all_workflow_keys(self) -> list[str]:
        return self._io(self.store.list, f"{self._base}/wf")

    def key_epochs(self, key: str) -> list[int]:
        """The epochs stored under ``key`` (an entry of ``all_workflow_keys``), in order."""
        return sorted(int(n) for n in self._io(self.store.list, f"{self._base}/wf/{key}/runs")
                      if n.isdigit())

    def last_of_key(self, key: str, epoch: int) -> tuple[WorkflowStarted, Batch | None]:
        """Run ``epoch`` stored under ``key``: its record and its last batch (``None``:
        none yet), read without the batches before it (which say nothing of how the run
        ended). A torn last batch counts as never written, as for ``load``."""
        name = f"{self._base}/wf/{key}/runs/{epoch:08d}"
        record = self._decode(self._io(self.store.get, name), name, _RECORD_ADAPTER)
        prefix = self._timeline(record.started.workflow_id, epoch)
        names = sorted(n for n in self._io(self.store.list, prefix) if n.isdigit())
        read = self._read_batch(f"{prefix}/{names[-1]}", last=True, repair=False) \
            if names else None
        if read is None and len(names) > 1:  # torn: the one before is the last written
            read = self._read_batch(f"{prefix}/{names[-2]}", last=False, repair=False)
        last = read[0] if read is not None else None
        return record.started, last if last is not None or len(names) > 1 else record.first

    def delete_run(self, key: str, epoch: int) -> None:
        """Deletes run ``epoch`` under ``key``: its batches, then its record, so that while
        it goes the epoch is still listed and a new run of the id takes the next one."""
        for kind in ("s", "t"):  # snapshots first: none may outlive a batch it holds
            folder = f"{self._base}/wf/{key}/{kind}/{epoch:08d}"
            for name in self._io(self.store.list, folder):
                self._io(self.store.delete, f"{folder}/{name}")
        self._io(self.store.delete, f"{self._base}/wf/{key}/runs/{epoch:08d}")

    def prune(self, what: str) -> None:
        """Drops the folders left empty under ``wf/<key>`` (``what`` a key from
        ``all_workflow_keys`` whose runs were all deleted) or, with ``"early"``, under the
        early signals, on stores that have folders (local files), so that listings stop
        naming what is gone."""
        prune = getattr(self.store, "prune", None)
        if callable(prune):
            self._io(prune, f"{self._base}/early" if what == "early"
                     else f"{self._base}/wf/{what}")

    def early_signals(self) -> Iterator[tuple[str, SignalReceived | None]]:
        """Every buffered early signal: (its key, the signal; ``None`` if unreadable)."""
        root = f"{self._base}/early"
        for key in self._io(self.store.list, root):
            for name in self._io(self.store.list, f"{root}/{key}"):
                path = f"{root}/{key}/{name}"
                try:
                    body = self._open(self._io(self.store.get, path), path)
                except FileNotFoundError:
                    continue  # taken meanwhile
                except CorruptTimelineError:
                    yield path, None
                    continue
                yield path, SignalReceived.model_validate_json(body)

    def workflow_id_of_key(self, key: str) -> str:
        """The workflow id stored under ``key`` (an entry of ``all_workflow_keys``).

        Raises:
            WorkflowNotFoundError: no run is stored under it.
        """
        prefix = f"{self._base}/wf/{key}/runs"
        epochs = [int(n) for n in self._io(self.store.list, prefix) if n.isdigit()]
        if not epochs:
            raise WorkflowNotFoundError(key, "no run stored under this key")
        name = f"{prefix}/{max(epochs):08d}"
        return self._decode(self._io(self.store.get, name), name,
                            _RECORD_ADAPTER).started.workflow_id

    # ---------------------------------------------------- visibility index

    def index_names(self) -> list[str]:
        """The visibility index's logs and snapshots (``rayline.engine.index``)."""
        return self._io(self.store.list, f"{self._base}/index")

    def put_index(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        key = f"{self._base}/index/{name}"
        self._io(self.store.put, key, self._seal(data, key), exclusive=exclusive)

    def get_index(self, name: str) -> bytes:
        key = f"{self._base}/index/{name}"
        return self._open(self._io(self.store.get, key), key)

    def delete_index(self, name: str) -> None:
        self._io(self.store.delete, f"{self._base}/index/{name}")

    # ---------------------------------------------------- early signals

    def buffer_early_signal(self, workflow_id: str, signal: SignalReceived) -> None:
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        key = f"{self._base}/early/{id_key(workflow_id)}/{stamp}"
        self._io(self.store.put, key, self._seal(signal.model_dump_json().encode(), key))

    def take_early_signals(self, workflow_id: str) -> Iterator[tuple[str, SignalReceived]]:
        prefix = f"{self._base}/early/{id_key(workflow_id)}"
        for name in self._io(self.store.list, prefix):
            key = f"{prefix}/{name}"
            try:
                body = self._open(self._io(self.store.get, key), key)
            except (FileNotFoundError, CorruptTimelineError):
                continue
            yield key, SignalReceived.model_validate_json(body)

    def delete(self, key: str) -> None:
        self._io(self.store.delete, key)

    # ------------------------------------------------------------ code packages

    def put_package(self, name: str, data: bytes) -> None:
        """Keeps a code version's package (a zip Ray made of a ``working_dir`` or module,
        named by its content) so the version outlives the cluster that had it; keeping
        the same package again is a no-op."""
        key = f"{self._base}/packages/{id_key(name)}"
        self._create(key, self._seal(data, key))

    def has_package(self, name: str) -> bool:
        """Whether a package is kept (listed, not read: it may be large)."""
        return id_key(name) in self._io(self.store.list, f"{self._base}/packages")

    def get_package(self, name: str) -> bytes | None:
        """A kept package, checked against its checksum; ``None`` if it was never kept."""
        key = f"{self._base}/packages/{id_key(name)}"
        try:
            return self._open(self._io(self.store.get, key), key)
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------ large values

    def put_object(self, digest: str, data: bytes) -> None:
        """Keeps a large value's bytes under their sha256 ``digest``; keeping the same
        bytes again is a no-op (the name is the content). Stored as they are with no
        codec, else sealed (the name stays the digest of the plain bytes)."""
        key = self._object(digest)
        try:
            self._io(self.store.put, key,
                     data if self.codec is None else self._seal(data, key), exclusive=True)
        except ConflictError:
            pass  # there already, from an earlier write of the same value

    def get_object(self, digest: str) -> bytes:
        """A large value's bytes, checked against their digest.

        Raises:
            StorageError: no such object (storage was cleaned under the run).
            CorruptTimelineError: the bytes are not the ones named.
        """
        key = self._object(digest)
        try:
            data = self._io(self.store.get, key)
        except FileNotFoundError:
            raise StorageError(f"{self.store.url}: {key}: a large value the timeline names "
                               "is missing from storage") from None
        if data.startswith(_SEALED):
            data = self._open(data, key)
        else:
            self._refuse_unsealed(data, key)
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptTimelineError(f"{key}: checksum mismatch (torn or altered write)")
        return data

    def _object(self, digest: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise InvalidInputError(f"{digest[:80]!r} is not a value digest")
        return f"{self._base}/objects/{digest}"

    # ------------------------------------------------- small config documents

    def put_config(self, name: str, document: dict[str, Any]) -> None:
        key = f"{self._base}/config/{id_key(name)}"
        self._io(self.store.put, key, self._seal_document(document, key))

    def get_config(self, name: str) -> dict[str, Any] | None:
        key = f"{self._base}/config/{id_key(name)}"
        try:
            data = self._io(self.store.get, key)
        except FileNotFoundError:
            return None
        return self._open_document(data, key)  # type: ignore[no-any-return]

    def load_latest(self, key: str, *,
                    repair: bool = False) -> tuple[WorkflowStarted, list[Batch]] | None:
        """The latest run under a storage key from ``all_workflow_keys``, with its batches
        (``repair``: see ``load``)."""
        names = [n for n in self._io(self.store.list, f"{self._base}/wf/{key}/runs")
                 if n.isdigit()]
        if not names:
            return None
        path = f"{self._base}/wf/{key}/runs/{names[-1]}"
        record = self._decode(self._io(self.store.get, path), path, _RECORD_ADAPTER)
        history = self._history(record, repair=repair)
        return history.started, history.batches

    def describe(self) -> dict[str, Any]:
        return {"url": self.store.url, "namespace": self.namespace,
                "codec": self.codec.name if self.codec is not None else "none"}
