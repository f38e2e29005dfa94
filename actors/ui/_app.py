"""The web UI's ASGI app (Starlette): pages rendered on the server from the client API,
the same calls the ``rayline`` command makes.

    GET  /                                  workflows: filters, counts per status, pages
    GET  /workflows/{id}                    one workflow: summary, timeline, history,
                                            children, pending work, the raw export
    POST /workflows/{id}/{action}           signal, cancel, terminate; pause, unpause,
                                            trigger for a schedule's workflow
    GET  /schedules, /cluster               schedules; hosts per task queue and version
    GET  /api/workflows[/{id}/export|/execution]   the same data as JSON

Invariants (safe by default):
- Every value shown goes through Jinja2's autoescaping; nothing from a workflow is
  marked safe, and pages run no inline script (the Content-Security-Policy forbids it).
- Payloads are read through exports, which never unpickle: the UI never asks them to.
- Actions are POSTs carrying the app's CSRF token (a page of another origin cannot read
  it); ``read_only`` drops them (403) and their buttons. Signal data is JSON only.
- Only the Host names given are served (by default the loopback ones), so a page of
  another site cannot reach the UI through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import Any, Awaitable, Callable

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import rayline
from rayline import export as exports
from rayline.client import AsyncClient, AsyncWorkflowHandle
from rayline.errors import InvalidInputError, RaylineError, WorkflowNotFoundError
from rayline.messages import RunStatus

from . import _views as views

log = logging.getLogger("rayline.ui")
HERE = Path(__file__).parent
LOOPBACK = ["127.0.0.1", "localhost", "::1", "[::1]"]
MAX_FORM = 1 << 20
"""Bytes an action's form may have (a signal's JSON data included)."""
ACTIONS = ("signal", "cancel", "terminate", "pause", "unpause", "trigger")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; "
     b"style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]

Handler = Callable[[Request], Awaitable[Response]]


class _Headers:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)
        await self.app(scope, receive, sending)


def _schedule_prefix() -> str | None:
    """The workflow-id prefix of schedules (a schedule is a workflow), or ``None`` while
    this rayline has no schedules: the one place the UI depends on them."""
    try:
        from rayline import schedules
    except ImportError:  # pragma: no cover - a rayline without schedules
        return None
    prefix = getattr(schedules, "SCHEDULE_PREFIX", None)
    return prefix if isinstance(prefix, str) else None


class UI:
    """The pages, over one ``AsyncClient`` (called on the server's own event loop)."""

    def __init__(self, client: AsyncClient, *, read_only: bool, refresh: float) -> None:
        self.client = client
        self.read_only = read_only
        self.refresh = refresh
        self.token = secrets.token_urlsafe(32)
        self.schedules = _schedule_prefix()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(
            when=views.when, duration=views.duration, ago=views.ago, pretty=views.pretty,
            compact=views.compact, short=views.short_name, quote=_quote,
            pct=lambda value: f"{value:.3f}")

    # ------------------------------------------------------------- plumbing

    def render(self, request: Request, name: str, status_code: int = 200,
               **context: Any) -> HTMLResponse:
        page = self.templates.get_template(name).render(
            base=request.scope.get("root_path", ""), namespace=self.client.namespace,
            read_only=self.read_only, refresh=self.refresh, csrf=self.token,
            version=rayline.__version__,
            nav=name.split(".")[0], statuses=views.STATUSES, **context)
        return HTMLResponse(page, status_code=status_code,
                            headers={"cache-control": "no-store"})

    def guarded(self, handler: Handler) -> Handler:
        """Turns rayline's errors into pages: an unknown workflow 404, bad input 400,
        anything else 500 with its message (never a traceback)."""
        @functools.wraps(handler)
        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except WorkflowNotFoundError as exc:
                return self._error(request, 404, "Not found", exc)
            except InvalidInputError as exc:
                return self._error(request, 400, "Bad request", exc)
            except Exception as exc:
                log.warning("rayline ui: %s %s failed", request.method, request.url.path,
                            exc_info=not isinstance(exc, RaylineError))
                return self._error(request, 500, "Something went wrong", exc)
        return page

    def _error(self, request: Request, status: int, title: str,
               exc: BaseException) -> Response:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": type(exc).__name__, "message": message},
                                status_code=status)
        return self.render(request, "error.html", status, title=title, status=status,
                           message=message, kind=type(exc).__name__)

    # ------------------------------------------------------------- workflows

    async def _page(self, request: Request) -> tuple[views.Filters, Any, Any]:
        chosen = views.filters(request.query_params)
        wf = self.client.workflow
        page, counted = await asyncio.gather(
            wf.list(**chosen.query, order_by=chosen.order_by, limit=chosen.limit,
                    page_token=chosen.page_token),
            wf.count(**{**chosen.query, "status": None}, group_by="status"))
        return chosen, page, counted

    async def workflows(self, request: Request) -> Response:
        try:
            chosen, page, counted = await self._page(request)
        except InvalidInputError as exc:
            empty = views.Filters(form={k: v for k, v in request.query_params.items()},
                                  query={})
            return self.render(request, "list.html", 400, filters=empty, runs=[],
                               next_token=None, counts={}, total=0, matching=0,
                               error=str(exc), links=_Links(request), now=time.time())
        status = chosen.query.get("status")
        matching = counted.groups.get(status, 0) if status else counted.count
        return self.render(request, "list.html", filters=chosen, runs=list(page),
                           next_token=page.next_page_token, counts=counted.groups,
                           total=counted.count, matching=matching, error=None,
                           links=_Links(request), now=time.time())

    async def api_workflows(self, request: Request) -> Response:
        chosen, page, counted = await self._page(request)
        return JSONResponse({"items": [run.model_dump(mode="json") for run in page],
                             "next_page_token": page.next_page_token,
                             "count": counted.count, "groups": counted.groups,
                             "limit": chosen.limit})

    async def _handle(self, request: Request) -> AsyncWorkflowHandle[Any]:
        return await self.client.workflow.get_handle(request.path_params["workflow_id"])

    async def workflow(self, request: Request) -> Response:
        handle = await self._handle(request)
        described_or_error, exported, execution = await asyncio.gather(
            handle.describe(), handle.export(), handle.export_execution(),
            return_exceptions=True)
        if isinstance(exported, BaseException):  # no stored run: nothing to show
            raise exported
        if isinstance(execution, BaseException):
            raise execution
        described, unreachable = None, None
        if isinstance(described_or_error, BaseException):  # its host does not answer
            unreachable = f"{type(described_or_error).__name__}: {described_or_error}"
        else:
            described = described_or_error
        now = time.time()
        if described is not None and described.run_id == execution.run_id and \
                execution.status == RunStatus.RUNNING.value:
            exports.add_live(execution, described.pending, now)  # attempts running now
        schedule = await self._schedule(handle.workflow_id)
        children = views.children(execution)
        state = exported.state
        return self.render(
            request, "workflow.html", handle=handle, described=described,
            unreachable=unreachable, exported=exported, state=state, execution=execution,
            data=exported.data or {}, timeline=views.timeline(execution, now),
            history=views.history(execution), children=children,
            open_children=any(child.state == "running" for child in children),
            raw=exported.model_dump_json(indent=2), schedule=schedule,
            notice=request.query_params.get("notice"), problem=request.query_params.get(
                "error"), running=execution.status == RunStatus.RUNNING.value, now=now)

    async def _schedule(self, workflow_id: str) -> Any:
        """The schedule a scheduler workflow runs (its ``describe()``), else ``None``."""
        if self.schedules is None or not workflow_id.startswith(self.schedules):
            return None
        try:
            handle = await self.client.schedule.get_handle(workflow_id[len(self.schedules):])
            return await handle.describe()
        except RaylineError:
            return None

    async def api_export(self, request: Request) -> Response:
        exported = await (await self._handle(request)).export()
        return Response(exported.model_dump_json(indent=2), media_type="application/json")

    async def api_execution(self, request: Request) -> Response:
        execution = await (await self._handle(request)).export_execution(
            allow_direct_query=True)
        return Response(execution.model_dump_json(indent=2), media_type="application/json")

    # ------------------------------------------------------------- actions

    async def act(self, request: Request) -> Response:
        if self.read_only:
            return self._error(request, 403, "Read-only",
                               PermissionError("this UI is read-only (--read-only)"))
        form = await self._form(request)
        if form is None:
            return self._error(request, 403, "Forbidden", PermissionError(
                "the form's token is missing or stale: reload the page and try again"))
        workflow_id = request.path_params["workflow_id"]
        action = request.path_params["action"]
        if action not in ACTIONS:
            return self._error(request, 404, "Not found",
                               InvalidInputError(f"unknown action {action!r}"))
        back = f"{request.scope.get('root_path', '')}/workflows/{_quote(workflow_id)}"
        try:
            notice = await self._do(workflow_id, action, form)
        except (RaylineError, ValueError) as exc:
            message = " ".join(str(exc).split())[:500] or type(exc).__name__
            return RedirectResponse(f"{back}?{urllib.parse.urlencode({'error': message})}",
                                    status_code=303)
        return RedirectResponse(f"{back}?{urllib.parse.urlencode({'notice': notice})}",
                                status_code=303)

    async def _do(self, workflow_id: str, action: str, form: dict[str, str]) -> str:
        if action in ("pause", "unpause", "trigger"):
            if self.schedules is None or not workflow_id.startswith(self.schedules):
                raise InvalidInputError(f"{workflow_id} is not a schedule")
            schedule = await self.client.schedule.get_handle(workflow_id[len(self.schedules):])
            if action == "trigger":
                await schedule.trigger()
                return "Schedule triggered: a run starts now"
            note = form.get("note") or None
            await (schedule.pause(note) if action == "pause" else schedule.unpause(note))
            return f"Schedule {action}d"
        handle = await self.client.workflow.get_handle(workflow_id)
        if action == "signal":
            name = form.get("name", "").strip()
            if not name:
                raise InvalidInputError("a signal needs a name")
            text = form.get("payload", "").strip() or "null"
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise InvalidInputError(f"the signal's payload is not JSON: {exc}") from None
            await handle.signal(name, data)
            return f"Signal {name!r} sent"
        if action == "cancel":
            await handle.cancel()
            return "Cancellation requested"
        if action == "terminate":
            descend = form.get("descend") == "on"
            await handle.terminate(form.get("reason") or "terminated from the web UI",
                                   descend=descend)
            return "Terminated" + (" with its open children" if descend else "")
        raise InvalidInputError(f"unknown action {action!r}")

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The action's form fields, or ``None`` if its CSRF token or origin is wrong."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and \
                urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise InvalidInputError(f"the form is over {MAX_FORM} bytes")
        fields = {k: v[-1] for k, v in urllib.parse.parse_qs(
            body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        if not secrets.compare_digest(fields.get("csrf", ""), self.token):
            return None
        return fields

    # ------------------------------------------------------------- cluster, schedules

    async def cluster(self, request: Request) -> Response:
        hosts, versions, counted = await asyncio.gather(
            self.client.hosts(), self.client.versions(),
            self.client.workflow.count(group_by="status"))
        runs = self.client.runs()

        def homes() -> dict[str, tuple[str, str | None]]:
            found = {}
            for stats in hosts:
                config = runs.get_config(f"host:{stats.host}") or {}
                found[stats.host] = (str(config.get("task_queue", "?")),
                                     config.get("version"))
            return found
        pools = views.pools(hosts, await asyncio.to_thread(homes))
        return self.render(request, "cluster.html", pools=pools, hosts=hosts,
                           versions=versions, counts=counted.groups, total=counted.count,
                           nodes=len({h.node for h in hosts}))

    async def schedule_list(self, request: Request) -> Response:
        found = await self.client.schedule.list() if self.schedules else None
        return self.render(request, "schedules.html", schedules=found,
                           prefix=self.schedules or "")


class _Links:
    """Links of the list page that keep its filters and change one of them."""

    def __init__(self, request: Request) -> None:
        self.params = {k: v for k, v in request.query_params.items()
                       if v and k != "page_token"}
        self.base = request.scope.get("root_path", "")

    def __call__(self, **changes: str | None) -> str:
        params = {**self.params, **changes}
        kept = {k: v for k, v in params.items() if v}
        return f"{self.base}/" + (f"?{urllib.parse.urlencode(kept)}" if kept else "")


def _quote(workflow_id: str) -> str:
    """A workflow id as one path segment."""
    return urllib.parse.quote(workflow_id, safe="")


def create_app(client: AsyncClient, *, read_only: bool = False,
               allowed_hosts: list[str] | None = None, refresh: float = 5.0) -> Starlette:
    """The UI over ``client`` (an ``AsyncClient``; call it on the loop that serves).

    Args:
        read_only: no signal, cancel, terminate or schedule actions.
        allowed_hosts: the ``Host`` names served; default the loopback ones (``["*"]``
            serves any, for a UI bound to a public address).
        refresh: seconds between auto-refreshes of a page (0: none).
    """
    ui = UI(client, read_only=read_only, refresh=refresh)
    routes = [
        Route("/", ui.guarded(ui.workflows)),
        Route("/workflows/{workflow_id}", ui.guarded(ui.workflow)),
        Route("/workflows/{workflow_id}/{action}", ui.guarded(ui.act), methods=["POST"]),
        Route("/schedules", ui.guarded(ui.schedule_list)),
        Route("/cluster", ui.guarded(ui.cluster)),
        Route("/api/workflows", ui.guarded(ui.api_workflows)),
        Route("/api/workflows/{workflow_id}/export", ui.guarded(ui.api_export)),
        Route("/api/workflows/{workflow_id}/execution", ui.guarded(ui.api_execution)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[
        Middleware(_Headers),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK)])
    app.state.csrf = ui.token  # what the pages put in their forms (tests read it here)
    return app
