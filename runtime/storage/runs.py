"""Where runs live in a store, and how their timelines are written and read.

Layout under ``<store>/<namespace>/``::

    wf/<id>/runs/<epoch>          the run object (WorkflowStarted + batch 1), created
                                  exclusively: the arbiter of "who started run N of this id"
    wf/<id>/t/<epoch>/<seq>       one batch per activation, created exclusively: the
                                  fencing token (a stale owner cannot write seq N twice)
    open/<host>/<id>              marker: this host owns an unfinished run of <id>
    early/<id>/<stamp>            signals sent before the workflow exists

Invariants:
- Objects are framed as ``RL1 <sha256> <length>\\n<json>``; a torn or altered object
  fails the check. A torn *last* batch is treated as never written (it is moved aside);
  a bad batch in the middle raises ``CorruptTimelineError``.
- A batch must carry its own run id and sequence number, so a foreign object is caught.
- Writes happen in this order: open marker (not fsync'd: the run object's fsync commits
  it on a journaling filesystem), run object, batches 2.., and the open marker is removed
  only after the closing batch is durable; recovery scans the open markers.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Any, Iterator

from ..errors import (
    ConflictError,
    CorruptTimelineError,
    DuplicateWorkflowError,
    InvalidInputError,
    WorkflowNotFoundError,
)
from ..timeline import BATCH_ADAPTER, Batch, RunRecord, SignalReceived, WorkflowStarted
from .stores import Store

MAX_ID_LENGTH = 1000
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_PLAIN = re.compile(r"^[A-Za-z0-9_.@:=+,-]{1,150}$")
_MAGIC = b"RL1 "


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
    return b"%s%s %d\n%s" % (_MAGIC, hashlib.sha256(body).hexdigest().encode(), len(body), body)


def unframe(data: bytes, key: str) -> bytes:
    head, sep, body = data.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 3 or parts[0] + b" " != _MAGIC:
        raise CorruptTimelineError(f"{key}: not a rayline object (bad header)")
    if int(parts[2]) != len(body) or hashlib.sha256(body).hexdigest().encode() != parts[1]:
        raise CorruptTimelineError(f"{key}: checksum mismatch (torn or altered write)")
    return body


class RunStore:
    """Runs and timelines of one rayline namespace in a store."""

    def __init__(self, store: Store, namespace: str) -> None:
        self.store = store
        self.namespace = validate_id(namespace, what="namespace")
        self._base = f"{self.namespace}"

    # ------------------------------------------------------------------ runs

    def _runs(self, workflow_id: str) -> str:
        return f"{self._base}/wf/{id_key(workflow_id)}/runs"

    def epochs(self, workflow_id: str) -> list[int]:
        return [int(n) for n in self.store.list(self._runs(workflow_id)) if n.isdigit()]

    def latest_epoch(self, workflow_id: str) -> int | None:
        epochs = self.epochs(workflow_id)
        return max(epochs) if epochs else None

    def create_run(self, started: WorkflowStarted, first: Batch | None = None) -> None:
        """Writes the run object (record + first batch); ``DuplicateWorkflowError`` if the
        epoch is taken."""
        key = f"{self._runs(started.workflow_id)}/{started.epoch:08d}"
        body = RunRecord(started=started, first=first).model_dump_json().encode()
        try:
            self.store.put(key, frame(body), exclusive=True)
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
            data = self.store.get(key)
        except FileNotFoundError:
            raise WorkflowNotFoundError(workflow_id, f"no run {epoch}") from None
        record = RunRecord.model_validate_json(unframe(data, key))
        if record.started.workflow_id != workflow_id:
            raise CorruptTimelineError(f"{key} belongs to workflow {record.started.workflow_id!r}")
        return record

    # ------------------------------------------------------------- timelines

    def _timeline(self, workflow_id: str, epoch: int) -> str:
        return f"{self._base}/wf/{id_key(workflow_id)}/t/{epoch:08d}"

    def append(self, workflow_id: str, epoch: int, batch: Batch) -> None:
        """Writes batch ``batch.seq``; raises ``ConflictError`` if another owner wrote it."""
        key = f"{self._timeline(workflow_id, epoch)}/{batch.seq:08d}"
        self.store.put(key, frame(batch.model_dump_json().encode()), exclusive=True)

    def load(self, workflow_id: str, epoch: int | None = None) -> tuple[WorkflowStarted,
                                                                         list[Batch]]:
        """A run's record and its batches in order (the latest run by default)."""
        record = self.read_record(workflow_id, epoch)
        return record.started, self._batches(record)

    def read_batches(self, workflow_id: str, epoch: int, run_id: str) -> list[Batch]:
        """The batches of run ``run_id`` (epoch ``epoch``), checked."""
        record = self.read_record(workflow_id, epoch)
        if record.started.run_id != run_id:
            raise CorruptTimelineError(f"run {epoch} of {workflow_id!r} is not run {run_id}")
        return self._batches(record)

    def _batches(self, record: RunRecord) -> list[Batch]:
        """The first batch (in the run object) and the stored ones, checked (see above)."""
        started = record.started
        run_id = started.run_id
        batches: list[Batch] = [record.first] if record.first is not None else []
        prefix = self._timeline(started.workflow_id, started.epoch)
        names = [n for n in self.store.list(prefix) if n.isdigit()]
        for index, name in enumerate(names):
            key = f"{prefix}/{name}"
            expected = len(batches) + 1
            try:
                batch = BATCH_ADAPTER.validate_json(unframe(self.store.get(key), key))
            except (CorruptTimelineError, ValueError) as exc:
                if index == len(names) - 1:
                    self._set_aside(key)
                    break
                raise CorruptTimelineError(f"{key}: {exc}") from exc
            if batch.run_id != run_id or batch.seq != expected or int(name) != batch.seq:
                raise CorruptTimelineError(f"{key} does not belong to run {run_id} at {expected}")
            batches.append(batch)
        return batches

    def _set_aside(self, key: str) -> None:
        data = self.store.get(key)
        self.store.put(f"{key}.torn-{uuid.uuid4().hex[:8]}", data)
        self.store.delete(key)

    # ------------------------------------------------------ open markers

    def mark_open(self, host: str, workflow_id: str, parked_until: float | None = None) -> None:
        """Marks the run open on ``host``; ``parked_until`` records a parked run's next wake
        (``inf`` for a run waiting only on signals) so a restarting host need not replay it."""
        note = {"id": workflow_id, "parked_until": parked_until}
        self.store.put(f"{self._base}/open/{host}/{id_key(workflow_id)}",
                       json.dumps(note).encode(), durable=False)

    def clear_open(self, host: str, workflow_id: str) -> None:
        self.store.delete(f"{self._base}/open/{host}/{id_key(workflow_id)}")

    def open_hosts(self) -> list[str]:
        return self.store.list(f"{self._base}/open")

    def open_workflows(self, host: str) -> list[tuple[str, float | None]]:
        """(workflow id, parked-until or None) for each run open on ``host``."""
        prefix = f"{self._base}/open/{host}"
        out = []
        for name in self.store.list(prefix):
            try:
                note = json.loads(self.store.get(f"{prefix}/{name}"))
            except (FileNotFoundError, ValueError):
                continue  # closed while we listed, or a torn hint: the run is in wf/
            out.append((note["id"], note.get("parked_until")))
        return out

    def all_workflow_keys(self) -> list[str]:
        return self.store.list(f"{self._base}/wf")

    # ---------------------------------------------------- early signals

    def buffer_early_signal(self, workflow_id: str, signal: SignalReceived) -> None:
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        key = f"{self._base}/early/{id_key(workflow_id)}/{stamp}"
        self.store.put(key, frame(signal.model_dump_json().encode()))

    def take_early_signals(self, workflow_id: str) -> Iterator[tuple[str, SignalReceived]]:
        prefix = f"{self._base}/early/{id_key(workflow_id)}"
        for name in self.store.list(prefix):
            key = f"{prefix}/{name}"
            try:
                body = unframe(self.store.get(key), key)
            except (FileNotFoundError, CorruptTimelineError):
                continue
            yield key, SignalReceived.model_validate_json(body)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    # ------------------------------------------------- small config documents

    def put_config(self, name: str, document: dict[str, Any]) -> None:
        self.store.put(f"{self._base}/config/{id_key(name)}", json.dumps(document).encode())

    def get_config(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.get(f"{self._base}/config/{id_key(name)}"))  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def load_latest(self, key: str) -> tuple[WorkflowStarted, list[Batch]] | None:
        """The latest run under a storage key from ``all_workflow_keys``, with its batches."""
        names = [n for n in self.store.list(f"{self._base}/wf/{key}/runs") if n.isdigit()]
        if not names:
            return None
        path = f"{self._base}/wf/{key}/runs/{names[-1]}"
        record = RunRecord.model_validate_json(unframe(self.store.get(path), path))
        return record.started, self._batches(record)

    def describe(self) -> dict[str, Any]:
        return {"url": self.store.url, "namespace": self.namespace}
