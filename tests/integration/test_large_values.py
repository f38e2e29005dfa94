"""Large values by reference, on Ray: a 200 MB array returned by one activity reaches
the next through Ray's object store, is kept once in storage, and the timeline holds
only its reference; a host killed between the two reads it back from storage. An
activity that returns an ``ObjectRef`` hands the workflow an ``ObjectRef``."""

from __future__ import annotations

import os

import ray

import rayline

from . import wf
from .conftest import host_actor
from .test_foundation import wait_until

MEGABYTES = 200


def _stored(storage: str) -> tuple[list[str], int]:
    """The large-value objects in storage, and the bytes of all timeline objects."""
    objects, timelines = [], 0
    for folder, _, files in os.walk(storage):
        for name in files:
            path = os.path.join(folder, name)
            if f"{os.sep}objects{os.sep}" in path:
                objects.append(name)
            elif f"{os.sep}wf{os.sep}" in path:
                timelines += os.path.getsize(path)
    return objects, timelines


def test_a_200_mb_array_moves_by_reference_and_survives_a_host_kill(
        client: rayline.Client, storage: str, namespace: str) -> None:
    elements = MEGABYTES * 2**20 // 8
    expected = [float(elements * (elements - 1) // 2), float(MEGABYTES * 2**20)]
    assert client.workflow.execute(wf.array_pipeline, args=[MEGABYTES, False],
                                   workflow_id="straight") == expected
    objects, timelines = _stored(storage)
    assert len(objects) == 1 and timelines < 10_000

    handle = client.workflow.start(wf.array_pipeline, args=[MEGABYTES, True],
                                   workflow_id="killed")
    wait_until(lambda: [p.kind for p in handle.describe().pending] == ["wait"], timeout=60)
    ray.kill(host_actor(namespace, handle.describe().host), no_restart=False)
    handle.signal("go", None)
    assert handle.result(timeout=120) == expected
    objects, timelines = _stored(storage)
    assert len(objects) == 1 and timelines < 20_000  # the same array: the same object


def test_an_activity_that_returns_an_object_ref_hands_the_workflow_one(
        client: rayline.Client, storage: str) -> None:
    kind, summary = client.workflow.execute(wf.object_ref_pipeline, args=[8])
    assert kind == "ObjectRef" and summary[1] == float(8 * 2**20)
    assert len(_stored(storage)[0]) == 1  # durable all the same


