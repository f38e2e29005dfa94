"""Code versions on a real Ray: each driver's runs use its own code, however many drivers
and projects share the cluster, and a run keeps the code it started with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import rayline

from .conftest import host_actor
from .test_foundation import wait_until

DRIVER = os.path.join(os.path.dirname(__file__), "version_driver.py")
MODULE = '''
import rayline
from rayline import workflow

VERSION = "{version}"


@rayline.activity
def act() -> str:
    return "act-" + VERSION


@rayline.workflow
async def versioned(wait: bool) -> str:
    if wait:
        await workflow.condition("go")
    return "wf-" + VERSION + "/" + await workflow.execute_activity(act)
'''


def _write(folder: Any, module: str, version: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(MODULE.format(version=version))


def _drive(cwd: Any, ray_cluster: dict[str, Any], storage: str, namespace: str,
           module: str, *args: str, working_dir: bool = False,
           start_version: str | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("DRIVER_WORKING_DIR", None)
    env.pop("DRIVER_START_VERSION", None)
    if working_dir:
        env["DRIVER_WORKING_DIR"] = str(cwd)
    if start_version:
        env["DRIVER_START_VERSION"] = start_version
    return subprocess.Popen(
        [sys.executable, DRIVER, ray_cluster["address"], storage, namespace, module, *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _output(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_changed_module_runs_as_a_new_version_while_old_runs_finish_on_old_code(
        client: rayline.Client, ray_cluster: dict[str, Any], storage: str, namespace: str,
        tmp_path: Any, capsys: Any) -> None:
    from rayline.actors._cli import main

    project = tmp_path / "project"
    _write(project, "wfmod", "v1")
    old = _output(_drive(project, ray_cluster, storage, namespace, "wfmod", "wait", "old"))
    waiting = client.workflow.get_handle("old")
    wait_until(lambda: [p.kind for p in waiting.describe().pending] == ["wait"])

    _write(project, "wfmod", "v2")  # edited; a new driver process starts it again
    new = _output(_drive(project, ray_cluster, storage, namespace, "wfmod", "run"))
    assert new["result"] == "wf-v2/act-v2"
    assert new["version"] != old["version"]

    def versions() -> dict[str | None, tuple[dict[str, int], list[str]]]:
        return {v.id: (v.runs, v.hosts) for v in client.versions()}

    wait_until(lambda: versions().get(new["version"], ({}, []))[0] == {"completed": 1})
    assert versions() == {old["version"]: ({"running": 1}, [waiting.describe().host]),
                          new["version"]: ({"completed": 1}, [])}
    main(["versions", "--json", "--storage", storage, "--namespace", namespace])
    listed_versions = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(listed_versions) == sorted([old["version"], new["version"]])

    waiting.signal("go", None)
    assert waiting.result() == "wf-v1/act-v1"  # finished on the code it started with
    old_host = waiting.describe().host
    capsys.readouterr()

    def retired() -> str:
        main(["retire", "--storage", storage, "--namespace", namespace])
        return capsys.readouterr().out

    # the older version's host has no run left once the closed run has left its memory
    wait_until(lambda: old_host in retired())
    with pytest.raises(ValueError):
        host_actor(namespace, old_host)
    assert client.workflow.get_handle("old").result() == "wf-v1/act-v1"  # started again
    described = waiting.describe()
    assert described.version == old["version"] and old["version"] in described.host
    listed = {s.workflow_id: s.version for s in client.workflow.list()}
    assert listed["old"] == old["version"]


UPGRADABLE = MODULE.replace("async def versioned(wait: bool) -> str:\n", """\
async def versioned(wait: bool, early: bool = False) -> str:
    if early:  # version 2 calls another activity here, without workflow.patched()
        await workflow.execute_activity({early})
""") + """

@rayline.activity
def other() -> str:
    return "other"
"""


def test_an_upgrade_moves_the_runs_that_replay_on_the_new_code_and_says_why_not_others(
        client: rayline.Client, ray_cluster: dict[str, Any], storage: str, namespace: str,
        tmp_path: Any, capsys: Any) -> None:
    from rayline.actors._cli import main

    project = tmp_path / "project"
    project.mkdir()

    def write(version: str) -> None:
        early = "act" if version == "v1" else "other"
        (project / "upmod.py").write_text(UPGRADABLE.format(version=version, early=early))

    write("v1")
    old = [_output(_drive(project, ray_cluster, storage, namespace, "upmod", action, name,
                          working_dir=True))["version"]
           for action, name in (("wait", "same"), ("wait-early", "early"))]
    assert old[0] == old[1]
    handles = {name: client.workflow.get_handle(name) for name in ("same", "early")}
    for handle in handles.values():
        wait_until(lambda h=handle: [p.kind for p in h.describe().pending] == ["wait"])
    write("v2")
    new = _output(_drive(project, ray_cluster, storage, namespace, "upmod", "run",
                         working_dir=True))
    assert new["result"] == "wf-v2/act-v2" and new["version"] != old[0]

    report = client.upgrade(old[0], new["version"])
    assert report.moved == ["same"]
    assert "NonDeterminismError" in report.left["early"]  # it would not replay: it stays
    moved, stayed = handles["same"].describe(), handles["early"].describe()
    assert moved.version == new["version"] and new["version"] in moved.host
    assert stayed.version == old[0] and old[0] in stayed.host
    listed = {s.workflow_id: s.version for s in client.workflow.list()}
    assert (listed["same"], listed["early"]) == (new["version"], old[0])
    exported = handles["same"].export_execution()
    assert exported.version == new["version"]
    assert "workflow_execution_moved" in [e.event_type for e in exported.events]

    capsys.readouterr()
    assert main(["versions", "upgrade", old[0], new["version"], "--storage", storage,
                 "--namespace", namespace]) == 1  # the one left is still left
    printed = json.loads(capsys.readouterr().out)
    assert printed["moved"] == [] and list(printed["left"]) == ["early"]

    pinned = _output(_drive(project, ray_cluster, storage, namespace, "upmod", "run",
                            working_dir=True, start_version=old[0]))
    assert pinned == {"version": old[0], "result": "wf-v1/act-v1"}  # v2's driver, v1's code

    for handle in handles.values():
        handle.signal("go", None)
    assert handles["same"].result() == "wf-v2/act-v2"  # the rest of it ran the new code
    assert handles["early"].result() == "wf-v1/act-v1"  # all of it ran the old code


PATCHED = MODULE.replace('''    if wait:
        await workflow.condition("go")
    return "wf-" + VERSION + "/" + await workflow.execute_activity(act)
''', """    first = {first}
    if wait:
        await workflow.condition("go")
    return "wf-" + VERSION + "/" + first


@rayline.activity
def other() -> str:
    return "other"


async def _old() -> str:
    return await workflow.execute_activity(act)


async def _new() -> str:
    return await workflow.execute_activity(other)


async def _patched() -> str:
    return await (_new() if workflow.patched("other-first") else _old())


async def _deprecated() -> str:
    workflow.deprecate_patch("other-first")
    return await _new()
""")


def test_patched_code_replays_old_runs_on_the_old_branch_and_deprecate_patch_drops_it(
        client: rayline.Client, ray_cluster: dict[str, Any], storage: str, namespace: str,
        tmp_path: Any) -> None:
    project = tmp_path / "project"
    project.mkdir()

    def deploy(version: str, first: str, *args: str) -> dict[str, Any]:
        (project / "patchmod.py").write_text(PATCHED.format(version=version, first=first))
        return _output(_drive(project, ray_cluster, storage, namespace, "patchmod", *args,
                              working_dir=True))

    v1 = deploy("v1", "await _old()", "wait", "old")["version"]  # act ran, then waits
    v2 = deploy("v2", "await _patched()", "wait", "mid")["version"]  # records the patch
    handles = {name: client.workflow.get_handle(name) for name in ("old", "mid")}
    for handle in handles.values():
        wait_until(lambda h=handle: [p.kind for p in h.describe().pending] == ["wait"])
    assert client.upgrade(v1, v2).moved == ["old"]  # replays on the old branch
    v3 = deploy("v3", "await _deprecated()", "run")
    assert v3["result"] == "wf-v3/other"
    report = client.upgrade(v2, v3["version"])
    assert report.moved == ["mid"]  # it recorded the patch: replays without the old branch
    assert "NonDeterminismError" in report.left["old"]  # it took the old branch: stays
    for handle in handles.values():
        handle.signal("go", None)
    assert handles["old"].result() == "wf-v2/act-v1"
    assert handles["mid"].result() == "wf-v3/other"


def test_two_jobs_with_their_own_working_dirs_run_their_workflows_side_by_side(
        ray_cluster: dict[str, Any], storage: str, namespace: str, tmp_path: Any) -> None:
    _write(tmp_path / "a", "moda", "a")
    _write(tmp_path / "b", "modb", "b")  # neither job has the other's module
    jobs = [_drive(tmp_path / name, ray_cluster, storage, namespace, f"mod{name}", "run",
                   working_dir=True) for name in ("a", "b")]
    a, b = (_output(job) for job in jobs)
    assert (a["result"], b["result"]) == ("wf-a/act-a", "wf-b/act-b")
    assert a["version"].startswith("env-") and a["version"] != b["version"]


RESTART = textwrap.dedent("""
    import json, os, subprocess, sys
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster
    driver, storage, root = sys.argv[1:4]

    def drive(address, cwd, *args, working_dir=False):
        env = {k: v for k, v in os.environ.items() if k != "DRIVER_WORKING_DIR"}
        if working_dir:
            env["DRIVER_WORKING_DIR"] = cwd
        out = subprocess.run([sys.executable, driver, address, storage, "restart", *args],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False})
    versions = {name: drive(cluster.address, os.path.join(root, name), f"mod{name}",
                            "wait", f"r{name}", working_dir=True)["version"]
                for name in ("a", "b")}
    cluster.shutdown()  # the whole cluster goes, and with it the packages Ray had
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False})
    results = drive(cluster.address, root, "-", "finish", "ra", "rb")
    cluster.shutdown()
    print(json.dumps({"versions": versions, "results": results}))
""")


def test_after_a_whole_ray_restart_runs_of_two_versions_resume_on_their_own_code(
        tmp_path: Any) -> None:
    _write(tmp_path / "a", "moda", "a")
    _write(tmp_path / "b", "modb", "b")
    script = tmp_path / "restart.py"
    script.write_text(RESTART)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, str(script), DRIVER, str(tmp_path / "store"),
                          str(tmp_path)], capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["results"] == {"ra": "wf-a/act-a", "rb": "wf-b/act-b"}
    assert report["versions"]["a"] != report["versions"]["b"]


@pytest.mark.timeout(600)  # the job API can take minutes to answer on a busy machine
def test_a_workflow_started_by_a_ray_job_outlives_it_and_another_driver_finishes_it(
        ray_cluster: dict[str, Any], storage: str, namespace: str, tmp_path: Any) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    job_dir = tmp_path / "job"
    _write(job_dir, "modjob", "job")
    shutil.copy(DRIVER, job_dir / "version_driver.py")
    jobs = JobSubmissionClient(ray_cluster["dashboard"])

    deadline = time.monotonic() + 240
    while True:  # the job API answers once the node's agent is up
        try:
            job_id = jobs.submit_job(
                entrypoint=f"{sys.executable} version_driver.py auto {storage} {namespace} "
                           "modjob wait by-job",
                runtime_env={"working_dir": str(job_dir),
                             "env_vars": {"DRIVER_WORKING_DIR": "-"}})
            break
        except (OSError, RuntimeError):  # refused, or "no available agent"
            assert time.monotonic() < deadline, "the job API never took the job"
            time.sleep(1)
    ended = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while jobs.get_job_status(job_id) not in ended:
        assert time.monotonic() < deadline + 240, "the job did not end"
        time.sleep(0.5)
    logs = jobs.get_job_logs(job_id)
    assert jobs.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    started = json.loads(logs.strip().splitlines()[-1])
    assert started["version"].startswith("env-")  # the job's working_dir is its version

    (tmp_path / "other").mkdir()  # a second driver, not a job, with none of the job's code
    finished = _output(_drive(tmp_path / "other", ray_cluster, storage, namespace, "-",
                              "finish", "by-job"))
    assert finished == {"by-job": "wf-job/act-job"}
