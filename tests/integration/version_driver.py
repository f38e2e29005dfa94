"""A driver process of its own, as a user's script is: joins the test session's Ray (with
a ``working_dir`` when ``DRIVER_WORKING_DIR`` is set), imports a workflow module from its
current folder, and starts (``wait``, or ``wait-early`` for the module of the upgrade
test) or runs (``run``) its ``versioned`` workflow; or,
with ``finish``, signals the waiting runs ``ID...`` and collects their results.

``DRIVER_START_VERSION`` pins the start to that code version's hosts.

Prints one JSON line: the run's code version, and its result for ``run``; for ``finish``
each id's result.
Usage: ``python version_driver.py ADDRESS STORAGE NAMESPACE MODULE wait|wait-early|run|finish
[ID...]``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import ray

import rayline


def main() -> None:
    address, storage, namespace, module_name, action, *rest = sys.argv[1:]
    working_dir = os.environ.get("DRIVER_WORKING_DIR")  # "-": a Ray Job, which has one
    runtime_env = {"working_dir": working_dir} if working_dir not in (None, "-") else None
    ray.init(address=address, logging_level="ERROR", runtime_env=runtime_env)
    client = rayline.Client(storage=storage, namespace=namespace)
    if action == "finish":
        results = {}
        for workflow_id in rest:
            handle = client.workflow.get_handle(workflow_id)
            handle.signal("go", None)
            results[workflow_id] = handle.result(timeout=120)
        print(json.dumps(results))
        return
    # imported after the client is made, as in a notebook: still part of its version
    sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    workflow_id = rest[0] if rest else None
    args: list[bool] = [action in ("wait", "wait-early")]
    if action == "wait-early":  # the upgrade module's branch before the wait
        args.append(True)
    handle = client.workflow.start(module.versioned, args=args, workflow_id=workflow_id,
                                   version=os.environ.get("DRIVER_START_VERSION"))
    out: dict[str, object] = {"version": handle.describe().version}
    if action == "run":
        out["result"] = handle.result()
    client.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
