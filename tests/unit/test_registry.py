"""The registry over real storage, with hosts started through a recording launcher (the
``Launcher`` protocol rayline owns)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from rayline._code import CodeRef
from rayline.actors._cli import status_table  # imports ray: before any host's guards
from rayline.engine.registry import Registry
from rayline.errors import InvalidInputError
from rayline.messages import CodeVersion, HostOptions, HostStats, RunStatus, RunSummary
from rayline.storage import MemoryStore, RunStore


class Launcher:
    def __init__(self, runs: RunStore | None = None) -> None:
        self.runs = runs
        self.node_ids = ["node-0"]
        self.live: dict[str, int] = {}  # runs in memory per host, as its stats say
        self.adopted: list[tuple[str, str, bool]] = []
        self.refuse: dict[str, str] = {}  # workflow id -> why a host will not adopt it
        self.draining: list[str] = []
        self.launched: list[tuple[str, dict[str, CodeRef]]] = []
        self.registered: list[tuple[str, dict[str, CodeRef]]] = []
        self.options: dict[str, HostOptions] = {}
        self.versions: dict[str, CodeVersion | None] = {}
        self.busy: set[str] = set()  # hosts that still hold a run in memory
        self.retired: list[str] = []
        self.loads: dict[str, float] = {}  # event-loop load per host, as its stats say
        self.ray_draining: set[str] = set()  # nodes the cluster is taking away
        self.on_node: dict[str, str] = {}
        self.labels: dict[str, dict[str, str]] = {}  # node -> its labels

    def check(self, task_queue: str, options: HostOptions) -> None:
        if options.memory is not None and options.memory > 2**30:
            raise InvalidInputError("more than any node has")

    async def launch(self, name: str, workflows: dict[str, CodeRef], options: HostOptions,
                     version: CodeVersion | None) -> None:
        self.launched.append((name, workflows))
        self.options[name] = options
        self.versions[name] = version
        self.on_node[name] = options.node or "node-0"

    async def register(self, name: str, workflows: dict[str, CodeRef]) -> None:
        self.registered.append((name, workflows))

    def nodes(self, labels: dict[str, str] | None = None) -> list[str]:
        return [node for node in self.node_ids
                if all(self.labels.get(node, {}).get(k) == v for k, v in (labels or {}).items())]

    def draining_nodes(self) -> set[str]:
        return set(self.ray_draining)

    def avoid(self, nodes: set[str]) -> None:
        self.avoided = set(nodes)

    def host(self, name: str) -> Any:
        return _Host(self, name)

    async def probe(self, name: str) -> HostStats | None:
        if name in self.retired:
            return None
        return await _Host(self, name).stats()

    async def retire(self, name: str) -> bool:
        if name in self.busy:
            return False
        self.retired.append(name)
        return True


class _Host:
    """What the registry asks of a host: adopting a run moves its open marker here (as a
    real host does), unless the launcher says the run refuses."""

    def __init__(self, launcher: Launcher, name: str) -> None:
        self.launcher = launcher
        self.name = name

    async def adopt(self, workflow_id: str, force: bool = False) -> str | None:
        self.launcher.adopted.append((self.name, workflow_id, force))
        why = self.launcher.refuse.get(workflow_id)
        runs = self.launcher.runs
        if why is None and runs is not None:
            for host in runs.open_hosts():
                if workflow_id in dict(runs.open_workflows(host)):
                    runs.clear_open(host, workflow_id)
            runs.mark_open(self.name, workflow_id)
        return why

    async def drain(self) -> None:
        self.launcher.draining.append(self.name)

    async def let_go(self, workflow_id: str) -> None:
        if self.launcher.runs is not None:
            self.launcher.runs.clear_open(self.name, workflow_id)

    async def stats(self) -> HostStats:
        return HostStats(host=self.name, running=self.launcher.live.get(self.name, 0),
                         load=self.launcher.loads.get(self.name, 0.0),
                         draining=self.name in self.launcher.draining,
                         node=self.launcher.on_node.get(self.name, "node-0"))


def _registry(runs: RunStore) -> tuple[Registry, Launcher]:
    launcher = Launcher(runs)
    return Registry(runs, runs.store.url, launcher), launcher


async def drains(registry: Registry) -> None:
    """Waits for the drains the registry runs in the background."""
    while registry._drains:
        await asyncio.gather(*registry._drains.values(), return_exceptions=True)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


@pytest.fixture
def runs() -> RunStore:
    return RunStore(MemoryStore(f"r-{uuid.uuid4().hex}"), "t")


def test_pools_grow_once_and_register_workflows_on_running_hosts(runs: RunStore) -> None:
    async def main() -> None:
        registry, launcher = _registry(runs)
        assert await registry.hosts_for("q") == ["host-q-0"]
        assert await registry.hosts_for("q") == ["host-q-0"]
        assert [name for name, _ in launcher.launched] == ["host-q-0"]
        ref = CodeRef(path="tests.unit.flows:one_step")
        assert await registry.configure("q", 2, {"one": ref}) == ["host-q-0", "host-q-1"]
        assert launcher.registered == [("host-q-0", {"one": ref})]
        assert launcher.launched[-1] == ("host-q-1", {"one": ref})
        with pytest.raises(InvalidInputError, match="positive"):
            await registry.configure("q", 0, {})

    run(main())


def memory(launcher: Launcher) -> dict[str, int | None]:
    return {name: options.memory for name, options in launcher.options.items()}


def test_a_queues_host_memory_is_kept_and_given_to_every_host_it_starts(
        runs: RunStore) -> None:
    async def main() -> None:
        registry, launcher = _registry(runs)
        with pytest.raises(InvalidInputError, match="more than any node"):
            await registry.configure("big", 1, {}, HostOptions(memory=2**40))
        assert runs.get_config("queue:big") is None  # refused before anything was stored
        lean = HostOptions(memory=2**28)
        await registry.configure("lean", 2, {}, lean)
        assert await registry.dedicated_host("solo", "lean") == "host-dedicated-solo"
        assert memory(launcher) == {"host-lean-0": lean.memory, "host-lean-1": lean.memory,
                                    "host-dedicated-solo": lean.memory}
        await registry.configure("lean", 2, {})  # no options given: the memory stays
        runs.mark_open("host-lean-1", "wf")
        fresh, relaunched = _registry(runs)  # a whole-cluster restart
        fresh.start()
        await fresh.ready()
        assert memory(relaunched) == {"host-lean-1": lean.memory}
        assert (await fresh.hosts_for("default")) == ["host-default-0"]
        assert relaunched.options["host-default-0"].memory is None

    run(main())


def test_each_code_version_has_its_own_pool_and_resumes_with_its_own_code(
        runs: RunStore) -> None:
    v1 = CodeVersion(id="v1", runtime_env={"working_dir": "gcs://_ray_pkg_1.zip"})
    v2 = CodeVersion(id="v2", runtime_env={"working_dir": "gcs://_ray_pkg_2.zip"})

    async def main() -> None:
        registry, launcher = _registry(runs)
        assert await registry.hosts_for("q", v1) == ["host-q-v1-0"]
        assert await registry.configure("q", 2, {}, version=v2) == ["host-q-v2-0",
                                                                     "host-q-v2-1"]
        assert await registry.hosts_for("q", v1) == ["host-q-v1-0", "host-q-v1-1"]
        assert await registry.dedicated_host("solo", "q", v2) == "host-dedicated-v2-solo"
        assert launcher.versions == {"host-q-v1-0": v1, "host-q-v2-0": v2, "host-q-v2-1": v2,
                                     "host-q-v1-1": v1, "host-dedicated-v2-solo": v2}
        runs.mark_open("host-q-v1-0", "old")
        runs.mark_open("host-dedicated-v2-solo", "solo")
        fresh, relaunched = _registry(runs)  # a whole-cluster restart: versions from storage
        fresh.start()
        assert (await fresh.ready()).resumed == 2
        assert relaunched.versions == {"host-q-v1-0": v1, "host-dedicated-v2-solo": v2}

    run(main())


def test_a_new_registry_resumes_the_hosts_with_open_runs(runs: RunStore) -> None:
    async def main() -> None:
        registry, _ = _registry(runs)
        await registry.configure("q", 1, {"one": CodeRef(path="m:f")})
        runs.mark_open("host-q-0", "wf")
        fresh, launcher = _registry(runs)  # a whole-cluster restart
        fresh.start()
        assert (await fresh.ready()).resumed == 1
        assert launcher.launched == [("host-q-0", {"one": CodeRef(path="m:f")})]
        with pytest.raises(InvalidInputError, match="unknown host"):
            await fresh.ensure_host("host-nowhere-0")

    run(main())


def test_queue_configs_written_by_earlier_versions_still_load(runs: RunStore) -> None:
    async def main() -> None:
        runs.put_config("queue:old", {"hosts": 1, "workflows": {"f": {"code": "m:f"}}})
        registry, launcher = _registry(runs)
        await registry.hosts_for("old")
        assert launcher.launched == [("host-old-0", {"f": CodeRef(path="m:f")})]

    run(main())


def test_dedicated_hosts_of_long_ids_get_short_names(runs: RunStore) -> None:
    async def main() -> None:
        registry, _ = _registry(runs)
        assert await registry.dedicated_host("solo") == "host-dedicated-solo"
        name = await registry.dedicated_host("job:" + "x" * 400)
        assert name.startswith("host-dedicated-~") and len(name) < 100

    run(main())


def test_locate_by_report_then_by_storage_and_list_by_state(runs: RunStore) -> None:
    async def main() -> None:
        registry, _ = _registry(runs)
        assert await registry.locate_or_none("nobody") is None
        await registry.report([RunSummary(
            workflow_id="a", run_id="r", workflow_name="f", host="host-q-1", task_queue="q",
            status=1, state=RunStatus.STUCK, started_at=1.0)])
        assert await registry.locate("a") == "host-q-1"
        from rayline.messages import ListRequest
        stuck = await registry.list(ListRequest(status=RunStatus.STUCK))
        assert [s.workflow_id for s in stuck.items] == ["a"]

    run(main())


def test_versions_count_runs_per_state_and_name_the_hosts_of_open_ones(
        runs: RunStore) -> None:
    def summary(workflow_id: str, state: RunStatus, version: str | None) -> RunSummary:
        host = f"host-q-{version}-0" if version else "host-q-0"
        return RunSummary(workflow_id=workflow_id, run_id="r", workflow_name="f", host=host,
                          task_queue="q", status=state.code, state=state, started_at=1.0,
                          version=version)

    async def main() -> None:
        registry, _ = _registry(runs)
        await registry.hosts_for("q", CodeVersion(id="v1", runtime_env={"pip": ["x"]}))
        await registry.report([
            summary("a", RunStatus.RUNNING, "v1"), summary("b", RunStatus.COMPLETED, "v1"),
            summary("c", RunStatus.COMPLETED, "v2"), summary("d", RunStatus.STUCK, None)])
        found = {v.id: v for v in await registry.versions()}
        assert {k: (v.runs, v.hosts) for k, v in found.items()} == {
            "v1": ({"running": 1, "completed": 1}, ["host-q-v1-0"]),
            "v2": ({"completed": 1}, []),
            None: ({"stuck": 1}, ["host-q-0"])}
        assert found["v1"].runtime_env == {"pip": ["x"]}  # as the version was stored

    run(main())


def test_idle_hosts_of_older_versions_and_dedicated_hosts_retire(runs: RunStore) -> None:
    async def main() -> None:
        registry, launcher = _registry(runs)
        await registry.hosts_for("legacy")  # unversioned: kept
        await registry.configure("q", 3, {}, version=CodeVersion(id="v1"))
        await registry.hosts_for("q", CodeVersion(id="v2"))  # the newest version of q
        await registry.hosts_for("other", CodeVersion(id="v1"))  # v1 is newest there
        await registry.dedicated_host("solo", "q", CodeVersion(id="v2"))
        runs.mark_open("host-q-v1-0", "parked")  # a run still open in storage
        launcher.busy.add("host-q-v1-1")  # a run still in memory
        assert await registry.retire_idle() == ["host-dedicated-v2-solo", "host-q-v1-2"]
        assert "host-q-v1-2" not in registry.hosts
        assert await registry.hosts_for("q", CodeVersion(id="v1")) == [
            "host-q-v1-0", "host-q-v1-1", "host-q-v1-2"]  # a call starts it again
        assert "host-q-v1-2" in registry.hosts

    run(main())


def test_a_dedicated_host_that_asks_is_stopped_if_it_still_holds_no_run(
        runs: RunStore) -> None:
    async def main() -> None:
        registry, launcher = _registry(runs)
        name = await registry.dedicated_host("solo", "q")
        runs.mark_open(name, "solo")  # a next run of the id, open in storage by then
        assert not await registry.retire(name) and name in registry.hosts
        runs.clear_open(name, "solo")
        launcher.busy.add(name)  # one in the host's memory (starting, say)
        assert not await registry.retire(name) and name in registry.hosts
        launcher.busy.clear()
        assert await registry.retire(name) and name not in registry.hosts
        assert launcher.retired == [name]
        assert await registry.dedicated_host("solo", "q") == name  # a new start
        assert name in registry.hosts and [n for n, _ in launcher.launched].count(name) == 2
        pool = await registry.hosts_for("q")
        assert not await registry.retire(pool[0])  # a pool's host is its pool's
        assert pool[0] in registry.hosts and launcher.retired == [name]
        assert (await registry.stats()).calls["retire"] == 4

    run(main())


def test_an_elastic_pool_has_a_host_per_node_grows_with_nodes_and_load_and_shrinks(
        runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module
    from rayline.engine.registry import LIVE_PER_HOST, SHRINK_AFTER, pick

    monkeypatch.setattr(registry_module, "NODE_SETTLE", 0)

    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1", "n2"]
        assert await registry.hosts_for("q") == ["host-q-0", "host-q-1", "host-q-2"]
        ids = [f"w{i}" for i in range(60)]
        for workflow_id in ids:  # parked where a 3-host pool put them
            runs.mark_open(pick(["host-q-0", "host-q-1", "host-q-2"], workflow_id),
                           workflow_id, parked_until=10**10)

        launcher.node_ids.append("n3")  # a node joins
        assert await registry.scale() == {"added": ["host-q-3"], "drained": []}
        pool = await registry.hosts_for("q")
        assert pool == ["host-q-0", "host-q-1", "host-q-2", "host-q-3"]
        moved = [workflow_id for _, workflow_id, _ in launcher.adopted]
        assert moved and all(pick(pool, w) == "host-q-3" for w in moved)  # only its share
        assert sorted(moved) == sorted(w for w in ids if pick(pool, w) == "host-q-3")
        assert all(pick(pool[:3], w) == pick(pool, w) for w in ids if w not in moved)

        launcher.live = {name: 2 * LIVE_PER_HOST for name in pool}  # many live runs
        assert (await registry.scale())["added"] == ["host-q-4", "host-q-5", "host-q-6",
                                                     "host-q-7"]
        launcher.live, launcher.node_ids = {}, ["n0"]  # load and nodes gone
        for _ in range(SHRINK_AFTER - 1):  # not at once: runs park and wake
            assert await registry.scale() == {"added": [], "drained": []}
        assert await registry.scale() == {"added": [], "drained": ["host-q-7"]}
        await drains(registry)
        monkeypatch.setattr(registry_module, "SHRINK_AFTER", 1)
        for _ in range(6):
            await registry.scale()
            await drains(registry)
        assert await registry.hosts_for("q") == ["host-q-0"]
        assert launcher.retired == [f"host-q-{i}" for i in range(7, 0, -1)]

        launcher.loads = {"host-q-0": 1.0}  # a busy event loop: one more host per 0.6
        assert (await registry.scale())["added"] == ["host-q-1"]
        launcher.loads = {"host-q-0": 0.55}  # one host would just do (0.6 each)
        assert (await registry.scale())["drained"] == []  # too close: it would grow back
        launcher.loads = {"host-q-0": 0.4}
        assert (await registry.scale())["drained"] == ["host-q-1"]
        await drains(registry)

        await registry.configure("fixed", 2, {})  # a fixed pool does not follow
        launcher.node_ids = ["n0", "n1", "n2", "n3"]
        await registry.scale()
        assert await registry.hosts_for("fixed") == ["host-fixed-0", "host-fixed-1"]

    run(main())


def test_draining_a_host_moves_its_runs_to_the_rest_of_its_pool_and_stops_it(
        runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module

    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1"]
        assert await registry.hosts_for("q") == ["host-q-0", "host-q-1"]
        runs.mark_open("host-q-1", "a")
        runs.mark_open("host-q-1", "b", parked_until=10**10)
        report = await registry.drain("host-q-1")
        assert (sorted(report.moved), report.left, report.retired) == (["a", "b"], {}, True)
        assert launcher.draining == ["host-q-1"] and launcher.retired == ["host-q-1"]
        assert await registry.hosts_for("q") == ["host-q-0"]
        assert sorted(w for w, _ in runs.open_workflows("host-q-0")) == ["a", "b"]

        monkeypatch.setattr(registry_module, "DRAIN_WAIT", 0)
        launcher.refuse["b"] = "its timeline does not replay"  # a stuck run cannot move
        report = await registry.drain("host-q-0")  # the last host: replaced first
        assert await registry.hosts_for("q") == ["host-q-1"]
        assert report.moved == ["a"] and report.left == {"b": "its timeline does not replay"}
        assert not report.retired and ("host-q-1", "b", True) in launcher.adopted
        with pytest.raises(InvalidInputError, match="not a host of a pool"):
            await registry.drain("host-nope-0")

    run(main())


def test_pool_bounds_are_kept_and_checked(runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "NODE_SETTLE", 0)

    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1", "n2", "n3"]
        await registry.configure("q", None, {}, HostOptions(min_hosts=2, max_hosts=3))
        assert await registry.hosts_for("q") == ["host-q-0", "host-q-1", "host-q-2"]
        launcher.node_ids = ["n0"]
        for _ in range(2 * registry_module.SHRINK_AFTER):
            await registry.scale()
            await drains(registry)
        assert await registry.hosts_for("q") == ["host-q-0", "host-q-1"]  # min_hosts
        for bad, why in ((HostOptions(min_hosts=0), "min_hosts must be a positive int"),
                         (HostOptions(min_hosts=3, max_hosts=2), "more than max_hosts"),
                         (HostOptions(min_hosts=4), "more than max_hosts")):  # kept: 3
            with pytest.raises(InvalidInputError, match=why):
                await registry.configure("q", None, {}, bad)

    run(main())


def test_a_pool_made_before_pools_were_elastic_is_elastic_unless_sized(
        runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "NODE_SETTLE", 0)

    async def main() -> None:
        runs.put_config("queue:old", {"hosts": 1, "workflows": {}})  # the old default
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1"]
        assert await registry.hosts_for("old") == ["host-old-0", "host-old-1"]
        await registry.configure("one", 1, {})  # said now: fixed
        assert await registry.hosts_for("one") == ["host-one-0"]

    run(main())


def test_a_drain_outlives_its_registry_and_a_drained_host_stays_drained(
        runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "DRAIN_WAIT", 0)

    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1"]
        await registry.hosts_for("q")
        runs.mark_open("host-q-1", "stuck")
        launcher.refuse["stuck"] = "its timeline does not replay"
        first, second = await asyncio.gather(registry.drain("host-q-1"),
                                             registry.drain("host-q-1"))
        assert first == second and first.left and launcher.draining == ["host-q-1"]

        fresh, relaunched = _registry(runs)  # the registry restarts: the drain goes on
        del launcher.refuse["stuck"]
        await fresh.resume_all()
        await drains(fresh)
        assert "host-q-1" in relaunched.draining  # started again, draining
        assert [w for w, _ in runs.open_workflows("host-q-0")] == ["stuck"]
        await fresh.scale()  # it holds nothing now: it goes
        assert "host-q-1" in relaunched.retired and fresh.drained == set()
        await fresh.ensure_host("host-q-0")
        assert await fresh.hosts_for("q") == ["host-q-0"]

        relaunched.retired.clear()  # a client places a start by its old pool: host-q-1
        relaunched.draining.clear()
        await fresh.ensure_host("host-q-1")
        assert relaunched.draining == ["host-q-1"]  # back, but draining
        await fresh.scale()
        assert relaunched.retired == ["host-q-1"] and fresh.drained == set()
        assert await fresh.hosts_for("q") == ["host-q-0"]

    run(main())


def test_nodes_the_cluster_drains_are_drained_and_not_used_again(
        runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "NODE_SETTLE", 0)

    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1"]
        assert await registry.hosts_for("q") == ["host-q-0", "host-q-1"]
        on_n1 = [name for name, node in launcher.on_node.items() if node == "n1"]
        runs.mark_open(on_n1[0], "w", parked_until=10**10)
        launcher.ray_draining = {"n1"}  # the autoscaler takes n1 away
        await registry.scale()
        await drains(registry)
        assert on_n1[0] in launcher.draining and on_n1[0] in launcher.retired
        assert launcher.avoided == {"n1"} and runs.open_hosts() != [on_n1[0]]
        fresh, relaunched = _registry(runs)  # a new registry still avoids n1
        await fresh.resume_all()
        assert relaunched.avoided == {"n1"}

    run(main())


def test_status_shows_the_hosts_of_each_node_with_their_runs_and_load() -> None:
    table = status_table([
        HostStats(host="host-q-1", node="node-b", running=3, parked=10, load=0.25),
        HostStats(host="host-q-0", node="node-a", running=1, stuck=1, draining=True)])
    lines = table.splitlines()
    assert lines[0].split() == ["NODE", "HOST", "LIVE", "PARKED", "STUCK", "LOAD"]
    assert lines[1].split() == ["node-a", "host-q-0", "1", "0", "1", "0%", "draining"]
    assert lines[2].split() == ["node-b", "host-q-1", "3", "10", "0", "25%"]
    assert lines[3].split() == ["2", "node(s)", "2", "host(s)", "4", "10", "1"]


def test_a_queue_with_node_labels_counts_and_uses_only_those_nodes(
        runs: RunStore, monkeypatch: Any) -> None:
    from rayline.engine import registry as registry_module

    monkeypatch.setattr(registry_module, "NODE_SETTLE", 0)

    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["gpu-0", "gpu-1", "cpu-0", "cpu-1", "cpu-2"]
        launcher.labels = {n: {"kind": n.split("-")[0]} for n in launcher.node_ids}
        cpu = {"kind": "cpu"}
        await registry.configure("orch", None, {}, HostOptions(node_labels=cpu))
        pool = await registry.hosts_for("orch")
        assert len(pool) == 3  # a host per node with the labels, not per node
        assert {launcher.on_node[name] for name in pool} == {"cpu-0", "cpu-1", "cpu-2"}
        assert all(launcher.options[name].node_labels == cpu for name in pool)
        launcher.node_ids.append("gpu-2")  # a node without the labels joins: no growth
        assert (await registry.scale())["added"] == []
        with pytest.raises(InvalidInputError, match="at least one label"):
            await registry.configure("orch", None, {}, HostOptions(node_labels={}))

    run(main())


def test_a_drain_clears_the_marker_of_a_run_that_closed_elsewhere(runs: RunStore) -> None:
    async def main() -> None:
        registry, launcher = _registry(runs)
        launcher.node_ids = ["n0", "n1"]
        await registry.hosts_for("q")
        runs.mark_open("host-q-1", "done-elsewhere", parked_until=float("inf"))
        launcher.refuse["done-elsewhere"] = "it has closed"  # its marker here is stale
        report = await registry.drain("host-q-1")
        assert (report.moved, report.left, report.retired) == ([], {}, True)
        assert runs.open_workflows("host-q-1") == []

    run(main())
