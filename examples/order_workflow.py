"""The seed scenario: an order on task queue ``orders`` that waits for approval, and a
cancel that refunds in a cleanup no cancel can interrupt.

    .venv/bin/python examples/order_workflow.py

``orderWorkflow`` reserves stock, waits (durably, up to a day) for an ``approve``
signal, then charges and ships. Cancelled while it waits, it refunds the reservation
inside ``workflow.non_cancellable()`` and returns ``"cancelled: refunded"``. The main
program approves one order and cancels another.
"""

from __future__ import annotations

import os
import time
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import rayline  # noqa: E402
from rayline import RetryPolicy, workflow  # noqa: E402


@rayline.activity(num_cpus=0, retry=RetryPolicy(maximum_attempts=5))
def reserve(order_id: str, items: int) -> str:
    return f"reservation-{order_id}-{items}"


@rayline.activity(num_cpus=0)
def charge(order_id: str, amount: float) -> str:
    # a real payment API takes an idempotency key: retries and recoveries send the same
    return f"charged {amount:.2f} ({rayline.activity_info().idempotency_key})"


@rayline.activity(num_cpus=0)
def ship(order_id: str) -> str:
    return f"shipped {order_id}"


@rayline.activity(num_cpus=0)
def refund(reservation: str) -> str:
    return f"released {reservation}"


@rayline.workflow(name="orderWorkflow")
async def order_workflow(order_id: str, items: int, amount: float) -> str:
    workflow.search(stage="reserving")
    reservation = await workflow.execute_activity(reserve, order_id, items)
    try:
        workflow.search(stage="awaiting approval")
        approval = await workflow.condition("approve", timeout="1 day")
        if not approval:
            workflow.search(stage="expired")
            async with workflow.non_cancellable():
                await workflow.execute_activity(refund, reservation)
            return "expired: refunded"
        workflow.search(stage="charging")
        receipt = await workflow.execute_activity(charge, order_id, amount)
        await workflow.execute_activity(ship, order_id)
        workflow.search(stage="shipped")
        return f"{receipt}; approved by {approval['by']}"
    except rayline.CancelledFailure:
        async with workflow.non_cancellable():  # runs to the end even though cancelled
            await workflow.execute_activity(refund, reservation)
        workflow.search(stage="cancelled")
        return "cancelled: refunded"


def _awaiting(handle: Any) -> None:
    while handle.query_state(["stage"])["stage"] != "awaiting approval":
        if handle.status() < 0:
            handle.result()  # raises the workflow's error
        time.sleep(0.05)


def run(client: rayline.Client, tag: str = "") -> dict[str, Any]:
    """Approves one order and cancels another; returns what each ended with."""
    tag = tag or str(int(time.time()))
    rayline.Worker.create(client, task_queue="orders", workflows=[order_workflow])
    approved = client.workflow.start(order_workflow, args=["A-1", 3, 42.0],
                                     workflow_id=f"order-A-{tag}", task_queue="orders")
    cancelled = client.workflow.start(order_workflow, args=["B-2", 1, 9.5],
                                      workflow_id=f"order-B-{tag}", task_queue="orders")
    _awaiting(approved)
    _awaiting(cancelled)
    approved.signal("approve", {"by": "alice"})
    cancelled.cancel()
    return {"approved": approved.result(), "cancelled": cancelled.result(),
            "stages": [approved.query_state(["stage"])["stage"],
                       cancelled.query_state(["stage"])["stage"]]}


def main() -> None:
    for name, value in run(rayline.Client(namespace="examples")).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
