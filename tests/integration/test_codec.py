"""The codec on Ray: the registry, hosts and activity tasks seal what they store with the
client's codec; an object altered in storage without the key is refused when its host
restarts, and nothing in it is unpickled; a client with another codec is refused."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
import ray

import rayline
from rayline import Codec, CodecError, IntegrityError, Keyring, workflow
from rayline._serde import pickle_b64
from rayline.storage import LocalStore, RunStore
from rayline.timeline import Batch, SignalReceived

from .conftest import host_actor
from .test_foundation import wait_until

SECRET = "ray-codec-secret-91d3"
K1, K2 = b"1" * 32, b"2" * 32
BULK = 20_000
"""Copies of ``SECRET`` in the activity's result: over 256 KiB, kept in objects/."""


@rayline.activity
def bulky(copies: int) -> str:
    return SECRET * copies


@rayline.workflow
async def guarded(copies: int) -> list[object]:
    """A large activity result (kept by the activity's Ray task), then two signals."""
    big = await workflow.execute_activity(bulky, copies)
    first = await workflow.condition("a")
    second = await workflow.condition("b")
    return [len(big), first, second]


class Boobytrap:
    """Unpickling it creates the file at ``path``: proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def _files(storage: str) -> dict[str, bytes]:
    root = Path(storage)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def _forge_next_batch(storage: str, namespace: str, codec: Codec, workflow_id: str,
                      marker: Path) -> Path:
    """The run's next batch as someone without the key would write it: signal ``b`` whose
    data unpickles into creating ``marker``, framed as an older rayline did (a valid
    SHA-256, no MAC)."""
    started, batches = RunStore(LocalStore(storage, fsync=False), namespace,
                                codec).load(workflow_id)
    seq = len(batches) + 1
    body = Batch(seq=seq, run_id=started.run_id, time=time.time(), owner=batches[-1].owner,
                 events=[SignalReceived(signal_id="b",
                                        data={"p": pickle_b64(Boobytrap(str(marker)))})],
                 ).model_dump_json().encode()
    path = Path(storage, namespace, "wf", workflow_id, "t", f"{started.epoch:08d}",
                f"{seq:08d}")
    path.write_bytes(b"RL1 %s %d\n%s" % (hashlib.sha256(body).hexdigest().encode(),
                                         len(body), body))
    return path


def test_an_object_altered_without_the_key_is_refused_when_its_host_restarts(
        namespace: str, storage: str, tmp_path: Path) -> None:
    codec = Codec("zstd,aes-gcm", Keyring({"k1": K1}))
    client = rayline.Client(storage=storage, namespace=namespace, codec=codec)
    handle = client.workflow.start(guarded, args=[BULK], workflow_id="guarded")
    handle.signal("a", f"a {SECRET}")
    wait_until(lambda: [p.signal_id for p in handle.describe().pending] == ["b"], timeout=60)
    files = _files(storage)  # the registry, the host and the activity's task all sealed
    assert any(key.split("/")[1] == "objects" for key in files)
    assert all(data.startswith(b"RLC zstd") and b" k1 " in data[:40] for data in files.values())
    assert not any(SECRET.encode() in data for data in files.values())

    marker = tmp_path / "unpickled"
    forged = _forge_next_batch(storage, namespace, codec, "guarded", marker)
    ray.kill(host_actor(namespace, handle.describe().host), no_restart=False)
    with pytest.raises(IntegrityError, match="not sealed"):
        handle.result(timeout=60)
    assert forged.exists()  # refused, not set aside as a torn write
    assert not marker.exists()  # nothing in it was unpickled
    client.close()


def test_a_client_with_another_codec_or_key_is_refused(namespace: str, storage: str) -> None:
    first = rayline.Client(storage=storage, namespace=namespace,
                           codec=Codec("zstd,aes-gcm", Keyring({"k1": K1})))
    for other in (None, Codec("zstd,aes-gcm", Keyring({"k1": K2})),
                  Codec("zstd,aes-gcm", Keyring({"k1": K1, "k2": K2})), Codec("zlib")):
        with pytest.raises(CodecError, match="the same codec and keys"):
            rayline.Client(storage=storage, namespace=namespace, codec=other)
    same = rayline.Client(storage=storage, namespace=namespace,
                          codec=Codec("zstd,aes-gcm", Keyring({"k1": K1})))
    assert same.hosts() == first.hosts()
    first.close()
    same.close()


def test_keys_from_the_environment_must_be_set_where_the_registry_runs(
        namespace: str, storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's Ray started without ``RAYLINE_KEYS``: a registry given a codec whose
    keys come from it says so, rather than run without them."""
    monkeypatch.setenv("RAYLINE_KEYS", f"k1:{base64.b64encode(K1).decode()}")
    assert os.environ["RAYLINE_KEYS"]
    with pytest.raises(CodecError, match=r"registry could not start: \$RAYLINE_KEYS is not set"):
        rayline.Client(storage=storage, namespace=namespace, codec="zstd,aes-gcm")
