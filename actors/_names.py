"""Ray names and creation options shared by the registry, the hosts and the client."""

from __future__ import annotations

import zlib
from typing import Any

import ray
from ray.exceptions import RayTaskError

from rayline.errors import RaylineError
from rayline.storage.runs import id_key

REGISTRY = "registry"
HOST_CONCURRENCY = 100_000


def ray_namespace(namespace: str) -> str:
    return f"rayline-{namespace}"


def pool_host(task_queue: str, index: int) -> str:
    return f"host-{task_queue}-{index}"


def dedicated_host(workflow_id: str) -> str:
    """``host-dedicated-<id>``; an id too long or too odd for an actor or folder name is
    named by its digest instead (as storage names it)."""
    return f"host-dedicated-{id_key(workflow_id)}"


def pick(hosts: list[str], workflow_id: str) -> str:
    """Placement of a new workflow in a pool: stable across processes."""
    return hosts[zlib.crc32(workflow_id.encode()) % len(hosts)]


def detached(namespace: str, name: str, **extra: Any) -> dict[str, Any]:
    """Options of a named detached actor that Ray restarts forever (hosts, registry)."""
    return {"name": name, "namespace": ray_namespace(namespace), "lifetime": "detached",
            "get_if_exists": True, "max_restarts": -1, "max_task_retries": 0,
            "max_concurrency": HOST_CONCURRENCY, "num_cpus": 0, **extra}


async def call(pending: Any) -> Any:
    """Awaits an actor call's ``ObjectRef``, re-raising rayline errors as themselves (not
    wrapped in ``RayTaskError``)."""
    try:
        return await pending
    except RayTaskError as exc:
        if isinstance(exc.cause, RaylineError):
            raise exc.cause from None
        raise


def get_actor(namespace: str, name: str) -> Any:
    return ray.get_actor(name, namespace=ray_namespace(namespace))
