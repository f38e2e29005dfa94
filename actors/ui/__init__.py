"""rayline's web UI: ``rayline ui --port N`` or ``client.ui(port=N)``.

A small Starlette app, served by uvicorn on the client's event loop, that reads through
the client API (the calls the ``rayline`` command makes) and renders pages on the
server, with a little vanilla JavaScript for auto-refresh, tabs and confirmations; the
templates and static files ship in the package (no build step). See ``docs/ui.md``.

It needs the ``ui`` extra (``pip install 'rayline[ui]'``: starlette, uvicorn, jinja2);
importing this package without them raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import importlib.util

MISSING = [name for name in ("starlette", "uvicorn", "jinja2")
           if importlib.util.find_spec(name) is None]
if MISSING:
    raise ImportError(f"the rayline web UI needs {', '.join(MISSING)}: "
                      "pip install 'rayline[ui]'", name=MISSING[0])

from rayline.client import AsyncClient  # noqa: E402

from ._app import create_app  # noqa: E402
from ._server import DEFAULT_PORT, UIServer  # noqa: E402

__all__ = ["DEFAULT_PORT", "UIServer", "create_app", "serve"]


async def serve(client: AsyncClient, *, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                read_only: bool = False, refresh: float = 5.0) -> UIServer:
    """Starts the UI for ``client`` (an ``AsyncClient``) on the running loop and
    returns it, serving (``await server.wait()`` blocks until it stops)."""
    await client.connection()  # connect (and fail) before the first page
    server = UIServer(client, port=port, host=host, read_only=read_only, refresh=refresh)
    server.start()
    return server
