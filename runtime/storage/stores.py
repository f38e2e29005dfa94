"""Key-value object stores: the one protocol the engine writes through.

Invariants every implementation keeps:
- ``put`` is atomic: a reader sees the whole object or nothing (write-then-link on
  local files, a single PUT on object stores).
- ``put(..., exclusive=True)`` creates the key only if it does not exist, and raises
  ``ConflictError`` otherwise. The timeline uses it as its fencing token: two owners of
  one run cannot both write its next batch. ``durable=False`` may skip the flush to
  stable storage (for hints that can be rebuilt).
- Only stores with an atomic create-if-absent are written: local files (``os.link``),
  memory, and S3 (a conditional ``If-None-Match: *`` PUT, probed once per store). Other
  fsspec filesystems are read-only here (reading serves exports); writes raise
  ``StorageError``.
- Every failure is a ``StorageError`` naming the key, with the cause chained; the only
  other outcomes are ``ConflictError`` (an exclusive create found the key),
  ``FileNotFoundError`` from ``get`` of a missing key, a no-op ``delete`` of a missing
  key and ``[]`` from ``list`` of a missing prefix.
- Listings are never cached: a reader sees what any other process wrote before it listed.
- Keys are ``/``-separated relative paths made by the engine from validated ids, so no
  key part starts with ``.``: local temporary files do (``.<name>.<hex>.tmp``) and
  listings hide such names.
- A durable local write fsyncs the file, then its folder; a new local folder is synced
  into its parent (whenever fsync is on, as a later durable write may land in it).
- ``quick`` is true when listing, reading and non-durable writes are local calls short
  enough to make on the event loop (local files, memory); the host then skips the
  thread pool for them.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any, Protocol, runtime_checkable

from ..errors import ConflictError, InvalidInputError, StorageError

log = logging.getLogger("rayline.storage")

# What "this key holds no object" looks like from a filesystem call.
_ABSENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


@runtime_checkable
class Store(Protocol):
    """An object store. ``url`` names it so that another process can open the same one.

    Failures: every method raises ``StorageError`` (with the cause chained) when the
    store fails, and ``put(..., exclusive=True)`` raises ``ConflictError`` when the key
    exists. ``get`` of a missing key raises ``FileNotFoundError``: that is the one
    "absent" signal, distinct from a failure. ``delete`` of a missing key does nothing,
    and ``list`` of a missing prefix returns ``[]``.
    """

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
        self._dirs: set[str] = set()  # folders known to exist, kept small
        try:
            self._make_folders(self.root)
        except OSError as exc:
            raise StorageError(f"cannot open {self.root}: {exc}") from exc

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        path = self._path(key)
        folder = os.path.dirname(path)
        try:
            self._ensure_folder(folder)
            self._write_into_place(key, path, data, exclusive=exclusive,
                                   sync=self.fsync and durable)
        except OSError as exc:
            self._dirs.discard(folder)  # perhaps it vanished: make it again next time
            raise StorageError(f"cannot write {key}: {exc}") from exc

    def _ensure_folder(self, folder: str) -> None:
        """Makes ``folder`` (and its missing parents) unless it is known to exist."""
        if folder in self._dirs:
            return
        self._make_folders(folder)
        if len(self._dirs) > 4096:
            self._dirs.clear()
        self._dirs.add(folder)

    def _make_folders(self, folder: str) -> None:
        """``os.makedirs`` that syncs each new folder into its parent when fsync is on."""
        missing = []
        current = folder
        while not os.path.isdir(current) and os.path.dirname(current) != current:
            missing.append(current)
            current = os.path.dirname(current)
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if os.path.isdir(path):
                    continue  # made by a concurrent writer, who syncs it
                raise
            if self.fsync:
                self._sync_folder(os.path.dirname(path))

    def _write_into_place(self, key: str, path: str, data: bytes, *, exclusive: bool,
                          sync: bool) -> None:
        """Writes a temporary file beside ``path``, then links (exclusive) or renames it."""
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            self._write_file(tmp, data, sync=sync)
            if exclusive:
                self._link(key, tmp, path)
            else:
                os.replace(tmp, path)
        except BaseException:
            self._remove_if_there(tmp)
            raise
        if sync:
            self._sync_folder(folder)

    @staticmethod
    def _link(key: str, tmp: str, path: str) -> None:
        """Links ``tmp`` to ``path`` only if ``path`` does not exist, then drops ``tmp``."""
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConflictError(f"{key} already exists") from None
        finally:
            os.unlink(tmp)

    @staticmethod
    def _write_file(path: str, data: bytes, *, sync: bool) -> None:
        """Creates ``path`` holding ``data``, fsync'd when ``sync``."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _remove_if_there(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    @staticmethod
    def _sync_folder(folder: str) -> None:
        """Flushes ``folder``'s entries (a new name in it) to stable storage."""
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                return fh.read()
        except _ABSENT:
            raise FileNotFoundError(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc}") from exc

    def prune(self, prefix: str) -> None:
        """Removes the empty folders under ``prefix``, and ``prefix`` if it is left empty:
        what deleting every object under it leaves behind here (object stores have no
        folders). A folder that a writer fills meanwhile stays; one removed under a
        writer is made again by its retry."""
        top = self._path(prefix)
        for folder, _, _ in os.walk(top, topdown=False):
            try:
                os.rmdir(folder)
            except OSError:
                continue  # not empty (or gone): leave it
            self._dirs.discard(folder)

    def list(self, prefix: str) -> list[str]:
        try:
            names = os.listdir(self._path(prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise StorageError(f"cannot list {prefix}: {exc}") from exc
        return sorted(n for n in names if not n.startswith("."))


class FsspecStore:
    """Any fsspec filesystem (``s3://``, ``gs://``, ...): single-object PUTs.

    Only S3 is written: its conditional ``If-None-Match: *`` PUT (s3fs's
    ``mode="create"``) is an atomic create-if-absent, which :meth:`check_writable`
    verifies once per store, as some S3-compatible endpoints ignore the header. Other
    filesystems have none, so they are read-only: a check-then-put would let two
    owners of a run both write its next batch.
    """

    quick = False

    def __init__(self, url: str, **storage_options: object) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        protocols = self.fs.protocol
        protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
        self.scheme = self.url.split("://", 1)[0] if "://" in self.url else protocols[0]
        self._conditional = bool({"s3", "s3a"} & set(protocols))
        self._verified = False
        self._refusal: str | None = None
        self._probing = threading.Lock()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def check_writable(self) -> None:
        """Raises ``StorageError`` unless this store has an atomic create-if-absent.

        On S3 the first call probes the endpoint (two conditional PUTs of one key); the
        answer is kept. Writes call this; a host may call it at start-up to fail early.
        """
        if self._verified:
            return
        if self._refusal is None and not self._conditional:
            self._refusal = (
                f"cannot write runs to {self.url}: fsspec's {self.scheme!r} filesystem has "
                "no atomic create-if-absent, so two owners of a run could both write its "
                "next batch; use local files or S3")
        if self._refusal is not None:
            raise StorageError(self._refusal)
        with self._probing:
            if not self._verified:
                self._probe()

    def _probe(self) -> None:
        """Writes a probe key twice with ``If-None-Match: *``: the second must be refused."""
        path = f"{self.root}/_rayline/probe/{uuid.uuid4().hex}"
        try:
            self.fs.pipe_file(path, b"1", mode="create")
            try:
                self.fs.pipe_file(path, b"2", mode="create")
            except FileExistsError:
                self._verified = True
                return
            finally:
                self._remove_probe(path)
        except Exception as exc:
            raise StorageError(f"cannot check that {self._endpoint()} ({self.url}) honours "
                               f"If-None-Match: *: {exc}") from exc
        self._refusal = (f"cannot write runs to {self.url}: the S3 endpoint "
                         f"{self._endpoint()} does not honour If-None-Match: *; two writers "
                         "could both win")
        raise StorageError(self._refusal)

    def _remove_probe(self, path: str) -> None:
        try:
            self.fs.rm_file(path)
        except Exception as exc:  # a stray probe object is harmless
            log.warning("cannot remove the probe object %s: %s", path, exc)

    def _endpoint(self) -> str:
        """The S3 endpoint in use, for messages."""
        client: Any = getattr(self.fs, "_s3", None)
        endpoint = getattr(self.fs, "endpoint_url", None) or getattr(
            getattr(client, "meta", None), "endpoint_url", None)
        return str(endpoint or "the S3 endpoint")

    def put(self, key: str, data: bytes, *, exclusive: bool = False,
            durable: bool = True) -> None:
        self.check_writable()
        try:
            self.fs.pipe_file(self._path(key), data, mode="create" if exclusive else "overwrite")
        except FileExistsError:
            raise ConflictError(f"{key} already exists") from None
        except Exception as exc:
            raise StorageError(f"cannot write {key} to {self.url}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except _ABSENT:
            raise FileNotFoundError(key) from None
        except Exception as exc:
            raise StorageError(f"cannot read {key} from {self.url}: {exc}") from exc

    def delete(self, key: str) -> None:
        self.check_writable()
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StorageError(f"cannot delete {key} from {self.url}: {exc}") from exc

    def list(self, prefix: str) -> list[str]:
        """The names under ``prefix``, fresh: s3fs caches listings per filesystem (and
        fsspec shares filesystems), which would hide what another process wrote."""
        path = self._path(prefix)
        try:
            self.fs.invalidate_cache(path)
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise StorageError(f"cannot list {prefix} in {self.url}: {exc}") from exc
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
