"""Everything in rayline that imports Ray: the registry and host actors, and the Ray
implementations of the runtime's protocols (``Backend`` for hosts, ``Connection`` for
clients). ``connect`` is what ``rayline.Client`` uses to reach a cluster."""

from ._connection import RayConnection, connect

__all__ = ["RayConnection", "connect"]
