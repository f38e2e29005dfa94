"""One local Ray per test session; each test gets its own rayline namespace and storage."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from typing import Any, Iterator

import pytest
import ray

import rayline
from rayline.actors._names import ray_namespace


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, Any]]:
    """The session's Ray, with its dashboard (the Ray Jobs API) on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = ray.init(
        address="local", include_dashboard=True, dashboard_host="127.0.0.1",
        dashboard_port=port, num_cpus=8, logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"],
                                  "RAY_USAGE_STATS_ENABLED": "0"}},
    )
    yield {"address": context.address_info["gcs_address"],
           "dashboard": f"http://{context.dashboard_url}"}
    ray.shutdown()


def _kill_namespace(namespace: str) -> None:
    wanted = ray_namespace(namespace)
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == wanted:
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=wanted), no_restart=True)
            except ValueError:
                pass


@pytest.fixture
def namespace(request: pytest.FixtureRequest, ray_cluster: dict[str, Any]) -> Iterator[str]:
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40] + "-" + uuid.uuid4().hex[:6]
    yield name
    _kill_namespace(name)


@pytest.fixture
def storage(tmp_path: Any) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def client(namespace: str, storage: str) -> Iterator[rayline.Client]:
    c = rayline.Client(storage=storage, namespace=namespace)
    yield c
    c.close()


@pytest.fixture
def marks(tmp_path: Any) -> str:
    """A folder where activities leave one file per execution (to count them)."""
    folder = tmp_path / "marks"
    folder.mkdir()
    return str(folder)


def host_actor(namespace: str, name: str) -> Any:
    return ray.get_actor(name, namespace=ray_namespace(namespace))


def run_phase(script: Any, *args: str) -> dict[str, Any]:
    """Runs one phase of a whole-Ray-restart script (with a Ray of its own, not the
    session's) and returns the JSON its last line printed."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                         text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
