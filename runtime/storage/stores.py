"""Key-value object stores: the one protocol the engine writes through.

Invariants every implementation keeps:
- ``put`` is atomic: a reader sees the whole object or nothing (write-then-link on
  local files, a single PUT on object stores).
- ``put(..., exclusive=True)`` creates the key only if it does not exist, and raises
  ``ConflictError`` otherwise. The timeline uses it as its fencing token: two owners of
  one run cannot both write its next batch. ``durable=False`` may skip the flush to
  stable storage (for hints that can be rebuilt).
- Keys are ``/``-separated relative paths made by the engine from validated ids.
- ``quick`` is true when listing, reading and non-durable writes are local calls short
  enough to make on the event loop (local files, memory); the host then skips the
  thread pool for them.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Protocol, runtime_checkable

from ..errors import ConflictError, InvalidInputError, StorageError


@runtime_checkable
class Store(Protocol):
    """An object store. ``url`` names it so that another process can open the same one."""

    url: str
    quick: bool

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...


class MemoryStore:
    """A process-local store for unit tests (``memory://name``)."""

    _spaces: dict[str, dict[str, bytes]] = {}
    _guard = threading.Lock()
    quick = True

    def __init__(self, name: str = "default") -> None:
        self.url = f"memory://{name}"
        with self._guard:
            self._objects = self._spaces.setdefault(name, {})

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        with self._guard:
            if exclusive and key in self._objects:
                raise ConflictError(f"{key} already exists")
            self._objects[key] = bytes(data)

    def get(self, key: str) -> bytes:
        try:
            return self._objects[key]
        except KeyError:
            raise FileNotFoundError(key) from None

    def delete(self, key: str) -> None:
        with self._guard:
            self._objects.pop(key, None)

    def list(self, prefix: str) -> list[str]:
        base = prefix.rstrip("/") + "/"
        with self._guard:
            names = {k[len(base):].split("/", 1)[0] for k in self._objects if k.startswith(base)}
        return sorted(names)


class LocalStore:
    """Files under a directory, with fsync and atomic, fencing-safe creates.

    fsspec's local filesystem neither fsyncs nor creates exclusively, so ``file://``
    gets this implementation; every other scheme goes through :class:`FsspecStore`.
    """

    quick = True

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = f"file://{self.root}"
        self.fsync = fsync
        os.makedirs(self.root, exist_ok=True)
        self._dirs: set[str] = set()

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        path = self._path(key)
        folder = os.path.dirname(path)
        if folder not in self._dirs:
            os.makedirs(folder, exist_ok=True)
            if len(self._dirs) > 4096:  # a cache of folders known to exist, kept small
                self._dirs.clear()
            self._dirs.add(folder)
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                if self.fsync and durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise ConflictError(f"{key} already exists") from None
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except FileNotFoundError:
            self._dirs.discard(folder)
            raise StorageError(f"cannot write {key}: its folder vanished") from None
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        with open(self._path(key), "rb") as fh:
            return fh.read()

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        try:
            names = os.listdir(self._path(prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if not n.endswith(".tmp"))


class FsspecStore:
    """Any fsspec filesystem (``s3://``, ``gs://``, ...): single-object PUTs.

    Exclusive creates use the filesystem's create-only write where it has one (S3's
    conditional ``If-None-Match: *`` PUT through s3fs); elsewhere they are a
    check-then-put, which is only safe with one writer per run.
    """

    quick = False

    def __init__(self, url: str, **storage_options: object) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        self._create_only = "s3" in getattr(self.fs, "protocol", ())

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        path = self._path(key)
        try:
            if exclusive and self._create_only:
                self.fs.pipe_file(path, data, mode="create")
            elif exclusive and self.fs.exists(path):
                raise ConflictError(f"{key} already exists")
            else:
                self.fs.pipe_file(path, data)
        except FileExistsError:
            raise ConflictError(f"{key} already exists") from None
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc}") from exc

    def get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        try:
            entries = self.fs.ls(self._path(prefix), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)


def default_storage() -> str:
    """``$RAYLINE_STORAGE``, else ``./.rayline`` under the current directory."""
    return os.environ.get("RAYLINE_STORAGE") or os.path.join(os.getcwd(), ".rayline")


def open_store(url: str | None = None) -> Store:
    """Opens a store by URL: a path or ``file://``, ``memory://``, or any fsspec URL."""
    url = url or default_storage()
    if not isinstance(url, str) or not url:
        raise InvalidInputError(f"storage must be a path or URL string, got {url!r}")
    if url.startswith("memory://"):
        return MemoryStore(url[len("memory://"):] or "default")
    if url.startswith("file://"):
        return LocalStore(url[len("file://"):], fsync=os.environ.get("RAYLINE_FSYNC", "1") != "0")
    if "://" not in url:
        return LocalStore(url, fsync=os.environ.get("RAYLINE_FSYNC", "1") != "0")
    return FsspecStore(url)
