"""The replay engine: a workflow instance is a state machine, ``activate(events) -> commands``.

Nothing in this package does I/O, reads the clock or draws randomness of its own.
"""

from .instance import WorkflowInstance, replay_timeline

__all__ = ["WorkflowInstance", "replay_timeline"]
