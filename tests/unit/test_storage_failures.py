"""Storage under failure: errors are mapped, writes are idempotent for their owner, only
stores with an atomic create-if-absent are written, readers leave storage alone."""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

import pytest

from rayline.errors import (
    ConflictError,
    DuplicateWorkflowError,
    IncompatibleTimelineError,
    StorageError,
)
from rayline.storage import FsspecStore, LocalStore, MemoryStore, RunStore
from rayline.storage.runs import frame
from rayline.timeline import (
    TIMELINE_VERSION,
    Batch,
    SignalReceived,
    TimerFired,
    WorkflowStarted,
)


def started_record(workflow_id: str = "wf", epoch: int = 1) -> WorkflowStarted:
    return WorkflowStarted(workflow_id=workflow_id, run_id=f"run-{workflow_id}-{epoch}",
                           epoch=epoch, workflow_name="flow", args=[], task_queue="default",
                           host="h0", time=1.0, seed=7)


def batch(seq: int, run_id: str = "run-wf-1", note: int = 0) -> Batch:
    return Batch(seq=seq, run_id=run_id, time=float(seq), events=[TimerFired(seq=note)])


def write_run(runs: RunStore, batches: int) -> WorkflowStarted:
    """A run of ``wf`` with batch 1 in the run object and batches 2..``batches`` stored."""
    started = started_record()
    runs.create_run(started, batch(1))
    for seq in range(2, batches + 1):
        runs.append("wf", started.epoch, batch(seq))
    return started


def timeline_folder(root: Any, started: WorkflowStarted) -> str:
    return os.path.join(str(root), "test", "wf", "wf", "t", f"{started.epoch:08d}")


# ----------------------------------------------------- 1. every failure is mapped


def test_local_put_where_a_file_stands_in_place_of_a_folder_raises_storage_error(
        tmp_path: Any) -> None:
    store = LocalStore(str(tmp_path))
    store.put("a", b"a file")
    with pytest.raises(StorageError, match="a/b") as caught:
        store.put("a/b", b"below a file")
    assert isinstance(caught.value.__cause__, OSError)
    assert store.get("a") == b"a file"


def test_local_get_list_delete_map_os_errors_and_keep_the_absent_signals(
        tmp_path: Any) -> None:
    store = LocalStore(str(tmp_path))
    too_long = "x" * 300  # ENAMETOOLONG: a failure, not an absent key
    for call in (lambda: store.get(too_long), lambda: store.list(too_long),
                 lambda: store.delete(too_long)):
        with pytest.raises(StorageError, match=too_long[:40]) as caught:
            call()
        assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(FileNotFoundError):
        store.get("missing/key")
    store.delete("missing/key")
    assert store.list("missing") == []


def dead_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_fsspec_store_maps_botocore_errors_to_storage_error(s3_endpoint: str) -> None:
    # s3_endpoint provides credentials; nothing listens on this endpoint (connection refused)
    store = FsspecStore("s3://nobucket/rayline", endpoint_url=dead_endpoint(),
                        config_kwargs={"retries": {"max_attempts": 1}})
    calls = {"get": lambda: store.get("k"), "list": lambda: store.list("p"),
             "delete": lambda: store.delete("k"), "put": lambda: store.put("k", b"x"),
             "exclusive put": lambda: store.put("k", b"x", exclusive=True)}
    for name, call in calls.items():
        with pytest.raises(StorageError) as caught:
            call()
        assert caught.value.__cause__ is not None, name


class Unexpected(Exception):
    """A third-party store's own error class."""


class ForeignStore(MemoryStore):
    """A store that raises its own exception class once ``broken`` is set."""

    broken = False

    def _check(self) -> None:
        if self.broken:
            raise Unexpected("the backend fell over")

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        self._check()
        super().put(key, data, exclusive=exclusive, durable=durable)

    def get(self, key: str) -> bytes:
        self._check()
        return super().get(key)

    def delete(self, key: str) -> None:
        self._check()
        super().delete(key)

    def list(self, prefix: str) -> list[str]:
        self._check()
        return super().list(prefix)


def test_run_store_surfaces_a_foreign_store_error_as_storage_error() -> None:
    store = ForeignStore(uuid.uuid4().hex)
    runs = RunStore(store, "test")
    started = write_run(runs, 2)
    signal = SignalReceived(signal_id="s", data={})
    store.broken = True
    calls = {
        "append": lambda: runs.append("wf", 1, batch(3)),
        "create_run": lambda: runs.create_run(started_record(epoch=2)),
        "load": lambda: runs.load("wf"),
        "load epoch": lambda: runs.load("wf", 1),
        "read_batches": lambda: runs.read_batches("wf", 1, started.run_id),
        "load_latest": lambda: runs.load_latest("wf"),
        "epochs": lambda: runs.epochs("wf"),
        "mark_open": lambda: runs.mark_open("h0", "wf"),
        "clear_open": lambda: runs.clear_open("h0", "wf"),
        "open_hosts": lambda: runs.open_hosts(),
        "open_workflows": lambda: runs.open_workflows("h0"),
        "all_workflow_keys": lambda: runs.all_workflow_keys(),
        "buffer_early_signal": lambda: runs.buffer_early_signal("wf", signal),
        "take_early_signals": lambda: list(runs.take_early_signals("wf")),
        "delete": lambda: runs.delete("test/open/h0/wf"),
        "put_config": lambda: runs.put_config("c", {"a": 1}),
        "get_config": lambda: runs.get_config("c"),
        "has_open": lambda: runs.has_open("h0"),
        "has_package": lambda: runs.has_package("_ray_pkg_1.zip"),
        "put_package": lambda: runs.put_package("_ray_pkg_1.zip", b"zip"),
        "get_package": lambda: runs.get_package("_ray_pkg_1.zip"),
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as caught:
            call()
        assert isinstance(caught.value.__cause__, Unexpected), name


# ------------------------------------ 2. a write that landed but reported failure


class LandsThenFails(MemoryStore):
    """Writes the object, then reports a failure, ``failures`` times (a lost reply)."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        super().put(key, data, exclusive=exclusive, durable=durable)
        if self.failures > 0:
            self.failures -= 1
            raise StorageError(f"injected: the reply for {key} was lost")


def test_a_retried_append_that_had_landed_succeeds_and_a_different_batch_conflicts() -> None:
    runs = RunStore(LandsThenFails(uuid.uuid4().hex, failures=0), "test")
    started = write_run(runs, 1)
    store = runs.store
    assert isinstance(store, LandsThenFails)
    store.failures = 1
    mine = batch(2)
    with pytest.raises(StorageError):
        runs.append("wf", started.epoch, mine)
    runs.append("wf", started.epoch, mine)  # the retry: our own write is there
    with pytest.raises(ConflictError):
        runs.append("wf", started.epoch, batch(2, note=99))
    assert [b.seq for b in runs.load("wf")[1]] == [1, 2]


def test_a_retried_create_run_that_had_landed_succeeds_and_another_is_a_duplicate() -> None:
    runs = RunStore(LandsThenFails(uuid.uuid4().hex, failures=1), "test")
    started = started_record()
    with pytest.raises(StorageError):
        runs.create_run(started, batch(1))
    runs.create_run(started, batch(1))
    other = started.model_copy(update={"run_id": "someone-else"})
    with pytest.raises(DuplicateWorkflowError):
        runs.create_run(other, batch(1, run_id="someone-else"))
    assert runs.read_run("wf").run_id == started.run_id


# --------------------------- 3. only stores with an atomic create-if-absent are written


def test_fsspec_store_without_atomic_create_refuses_writes_but_reads(tmp_path: Any) -> None:
    (tmp_path / "old").write_bytes(b"exported")
    store = FsspecStore(f"file://{tmp_path}")
    with pytest.raises(StorageError, match=r"file.*atomic create-if-absent") as caught:
        store.put("t/00000001", b"batch", exclusive=True)
    assert "local files or S3" in str(caught.value)
    assert not (tmp_path / "t").exists()
    assert store.get("old") == b"exported" and store.list("") == ["old"]


def test_the_s3_create_if_absent_probe_passes_on_a_real_s3_server(s3_url: str) -> None:
    store = FsspecStore(s3_url)
    store.check_writable()
    store.put("t/00000001", b"first", exclusive=True)
    with pytest.raises(ConflictError):
        store.put("t/00000001", b"second", exclusive=True)
    assert store.list("_rayline/probe") == []


def test_an_s3_endpoint_that_ignores_if_none_match_is_refused(s3_url: str) -> None:
    store = FsspecStore(s3_url, skip_instance_cache=True)  # its own client, hooked below
    client = store.fs.connect()

    def drop_condition(params: dict[str, Any], **_: Any) -> None:
        params.pop("IfNoneMatch", None)  # what an endpoint without the feature does

    event = "provide-client-params.s3.PutObject"
    client.meta.events.register(event, drop_condition)
    try:
        with pytest.raises(StorageError, match="does not honour If-None-Match"):
            store.put("t/00000001", b"batch", exclusive=True)
        with pytest.raises(StorageError, match="does not honour If-None-Match"):
            store.put("open/h0/wf", b"hint")
    finally:
        client.meta.events.unregister(event, drop_condition)
    with pytest.raises(FileNotFoundError):
        store.get("t/00000001")
    assert store.list("") == []


# --------------------------------- 4. temporary files never hide a real key


def test_a_workflow_id_ending_in_tmp_is_listed_and_recovered(tmp_path: Any) -> None:
    runs = RunStore(LocalStore(str(tmp_path), fsync=False), "test")
    started = started_record("job.tmp")
    runs.mark_open("h0", "job.tmp")
    runs.create_run(started, batch(1, run_id=started.run_id))
    assert runs.epochs("job.tmp") == [1]
    assert runs.open_workflows("h0") == [("job.tmp", None)]
    assert runs.all_workflow_keys() == ["job.tmp"]
    assert runs.load_latest("job.tmp") is not None


# ------------------------------------------------------ 5. directory fsync


def test_a_durable_put_syncs_the_key_folder_and_each_new_folder_parent(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    synced: list[str] = []

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    store = LocalStore(str(tmp_path / "root"), fsync=True)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.put("a/b/c/key", b"durable")
    root = os.path.realpath(str(tmp_path / "root"))
    assert os.path.join(root, "a", "b", "c") in synced  # the new key's folder
    assert os.path.join(root, "a", "b") in synced  # the parent of the new folder a/b/c
    assert root in synced  # the parent of the new folder a


# ------------------------------------------------ 6. readers never modify storage


@pytest.fixture
def local_runs(tmp_path: Any) -> RunStore:
    return RunStore(LocalStore(str(tmp_path), fsync=False), "test")


def tear(path: str) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)


def test_a_reader_leaves_a_torn_last_batch_in_place(local_runs: RunStore, tmp_path: Any) -> None:
    started = write_run(local_runs, 3)
    folder = timeline_folder(tmp_path, started)
    tear(os.path.join(folder, "00000003"))
    before = sorted(os.listdir(folder))
    _, batches = local_runs.load("wf")
    assert [b.seq for b in batches] == [1, 2]
    assert [b.seq for b in local_runs.read_batches("wf", 1, started.run_id)] == [1, 2]
    assert [b.seq for b in (local_runs.load_latest("wf") or (None, []))[1]] == [1, 2]
    assert sorted(os.listdir(folder)) == before


def test_the_owner_repairing_sets_a_torn_last_batch_aside(
        local_runs: RunStore, tmp_path: Any) -> None:
    started = write_run(local_runs, 3)
    folder = timeline_folder(tmp_path, started)
    tear(os.path.join(folder, "00000003"))
    _, batches = local_runs.load("wf", repair=True)
    assert [b.seq for b in batches] == [1, 2]
    names = os.listdir(folder)
    assert "00000003" not in names and any(n.startswith("00000003.torn-") for n in names)
    local_runs.append("wf", started.epoch, batch(3))  # the owner can write seq 3 again


def newer_batch(seq: int, extra: dict[str, Any]) -> bytes:
    doc = json.loads(batch(seq).model_dump_json())
    doc.update(v=TIMELINE_VERSION + 1, **extra)
    return frame(json.dumps(doc).encode())


@pytest.mark.parametrize("extra", [{}, {"field_from_the_future": [1, 2]}])
def test_a_batch_from_a_newer_rayline_is_refused_and_left_in_place(
        local_runs: RunStore, tmp_path: Any, extra: dict[str, Any]) -> None:
    started = write_run(local_runs, 2)
    folder = timeline_folder(tmp_path, started)
    data = newer_batch(3, extra)
    with open(os.path.join(folder, "00000003"), "wb") as fh:
        fh.write(data)
    for read in (lambda: local_runs.load("wf"), lambda: local_runs.load("wf", repair=True)):
        with pytest.raises(IncompatibleTimelineError, match="newer rayline") as caught:
            read()
        assert f"timeline version {TIMELINE_VERSION + 1}" in str(caught.value)
    assert sorted(os.listdir(folder)) == ["00000002", "00000003"]
    with open(os.path.join(folder, "00000003"), "rb") as fh:
        assert fh.read() == data


def test_a_batch_in_a_newer_object_format_is_refused_and_left_in_place(
        local_runs: RunStore, tmp_path: Any) -> None:
    started = write_run(local_runs, 2)
    path = os.path.join(timeline_folder(tmp_path, started), "00000003")
    with open(path, "wb") as fh:
        fh.write(b"RL2 some-future-header\n{}")
    for read in (lambda: local_runs.load("wf"), lambda: local_runs.load("wf", repair=True)):
        with pytest.raises(IncompatibleTimelineError, match="RL2"):
            read()
    assert sorted(os.listdir(os.path.dirname(path))) == ["00000002", "00000003"]


def test_a_run_record_from_a_newer_rayline_is_refused(local_runs: RunStore) -> None:
    doc = {"started": {**json.loads(started_record().model_dump_json()),
                       "v": TIMELINE_VERSION + 1, "new_option": True}, "first": None}
    local_runs.store.put("test/wf/wf/runs/00000001", frame(json.dumps(doc).encode()))
    for read in (lambda: local_runs.load("wf"), lambda: local_runs.load_latest("wf")):
        with pytest.raises(IncompatibleTimelineError, match="newer rayline"):
            read()


def test_incompatible_timeline_error_survives_pickling() -> None:
    import pickle

    err = IncompatibleTimelineError("k was written by a newer rayline")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is IncompatibleTimelineError and str(copy) == str(err)


# ------------------------------------------------- 7. S3 listings are not cached


def test_an_s3_listing_sees_an_object_another_process_wrote(
        s3_url: str, s3_endpoint: str) -> None:
    import boto3

    store = FsspecStore(s3_url)
    store.put("wf/t/00000001", b"one")
    store.put("wf/t/00000002", b"two")
    assert store.list("wf/t") == ["00000001", "00000002"]
    bucket, _, root = s3_url[len("s3://"):].partition("/")
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=bucket, Key=f"{root}/wf/t/00000003", Body=b"three")
    assert store.list("wf/t") == ["00000001", "00000002", "00000003"]
