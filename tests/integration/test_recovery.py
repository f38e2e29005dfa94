"""Surviving the registry's death and a whole Ray restart (same storage, new cluster)."""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

import ray

import rayline

from . import wf
from .conftest import host_actor, run_phase
from .test_foundation import wait_until


def test_registry_crash_loses_nothing(client: rayline.Client, namespace: str,
                                      marks: str) -> None:
    handle = client.workflow.start(wf.tracked, args=[marks], workflow_id="survivor")
    wait_until(lambda: handle.query_state(["step"]) == {"step": 1})
    registry = host_actor(namespace, "registry")
    ray.kill(registry, no_restart=False)
    # a fresh handle needs the registry to find the workflow: it comes back and rebuilds
    again = client.workflow.get_handle("survivor")
    again.signal("finish")
    assert handle.result(timeout=60) == 1
    wait_until(lambda: [r.state for r in client.workflow.list()
                        if r.workflow_id == "survivor"] == ["completed"])


RESTART_SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    ray.init(address="local", include_dashboard=False, num_cpus=2, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}})
    import rayline
    from tests.integration import wf
    phase, storage, namespace, marks = sys.argv[1:5]
    if phase == "before":
        c = rayline.Client(storage=storage, namespace=namespace)
        for i in range(3):
            c.workflow.start(wf.nap, args=[1.5], workflow_id=f"nap-{i}")
            c.workflow.start(wf.step_then_fan_in, args=[marks], workflow_id=f"fan-{i}")
        deadline = time.time() + 60
        while wf.count(marks, "before-wait") < 3 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        print(json.dumps({"started": 6}))
    else:
        clients = []
        def connect():
            clients.append(rayline.Client(storage=storage, namespace=namespace))
        threads = [threading.Thread(target=connect) for _ in range(2)]
        for t in threads: t.start()
        for t in threads: t.join()
        c = clients[0]
        out = {}
        for i in range(3):
            h = c.workflow.get_handle(f"fan-{i}")
            h.signal("a", i)
            clients[1].workflow.signal(f"fan-{i}", "b", -i)
            out[f"fan-{i}"] = h.result(timeout=60)
            out[f"nap-{i}"] = c.workflow.get_handle(f"nap-{i}").result(timeout=60)
        print(json.dumps(out))
    ray.shutdown()
""")


def test_whole_ray_restart_resumes_every_unfinished_workflow(tmp_path: Any) -> None:
    storage, marks = str(tmp_path / "store"), str(tmp_path / "marks")
    os.makedirs(marks)
    script = tmp_path / "restart.py"
    script.write_text(RESTART_SCRIPT)

    def phase(name: str) -> dict[str, Any]:
        return run_phase(script, name, storage, "restart", marks)

    assert phase("before") == {"started": 6}  # that Ray is gone when the process exits
    results = phase("after")  # a new cluster on the same storage; the naps came due meanwhile
    assert results == {**{f"fan-{i}": [i, -i] for i in range(3)},
                       **{f"nap-{i}": 1.5 for i in range(3)}}
    assert wf.count(marks, "before-wait") == 3  # recorded results are not run again


def test_cli_resume_and_list(client: rayline.Client, namespace: str, storage: str,
                             capsys: Any) -> None:
    from rayline.actors._cli import main

    client.workflow.execute(wf.add_one, args=[1], workflow_id="listed")
    assert main(["resume", "--storage", storage, "--namespace", namespace]) == 0
    wait_until(lambda: any(r.workflow_id == "listed" for r in client.workflow.list()))
    assert main(["list", "--json", "--storage", storage, "--namespace", namespace]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    assert [r["workflow_id"] for r in lines] == ["listed"]
