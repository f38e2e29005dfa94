"""A driver of its own for the observability tests: a job whose ``runtime_env`` sets up
tracing (``RAYLINE_OTEL_EXPORTER``) and logging (``worker_process_setup_hook``) in every
host and activity worker, as a user's job would.

Joins the test session's Ray, starts ``three_steps`` on task queue QUEUE inside a span of
its own (the client's), waits until the run has done two steps and waits for a signal,
kills its host (Ray restarts it, which recovers the run), signals it and waits for the
result. Prints one JSON line: the workflow id, the client span's ids and the result.

Usage: ``python observe_driver.py ADDRESS STORAGE NAMESPACE QUEUE``, with ``OBSERVE_SPANS``
and ``OBSERVE_LOGS`` naming the folders the processes write to.
"""

from __future__ import annotations

import json
import os
import sys
import time

import ray

import rayline
from rayline.actors._names import ray_namespace

from .observe_flows import JsonLinesExporter, three_steps


def main() -> None:
    address, storage, namespace, queue = sys.argv[1:]
    env = {"RAYLINE_OTEL_EXPORTER": "tests.integration.observe_flows:span_processor",
           **{k: os.environ[k] for k in ("OBSERVE_SPANS", "OBSERVE_LOGS", "PYTHONPATH")}}
    ray.init(address=address, logging_level="ERROR", runtime_env={
        "env_vars": env,
        "worker_process_setup_hook": "tests.integration.observe_flows.log_to_files"})

    from opentelemetry.sdk.trace import TracerProvider  # the application's own tracing
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))  # type: ignore[arg-type]
    tracer = provider.get_tracer("tests.observe.driver")

    client = rayline.Client(storage=storage, namespace=namespace)
    with tracer.start_as_current_span("client start") as span:
        handle = client.workflow.start(three_steps, args=[True, True], task_queue=queue,
                                       workflow_id="observed")
        context = span.get_span_context()
    deadline = time.monotonic() + 60
    while handle.query("done") != 2:  # two steps done: it waits for "go"
        assert time.monotonic() < deadline, "the run did not reach its wait"
        time.sleep(0.05)
    host = ray.get_actor(handle.describe().host, namespace=ray_namespace(namespace))
    ray.kill(host, no_restart=False)  # Ray restarts it; the new process recovers the run
    handle.signal("go", None)
    result = handle.result(timeout=60)
    client.close()
    print(json.dumps({"workflow_id": "observed", "result": result,
                      "client_trace": f"{context.trace_id:032x}",
                      "client_span": f"{context.span_id:016x}"}))


if __name__ == "__main__":
    main()
