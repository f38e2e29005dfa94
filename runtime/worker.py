"""``rayline.Worker.create``: registers workflows by name on a task queue and starts its hosts."""

from __future__ import annotations

from typing import Any, Sequence

from ._activity import as_activity
from ._code import CodeRef
from ._definition import as_workflow
from ._validate import validate_task_queue
from .client import AsyncClient, Client
from .errors import InvalidInputError
from .messages import HostOptions


class Worker:
    """The hosts of one task queue, with the workflows they know by name."""

    def __init__(self, task_queue: str, hosts: list[str], workflows: list[str]) -> None:
        self.task_queue = task_queue
        self.hosts = hosts
        self.workflows = workflows

    def __repr__(self) -> str:
        return f"<Worker {self.task_queue}: {len(self.hosts)} host(s), workflows {self.workflows}>"

    @staticmethod
    def create(client: Client | AsyncClient, task_queue: str = "default",
               workflows: Sequence[Any] = (), activities: Sequence[Any] = (),
               hosts: int | None = None, memory: int | None = None,
               min_hosts: int | None = None, max_hosts: int | None = None,
               node_labels: dict[str, str] | None = None) -> Any:
        """Registers ``workflows`` under their names and starts the queue's hosts.

        ``hosts`` fixes the size of the queue's pool; by default (``None``) the pool is
        elastic: a host per alive node, more with load (``RAYLINE_HOST_LIVE`` live runs
        per host, one more per ``RAYLINE_HOST_BUSY`` of event-loop load), fewer when
        nodes go or load falls, between ``min_hosts`` (default 1) and ``max_hosts``
        (default ``RAYLINE_MAX_HOSTS``, 16). ``node_labels`` keeps the queue's hosts on
        the Ray nodes that have those labels (and an elastic pool counts only those).

        ``memory`` (bytes) is reserved by Ray for each host process of the queue (Ray's
        ``memory`` option), for the hosts started from then on: a queue whose workflows
        hold much in memory cannot crowd out another queue's hosts. A size larger than
        any node has is refused.

        With a sync ``Client`` this returns the ``Worker``; with an ``AsyncClient`` it
        returns a coroutine to await. ``activities`` are checked, not registered: a
        workflow reaches its activities through its own code.
        """
        coro = Worker._create(client.aio if isinstance(client, Client) else client,
                              task_queue, workflows, activities, hosts,
                              {"memory": memory, "min_hosts": min_hosts,
                               "max_hosts": max_hosts}, node_labels)
        return client.run(coro) if isinstance(client, Client) else coro

    @staticmethod
    async def _create(client: AsyncClient, task_queue: str, workflows: Sequence[Any],
                      activities: Sequence[Any], hosts: int | None,
                      sizes: dict[str, int | None],
                      node_labels: dict[str, str] | None) -> Worker:
        validate_task_queue(task_queue)
        for key, value in {"hosts": hosts, **sizes}.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                unit = " of bytes" if key == "memory" else ""
                raise InvalidInputError(f"{key} must be a positive int{unit}, got {value!r}")
        if node_labels is not None and not (isinstance(node_labels, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in node_labels.items())):
            raise InvalidInputError(f"node_labels must map label names to values (str to "
                                    f"str), got {node_labels!r}")
        for fn in activities:
            as_activity(fn)
        refs: dict[str, CodeRef] = {}
        for fn in workflows:
            definition = as_workflow(fn)
            refs[definition.name] = CodeRef.of(definition)
        conn = await client.connection()
        options = None if node_labels is None and all(v is None for v in sizes.values()) \
            else HostOptions(memory=sizes["memory"], min_hosts=sizes["min_hosts"],
                             max_hosts=sizes["max_hosts"], node_labels=node_labels)
        names = await conn.registry().configure(task_queue, hosts, refs, options, conn.version)
        return Worker(task_queue, names, sorted(refs))
