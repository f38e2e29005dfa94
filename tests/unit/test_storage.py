"""Store implementations behave alike (memory://, file://, s3:// on a local S3 server),
and the run layout on top."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rayline.errors import ConflictError, CorruptTimelineError, InvalidInputError
from rayline.storage import RunStore, open_store
from rayline.storage.runs import frame, id_key, unframe, validate_id


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "memory":
        return open_store(f"memory://{uuid.uuid4().hex}")
    if request.param == "s3":
        return open_store(request.getfixturevalue("s3_url"))
    return open_store(str(tmp_path / "store"))


def test_put_get_list_delete(store: Any) -> None:
    store.put("a/b/1", b"one")
    store.put("a/b/2", b"two")
    store.put("a/c", b"three")
    assert store.get("a/b/1") == b"one"
    assert store.list("a") == ["b", "c"] and store.list("a/b") == ["1", "2"]
    store.put("a/b/1", b"uno")
    assert store.get("a/b/1") == b"uno"
    store.delete("a/b/1")
    store.delete("a/b/1")  # deleting twice is fine
    with pytest.raises(FileNotFoundError):
        store.get("a/b/1")
    assert store.list("nothing/here") == []


def test_exclusive_put_is_a_fencing_token(store: Any) -> None:
    store.put("t/00000001", b"first", exclusive=True)
    with pytest.raises(ConflictError):
        store.put("t/00000001", b"second", exclusive=True)
    assert store.get("t/00000001") == b"first"


def test_frames_detect_tearing_and_tampering() -> None:
    body = b'{"x": 1}'
    assert unframe(frame(body), "k") == body
    with pytest.raises(CorruptTimelineError, match="checksum"):
        unframe(frame(body)[:-2], "k")
    with pytest.raises(CorruptTimelineError, match="header"):
        unframe(b"garbage", "k")


def test_ids_map_to_safe_keys() -> None:
    assert id_key("order-123") == "order-123"
    long_id = "x" * 900
    assert validate_id(long_id) == long_id
    assert id_key(long_id).startswith("~") and len(id_key(long_id)) < 64
    assert id_key("héllo wörld") != id_key("hello world")
    for bad in ("a/b", "..", "../x", "\n", "", "x" * 1001):
        with pytest.raises(InvalidInputError):
            validate_id(bad)


def test_run_store_refuses_a_bad_namespace() -> None:
    with pytest.raises(InvalidInputError, match="namespace"):
        RunStore(open_store("memory://ns"), "../escape")


def test_code_packages_are_kept_once_and_read_back_checked(store: Any) -> None:
    runs = RunStore(store, "pk")
    assert runs.get_package("_ray_pkg_ab.zip") is None
    assert not runs.has_package("_ray_pkg_ab.zip")
    runs.put_package("_ray_pkg_ab.zip", b"PK\x03\x04 zip bytes")
    assert runs.has_package("_ray_pkg_ab.zip")
    runs.put_package("_ray_pkg_ab.zip", b"PK\x03\x04 zip bytes")  # kept again: a no-op
    assert runs.get_package("_ray_pkg_ab.zip") == b"PK\x03\x04 zip bytes"
    with pytest.raises(ConflictError):  # a name is its content: other bytes are refused
        runs.put_package("_ray_pkg_ab.zip", b"other")
    key = "pk/packages/" + id_key("_ray_pkg_ab.zip")
    store.put(key, store.get(key)[:-3])  # torn
    with pytest.raises(CorruptTimelineError):
        runs.get_package("_ray_pkg_ab.zip")
