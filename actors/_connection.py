"""How a client reaches rayline on a Ray cluster: ``connect`` starts or joins Ray, then
gets (or creates) the namespace's registry, which resumes unfinished runs on a fresh
cluster."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

import ray

from rayline import versions
from rayline.errors import ClusterUnavailableError, CodecError, InvalidInputError
from rayline.messages import CodeVersion, RegistryInfo
from rayline.storage.codec import Codec

from ._directory import ActorDirectory
from ._names import REGISTRY, detached
from .registry import RegistryActor


class RayConnection(ActorDirectory):
    """The client's view of one rayline namespace on a Ray cluster."""

    def __init__(self, storage_url: str, namespace: str, version: str | None = None,
                 codec: Codec | None = None) -> None:
        super().__init__(namespace)
        self.storage_url = storage_url
        self.codec = codec
        """Given to the registry if this connection creates it (pickled: a literal
        keyring travels with it; one from ``$RAYLINE_KEYS`` is read there again)."""
        self._explicit = version  # checked by the client
        self._from_source = False
        self._modules_seen = -1

    @property
    def version(self) -> CodeVersion | None:
        """The driver's code version (see ``of_job``). One taken from the source
        is taken again whenever the driver has imported more modules since: a workflow
        module imported after the client was made is part of it."""
        if self._from_source and len(sys.modules) != self._modules_seen:
            self._modules_seen = len(sys.modules)
            self._version = versions.of_source()
        return self._version

    async def open(self) -> RegistryInfo:
        self._version = of_job(self._explicit)
        self._from_source = self._version is None
        registry = RegistryActor.options(  # type: ignore[attr-defined]  # ray.remote class
            **detached(self.namespace, REGISTRY)).remote(
            self.storage_url, self.namespace, self.codec)
        self._handles[REGISTRY] = registry
        try:
            info: RegistryInfo = await registry.ready.remote()
        except ray.exceptions.RayActorError as exc:
            failure = _codec_failure(exc)
            if failure is None:
                raise
            raise failure from exc
        if info.storage != self.storage_url:
            raise InvalidInputError(
                f"namespace {self.namespace!r} on this cluster uses storage {info.storage}, "
                f"not {self.storage_url}: use that storage or another namespace")
        return info


def _codec_failure(exc: Exception) -> CodecError | None:
    """The ``CodecError`` that kept the registry from starting (its codec's keys come from
    an environment variable its process lacks), if that is why it died."""
    said = [line for line in str(exc).splitlines() if "rayline.errors.CodecError: " in line]
    if not said:
        return None
    message = said[-1].split("rayline.errors.CodecError: ", 1)[1]
    return CodecError(f"the namespace's registry could not start: {message}")


def ensure_ray(address: str | None) -> None:
    """Joins the Ray cluster at ``address`` (``"auto"``: the one running on this machine)
    or, with ``None`` and no ``RAY_ADDRESS``, starts a local Ray of this process's own.
    Does nothing when this process is already connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    else:
        _probe(address)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as exc:  # "auto" with no cluster on this machine
            raise ClusterUnavailableError(f"no Ray cluster to join at {address!r}: "
                                          f"{exc}") from None


PROBE_TIMEOUT = 5.0
"""Seconds to wait for a TCP answer from an explicit ``host:port`` before giving up."""


def _probe(address: str) -> None:
    """Fails fast when nothing listens at a ``host:port`` address (Ray would retry its
    connection for minutes); other forms (``auto``, ``ray://...``) are left to Ray.

    Raises:
        ClusterUnavailableError: nothing answers there.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT).close()
    except OSError as exc:
        raise ClusterUnavailableError(f"no Ray cluster answers at {address}: {exc}") from None


def of_job(explicit: str | None = None) -> CodeVersion | None:
    """This driver's code version when it is ``explicit`` or its Ray job has a
    ``runtime_env``; ``None`` when the source of its modules decides (see
    ``rayline.versions``)."""
    env = json.loads(json.dumps(dict(ray.get_runtime_context().runtime_env), default=str))
    return versions.of_runtime_env(env, explicit)


def connect(address: str | None, storage_url: str, namespace: str,
            version: str | None = None, codec: Codec | None = None) -> RayConnection:
    """A connection object; ``await connection.open()`` before use."""
    ensure_ray(address)
    return RayConnection(storage_url, namespace, version, codec)
