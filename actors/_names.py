"""Ray names and creation options shared by the registry, the hosts and the client."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import RayTaskError

from rayline.errors import RaylineError

REGISTRY = "registry"
HOST_CONCURRENCY = 100_000


def ray_namespace(namespace: str) -> str:
    return f"rayline-{namespace}"


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
