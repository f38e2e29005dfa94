"""The host pool follows the cluster (ray.cluster_utils.Cluster, in a process of its
own): spread over the nodes with no setup, growing onto a node that joins (parked runs
move there), draining a node before it goes (by hand, or when Ray drains it), and
growing and shrinking under a steady stream of starts and signals. Nothing is lost;
each run wakes and each signal is taken once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray.cluster_utils import Cluster
    storage, marks, parked_count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "include_dashboard": False})
    labelled = {"rayline-test": "orchestration"}
    labelled_node = cluster.add_node(num_cpus=4, labels=labelled)
    cluster.add_node(num_cpus=4)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", runtime_env={"env_vars": {
        "PYTHONPATH": os.environ["PYTHONPATH"], "RAYLINE_SCALE_EVERY": "1",
        "RAYLINE_PARK_AFTER": "0.5"}})
    import rayline
    from tests.integration import wf
    c = rayline.Client(address=cluster.address, storage=storage, namespace="elastic")
    out = {}

    def until(predicate, what, timeout=180):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, (what, [
                (s.host, s.node, s.parked, s.running) for s in c.hosts()])
            time.sleep(0.2)

    def answered(ids):  # signals each run: did each end with its id; its step counts
        for w in ids:
            c.workflow.get_handle(w).signal("go", w)
        ok = [c.workflow.get_handle(w).result(timeout=180) for w in ids] == ids
        return ok, sorted({wf.count(marks, w) for w in ids})

    def nodes_of_runs(ids):
        node_of = {s.host: s.node for s in c.hosts()}
        return {node_of[c.workflow.get_handle(i).describe().host] for i in ids}

    # 1. no Worker.create: the default queue has a host per node
    ids = [f"s{i}" for i in range(200)]
    handles = [c.workflow.start(wf.add_one, args=[i], workflow_id=w) for i, w in enumerate(ids)]
    out["spread_results_ok"] = [h.result(timeout=120) for h in handles] == list(range(1, 201))
    out["spread_nodes"] = len(nodes_of_runs(ids))

    # 2. parked runs; a node joins: the pool grows there and some of them move to it
    parked = [f"p{i}" for i in range(parked_count)]
    for i, w in enumerate(parked):  # odd ones wake on their timer, even ones on a signal
        c.workflow.start(wf.wakes_once, args=[marks, w, 30.0 if i % 2 else None],
                         workflow_id=w)
    until(lambda: sum(s.parked for s in c.hosts()) == parked_count, "not all parked")
    joined = cluster.add_node(num_cpus=4)
    until(lambda: any(s.node == joined.node_id and s.parked + s.running > 0
                      for s in c.hosts()), "nothing moved to the new node")
    out["moved_to_new_node"] = sum(s.parked + s.running for s in c.hosts()
                                   if s.node == joined.node_id)
    for i, w in enumerate(parked):
        if i % 2 == 0:
            c.workflow.get_handle(w).signal("go", i)
    results = [c.workflow.get_handle(w).result(timeout=180) for w in parked]
    expected = [False if i % 2 else i for i in range(parked_count)]  # False: timed out
    out["parked_wrong"] = [(w, r) for w, r, e in zip(parked, results, expected) if r != e][:5]
    out["parked_marks"] = sorted({wf.count(marks, w) for w in parked})

    # 3. drain the joined node, then take it away: its runs moved first
    waiting = [f"d{i}" for i in range(60)]
    for w in waiting:
        c.workflow.start(wf.wakes_once, args=[marks, w, None], workflow_id=w)
    until(lambda: any(s.node == joined.node_id and s.parked + s.running > 0
                      for s in c.hosts()), "no run on the node to drain")
    reports = c.drain_node(joined.node_id)
    out["drained"] = [(len(r.moved), r.left, r.retired) for r in reports]
    out["left_on_drained_node"] = [s.host for s in c.hosts() if s.node == joined.node_id]
    cluster.remove_node(joined)
    out["drain_results_ok"], out["drain_marks"] = answered(waiting)

    # 3b. Ray drains a node (as the autoscaler or a preemption notice does): the
    # registry notices, and the node's hosts empty before it goes
    noticed = cluster.add_node(num_cpus=4)
    until(lambda: any(s.node == noticed.node_id for s in c.hosts()), "no host on the node")
    notice = [f"n{i}" for i in range(60)]
    for w in notice:
        c.workflow.start(wf.wakes_once, args=[marks, w, None], workflow_id=w)
    until(lambda: any(s.node == noticed.node_id and s.parked + s.running > 0
                      for s in c.hosts()), "no run on the node Ray drains")
    from ray.core.generated import autoscaler_pb2
    accepted, why = ray._raylet.GcsClient(address=cluster.address).drain_node(
        noticed.node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
        "rayline test", int(time.time() * 1000) + 120_000)
    out["ray_drain_accepted"] = (accepted, why)
    until(lambda: not any(s.node == noticed.node_id for s in c.hosts()),
          "the hosts of the node Ray drains did not go")
    cluster.remove_node(noticed)
    out["notice_results_ok"], out["notice_marks"] = answered(notice)

    # 4. a fixed pool grows from 1 to 3 hosts and back to 1 under a stream of starts
    # and signals
    rayline.Worker.create(c, task_queue="tide", hosts=1)
    stop, started, errors = threading.Event(), [], []

    def stream():
        i = 0
        while not stop.is_set():
            try:
                w = f"t{i}"
                h = c.workflow.start(wf.wakes_once, args=[marks, w, None], workflow_id=w,
                                     task_queue="tide")
                started.append(w)
                if i >= 2:  # signal one started earlier (running, parked or moved)
                    c.workflow.get_handle(f"t{i - 2}").signal("go", i - 2)
                i += 1
            except Exception as exc:
                errors.append(repr(exc))
                return
            time.sleep(0.02)

    streamer = threading.Thread(target=stream)
    streamer.start()
    time.sleep(2)
    grown = rayline.Worker.create(c, task_queue="tide", hosts=3).hosts
    time.sleep(3)
    rayline.Worker.create(c, task_queue="tide", hosts=1)
    until(lambda: len([s for s in c.hosts() if s.host.startswith("host-tide")]) == 1,
          "the pool did not shrink back to one host")
    time.sleep(2)
    stop.set()
    streamer.join()
    for w in started[-2:]:
        c.workflow.get_handle(w).signal("go", int(w[1:]))
    tide = [c.workflow.get_handle(w).result(timeout=180) for w in started]
    out["tide"] = {"grown": len(grown), "started": len(started), "errors": errors,
                   "results_ok": tide == [int(w[1:]) for w in started],
                   "marks": sorted({wf.count(marks, w) for w in started})}

    # 5. a queue kept on the nodes with given labels
    rayline.Worker.create(c, task_queue="pinned", node_labels=labelled)
    pinned = [c.workflow.start(wf.add_one, args=[i], workflow_id=f"pin{i}",
                               task_queue="pinned") for i in range(20)]
    out["pinned_ok"] = [h.result(timeout=120) for h in pinned] == list(range(1, 21))
    node_of = {s.host: s.node for s in c.hosts()}
    out["pinned_nodes"] = sorted({node_of[h.describe().host] for h in pinned})
    out["labelled_node"] = labelled_node.node_id
    try:
        rayline.Worker.create(c, task_queue="nowhere", node_labels={"rayline-test": "no"})
    except rayline.InvalidInputError as exc:
        out["no_such_labels"] = str(exc)
    ray.shutdown()
    cluster.shutdown()
    print(json.dumps(out))
""")


def _run(script: Any, *args: Any) -> dict[str, Any]:
    """Runs ``script`` in a process of its own (its own Ray cluster); its last line."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, str(script), *map(str, args)],
                         capture_output=True, text=True, timeout=850, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_pool_follows_the_cluster_and_moves_runs_without_losing_one(
        tmp_path: Any) -> None:
    (tmp_path / "marks").mkdir()
    (tmp_path / "elastic.py").write_text(SCRIPT)
    report = _run(tmp_path / "elastic.py", tmp_path / "store", tmp_path / "marks", 1000)
    assert report["spread_results_ok"] and report["spread_nodes"] >= 2
    assert report["moved_to_new_node"] > 0
    assert report["parked_wrong"] == [] and report["parked_marks"] == [1]  # each woke once
    assert report["drained"] and all(left == {} and retired
                                     for _, left, retired in report["drained"])
    assert report["left_on_drained_node"] == []
    assert report["drain_results_ok"] and report["drain_marks"] == [1]
    assert report["ray_drain_accepted"][0]
    assert report["notice_results_ok"] and report["notice_marks"] == [1]
    tide = report["tide"]
    assert tide["grown"] == 3 and tide["errors"] == [] and tide["started"] > 20
    assert tide["results_ok"] and tide["marks"] == [1]
    assert report["pinned_ok"] and report["pinned_nodes"] == [report["labelled_node"]]
    assert "no alive node has the labels" in report["no_such_labels"]
