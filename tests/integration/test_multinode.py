"""Several Ray nodes on this machine (ray.cluster_utils.Cluster), in a process of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray.cluster_utils import Cluster
    storage, marks = sys.argv[1:3]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False})
    doomed = cluster.add_node(num_cpus=2)
    gpu_node = cluster.add_node(num_cpus=2, resources={"gpu_like": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    import rayline
    from tests.integration import wf
    c = rayline.Client(address=cluster.address, storage=storage, namespace="multi")
    worker = rayline.Worker.create(c, task_queue="spread", hosts=3)
    ns = "rayline-multi"
    def node_of(name):
        actor = ray.get_actor(name, namespace=ns)
        return ray.get(actor.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()))
    host_nodes = {name: node_of(name) for name in worker.hosts}
    handles = [c.workflow.start(wf.five_steps, args=[marks, 0.2], task_queue="spread",
                                workflow_id=f"m{i}") for i in range(12)]
    time.sleep(0.5)
    cluster.remove_node(doomed)  # hosts, runners and tasks on it die mid-run
    results = [h.result(timeout=120) for h in handles]
    ran_on = c.workflow.execute(wf.uses_resource, args=[1], task_queue="spread")
    print(json.dumps({
        "results": results, "host_nodes": sorted(set(host_nodes.values())),
        "doomed": doomed.node_id, "resource_node": ran_on, "gpu_node": gpu_node.node_id,
    }))
    ray.shutdown()
    cluster.shutdown()
""")


@pytest.mark.slow
def test_hosts_spread_over_nodes_survive_a_node_loss_and_resources_place_activities(
        tmp_path: Any) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "multi.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), str(marks)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["results"] == [[2, 11, 101, 115, 116]] * 12
    assert report["resource_node"] == report["gpu_node"]
    # hosts are created with SPREAD; Ray treats it as a preference, so it is reported only
    print("host pool on nodes:", report["host_nodes"])
