"""The client: start workflows, get handles, signal, cancel, read state.

One async implementation (``AsyncClient``, ``AsyncWorkflowHandle``); the sync ``Client``
and ``WorkflowHandle`` run it on a private event loop in a background thread. The client
talks to a cluster through the ``Connection`` protocol; the Ray implementation is
``rayline.actors.connect``, loaded when the client first connects, so importing
``rayline`` never imports Ray.

Invariants:
- Bad input (ids, task queues, options, arguments, search and memo values) is refused
  here, before anything is sent or written, with an error naming it.
- Every start and every signal carries a request id made once per call and kept across
  the call's retries: a host that already has it answers with the first outcome, so a
  retry after a host died mid-call never records anything twice.
- A handle survives its workflow moving: a ``NotHereError`` sends it to look the
  workflow up again (with backoff, a bounded number of times), never to wait forever.
- Calls of one kind made in one event-loop turn go to each host as one Ray call
  (``_Coalescer``); every caller still gets its own reply or error.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import threading
import time
import typing
import uuid
from datetime import datetime
from typing import (
    Any,
    Awaitable,
    Callable,
    Coroutine,
    Generic,
    Literal,
    Protocol,
    Sequence,
    TypeVar,
    overload,
)

from . import _backoff, _gc, _serde, _tracing, export, failures
from ._batch import BatchReport, run_batch
from ._code import CodeRef
from ._cron import cron_spec
from ._definition import as_workflow
from ._durations import Duration, optional_duration
from ._facade import Facade
from ._gc import GcReport
from ._options import retry_json
from ._schedule_client import AsyncScheduleClient, ScheduleClient
from ._search import conditions, search_fields, timestamp
from ._serde import Payload
from ._validate import validate_args, validate_fields, validate_task_queue
from ._values import Values
from .engine.api import HostAPI, RegistryAPI
from .errors import (
    CancelledFailure,
    HostDiedError,
    InvalidInputError,
    NotHereError,
    RaylineError,
    WorkflowClosedError,
    WorkflowNotFoundError,
    WorkflowTerminatedError,
)
from .export import DurableJobExport, WorkflowExecution
from .messages import (
    CodeVersion,
    CountGroup,
    CountReply,
    CountRequest,
    DrainReport,
    HostStats,
    ListOrder,
    ListRequest,
    RegistryInfo,
    ResetRequest,
    RunOutcome,
    RunStatus,
    SignalIn,
    StartReply,
    StartRequest,
    UpdateOutcome,
    UpgradeReport,
    VersionSummary,
    WorkflowDescription,
    WorkflowPage,
)
from .storage import RunStore, open_store, validate_id
from .storage.codec import Codec, check_same, codec_of
from .timeline import RunOptions
from .versions import validate_version

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")
_RELOCATE_ATTEMPTS = 30
_BATCH = 128
_START_OPTIONS = ("id_reuse_policy", "id_conflict_policy", "search", "memo",
                  "execution_timeout", "strict", "retry", "start_delay", "cron", "expire")


class Connection(Protocol):
    """What the client needs from a cluster (see ``rayline.actors.RayConnection``)."""

    @property
    def version(self) -> CodeVersion | None:
        """The code version of the workflows this connection places (once open)."""

    async def open(self) -> RegistryInfo: ...
    def registry(self) -> RegistryAPI: ...
    def host(self, name: str) -> HostAPI: ...
    async def place(self, task_queue: str, workflow_id: str, dedicated: bool,
                    version: str | None = None, fresh: bool = False) -> str: ...
    async def locate(self, workflow_id: str) -> str: ...


class _Coalescer(Generic[A, R]):
    """Sends the calls of one kind made in one event-loop turn to each host as one call.

    ``send(host, arguments)`` returns a list as long as ``arguments``: each entry a
    reply, an exception (raised to that caller), or ``None`` (not ready: asked again with
    the next call). One Ray round trip then serves many concurrent callers.
    """

    def __init__(self, send: Callable[[HostAPI, list[A]],
                                      Awaitable[Sequence[R | BaseException | None]]]) -> None:
        self.send = send
        self._queued: dict[str, list[tuple[Any, asyncio.Future[Any]]]] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, conn: Connection, host: str, argument: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue(conn, host, [(argument, future)])
        return await future

    def _enqueue(self, conn: Connection, host: str,
                 items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        if not self._queued:
            asyncio.get_running_loop().call_soon(self._flush, conn)
        self._queued.setdefault(host, []).extend(items)

    def _flush(self, conn: Connection) -> None:
        queued, self._queued = self._queued, {}
        for host, items in queued.items():
            waiting = [item for item in items if not item[1].done()]  # not given up on
            for i in range(0, len(waiting), _BATCH):
                task = asyncio.ensure_future(self._send(conn, host, waiting[i:i + _BATCH]))
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _send(self, conn: Connection, host: str,
                    items: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            replies = list(await self.send(conn.host(host), [argument for argument, _ in items]))
        except Exception as exc:
            replies = [exc] * len(items)
        again = []
        for item, reply in zip(items, replies, strict=True):
            future = item[1]
            if future.done():
                continue
            if reply is None:
                again.append(item)
            elif isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if again:
            self._enqueue(conn, host, again)


class AsyncClient:
    """Entry point (async). ``AsyncClient()`` starts or joins a local Ray with file storage.

    Args:
        address: a Ray address (``"auto"`` joins the cluster running on this machine);
            ``None`` uses ``$RAY_ADDRESS`` if set, else the Ray this process is connected
            to, else starts a local Ray for this process.
        storage: where timelines live: a path, ``file://``, ``s3://bucket/prefix``,
            ``memory://``; default ``$RAYLINE_STORAGE`` or ``./.rayline``.
        namespace: isolates workflows, hosts and storage (Ray namespace ``rayline-<ns>``).
        version: the code version of the workflows this client starts (see
            ``rayline.versions``); by default derived from the Ray job's ``runtime_env``,
            else from the source of the driver's own modules.
        codec: what is done to every object stored (compression, encryption, a MAC): a
            ``Codec``, or a spec string such as ``"zstd,aes-gcm"`` with keys from
            ``$RAYLINE_KEYS``; by default ``$RAYLINE_CODEC`` (none if unset). The
            namespace's registry and hosts get it when this client creates them; one
            that runs with another is refused (``CodecError``). See docs/codec.md.
    """

    def __init__(self, address: str | None = None, storage: str | None = None,
                 namespace: str = "default", *, connection: Connection | None = None,
                 strict: bool = False, version: str | None = None,
                 expire: Duration | None = None, codec: Codec | str | None = None) -> None:
        self.namespace = validate_id(namespace, what="namespace")
        self.codec = codec_of(codec)
        """What this client's storage reads and writes go through (``None``: plain)."""
        self.version = None if version is None else validate_version(version)
        self.strict = strict
        """The default of ``start(strict=...)``: guard-rail slips fail the run."""
        self.expire = optional_duration(expire, what="expire")
        """The default of ``start(expire=...)``: how long after it closes ``gc`` may
        delete a run (``None``: kept)."""
        self.storage_url = open_store(storage).url
        self.address = address
        self._connection = connection
        self._opened = False
        self._lock: asyncio.Lock | None = None
        self._starts: _Coalescer[StartRequest, StartReply] = _Coalescer(
            lambda host, requests: host.start_many(requests))
        self._results: _Coalescer[str, RunOutcome] = _Coalescer(
            lambda host, workflow_ids: host.results(workflow_ids))
        self.workflow = AsyncWorkflowClient(self)
        self.schedule = AsyncScheduleClient(self)
        self._store: RunStore | None = None

    def runs(self) -> RunStore:
        """The namespace in storage (read directly by exports and large values)."""
        if self._store is None:
            self._store = RunStore(open_store(self.storage_url), self.namespace, self.codec)
        return self._store

    async def encode(self, value: Any, *, what: str) -> Payload:
        """``value`` as a payload; a large one is written to storage first (a thread)."""
        values = Values(self.runs())
        payload = _serde.encode(value, what=what, values=values)
        if values.writes:
            await asyncio.to_thread(values.flush)
        return payload

    async def settle(self, outcome: RunOutcome) -> tuple[Any, BaseException | None]:
        """(value, error) of a run's outcome; a large value is read from storage."""
        if outcome.result is not None and "r" in outcome.result:
            return await asyncio.to_thread(_settle, outcome, Values(self.runs()))
        return _settle(outcome)

    async def settle_update(self, outcome: UpdateOutcome) -> Any:
        """An update's answer: its handler's result (a large one read from storage), or
        its error raised."""
        if outcome.failure is not None:
            raise failures.update_error(outcome.failure)
        payload = outcome.result or {"j": None}
        if "r" in payload:
            return await asyncio.to_thread(_serde.decode, payload, Values(self.runs()))
        return _serde.decode(payload)

    async def connection(self) -> Connection:
        """The open connection, connecting (and resuming unfinished runs) on first use."""
        if self._opened:
            assert self._connection is not None
            return self._connection
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if not self._opened:
                if self._connection is None:
                    actors = importlib.import_module("rayline.actors")
                    self._connection = actors.connect(self.address, self.storage_url,
                                                      self.namespace, self.version, self.codec)
                info = await self._connection.open()
                check_same(self.codec, info.codec, self.namespace)
                self._opened = True
        assert self._connection is not None
        return self._connection

    async def __aenter__(self) -> AsyncClient:
        await self.connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Forgets the connection; workflows keep running in their detached hosts."""
        self._opened = False

    async def resume(self) -> int:
        """Resumes every unfinished workflow found in storage; returns hosts touched."""
        conn = await self.connection()
        return await conn.registry().resume_all()

    async def gc(self, *, dry_run: bool = False,
                 older_than: Duration | None = None) -> GcReport:
        """Deletes from storage each closed run whose ``expire`` has passed (with
        ``older_than``, also closed runs without one that closed that long ago), the early
        signals past their expiry, and the index entries of the workflows removed whole;
        open runs are never touched (see ``rayline._gc``). With ``dry_run``, only says
        what it would delete."""
        keep_for = optional_duration(older_than, what="older_than")
        report = await asyncio.to_thread(_gc.collect, self.runs(), time.time(),
                                          dry_run=dry_run, older_than=keep_for)
        if report.workflows and not dry_run:
            conn = await self.connection()
            await conn.registry().forget(report.workflows)
        return report

    async def retire_idle(self) -> list[str]:
        """Stops now the hosts no run needs any more (see ``rayline retire``)."""
        conn = await self.connection()
        return await conn.registry().retire_idle()

    async def versions(self) -> list[VersionSummary]:
        """The code versions with runs in this namespace: runs per state, the hosts of
        their open runs, and their ``runtime_env``."""
        conn = await self.connection()
        return await conn.registry().versions()

    async def hosts(self) -> list[HostStats]:
        """Every host of the namespace: its node, live, parked and stuck runs, and
        whether it is draining."""
        conn = await self.connection()
        return await conn.registry().host_stats()

    async def drain(self, host: str) -> DrainReport:
        """Moves every run of pool host ``host`` to the rest of its pool and stops it
        (``rayline hosts drain``): before a node is taken away, say. Runs whose activity
        is running move once it ends (or after ``RAYLINE_DRAIN_WAIT`` seconds, when it
        runs again on the new host).

        Raises:
            InvalidInputError: an unknown or dedicated host.
        """
        conn = await self.connection()
        return await conn.registry().drain(host)

    async def drain_node(self, node: str) -> list[DrainReport]:
        """``drain`` for every pool host on Ray node ``node``, which gets no host from now
        on (``rayline hosts drain --node``): before the node is taken away."""
        conn = await self.connection()
        return await conn.registry().drain_node(node)

    async def upgrade(self, old: str, new: str | None = None, *,
                      workflow_ids: list[str] | None = None) -> UpgradeReport:
        """Moves the open runs of code version ``old`` to version ``new`` (by default
        this client's own): each run is replayed on the new code first and moved only
        if that works and none of its activities is running; the report names the runs
        moved and, for each one left on ``old``, why (a ``NonDeterminismError``: make
        the change replay-safe with ``workflow.patched()``).

        Raises:
            InvalidInputError: a bad or unknown version, ``old`` equal to ``new``, or no
                ``new`` for a client without a code version.
        """
        conn = await self.connection()
        target: CodeVersion | str | None = validate_version(new) if new else conn.version
        if target is None:
            raise InvalidInputError("upgrade: name the new code version (this client has "
                                    "none)")
        return await conn.registry().upgrade(validate_version(old), target, workflow_ids)

    async def ui(self, port: int = 8266, *, host: str = "127.0.0.1",
                 read_only: bool = False) -> Any:
        """Starts the web UI on ``host:port`` on this event loop (``pip install
        'rayline[ui]'``; see docs/ui.md) and returns the running server: its ``url``,
        ``await wait()``, ``await stop()``."""
        ui = importlib.import_module("rayline.actors.ui")
        return await ui.serve(self, port=port, host=host, read_only=read_only)


class AsyncWorkflowClient:
    """``client.workflow``: start, execute, get_handle, signal, list."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    @overload
    async def start(self, workflow: Callable[..., Awaitable[R]],
                    **kwargs: Any) -> AsyncWorkflowHandle[R]: ...
    @overload
    async def start(self, workflow: None = None, **kwargs: Any) -> AsyncWorkflowHandle[Any]: ...
    async def start(self, workflow: Any = None, **kwargs: Any) -> AsyncWorkflowHandle[Any]:
        """Starts a workflow and returns its handle without waiting for it.

        Args:
            workflow: an ``@rayline.workflow`` (or any ``async def``); or ``None`` with
                ``workflow_name`` to start a workflow registered by ``Worker.create``.
            args: its arguments, validated against its annotations.
            workflow_id: default (``None``) a new guid; an empty string is refused. At
                most 1,000 characters, no ``/``, ``\\``, ``..`` or control characters.
            task_queue: the host pool that runs it.
            dedicated: run it in a detached Ray actor of its own.
            version: run it on the hosts of this known code version (``rayline
                versions``) instead of the client's own, e.g. to keep new runs on the old
                code during a rollout. Those hosts import that version's code.
            **options: ``id_reuse_policy``, ``id_conflict_policy``, ``search``,
                ``memo``, ``execution_timeout`` (the run is terminated when it has not
                finished by then), ``strict`` (default the client's: code that breaks
                replay or blocks the host fails the run instead of being logged; children
                inherit it), ``start_delay`` (the run exists at once, its code starts
                after this long; signals sent meanwhile wait), ``retry`` (a
                ``RetryPolicy``: a run that raises a retryable error runs again as the
                next run of the id, after the policy's backoff,
                ``workflow.info().attempt`` counting; once attempts run out,
                ``result()`` raises code 597 with the last failure as cause), ``cron``
                (a cron expression, UTC unless it begins ``CRON_TZ=<zone>``: the first run
                starts at its next time, and each run that completes or fails is followed
                by a new run of the id, with the same arguments, at the time after; a
                cancel or terminate ends the chain, and ``result()`` follows it until then;
                ``workflow.info().scheduled_time`` says when a run was due).

        Raises:
            InvalidInputError: a bad id, option, or argument (naming it).
            DuplicateWorkflowError: the id is in use and the reuse policy forbids a new run.
        """
        return (await self._start(workflow, wait=False, **kwargs))[0]

    async def _start(self, workflow: Any = None, *, wait: bool,
                     args: list[Any] | tuple[Any, ...] = (),
                     workflow_id: str | None = None, task_queue: str = "default",
                     workflow_name: str | None = None, dedicated: bool = False,
                     signals: list[tuple[str, Any]] | None = None, version: str | None = None,
                     **options: Any) -> tuple[AsyncWorkflowHandle[Any], StartReply]:
        """Starts a workflow: its handle, and the host's reply (with ``wait``, which comes
        once the workflow has finished, with its outcome, unless the run moved away). The
        arguments are ``start``'s."""
        unknown = set(options) - set(_START_OPTIONS)
        if unknown:
            raise InvalidInputError(f"unknown start option(s): {', '.join(sorted(unknown))}")
        workflow_id = uuid.uuid4().hex if workflow_id is None else validate_id(workflow_id)
        validate_task_queue(task_queue)
        if version is not None:
            validate_version(version)
        search = search_fields(options.get("search"))
        validate_fields(options.get("memo"), what="memo")
        cron = options.get("cron")
        if cron is not None:
            cron_spec(cron)
            if options.get("start_delay") or signals:
                raise InvalidInputError("a cron start cannot also take start_delay or "
                                        "signals")
        code: CodeRef | None = None
        if workflow is not None:
            definition = as_workflow(workflow)
            checked = validate_args(definition.fn, tuple(args),
                                    what=f"workflow {definition.name!r}")
            code, name = CodeRef.of(definition), workflow_name or definition.name
        elif workflow_name:
            checked, name = tuple(args), workflow_name
        else:
            raise InvalidInputError("start() needs a workflow function or a workflow_name")
        args = [await self._client.encode(arg, what=f"workflow {name!r} argument {i}")
                for i, arg in enumerate(checked)]
        sent = [SignalIn(signal_id=s, data=await self._client.encode(d, what=f"signal {s!r}"),
                         request_id=uuid.uuid4().hex) for s, d in signals or ()]
        request = StartRequest(
            workflow_id=workflow_id, task_queue=task_queue, workflow_name=name, code=code,
            args=args,
            id_reuse_policy=options.get("id_reuse_policy"),
            id_conflict_policy=options.get("id_conflict_policy"),
            start_delay=optional_duration(options.get("start_delay"), what="start_delay"),
            search=search, memo=options.get("memo") or {},
            options=RunOptions(execution_timeout=optional_duration(
                options.get("execution_timeout") or None, what="execution_timeout"),
                strict=bool(options.get("strict", self._client.strict)),
                retry=retry_json(options.get("retry")), cron=cron,
                expire=optional_duration(options.get("expire"), what="expire")
                if "expire" in options else self._client.expire),
            signals=sent, request_id=uuid.uuid4().hex, trace=_tracing.carrier(), wait=wait)
        conn = await self._client.connection()
        schedule = itertools.islice(_backoff.delays(cap=1.0), _RELOCATE_ATTEMPTS)
        for attempt, delay in enumerate(schedule):
            host = await conn.place(task_queue, workflow_id, dedicated, version,
                                    fresh=attempt > 0)
            try:
                if request.wait:  # held until the workflow ends: not batched with others
                    reply = await conn.host(host).start(request)
                else:
                    reply = await self._client._starts.call(conn, host, request)
                break
            except HostDiedError:
                if not request.wait:
                    raise  # a bounded wait already happened: tell the caller
                # started or not: the same request again (its id makes it once), then
                # the result is asked for where the run is
                request = request.model_copy(update={"wait": False})
            except NotHereError:  # a draining host: the pool changed, place it again
                await asyncio.sleep(delay)
        else:
            raise NotHereError(f"no host of task queue {task_queue!r} took workflow "
                               f"{workflow_id}")
        handle = AsyncWorkflowHandle[Any](self._client, workflow_id, reply.run_id, name, host)
        return handle, reply

    @overload
    async def execute(self, workflow: Callable[..., Awaitable[R]], **kwargs: Any) -> R: ...
    @overload
    async def execute(self, workflow: None = None, **kwargs: Any) -> Any: ...
    async def execute(self, workflow: Any = None, **kwargs: Any) -> Any:
        """``start`` and then ``result``, in one call to the host when it can (the host
        answers the start once the workflow has finished)."""
        handle, reply = await self._start(workflow, wait=True, **kwargs)
        if reply.outcome is None:  # it moved away (or its host died): ask where it is
            return await handle.result()
        handle.run_id = reply.outcome.run_id
        value, error = await self._client.settle(reply.outcome)
        if error is not None:
            raise error
        return value

    async def get_handle(self, workflow_id: str,
                         run_id: str | None = None) -> AsyncWorkflowHandle[Any]:
        """A handle to an existing workflow, from any process.

        Raises:
            WorkflowNotFoundError: no workflow with this id in the namespace.
        """
        validate_id(workflow_id)
        conn = await self._client.connection()
        host = await conn.locate(workflow_id)
        return AsyncWorkflowHandle(self._client, workflow_id, run_id, None, host)

    async def batch(self, query: dict[str, Any], action: str, *, job_id: str | None = None,
                    rate: float = 50.0, concurrency: int = 16,
                    progress: Callable[[int, int], None] | None = None,
                    **arguments: Any) -> BatchReport:
        """Applies ``action`` to every workflow ``query`` matches, as a job kept in
        storage: the same call again after an interruption resumes it (see
        ``rayline._batch``).

        Args:
            query: the filters of ``list`` as a dict (``{"search": {"batch": "b1"},
                "status": "running"}``); the matching ids are listed once, when the job
                is made.
            action: ``signal`` (``signal_id=``, ``data=``), ``cancel``, ``terminate``
                (``reason=``) or ``reset`` (``to=``, ``reason=``).
            job_id: names the job (default: derived from the query, action and
                arguments).
            rate: actions started per second at most.
            concurrency: actions in flight at most.
            progress: called with (done, matched) as the job goes.

        Returns:
            A ``BatchReport``: matched, succeeded (over every call of the job), and each
            failure by workflow id.
        """
        return await run_batch(self._client, query, action, job_id=job_id, rate=rate,
                               concurrency=concurrency, arguments=arguments,
                               progress=progress)

    async def fork(self, workflow_id: str, from_: int | str = "last_failure", *,
                   new_workflow_id: str | None = None, reason: str | None = None,
                   reapply_signals: bool = False) -> AsyncWorkflowHandle[Any]:
        """A new workflow (``new_workflow_id``, default a new guid) that takes over the
        steps of ``workflow_id``'s latest run before ``from_`` (as ``handle.reset``'s
        ``to``) and goes on live with the current code; the original is left as it is.

        Raises:
            InvalidInputError: ``from_`` names nothing in the run, or the current code
                does not replay the steps before it.
            DuplicateWorkflowError: ``new_workflow_id`` has a run already.
        """
        source: AsyncWorkflowHandle[Any] = await self.get_handle(workflow_id)
        request = ResetRequest(
            workflow_id=workflow_id, to=from_, reason=reason, reapply_signals=reapply_signals,
            new_workflow_id=validate_id(new_workflow_id or uuid.uuid4().hex),
            request_id=uuid.uuid4().hex)
        reply = await source._on_host(lambda host: host.reset(request))
        return AsyncWorkflowHandle(self._client, reply.workflow_id, reply.run_id,
                                   source.workflow_name, reply.host)

    async def signal(self, workflow_id: str, signal_id: str, data: Any = None,
                     expire: Duration = "10m", *, buffer_if_missing: bool = False) -> None:
        """Signals a workflow by id.

        With ``buffer_if_missing=True`` a signal to an id that has no run yet is kept (for
        ``expire``) and delivered when a workflow with that id starts.
        """
        handle: AsyncWorkflowHandle[Any] = AsyncWorkflowHandle(
            self._client, validate_id(workflow_id), None, None, None)
        await handle._signal(signal_id, data, expire, buffer_if_missing)

    async def signal_with_start(self, workflow: Any = None, *, signal_id: str,
                                data: Any = None, **kwargs: Any) -> AsyncWorkflowHandle[Any]:
        """Signals the workflow if its run is open, else starts it with the signal first
        in its buffer: one step on the host, so concurrent callers get one workflow and
        each caller's signals arrive in order. Takes ``start``'s arguments
        (``signal_data=`` is the old name of ``data``)."""
        if "signal_data" in kwargs:
            data = kwargs.pop("signal_data")
        kwargs.setdefault("id_conflict_policy", "use_existing")
        for _ in range(2):
            try:
                return await self.start(workflow, signals=[(signal_id, data)], **kwargs)
            except WorkflowClosedError:  # it closed between the start and the signal
                continue
        return await self.start(workflow, signals=[(signal_id, data)], **kwargs)

    async def list(self, status: str | None = None, workflow_name: str | None = None,
                   search: dict[str, Any] | None = None, *, task_queue: str | None = None,
                   version: str | None = None,
                   started_after: float | datetime | None = None,
                   started_before: float | datetime | None = None,
                   closed_after: float | datetime | None = None,
                   closed_before: float | datetime | None = None,
                   order_by: str = "-started_at", limit: int = 100,
                   page_token: str | None = None) -> WorkflowPage:
        """One page of this namespace's workflows (the latest run of each id) that meet
        every condition given, newest first unless ``order_by`` says otherwise.

        ``status`` is one of ``running``, ``stuck``, ``quarantined``, ``completed``,
        ``failed``, ``cancelled``, ``terminated``, ``continued``. ``search`` holds, per
        field written with ``workflow.search``, a value (equality; a list field matches
        when it contains it) or operators: ``{"score": {">=": 0.9, "<": 1}}``,
        ``{"region": {"in": ["eu", "us"]}}``. Times are ``datetime`` (naive means UTC)
        or seconds since the epoch; ``*_after`` includes its bound, ``*_before`` does
        not. ``order_by`` is ``started_at``, ``closed_at`` or ``workflow_id``, ``-`` in
        front for descending. The page is a list; its ``next_page_token``, when set,
        is the ``page_token`` of the next page.
        """
        request = ListRequest(**self._filter(
            status, workflow_name, search, task_queue, version, started_after,
            started_before, closed_after, closed_before), **_checked_paging(
            order_by, limit, page_token))
        conn = await self._client.connection()
        reply = await conn.registry().list(request)
        return WorkflowPage(reply.items, reply.next_page_token)

    async def count(self, status: str | None = None, workflow_name: str | None = None,
                    search: dict[str, Any] | None = None, *, task_queue: str | None = None,
                    version: str | None = None,
                    started_after: float | datetime | None = None,
                    started_before: float | datetime | None = None,
                    closed_after: float | datetime | None = None,
                    closed_before: float | datetime | None = None,
                    group_by: str | None = None) -> CountReply:
        """How many workflows meet the conditions (as for ``list``); with ``group_by``
        (``status``, ``workflow_name``, ``task_queue`` or ``version``) also how many per
        value, in ``groups``."""
        if group_by not in (None, *typing.get_args(CountGroup)):
            raise InvalidInputError(f"group_by must be one of "
                                    f"{', '.join(typing.get_args(CountGroup))}, got {group_by!r}")
        request = CountRequest(**self._filter(
            status, workflow_name, search, task_queue, version, started_after,
            started_before, closed_after, closed_before),
            group_by=typing.cast(CountGroup | None, group_by))
        conn = await self._client.connection()
        return await conn.registry().count(request)

    @staticmethod
    def _filter(status: str | None, workflow_name: str | None,
                search: dict[str, Any] | None, task_queue: str | None, version: str | None,
                started_after: float | datetime | None,
                started_before: float | datetime | None,
                closed_after: float | datetime | None,
                closed_before: float | datetime | None) -> dict[str, Any]:
        """The conditions of ``list`` and ``count``, checked and in the index's terms."""
        try:
            state = None if status is None else RunStatus(status)
        except ValueError:
            known = ", ".join(s.value for s in RunStatus)
            raise InvalidInputError(f"status must be one of {known}, got {status!r}") from None
        return {"status": state, "workflow_name": workflow_name, "task_queue": task_queue,
                "version": version, "search": conditions(search),
                "started_after": timestamp(started_after, "started_after"),
                "started_before": timestamp(started_before, "started_before"),
                "closed_after": timestamp(closed_after, "closed_after"),
                "closed_before": timestamp(closed_before, "closed_before")}


def _checked_paging(order_by: str, limit: int, page_token: str | None) -> dict[str, Any]:
    orders = typing.get_args(ListOrder)
    if order_by not in orders:
        raise InvalidInputError(f"order_by must be one of {', '.join(orders)}, got "
                                f"{order_by!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidInputError(f"limit must be a positive int, got {limit!r}")
    if page_token is not None and not isinstance(page_token, str):
        raise InvalidInputError(f"page_token must be a str from list(), got {page_token!r}")
    return {"order_by": order_by, "limit": limit, "page_token": page_token}


class AsyncWorkflowHandle(Generic[R]):
    """A workflow, by id; survives host restarts (it finds the workflow again).
    ``R`` is its result type (``Any`` for a handle got by id)."""

    def __init__(self, client: AsyncClient, workflow_id: str, run_id: str | None,
                 workflow_name: str | None, host: str | None) -> None:
        self._client = client
        self.workflow_id = workflow_id
        self.run_id = run_id
        self._workflow_name = workflow_name
        self._host = host

    @property
    def workflow_name(self) -> str | None:
        return self._workflow_name

    async def _on_host(self, call: Callable[[HostAPI], Awaitable[T]]) -> T:
        """Makes ``call`` on the workflow's host, finding it again when it moved."""
        conn = await self._client.connection()
        for delay in itertools.islice(_backoff.delays(cap=1.0), _RELOCATE_ATTEMPTS):
            if self._host is None:
                self._host = await conn.locate(self.workflow_id)
            try:
                return await call(conn.host(self._host))
            except HostDiedError:
                raise  # a bounded wait already happened: tell the caller
            except NotHereError:
                self._host = None
                await asyncio.sleep(delay)
        raise RaylineError(f"workflow {self.workflow_id}: no host answers for it")

    @overload
    async def result(self, throw_on_error: Literal[True] = True,
                     timeout: Duration | None = None) -> R: ...
    @overload
    async def result(self, throw_on_error: Literal[False],
                     timeout: Duration | None = None) -> R | BaseException: ...
    async def result(self, throw_on_error: bool = True, timeout: Duration | None = None) -> Any:
        """Waits for the workflow to finish and returns its result (follows continue-as-new).

        Raises:
            WorkflowFailedError: the workflow raised (``cause_type``, ``code``, ``stack``);
                a cancelled workflow's error has a ``CancelledFailure`` as ``__cause__``.
            WorkflowTerminatedError: it was terminated (code 410).
            TimeoutError: ``timeout`` passed first.
        """
        seconds = optional_duration(timeout, what="result timeout")
        work = self._outcome()
        outcome = await (asyncio.wait_for(work, seconds) if seconds is not None else work)
        self.run_id = outcome.run_id
        value, error = await self._client.settle(outcome)
        if error is None:
            return value
        if throw_on_error:
            raise error
        return error

    async def _outcome(self) -> RunOutcome:
        """The latest run's outcome: asked together with other handles' waits when the
        host is known, else (or once the workflow moved) by ``_call``."""
        outcome: RunOutcome
        if self._host is not None:
            conn = await self._client.connection()
            try:
                outcome = await self._client._results.call(conn, self._host, self.workflow_id)
                return outcome
            except HostDiedError:
                raise
            except NotHereError:
                self._host = None
        return await self._on_host(lambda host: host.result(self.workflow_id, None, True))

    async def signal(self, signal_id: str, data: Any = None, expire: Duration = "10m") -> None:
        """Delivers a signal; returns once it is durable. Buffered in order for ``expire``
        if the workflow is not waiting for it yet."""
        await self._signal(signal_id, data, expire, False)

    async def _signal(self, signal_id: str, data: Any, expire: Duration,
                      buffer_if_missing: bool) -> None:
        if not isinstance(signal_id, str) or not signal_id:
            raise InvalidInputError("signal id must be a non-empty string")
        payload = await self._client.encode(data, what=f"signal {signal_id!r} data")
        seconds = optional_duration(expire, what="signal expire")
        if buffer_if_missing and self._host is None:
            conn = await self._client.connection()
            host = await conn.registry().locate_or_none(self.workflow_id)
            if host is None:
                host = await conn.place("default", self.workflow_id, False)
            self._host = host
        request_id = uuid.uuid4().hex  # the same on every retry: the host records it once
        await self._on_host(lambda host: host.signal(
            self.workflow_id, signal_id, payload, seconds, request_id, buffer_if_missing))

    async def cancel(self) -> None:
        """Cooperative cancel: the workflow sees ``CancelledFailure`` and may clean up."""
        await self._on_host(lambda host: host.cancel(self.workflow_id, None))

    async def terminate(self, reason: str | None = None, descend: bool = False) -> None:
        """Stops the workflow now; no workflow code runs after this. With ``descend``, its
        children still open are terminated too, and theirs, down the tree (a workflow
        that has closed already is not an error then: its open children still go).

        Raises:
            WorkflowClosedError: (without ``descend``) the workflow has closed.
        """
        try:
            await self._on_host(lambda host: host.terminate(self.workflow_id, reason))
        except WorkflowClosedError:
            if not descend:
                raise
        if descend:
            await self._terminate_children(reason)

    async def _terminate_children(self, reason: str | None) -> None:
        """Terminates (with ``descend``) each child of the latest run that its timeline
        does not show closed."""
        def children() -> list[str]:
            _, batches = export.load_run(self._client.runs(), self.workflow_id, None)
            started = {c.seq: c.workflow_id for b in batches for c in b.commands
                       if c.type == "start_child"}
            for batch in batches:
                for event in batch.events:
                    if event.type in ("child_completed", "child_failed"):
                        started.pop(event.seq, None)
            return list(started.values())

        async def one(child_id: str) -> None:
            try:
                handle = await self._client.workflow.get_handle(child_id)
                await handle.terminate(f"parent {self.workflow_id} terminated"
                                       + (f": {reason}" if reason else ""), descend=True)
            except (WorkflowClosedError, WorkflowNotFoundError):
                pass  # it closed meanwhile, or never started
        await asyncio.gather(*(one(c) for c in await asyncio.to_thread(children)))

    async def release(self) -> None:
        """Lets a quarantined workflow (``describe().state == "quarantined"``) load and
        run again, once the code that crashed its host is fixed.

        Raises:
            InvalidInputError: the workflow is not quarantined.
        """
        await self._on_host(lambda host: host.release(self.workflow_id))

    async def describe(self) -> WorkflowDescription:
        """Status, task queue, times, parent, search fields and pending work."""
        info = await self._on_host(lambda host: host.describe(self.workflow_id))
        self._workflow_name = info.workflow_name
        return info

    async def status(self) -> int:
        """0 completed; > 0 running (open obligations); < 0 failed, cancelled, terminated."""
        return (await self.describe()).status

    async def state(self, metadata: bool = False) -> dict[str, Any]:
        """``{done, response, error}`` of the latest run; with metadata, times and ids too."""
        info = await self.describe()
        outcome = info.outcome
        state: dict[str, Any] = {"done": outcome is not None
                                 and outcome.status is not RunStatus.CONTINUED,
                                 "response": None, "error": None}
        if outcome is not None:
            value, error = await self._client.settle(outcome)
            state["response"] = value
            if error is not None:
                state["error"] = {"message": str(error), "type": type(error).__name__,
                                  "code": getattr(error, "code", 500),
                                  "stack": getattr(error, "stack", "")}
        if metadata:
            state.update(info.model_dump(include={"workflow_id", "run_id", "workflow_name",
                                                  "task_queue", "status", "attempt",
                                                  "started_at", "updated_at", "parent"}))
        return state

    async def query_state(self, fields: list[str] | None = None) -> dict[str, Any]:
        """The fields written with ``workflow.search`` and ``workflow.enrich``."""
        info = await self.describe()
        merged = {**info.search, **info.enrich}
        return merged if fields is None else {k: merged.get(k) for k in fields}

    async def query(self, name: str, *args: Any) -> Any:
        """Calls the workflow's query handler ``name`` on its live state."""
        return await self._on_host(lambda host: host.query(self.workflow_id, name, args))

    async def reset(self, to: int | str = "last_failure", *, reason: str | None = None,
                    reapply_signals: bool = True) -> AsyncWorkflowHandle[R]:
        """Re-runs the workflow from a point of its latest run, with the code the hosts
        have now: a new run of the id takes over the old run's recorded steps before
        ``to`` (they are not run again) and goes on live; the old run (terminated first
        if still open) reads as ``reset``, pointing at the new one. ``to``:
        ``"last_failure"`` (the default: the last failed activity or child runs again),
        ``"first_activity_failure"``, ``"last_replayable"`` (a run stuck after a code
        change goes on from where the new code agrees), an ``event_id`` of
        ``export_execution()`` (that event and everything after happen again), or a
        marker key such as ``"-proxy-3-"``. Signals recorded after the point go to the
        new run unless ``reapply_signals=False``. Returns this handle, on the new run.

        Raises:
            InvalidInputError: ``to`` names nothing in the run, or the current code does
                not replay the steps before it.
        """
        request = ResetRequest(workflow_id=self.workflow_id, to=to, reason=reason,
                               reapply_signals=reapply_signals, request_id=uuid.uuid4().hex)
        reply = await self._on_host(lambda host: host.reset(request))
        self.run_id, self._host = reply.run_id, reply.host
        return self

    async def execute_update(self, name: str, *args: Any, update_id: str | None = None) -> Any:
        """Sends update ``name`` with ``args`` to the workflow's update handler and
        returns what the handler returned, once that is durable. The same ``update_id``
        sent again gets the same answer (the handler runs once).

        Raises:
            UpdateRejectedError: the workflow has no such handler, the arguments do not fit
                it, or its validator refused them (nothing was recorded).
            UpdateFailedError: the handler raised (its error is the ``__cause__``).
            WorkflowClosedError: the workflow closed before the update ended.
        """
        outcome = await self._update(name, args, update_id, wait=True)
        return await self._client.settle_update(outcome)

    async def start_update(self, name: str, *args: Any,
                           update_id: str | None = None) -> AsyncUpdateHandle:
        """Sends an update and returns once the workflow has taken it (checked and
        recorded), with a handle whose ``result()`` waits for the handler's answer.

        Raises:
            UpdateRejectedError: as for ``execute_update``.
        """
        outcome = await self._update(name, args, update_id, wait=False)
        return AsyncUpdateHandle(self, outcome.update_id, outcome if outcome.done else None)

    async def get_update_handle(self, update_id: str) -> AsyncUpdateHandle:
        """A handle on an update sent before (by its ``update_id``)."""
        if not isinstance(update_id, str) or not update_id:
            raise InvalidInputError("update id must be a non-empty string")
        return AsyncUpdateHandle(self, update_id, None)

    async def _update(self, name: str | None, args: Sequence[Any], update_id: str | None,
                      wait: bool) -> UpdateOutcome:
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidInputError("update name must be a non-empty string")
        if update_id is not None and (not isinstance(update_id, str) or not update_id):
            raise InvalidInputError("update id must be a non-empty string")
        payloads = [await self._client.encode(arg, what=f"update {name!r} argument")
                    for arg in args]
        chosen = update_id or uuid.uuid4().hex  # the same on every retry: taken once
        return await self._on_host(lambda host: host.update(
            self.workflow_id, chosen, name, payloads, wait))

    def _runs(self) -> RunStore:
        return self._client.runs()

    async def export(self, allow: list[str] | None = None, block: list[str] | None = None,
                     values: bool = True, unpickle: bool = False) -> DurableJobExport:
        """HotMesh's ``DurableJobExport`` of the run: ``data`` (inputs, search and enrich
        fields), ``state``, ``status``, ``timeline`` (a marker per durable call) and
        ``transitions`` (one per activity); ``allow``/``block`` pick sections (the others
        are ``None``), ``values=False`` leaves payloads out (keys and times stay).
        Pickled values show as ``{"pickled": type, "bytes": n}`` unless ``unpickle=True``
        (unpickling runs code from storage: trust the storage first)."""
        for name in [*(allow or ()), *(block or ())]:
            if name not in export.SECTIONS:
                raise InvalidInputError(f"unknown export section {name!r} (one of "
                                        f"{', '.join(export.SECTIONS)})")

        def build() -> DurableJobExport:
            started, batches = export.load_run(self._runs(), self.workflow_id, self.run_id)
            with export.unpickling(unpickle):
                return export.build_export(started, batches, allow=allow, block=block,
                                           values=values)
        return await asyncio.to_thread(build)

    async def export_execution(self, mode: str = "sparse", exclude_system: bool = False,
                               omit_results: bool = False, enrich_inputs: bool = False,
                               allow_direct_query: bool = False, unpickle: bool = False,
                               max_depth: int = 5) -> WorkflowExecution:
        """The run as numbered, typed events with back-references and a summary
        (``WorkflowExecution``). ``mode="verbose"`` nests the children's executions in
        ``children`` (``max_depth`` levels); ``exclude_system`` drops rayline's own
        bookkeeping events; ``omit_results`` leaves every payload out; ``enrich_inputs``
        adds each activity's and child's inputs; ``allow_direct_query`` asks a running
        workflow's host too, which adds its activities running now
        (``activity_task_started``, with their attempt and last heartbeat). Pickled values
        are shown by type and size unless ``unpickle=True``."""
        if mode not in ("sparse", "verbose"):
            raise InvalidInputError("mode must be 'sparse' or 'verbose'")
        runs = self._runs()

        def build(workflow_id: str, run_id: str | None, depth: int
                  ) -> WorkflowExecution:
            started, batches = export.load_run(runs, workflow_id, run_id)

            def child(child_id: str) -> WorkflowExecution | None:
                if depth >= max_depth:
                    return None
                try:
                    return build(child_id, None, depth + 1)
                except RaylineError:
                    return None
            with export.unpickling(unpickle):
                return export.build_execution(
                    started, batches, mode=mode, exclude_system=exclude_system,
                    omit_results=omit_results, enrich_inputs=enrich_inputs, load_child=child)
        execution = await asyncio.to_thread(build, self.workflow_id, self.run_id, 1)
        if allow_direct_query and execution.status == RunStatus.RUNNING.value:
            live = await self.describe()
            if live.run_id == execution.run_id:
                export.add_live(execution, live.pending, time.time())
        return execution


def _settle(outcome: RunOutcome, values: Values | None = None
            ) -> tuple[Any, BaseException | None]:
    """(value, error) for a run's outcome."""
    if outcome.status is RunStatus.COMPLETED:
        return _serde.decode(outcome.result or {"j": None}, values), None
    if outcome.status is RunStatus.TERMINATED:
        return None, WorkflowTerminatedError(outcome.reason or "workflow terminated")
    if outcome.status is RunStatus.CONTINUED or outcome.failure is None:
        return None, None
    error = failures.workflow_error(outcome.failure)
    if outcome.status is RunStatus.CANCELLED:
        error.__cause__ = CancelledFailure(outcome.failure.message)
    return None, error


# ------------------------------------------------------------------ sync facade


class AsyncUpdateHandle:
    """An update sent to a workflow: ``result()`` waits for its handler's answer."""

    def __init__(self, workflow: AsyncWorkflowHandle[Any], update_id: str,
                 outcome: UpdateOutcome | None) -> None:
        self.workflow_id = workflow.workflow_id
        self.update_id = update_id
        self._workflow = workflow
        self._outcome = outcome

    async def result(self, timeout: Duration | None = None) -> Any:
        """What the update's handler returned, once durable.

        Raises:
            UpdateFailedError: the handler raised.
            WorkflowClosedError: the workflow closed before the update ended.
            InvalidInputError: the workflow never took an update of this id.
            TimeoutError: ``timeout`` passed first.
        """
        seconds = optional_duration(timeout, what="update result timeout")
        if self._outcome is None:
            work = self._workflow._update(None, (), self.update_id, wait=True)
            self._outcome = await (asyncio.wait_for(work, seconds) if seconds is not None
                                   else work)
        return await self._workflow._client.settle_update(self._outcome)


class _LoopThread:
    """A private event loop in a daemon thread; the sync facade runs coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rayline-client",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class WorkflowHandle(Facade, Generic[R], twin_of=AsyncWorkflowHandle):
    """The sync twin of :class:`AsyncWorkflowHandle`: same names, blocking."""

    @overload
    def result(self, throw_on_error: Literal[True] = True,
               timeout: Duration | None = None) -> R: ...
    @overload
    def result(self, throw_on_error: Literal[False],
               timeout: Duration | None = None) -> R | BaseException: ...
    def result(self, throw_on_error: bool = True, timeout: Duration | None = None) -> Any:
        """Waits for the workflow to finish and returns its result (see
        :meth:`AsyncWorkflowHandle.result`)."""
        return self._runner.run(self._target.result(throw_on_error, timeout))


class WorkflowClient(Facade, twin_of=AsyncWorkflowClient):
    """The sync twin of :class:`AsyncWorkflowClient`: same names, blocking."""

    @overload
    def start(self, workflow: Callable[..., Awaitable[R]], **kwargs: Any) -> WorkflowHandle[R]: ...
    @overload
    def start(self, workflow: None = None, **kwargs: Any) -> WorkflowHandle[Any]: ...
    def start(self, workflow: Any = None, **kwargs: Any) -> WorkflowHandle[Any]:
        """Starts a workflow (see :meth:`AsyncWorkflowClient.start`)."""
        return WorkflowHandle(self._runner.run(self._target.start(workflow, **kwargs)),
                              self._runner)

    @overload
    def execute(self, workflow: Callable[..., Awaitable[R]], **kwargs: Any) -> R: ...
    @overload
    def execute(self, workflow: None = None, **kwargs: Any) -> Any: ...
    def execute(self, workflow: Any = None, **kwargs: Any) -> Any:
        """``start`` and then ``result``."""
        return self._runner.run(self._target.execute(workflow, **kwargs))

    def get_handle(self, workflow_id: str, run_id: str | None = None) -> WorkflowHandle[Any]:
        """A handle to an existing workflow (see :meth:`AsyncWorkflowClient.get_handle`)."""
        return WorkflowHandle(self._runner.run(self._target.get_handle(workflow_id, run_id)),
                              self._runner)


class UpdateHandle(Facade, twin_of=AsyncUpdateHandle):
    """The sync twin of :class:`AsyncUpdateHandle`: same names, blocking."""




class Client:
    """Entry point (sync): ``rayline.Client()``; arguments as for :class:`AsyncClient`.

    Connects at once (starting a local Ray if none is running, resuming unfinished
    workflows on a fresh cluster).
    """

    def __init__(self, address: str | None = None, storage: str | None = None,
                 namespace: str = "default", *, connection: Connection | None = None,
                 strict: bool = False, version: str | None = None,
                 expire: Duration | None = None, codec: Codec | str | None = None) -> None:
        self._runner = _LoopThread()
        codec = codec_of(codec)
        if connection is None:  # join or start Ray from the caller's (main) thread
            actors = importlib.import_module("rayline.actors")
            connection = actors.connect(address, open_store(storage).url, namespace,
                                        None if version is None else validate_version(version),
                                        codec)
        self.aio = AsyncClient(address, storage, namespace, connection=connection,
                               strict=strict, version=version, expire=expire, codec=codec)
        self.namespace = self.aio.namespace
        self.storage_url = self.aio.storage_url
        self.workflow = WorkflowClient(self.aio.workflow, self._runner)
        self.schedule = ScheduleClient(self.aio.schedule, self._runner)
        self._runner.run(self.aio.connection())

    def run(self, coro: Awaitable[T]) -> T:
        """Runs a coroutine of the async client on the client's loop."""
        async def main() -> T:
            return await coro
        return self._runner.run(main())

    def resume(self) -> int:
        return self._runner.run(self.aio.resume())

    def versions(self) -> list[VersionSummary]:
        return self._runner.run(self.aio.versions())

    def upgrade(self, old: str, new: str | None = None, *,
                workflow_ids: list[str] | None = None) -> UpgradeReport:
        return self._runner.run(self.aio.upgrade(old, new, workflow_ids=workflow_ids))

    def gc(self, *, dry_run: bool = False, older_than: Duration | None = None) -> GcReport:
        """See :meth:`AsyncClient.gc`."""
        return self._runner.run(self.aio.gc(dry_run=dry_run, older_than=older_than))

    def hosts(self) -> list[HostStats]:
        return self._runner.run(self.aio.hosts())

    def drain(self, host: str) -> DrainReport:
        return self._runner.run(self.aio.drain(host))

    def drain_node(self, node: str) -> list[DrainReport]:
        return self._runner.run(self.aio.drain_node(node))

    def close(self) -> None:
        self._runner.run(self.aio.close())

    def ui(self, port: int = 8266, *, host: str = "127.0.0.1", read_only: bool = False,
           block: bool = True) -> Any:
        """Serves the web UI on ``host:port`` until interrupted; ``block=False`` returns
        the running server at once (its ``url``; ``stop()`` ends it)."""
        server = Facade(self._runner.run(self.aio.ui(port, host=host, read_only=read_only)),
                         self._runner)
        if block:
            try:
                server.wait()
            except KeyboardInterrupt:
                server.stop()
        return server
