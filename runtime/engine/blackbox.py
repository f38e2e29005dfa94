"""Which run a host process was running when it died, so a run that keeps killing its
host is quarantined instead of taking the host (and its neighbours) down forever.

A host writes the id of the workflow whose code it is about to run (an activation or a
replay) into a small node-local memory-mapped file, and clears it after. These are
memory stores, not system calls; when the process dies the kernel still holds the page,
so the host that Ray restarts on the same node reads who was running. Each death that
finds a run there counts against that run; a death with another run there starts the
count again ("in a row"). A host that restarts on another node starts with no count:
losing a node is not a run's fault.

Invariants: the active slot holds at most one id and is empty whenever no workflow code
runs; the suspect slot changes only when a host starts or a run is released.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
from typing import NamedTuple


class Suspect(NamedTuple):
    workflow_id: str
    deaths: int
    """Host deaths in a row with this run's code running."""
    just_died: bool
    """The death this start follows is one of them (else an earlier one was)."""


_SLOT = 4096  # an id is at most 1,000 characters: 4,000 bytes of UTF-8
_SIZE = 2 * _SLOT


class Blackbox:
    """The active and suspect slots of one host (see the module docstring)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._map: mmap.mmap | bytearray
        if path is None:  # nothing survives the process: counting is off
            self._map = bytearray(_SIZE)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    @classmethod
    def for_host(cls, storage_url: str, namespace: str, host: str) -> Blackbox:
        key = hashlib.sha256(f"{storage_url}\0{namespace}\0{host}".encode()).hexdigest()[:32]
        return cls(os.path.join(tempfile.gettempdir(), "rayline-blackbox", key))

    def running(self, workflow_id: str) -> None:
        """Workflow code of ``workflow_id`` is about to run in this process."""
        data = workflow_id.encode()
        self._map[2:2 + len(data)] = data
        self._map[0:2] = len(data).to_bytes(2, "little")

    def idle(self) -> None:
        self._map[0:2] = b"\0\0"

    def _read(self, offset: int) -> bytes:
        size = int.from_bytes(self._map[offset:offset + 2], "little")
        return bytes(self._map[offset + 2:offset + 2 + min(size, _SLOT - 2)])

    def _write(self, offset: int, data: bytes) -> None:
        self._map[offset + 2:offset + 2 + len(data)] = data
        self._map[offset:offset + 2] = len(data).to_bytes(2, "little")

    def after_restart(self) -> Suspect | None:
        """Counts the death that this start follows, if workflow code was running then:
        the suspect run and how many host deaths in a row it was running at."""
        active = self._read(0).decode(errors="replace")
        self.idle()
        suspect = json.loads(self._read(_SLOT) or b"null")
        if not active:
            return Suspect(suspect[0], suspect[1], False) if suspect else None
        deaths = suspect[1] + 1 if suspect and suspect[0] == active else 1
        self._write(_SLOT, json.dumps([active, deaths]).encode())
        return Suspect(active, deaths, True)

    def forgive(self, workflow_id: str) -> None:
        """``workflow_id`` was released: its count starts again."""
        suspect = json.loads(self._read(_SLOT) or b"null")
        if suspect and suspect[0] == workflow_id:
            self._write(_SLOT, b"null")
