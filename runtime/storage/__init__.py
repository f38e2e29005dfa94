"""Storage: the ``Store`` protocol, its implementations, and the run layout on top."""

from .runs import RunStore, validate_id
from .stores import FsspecStore, LocalStore, MemoryStore, Store, default_storage, open_store

__all__ = [
    "FsspecStore",
    "LocalStore",
    "MemoryStore",
    "RunStore",
    "Store",
    "default_storage",
    "open_store",
    "validate_id",
]
