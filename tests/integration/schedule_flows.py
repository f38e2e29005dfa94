"""Workflows that schedules start in the integration tests (importable by Ray workers)."""

from __future__ import annotations

import os

import rayline
from rayline import workflow


@rayline.activity(local=True)
def mark(folder: str, name: str) -> None:
    """Leaves one file per call: ``<name>``, counted by the test."""
    with open(os.path.join(folder, name), "w"):
        pass


@rayline.workflow
async def stamp() -> str:
    """Returns the scheduled time its schedule gave it."""
    return str(workflow.info().memo["scheduled_at"])


@rayline.workflow
async def marked(folder: str) -> str:
    """Leaves a mark per run: ``<scheduled time>.<run id>``."""
    info = workflow.info()
    scheduled = str(info.memo["scheduled_at"])
    await workflow.execute_activity(mark, folder, f"{scheduled}.{info.run_id}")
    return scheduled


@rayline.workflow
async def naps(seconds: float) -> float:
    return await workflow.sleep(seconds)
