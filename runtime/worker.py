"""``rayline.Worker.create``: registers workflows by name on a task queue and starts its hosts."""

from __future__ import annotations

from typing import Any, Sequence

from ._activity import as_activity
from ._code import CodeRef
from ._definition import as_workflow
from ._validate import validate_task_queue
from .client import AsyncClient, Client
from .errors import InvalidInputError


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
               hosts: int = 1) -> Any:
        """Registers ``workflows`` under their names and makes sure ``hosts`` hosts run.

        With a sync ``Client`` this returns the ``Worker``; with an ``AsyncClient`` it
        returns a coroutine to await. ``activities`` are checked, not registered: a
        workflow reaches its activities through its own code.
        """
        coro = Worker._create(client.aio if isinstance(client, Client) else client,
                              task_queue, workflows, activities, hosts)
        return client.run(coro) if isinstance(client, Client) else coro

    @staticmethod
    async def _create(client: AsyncClient, task_queue: str, workflows: Sequence[Any],
                      activities: Sequence[Any], hosts: int) -> Worker:
        validate_task_queue(task_queue)
        if not isinstance(hosts, int) or hosts < 1:
            raise InvalidInputError(f"hosts must be a positive int, got {hosts!r}")
        for fn in activities:
            as_activity(fn)
        refs: dict[str, CodeRef] = {}
        for fn in workflows:
            definition = as_workflow(fn)
            refs[definition.name] = CodeRef.of(definition)
        conn = await client.connection()
        names = await conn.registry().configure(task_queue, hosts, refs)
        return Worker(task_queue, names, sorted(refs))
