"""The ``rayline`` command, run as a subprocess against the session's live Ray: start a
workflow by name, list, show, signal, result, export as JSON; a bad id and a missing
cluster are one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

import ray

import rayline

from . import wf


def _cli(*args: str, address: str, storage: str, namespace: str,
         ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "rayline.actors._cli", *args, "--address", address,
         "--storage", storage, "--namespace", namespace],
        capture_output=True, text=True, timeout=120, env=env)
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_cli_starts_signals_shows_exports_and_gets_a_result(
        client: rayline.Client, ray_cluster: dict[str, Any], storage: str,
        namespace: str, capsys: Any) -> None:
    from rayline.actors._cli import main

    rayline.Worker.create(client, task_queue="cli", workflows=[wf.wait_once])
    where = {"address": ray_cluster["address"], "storage": storage, "namespace": namespace}
    started = _cli("workflow", "start", "wait_once", "--id", "by-cli", "--queue", "cli",
                   "--args", "[null]", **where)  # a process of its own, as people run it
    assert json.loads(started.stdout.splitlines()[-1]) == {"workflow_id": "by-cli"}

    def cli(*args: str) -> str:  # more commands in this process (each one is quick)
        capsys.readouterr()
        assert main([*args, "--storage", storage, "--namespace", namespace]) == 0
        return capsys.readouterr().out  # type: ignore[no-any-return]

    def run(*args: str) -> str:  # as people run it: a process of its own
        return _cli(*args, **where).stdout

    shown = run("workflow", "show", "by-cli")
    assert "state     running" in shown and "waits on  wait 'go'" in shown
    timeline = shown[shown.index("timeline"):].splitlines()
    assert any(row.split()[:4] == ["-wait-1-", "signal", "go"] or
               ("-wait-1-" in row and "running" in row) for row in timeline), shown
    listed = [json.loads(line) for line in run("list", "--json").splitlines()]
    assert [(r["workflow_id"], r["state"]) for r in listed] == [("by-cli", "running")]
    table = cli("workflow", "list").splitlines()  # for people: a table
    assert table[0].split()[:3] == ["WORKFLOW", "NAME", "STATE"]
    assert table[1].split()[:3] == ["by-cli", "wait_once", "running"]
    run("workflow", "signal", "by-cli", "go", "--data", '{"approved": true}')
    result = run("workflow", "result", "by-cli", "--timeout", "60")
    assert json.loads(result.splitlines()[-1]) == {"approved": True}
    exported = json.loads(run("workflow", "export", "by-cli", "--json"))
    assert exported["status"] == 0 and exported["state"]["response"] == {"approved": True}
    events = json.loads(cli("workflow", "export", "by-cli", "--execution"))
    assert events["events"][0]["event_type"] == "workflow_execution_started"
    history = [json.loads(line)["event_type"] for line in
               cli("workflow", "history", "by-cli", "--json").splitlines()]
    assert history[-2:] == ["workflow_execution_signaled", "workflow_execution_completed"]
    assert "workflow_execution_signaled" in cli("workflow", "history", "by-cli")
    deadline = time.monotonic() + 30
    while True:  # the index follows the host's report of the close
        recent = cli("list", "--json", "--name", "wait_once", "--started-after",
                     "2020-01-01T00:00:00", "--closed-after", "2020-01-01")
        if recent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [json.loads(line)["workflow_id"] for line in recent.splitlines()] == ["by-cli"]
    assert cli("list", "--json", "--started-before", "2020-01-01T00:00:00") == ""
    assert json.loads(cli("count", "--json", "--group-by", "status")) == {
        "count": 1, "groups": {"completed": 1}}
    status = json.loads(cli("status", "--json"))
    assert status["workflows"] == {"total": 1, "completed": 1}
    assert [h["host"] for h in status["hosts"] if h["host"].startswith("host-cli-")]

    # the host's numbers reach Ray's metrics agent (what Prometheus scrapes)
    closed = _metric_lines("ray_rayline_runs_closed_total", 'status="completed"',
                           'host="host-cli-')
    assert sum(float(line.rsplit(" ", 1)[1]) for line in closed) == 1
    live = _metric_lines("ray_rayline_host_runs", 'state="live"', 'host="host-cli-')
    assert live and all(line.rsplit(" ", 1)[1] in ("0", "0.0") for line in live)


def _metric_lines(name: str, *having: str) -> list[str]:
    """The session Ray's metrics (its node's agent, as Prometheus scrapes it) named
    ``name`` with every tag in ``having``, once there are some (they are sent every few
    seconds)."""
    port = ray.nodes()[0]["MetricsExportPort"]
    deadline = time.monotonic() + 90
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        found = [line for line in text.decode().splitlines()
                 if line.startswith(name + "{") and all(tag in line for tag in having)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def test_a_bad_id_and_a_missing_cluster_are_one_line_errors(
        ray_cluster: dict[str, Any], storage: str, namespace: str, capsys: Any) -> None:
    from rayline.actors._cli import main

    capsys.readouterr()
    assert main(["workflow", "show", "no-such-id", "--storage", storage,
                 "--namespace", namespace]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "rayline: error: WorkflowNotFoundError: workflow 'no-such-id' not found"]
    assert main(["list", "--search", "score~1", "--storage", storage,
                 "--namespace", namespace]) == 2
    assert "--search 'score~1': write FIELD<OP>VALUE" in capsys.readouterr().err
    for wrong, says in ((["workflow", "start", "x", "--args", "[1,"], "--args is not JSON"),
                        (["workflow", "show"], "Missing argument 'WORKFLOW_ID'"),
                        (["workflow", "nope"], "No such command 'nope'")):
        assert main([*wrong, "--storage", storage, "--namespace", namespace]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rayline: error: ") and says in err[0]
    where = {"address": ray_cluster["address"], "storage": storage, "namespace": namespace}

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = _cli("list", ok=False, **{**where, "address": f"127.0.0.1:{port}"})
    assert nobody.returncode == 2
    assert nobody.stderr.strip().splitlines()[-1].startswith(
        "rayline: error: ClusterUnavailableError: no Ray cluster answers at 127.0.0.1:")
