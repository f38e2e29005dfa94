"""The deploy files people copy: cluster.yaml checked by Ray's own cluster-launcher
validation (the schema Ray's autoscaler ships), the KubeRay manifests parsed and checked
for what rayline needs from them."""

from __future__ import annotations

import copy
import glob
import os
import re
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(path: str) -> Any:
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_rays_validation_and_gives_every_node_the_storage() -> None:
    config = _load("cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))  # as `ray up` does
    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["node_confg"] = {}  # a typo is caught
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))

    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2
    storages = {re.search(r"RAYLINE_STORAGE=(\S+)", c).group(1)  # type: ignore[union-attr]
                for c in ray_starts}
    assert len(storages) == 1 and storages.pop().startswith("s3://")
    assert any("rayline[s3]" in c for c in config["setup_commands"])


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy", "kuberay", "*.yaml"))):
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return pod_template["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def test_kuberay_manifests_make_a_fault_tolerant_cluster_and_a_job_on_it() -> None:
    docs = _manifests()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(doc), doc.get("kind")
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert sorted(by_kind) == ["Deployment", "RayCluster", "RayJob", "Service"]
    (cluster,), (job,) = by_kind["RayCluster"], by_kind["RayJob"]
    assert cluster["apiVersion"] == job["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__  # the Ray rayline pins

    # GCS fault tolerance: the Redis address is the Service the manifests create
    host, port = spec["gcsFaultToleranceOptions"]["redisAddress"].split(":")
    (service,) = by_kind["Service"]
    assert service["metadata"]["name"] == host
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]

    # every node of the cluster has the same storage and the rayline image
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    containers = [c for group in groups for c in _containers(group)]
    storages = {e["value"] for c in containers for e in c["env"]
                if e["name"] == "RAYLINE_STORAGE"}
    assert len(storages) == 1 and storages.pop().startswith("s3://")
    assert all(any(e["name"] == "RAYLINE_STORAGE" for e in c["env"]) for c in containers)
    assert {c["image"] for c in containers} == {"rayline:0.1.0"}
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]

    # the job goes to that cluster (so its workflows outlive it) and runs a real example
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    script = job["spec"]["entrypoint"].split()[-1]
    assert script.startswith("/home/ray/rayline/")
    assert os.path.exists(os.path.join(ROOT, script.removeprefix("/home/ray/rayline/")))
    yaml.safe_load(job["spec"]["runtimeEnvYAML"])

    with open(os.path.join(ROOT, "deploy", "Dockerfile")) as f:
        dockerfile = f.read()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    assert "/home/ray/rayline" in dockerfile
