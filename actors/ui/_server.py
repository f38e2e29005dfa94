"""The UI's HTTP server: uvicorn on the client's own event loop, on a socket bound
before it starts (so ``url`` is known at once, also for port 0)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import uvicorn

from rayline.client import AsyncClient

from ._app import LOOPBACK, create_app

DEFAULT_PORT = 8266
"""The UI's default port (Ray's dashboard has 8265)."""


class UIServer:
    """A running web UI (``client.ui()``): ``url``, ``wait()`` until it stops, ``stop()``."""

    def __init__(self, client: AsyncClient, *, port: int = DEFAULT_PORT,
                 host: str = "127.0.0.1", read_only: bool = False,
                 refresh: float = 5.0) -> None:
        self.host = host
        self.read_only = read_only
        self._socket = _bind(host, port)
        self.port: int = self._socket.getsockname()[1]
        self.app = create_app(client, read_only=read_only, refresh=refresh,
                              allowed_hosts=LOOPBACK if _is_loopback(host) else ["*"])
        self._server = uvicorn.Server(uvicorn.Config(
            self.app, log_config=None, log_level="warning", access_log=False, lifespan="off",
            http="h11", ws="none", server_header=False))
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else \
            f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Starts serving on the running event loop (connections made before it
        accepts wait in the socket's backlog)."""
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))

    async def wait(self) -> None:
        """Returns once the server has stopped."""
        assert self._task is not None, "start() first"
        await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Stops serving (open requests finish first) and closes the socket."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
