"""The in-process backend the unit tests drive hosts with; it lives in the package now
(``rayline.testing._local``, under the test environment) and is re-exported here."""

from rayline.testing._local import LocalBackend, LocalConnection, LocalRegistry, make_host

__all__ = ["LocalBackend", "LocalConnection", "LocalRegistry", "make_host"]
