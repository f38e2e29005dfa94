"""The payload codec and integrity: runs of the test environment over file storage with a
codec, read back (or refused) by what a reader holds; forged objects refused before
anything in them is decoded; compression, keys and their rotation."""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

import pytest

import rayline
from rayline import Codec, CodecError, IntegrityError, Keyring, _gc, workflow
from rayline._serde import pickle_b64
from rayline.export import build_export, load_run
from rayline.messages import RegistryInfo
from rayline.storage import LocalStore, MemoryStore, RunStore
from rayline.storage import codec as codecs
from rayline.testing import Replayer, WorkflowEnvironment
from rayline.timeline import Batch, SignalReceived

SECRET = "codec-secret-7c41f0"
"""In every payload of ``confide``: no stored byte may show it under encryption."""
K1, K2 = b"1" * 32, b"2" * 32
NAMESPACE = "default"


@rayline.activity
def annotate(note: str) -> str:
    return f"{note} / annotated {SECRET}"


@rayline.workflow
async def confide(note: str, bulk: str) -> str:
    """An activity result, a signal and a large input (kept in objects/), all secret."""
    annotated = await workflow.execute_activity(annotate, note)
    reply = await workflow.condition("reply")
    return f"{annotated} / {reply} / {len(bulk)}"


@rayline.workflow
async def hears(name: str) -> str:
    return f"heard {await workflow.condition('reply')} for {name}"


class Boobytrap:
    """A value whose unpickling creates the file at ``path``: proof of an unpickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def _codec(spec: str = "zstd,aes-gcm", **keys: bytes) -> Codec:
    return Codec(spec, Keyring(keys or {"k1": K1}))


def _runs(root: Path, codec: Codec | None) -> RunStore:
    return RunStore(LocalStore(str(root), fsync=False), NAMESPACE, codec)


def _confide(root: Path, codec: Codec | None, workflow_id: str = "wf") -> str:
    with WorkflowEnvironment.start_local_sync(storage=str(root), codec=codec) as env:
        handle = env.client.workflow.start(
            confide, args=[f"note {SECRET}", SECRET * 20_000], workflow_id=workflow_id,
            memo={"about": SECRET})
        handle.signal("reply", f"reply {SECRET}")
        return str(handle.result(timeout=30))


def _files(root: Path, *, temporary: bool = False) -> dict[str, bytes]:
    """Every object under ``root`` by key; with ``temporary``, also the files of writes
    in flight (``.<name>.<hex>.tmp``: a host of a closed environment may still write)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and (temporary or not p.name.startswith("."))}


def _timeline_keys(root: Path, workflow_id: str) -> list[str]:
    return sorted(k for k in _files(root) if k.startswith(f"{NAMESPACE}/wf/{workflow_id}/"))


# ------------------------------------------------------------ confidentiality


@pytest.mark.parametrize("spec", ["aes-gcm", "zstd,aes-gcm", "zlib,aes-gcm"])
def test_an_encrypted_namespace_holds_no_plaintext_payload(tmp_path: Path, spec: str) -> None:
    assert _confide(tmp_path, _codec(spec)).endswith(f"reply {SECRET} / {len(SECRET) * 20_000}")
    files = _files(tmp_path)
    assert {"wf", "objects", "config"} <= {key.split("/")[1] for key in files}
    for key, data in files.items():
        assert data.startswith(b"RLC "), key  # sealed, down to markers and configs
        assert b" k1 " in data.partition(b"\n")[0], key
    for key, data in _files(tmp_path, temporary=True).items():
        assert SECRET.encode() not in data, key


def test_every_other_kind_of_object_is_sealed_too(tmp_path: Path) -> None:
    runs = _runs(tmp_path, _codec())
    runs.mark_open("h0", f"id-{SECRET}", parked_until=1.0)
    runs.buffer_early_signal("later", SignalReceived(signal_id="s", data={"j": SECRET}))
    runs.put_index("log-000000000001", SECRET.encode())
    runs.put_package("pkg.zip", SECRET.encode())
    runs.put_config("version:v1", {"runtime_env": SECRET})
    files = _files(tmp_path)
    assert {key.split("/")[1] for key in files} == {"open", "early", "index", "packages",
                                                    "config"}
    assert not any(SECRET.encode() in data for data in files.values())
    assert runs.open_workflows("h0") == [(f"id-{SECRET}", 1.0)]
    assert [s.data for _, s in runs.take_early_signals("later")] == [{"j": SECRET}]
    assert runs.get_index("log-000000000001") == runs.get_package("pkg.zip") == SECRET.encode()
    assert runs.get_config("version:v1") == {"runtime_env": SECRET}


def test_without_a_codec_the_same_run_stores_its_payloads_readably(tmp_path: Path) -> None:
    """The check above can fail: with no codec the secret is there to find."""
    _confide(tmp_path, None)
    assert any(SECRET.encode() in data for data in _files(tmp_path).values())


def test_a_reader_without_the_key_gets_an_error_naming_codec_and_key(tmp_path: Path) -> None:
    _confide(tmp_path, _codec())
    for reader in (None, Codec("zstd", None), Codec("hmac", {"k2": K2})):
        with pytest.raises(CodecError, match=r"zstd\+aes-gcm.*'k1'") as caught:
            _runs(tmp_path, reader).load("wf")
        assert caught.value.key_id == "k1" and caught.value.codec == "zstd+aes-gcm"
    with pytest.raises(CodecError, match="'k1'"):
        Replayer(storage=str(tmp_path), namespace=NAMESPACE, codec=Codec()).stored(["wf"])


def test_a_key_of_the_same_id_with_other_bytes_fails_the_mac(tmp_path: Path) -> None:
    _confide(tmp_path, _codec())
    with pytest.raises(IntegrityError, match="'k1'") as caught:
        _runs(tmp_path, _codec(k1=K2)).load("wf")
    assert caught.value.key_id == "k1"


def test_the_export_and_the_replayer_read_through_the_codec(tmp_path: Path) -> None:
    codec = _codec()
    _confide(tmp_path, codec)
    exported = build_export(*load_run(_runs(tmp_path, codec), "wf", None))
    assert f"reply {SECRET}" in exported.model_dump_json()
    with WorkflowEnvironment.start_local_sync(storage=str(tmp_path), codec=codec) as env:
        handle = env.client.workflow.get_handle("wf")
        assert f"note {SECRET}" in handle.export().model_dump_json()
        assert handle.result().startswith(f"note {SECRET}")
    replayer = Replayer([confide], storage=str(tmp_path), namespace=NAMESPACE, codec=codec)
    assert replayer.replay(replayer.stored(["wf"])).ok


def test_gc_reads_and_deletes_through_the_codec(tmp_path: Path) -> None:
    codec = _codec()
    _confide(tmp_path, codec)
    later = time.time() + 3600
    with pytest.raises(CodecError, match="'k1'"):
        _gc.collect(_runs(tmp_path, None), later, older_than=1)
    report = _gc.collect(_runs(tmp_path, codec), later, older_than=1)
    assert [workflow_id for workflow_id, _ in report.runs] == ["wf"]
    assert _timeline_keys(tmp_path, "wf") == []


# ------------------------------------------------------------------- rotation


def _key_ids(root: Path, workflow_id: str) -> set[bytes]:
    files = _files(root)
    return {files[k].split(b" ")[2] for k in _timeline_keys(root, workflow_id)}


def test_new_writes_use_the_newest_key_and_older_keys_still_read(tmp_path: Path) -> None:
    _confide(tmp_path, _codec(k1=K1), "old")
    assert _key_ids(tmp_path, "old") == {b"k1"}
    rotated = _codec(k1=K1, k2=K2)
    _confide(tmp_path, rotated, "new")
    assert _key_ids(tmp_path, "new") == {b"k2"}
    for workflow_id in ("old", "new"):
        assert _runs(tmp_path, rotated).load(workflow_id)[1]
    with WorkflowEnvironment.start_local_sync(storage=str(tmp_path), codec=rotated) as env:
        assert env.client.workflow.get_handle("old").result().startswith(f"note {SECRET}")
    with pytest.raises(CodecError, match=r"'k1'.*the keyring has only k2"):
        _runs(tmp_path, _codec(k2=K2)).load("old")
    assert _runs(tmp_path, _codec(k2=K2)).load("new")[1]


# -------------------------------------------------------------------- integrity


def _forge(root: Path, codec: Codec, workflow_id: str, marker: Path, how: str) -> str:
    """Writes the run's next batch as an attacker without the key would: a signal whose
    data unpickles into creating ``marker``, framed ``how``. Returns its key."""
    started, batches = _runs(root, codec).load(workflow_id)
    seq = len(batches) + 1
    body = Batch(seq=seq, run_id=started.run_id, time=time.time(), events=[
        SignalReceived(signal_id="reply", data={"p": pickle_b64(Boobytrap(str(marker)))})],
    ).model_dump_json().encode()
    key = f"{NAMESPACE}/wf/{workflow_id}/t/{started.epoch:08d}/{seq:08d}"
    digest = hashlib.sha256(body).hexdigest()
    if how == "rl1":  # an object of before codecs, checksum and all
        data = b"RL1 %s %d\n%s" % (digest.encode(), len(body), body)
    elif how == "keyless":  # a sealed object that names no key
        data = b"RLC - - %d %s\n%s" % (len(body), digest.encode(), body)
    else:  # names the key, with a MAC made up
        data = b"RLC - k1 %d %s\n%s" % (len(body), b"0" * 64, body)
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return key


@pytest.mark.parametrize("how", ["rl1", "keyless", "made-up-mac"])
def test_a_forged_last_batch_is_refused_not_dropped_and_never_unpickled(
        tmp_path: Path, how: str) -> None:
    codec = _codec("hmac")  # a MAC and no encryption: the forger can read the format
    storage = tmp_path / "store"
    marker = tmp_path / "unpickled"
    with WorkflowEnvironment.start_local_sync(storage=str(storage), codec=codec) as env:
        env.client.workflow.start(hears, args=["ann"], workflow_id="wf")
        _wait_pending(env, "wf")
    key = _forge(storage, codec, "wf", marker, how)
    with pytest.raises(IntegrityError, match="refused"):
        _runs(storage, codec).load("wf", repair=True)
    with WorkflowEnvironment.start_local_sync(storage=str(storage), codec=codec) as env:
        with pytest.raises(IntegrityError, match="refused"):
            env.client.workflow.get_handle("wf").result(timeout=10)
    assert (storage / key).exists()  # not set aside as a torn write
    assert not marker.exists()  # nothing in it was unpickled


def _wait_pending(env: Any, workflow_id: str) -> None:
    """Waits until the run waits for a signal (its activities done and recorded)."""
    handle = env.client.workflow.get_handle(workflow_id)
    for _ in range(500):
        if any(p.kind == "wait" for p in handle.describe().pending):
            return
        time.sleep(0.01)
    raise AssertionError(f"{workflow_id} never waited")


def test_a_torn_last_batch_is_still_treated_as_never_written(tmp_path: Path) -> None:
    codec = _codec()
    _confide(tmp_path, codec)
    runs = _runs(tmp_path, codec)
    started, batches = runs.load("wf")
    last = [k for k in _timeline_keys(tmp_path, "wf") if "/t/" in k][-1]
    whole = (tmp_path / last).read_bytes()
    for torn in (whole[:len(whole) - 5], whole[:30], whole[:2], b""):
        (tmp_path / last).write_bytes(torn)
        assert len(runs.load("wf")[1]) == len(batches) - 1, torn[:40]
    (tmp_path / last).write_bytes(whole[:-1] + bytes([whole[-1] ^ 1]))  # whole, altered
    with pytest.raises(IntegrityError, match="MAC does not verify with key 'k1'"):
        runs.load("wf")


@pytest.mark.parametrize("spec", ["hmac", "zstd", "zlib"])
def test_a_key_with_compression_only_or_none_still_macs_every_object(
        tmp_path: Path, spec: str) -> None:
    codec = Codec(spec, Keyring({"k1": K1}))
    assert codec.name.endswith("hmac")
    _confide(tmp_path, codec)
    files = _files(tmp_path)
    assert all(data.split(b" ")[2] == b"k1" for data in files.values())
    for key in files:  # every kind of object: flip one byte of its body
        data = files[key]
        (tmp_path / key).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(IntegrityError, match="k1"):
            _read_any(_runs(tmp_path, codec), key)
        (tmp_path / key).write_bytes(data)


def _read_any(runs: RunStore, key: str) -> Any:
    """Reads the object at storage key ``key`` through the RunStore call that owns it."""
    kind, rest = key.split("/")[1], key.split("/", 2)[2]
    if kind == "wf":
        return runs.load(rest.split("/")[0])
    if kind == "objects":
        return runs.get_object(rest)
    if kind == "config":
        return runs.get_config(rest)
    if kind == "index":
        return runs.get_index(rest)
    if kind == "open":
        return runs.open_workflows(rest.split("/")[0])
    raise AssertionError(key)


@pytest.mark.parametrize("spec", ["hmac", "zstd,aes-gcm"])
def test_an_object_moved_to_another_name_does_not_verify(spec: str) -> None:
    runs = RunStore(MemoryStore(f"codec-moved-{spec}"), NAMESPACE, _codec(spec))
    runs.put_config("queue:a", {"hosts": 1})
    runs.store.put(f"{NAMESPACE}/config/queue:b", runs.store.get(f"{NAMESPACE}/config/queue:a"))
    assert runs.get_config("queue:a") == {"hosts": 1}
    with pytest.raises(IntegrityError):
        runs.get_config("queue:b")


def test_plain_documents_and_frames_stay_readable_without_keys_and_are_refused_with_them(
        ) -> None:
    store = MemoryStore("codec-plain")
    RunStore(store, NAMESPACE).put_config("drains", {"hosts": []})  # as rayline wrote it
    assert store.get(f"{NAMESPACE}/config/drains") == b'{"hosts": []}'
    assert RunStore(store, NAMESPACE, Codec("zstd", None)).get_config("drains") == {"hosts": []}
    with pytest.raises(IntegrityError, match="not sealed"):
        RunStore(store, NAMESPACE, _codec()).get_config("drains")
    RunStore(store, NAMESPACE).put_index("log-1", b"entries")
    assert RunStore(store, NAMESPACE, Codec("zlib", None)).get_index("log-1") == b"entries"
    with pytest.raises(IntegrityError, match="not sealed"):
        RunStore(store, NAMESPACE, _codec()).get_index("log-1")


# ---------------------------------------------------------- compression, keys


@pytest.mark.parametrize("spec", ["zlib", "zstd"])
def test_compression_round_trips_and_the_object_records_which(spec: str) -> None:
    body = b"rayline " * 1000
    sealed = Codec(spec, None).seal(body, "wf/x")
    assert sealed.startswith(b"RLC %s - " % spec.encode()) and len(sealed) < len(body) // 10
    assert Codec().open(sealed, "wf/x") == body  # a reader needs no codec of its own


def test_zstd_falls_back_to_zlib_where_zstandard_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"rayline " * 1000
    zstd_sealed = Codec("zstd", None).seal(body, "wf/x")
    monkeypatch.setattr(codecs, "_zstandard", lambda: None)
    sealed = Codec("zstd", None).seal(body, "wf/x")
    assert sealed.startswith(b"RLC zlib - ") and Codec().open(sealed, "wf/x") == body
    with pytest.raises(CodecError, match="zstandard"):
        Codec().open(zstd_sealed, "wf/x")


def test_keys_come_from_rayline_keys_in_each_process(monkeypatch: pytest.MonkeyPatch) -> None:
    b64 = base64.b64encode
    monkeypatch.setenv("RAYLINE_KEYS", f"k1:{b64(K1).decode()}, k2:{b64(K2).decode()}")
    monkeypatch.setenv("RAYLINE_CODEC", "zstd,aes-gcm")
    codec = Codec.from_env()
    assert codec is not None and codec.keyring is not None
    assert codec.keyring.ids == ("k1", "k2") and codec.keyring.newest == "k2"
    assert codec == _codec(k1=K1, k2=K2)  # the same fingerprint as literal keys
    shipped = pickle.dumps(codec)
    assert K1 not in shipped and K2 not in shipped  # the variable's name travels
    assert pickle.loads(shipped) == codec
    assert K1 in pickle.dumps(_codec(k1=K1))  # literal keys travel pickled
    monkeypatch.setenv("RAYLINE_KEYS", f"k1:{b64(K1).decode()}")
    assert pickle.loads(shipped) != codec  # read again where it lands
    monkeypatch.delenv("RAYLINE_KEYS")
    with pytest.raises(CodecError, match="RAYLINE_KEYS is not set"):
        pickle.loads(shipped)
    with pytest.raises(CodecError, match="needs keys"):
        Codec("aes-gcm")
    monkeypatch.setenv("RAYLINE_KEYS", f"k1:{b64(K1).decode()}")
    monkeypatch.delenv("RAYLINE_CODEC")
    with pytest.raises(CodecError, match="RAYLINE_CODEC is not"):
        Codec.from_env()


@pytest.mark.parametrize("spec, keys", [
    ("zstd,zlib", None), ("aes-gcm,hmac", None), ("rot13", None), ("zstd,zstd", None),
    ("aes-gcm", {"k1": b"short"}), ("aes-gcm", {"bad id": K1}), ("aes-gcm", {})])
def test_a_bad_codec_or_keyring_is_refused_when_made(spec: str, keys: Any) -> None:
    with pytest.raises(rayline.InvalidInputError):
        Codec(spec, keys)


def test_the_fingerprint_names_stages_and_key_ids_and_never_a_key() -> None:
    codec = _codec(k1=K1, k2=K2)
    assert codec.fingerprint.startswith("zstd,aes-gcm;k1:") and ",k2:" in codec.fingerprint
    assert K1.hex()[:8] not in codec.fingerprint and "1111" not in codec.fingerprint
    assert codec.fingerprint != _codec(k1=K1, k2=K1).fingerprint
    assert repr(codec) == "Codec('zstd,aes-gcm', keys=Keyring(k1, k2; literal))"
    assert Codec().fingerprint == codecs.fingerprint_of(None) == "none"


class _Registry:
    """A connection whose registry runs with the codec fingerprint ``codec``."""

    version = None

    def __init__(self, codec: str) -> None:
        self.codec = codec

    async def open(self) -> RegistryInfo:
        return RegistryInfo(storage="memory://x", namespace="ns", resumed=0, codec=self.codec)


@pytest.mark.parametrize("theirs", ["none", "zstd,aes-gcm;k1:00000000", "zstd;"])
def test_a_client_whose_codec_differs_from_its_registrys_is_refused(theirs: str) -> None:
    import asyncio

    client = rayline.AsyncClient(storage="memory://x", namespace="ns", codec=_codec(),
                                 connection=_Registry(theirs))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="the same codec and keys"):
        asyncio.run(client.connection())
    same = rayline.AsyncClient(storage="memory://x", namespace="ns", codec=_codec(),
                               connection=_Registry(_codec().fingerprint))  # type: ignore
    asyncio.run(same.connection())


def test_rayline_codec_is_the_clients_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLINE_CODEC", "zlib")
    assert rayline.AsyncClient(storage="memory://x").codec == Codec("zlib", None)
    monkeypatch.delenv("RAYLINE_CODEC")
    assert rayline.AsyncClient(storage="memory://x").codec is None
    assert rayline.AsyncClient(storage="memory://x", codec="zlib").runs().codec == \
        Codec("zlib")
    assert os.environ.get("RAYLINE_KEYS") is None
