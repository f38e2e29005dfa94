"""The web UI in a real headless browser (Debian's chromium, driven by Selenium through
its chromedriver) against the session's live Ray: the list with its statuses and
filters, a workflow's timeline and child, a signal and a terminate sent from the page,
a ``<script>`` payload shown as text; read-only and CSRF refusals over plain HTTP; and
the list endpoint over a registry holding 10,000 workflows, a page at a time.

Set ``RAYLINE_UI_SCREENSHOTS=docs`` to save the list and a workflow page as PNG there
(the README's screenshots; see docs/ui.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import rayline
from rayline.actors.ui import UIServer, serve
from rayline.client import AsyncClient
from rayline.engine import registry as registry_module
from rayline.engine.registry import Registry
from rayline.messages import CountRequest, ListRequest, RegistryInfo, RunStatus
from rayline.storage import MemoryStore, RunStore
from tests.unit.test_index import N, _summary
from tests.unit.test_registry import Launcher

from . import ui_flows
from .conftest import _kill_namespace

selenium = pytest.importorskip("selenium")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver import Chrome, ChromeOptions  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT = 60
"""Seconds a wait for the page's state may take at most (the index follows the hosts'
reports by up to a second; a loaded machine is slower)."""
SCREENSHOTS = os.environ.get("RAYLINE_UI_SCREENSHOTS")


# ------------------------------------------------------------------ fixtures

def _binaries() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        why = ("Debian's chromium and chromium-driver are not installed (make test installs "
               "them: apt-get install chromium chromium-driver)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    binary, driver = _binaries()
    options = ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1440,900", "--no-first-run",
                     "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    chrome = Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(WAIT)
    yield chrome
    chrome.quit()


def _serve(client: rayline.Client, **options: Any) -> UIServer:
    server: UIServer = client.run(serve(client.aio, port=0, refresh=0.5, **options))
    return server


@pytest.fixture
def namespace(ray_cluster: dict[str, Any]) -> Iterator[str]:
    """A short namespace of the test's own (the pages show it)."""
    name = f"ui-{uuid.uuid4().hex[:6]}"
    yield name
    _kill_namespace(name)


@pytest.fixture
def ui(client: rayline.Client) -> Iterator[UIServer]:
    """The UI over the test's client, on a free local port, refreshing every 0.5 s."""
    server = _serve(client)
    yield server
    client.run(server.stop())


def _until(browser: Chrome, check: Callable[[Chrome], Any], what: str) -> Any:
    return WebDriverWait(browser, WAIT, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        check, message=f"the page never showed {what}")


def _rows(browser: Chrome) -> dict[str, str]:
    """The list page's rows, workflow id -> status (read at once: refreshes swap them)."""
    pairs = browser.execute_script(
        "return Array.from(document.querySelectorAll('#workflows tr[data-workflow-id]'),"
        " (tr) => [tr.dataset.workflowId, tr.dataset.status]);")
    return dict(pairs)


def _click(browser: Chrome, css: str) -> None:
    """Clicks the element once it is there (found again if a refresh replaced it)."""
    def clicked(driver: Chrome) -> bool:
        element = driver.find_element(By.CSS_SELECTOR, css)
        if not element.is_displayed() or not element.is_enabled():
            return False
        element.click()
        return True
    _until(browser, clicked, f"a clickable {css}")


def _status(browser: Chrome) -> str | None:
    return browser.execute_script(
        "const b = document.querySelector('#workflow-status [data-status]');"
        " return b ? b.dataset.status : null;")


def _screenshot(browser: Chrome, name: str) -> None:
    """Saves the whole page as ``$RAYLINE_UI_SCREENSHOTS/<name>``, when that is set."""
    if not SCREENSHOTS:
        return
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 1440, "height": min(int(height), 2400), "deviceScaleFactor": 1,
        "mobile": False})
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        browser.get_screenshot_as_file(str(folder / name))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _page(server: UIServer, path: str) -> str:
    return server.url.rstrip("/") + path


def _workflow_page(server: UIServer, workflow_id: str) -> str:
    return _page(server, "/workflows/" + urllib.parse.quote(workflow_id, safe=""))


# ------------------------------------------------------------------ the browser tests

def test_the_list_shows_each_workflow_with_its_status_and_filters_narrow_it(
        client: rayline.Client, ui: UIServer, browser: Chrome) -> None:
    start = client.workflow.start
    trained = [start(ui_flows.pipeline, args=[data], workflow_id=f"train-{data}")
               for data in ("imagenet", "coco")]
    waiting = start(ui_flows.approval, args=["deploy v2"], workflow_id="approve-deploy")
    failing = start(ui_flows.fails, args=["disk full"], workflow_id="nightly-etl")
    for handle in trained:
        handle.result(timeout=WAIT)
    assert isinstance(failing.result(throw_on_error=False, timeout=WAIT),
                      rayline.WorkflowFailedError)
    expected = {"train-imagenet": "completed", "train-coco": "completed",
                "train-imagenet-report": "completed", "train-coco-report": "completed",
                "approve-deploy": "running", "nightly-etl": "failed"}
    assert waiting.describe().state is RunStatus.RUNNING

    browser.get(ui.url)
    _until(browser, lambda b: _rows(b) == expected, f"the rows {expected}")
    counts = {s: browser.find_element(By.CSS_SELECTOR,
                                      f'[data-count-status="{s}"] .stat-n').text
              for s in ("all", "completed", "running", "failed")}
    assert counts == {"all": "6", "completed": "4", "running": "1", "failed": "1"}
    _screenshot(browser, "ui-list.png")

    # the status filter of the form narrows the list to completed runs
    Select(browser.find_element(By.NAME, "status")).select_by_value("completed")
    _click(browser, "#apply")
    done = {k: v for k, v in expected.items() if v == "completed"}
    _until(browser, lambda b: _rows(b) == done, f"only the completed rows {done}")
    assert "status=completed" in browser.current_url
    # a count of the strip filters too; a search field and a type narrow further
    _click(browser, '[data-count-status="failed"]')
    _until(browser, lambda b: _rows(b) == {"nightly-etl": "failed"}, "only the failed row")
    browser.get(_page(ui, "/?name=pipeline&search=" + urllib.parse.quote("dataset=coco")))
    _until(browser, lambda b: _rows(b) == {"train-coco": "completed"}, "the coco run")


def test_a_workflow_page_draws_a_bar_per_activity_and_links_its_child(
        client: rayline.Client, ui: UIServer, browser: Chrome) -> None:
    handle = client.workflow.start(ui_flows.pipeline, args=["imagenet"],
                                   workflow_id="train-imagenet")
    assert handle.result(timeout=WAIT)["best"] == 0.84
    browser.get(_workflow_page(ui, "train-imagenet"))
    _until(browser, lambda b: _status(b) == "completed", "the completed status")

    activities = browser.find_elements(By.CSS_SELECTOR, '#timeline .wf-row[data-kind="activity"]')
    labels = [row.find_element(By.CSS_SELECTOR, ".wf-label").text for row in activities]
    assert len(activities) == 2 + ui_flows.SHARDS, labels  # load, 3 x train, evaluate
    assert [label.split()[-1] for label in labels] == ["load", "train", "train", "train",
                                                       "evaluate"]
    for row in activities:
        bar = row.find_element(By.CSS_SELECTOR, ".bar")
        assert bar.size["width"] >= 2 and "st-completed" in bar.get_attribute("class")
    kinds = [row.get_attribute("data-kind") for row in
             browser.find_elements(By.CSS_SELECTOR, "#timeline .wf-row[data-kind]")]
    assert kinds.count("timer") == 1 and kinds.count("child") == 1
    assert browser.find_element(By.ID, "result").text.replace(" ", "").replace("\n", "") \
        == '{"best":0.84,"report":"score0.84"}'
    fields = browser.find_element(By.ID, "search-fields").text.split()
    assert fields[fields.index("stage") + 1] == "report" and "dataset" in fields
    _screenshot(browser, "ui-workflow.png")

    _click(browser, '[data-tab="history"]')
    events = [row.get_attribute("data-event") for row in
              browser.find_elements(By.CSS_SELECTOR, "#history tr[data-event]")]
    assert events[0] == "workflow_execution_started"
    assert events[-1] == "workflow_execution_completed"
    assert events.count("activity_task_completed") == 2 + ui_flows.SHARDS
    _click(browser, '[data-tab="json"]')
    raw = json.loads(browser.find_element(By.ID, "raw-json").text)
    assert raw["state"]["response"] == {"best": 0.84, "report": "score 0.84"}

    # the child is linked: from the timeline to its own page, and back to the parent
    _click(browser, '[data-tab="timeline"]')
    _click(browser, "#timeline a.child-link")
    _until(browser, lambda b: b.find_element(By.ID, "workflow-id").text
           == "train-imagenet-report", "the child's page")
    _until(browser, lambda b: _status(b) == "completed", "the child completed")
    assert browser.find_element(By.ID, "parent-link").text == "train-imagenet"


def test_a_signal_sent_from_the_page_completes_the_waiting_workflow(
        client: rayline.Client, ui: UIServer, browser: Chrome) -> None:
    handle = client.workflow.start(ui_flows.approval, args=["deploy v2"],
                                   workflow_id="approve-deploy")
    browser.get(_workflow_page(ui, "approve-deploy"))
    _until(browser, lambda b: _status(b) == "running", "the running status")
    _click(browser, "#btn-signal")
    name = browser.find_element(By.ID, "signal-name")
    name.clear()
    name.send_keys("approve")
    payload = browser.find_element(By.ID, "signal-payload")
    payload.clear()
    payload.send_keys('{"approved": true, "by": "ui"}')
    _click(browser, '[data-confirm="dlg-signal"]')
    _until(browser, lambda b: "sent" in b.find_element(By.ID, "notice").text, "the notice")
    _until(browser, lambda b: _status(b) == "completed", "the completed status")
    assert handle.result(timeout=WAIT) == {"approved": True, "by": "ui"}
    _until(browser, lambda b: json.loads(b.find_element(By.ID, "result").text)
           == {"approved": True, "by": "ui"}, "the result")


def test_terminate_from_the_page_terminates_the_workflow(
        client: rayline.Client, ui: UIServer, browser: Chrome) -> None:
    handle = client.workflow.start(ui_flows.approval, args=["never"], workflow_id="doomed")
    browser.get(_workflow_page(ui, "doomed"))
    _until(browser, lambda b: _status(b) == "running", "the running status")
    _click(browser, "#btn-terminate")
    browser.find_element(By.ID, "terminate-reason").send_keys("stopped by a test")
    browser.find_element(By.ID, "terminate-descend").click()
    _click(browser, '[data-confirm="dlg-terminate"]')
    _until(browser, lambda b: _status(b) == "terminated", "the terminated status")
    assert "Terminated" in browser.find_element(By.ID, "notice").text
    described = handle.describe()
    assert described.state is RunStatus.TERMINATED
    with pytest.raises(rayline.WorkflowTerminatedError, match="stopped by a test"):
        handle.result(timeout=WAIT)


XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


def test_a_script_in_a_payload_is_shown_as_text_and_never_run(
        client: rayline.Client, ui: UIServer, browser: Chrome) -> None:
    handle = client.workflow.start(ui_flows.echo, args=[XSS], workflow_id="xss-<b>bold<b>")
    assert handle.result(timeout=WAIT) == XSS
    opaque = client.workflow.start(ui_flows.echo, args=[ui_flows.Opaque("secret")],
                                   workflow_id="opaque")
    opaque.result(timeout=WAIT)

    browser.get(ui.url)
    _until(browser, lambda b: set(_rows(b)) == {handle.workflow_id, "opaque"}, "both rows")
    row = browser.find_element(By.CSS_SELECTOR, "#workflows tr[data-workflow-id^='xss']")
    assert XSS.replace('"', '\\"') in row.find_element(By.CSS_SELECTOR, ".fields-cell") \
        .get_attribute("title")
    browser.get(_workflow_page(ui, handle.workflow_id))
    _until(browser, lambda b: _status(b) == "completed", "the completed status")
    assert browser.find_element(By.ID, "workflow-id").text == handle.workflow_id
    assert json.loads(browser.find_element(By.ID, "input").text) == [XSS]
    assert json.loads(browser.find_element(By.ID, "result").text) == XSS
    for page in (ui.url, _workflow_page(ui, handle.workflow_id)):
        browser.get(page)
        assert browser.execute_script("return window.__xss") is None
        assert browser.find_elements(By.XPATH, "//script[contains(., '__xss')]") == []
        assert browser.find_elements(By.CSS_SELECTOR, "img[src='x'], h1 b, td b") == []

    # a pickled value is shown by its type and size: the UI never unpickles a payload
    browser.get(_workflow_page(ui, "opaque"))
    _until(browser, lambda b: _status(b) == "completed", "the completed status")
    shown = json.loads(browser.find_element(By.ID, "input").text)
    assert shown[0]["pickled"].endswith("ui_flows.Opaque") and shown[0]["bytes"] > 0
    assert "secret" not in browser.find_element(By.ID, "input").text


def test_a_schedules_page_pauses_unpauses_and_triggers_it(
        client: rayline.Client, ui: UIServer, browser: Chrome) -> None:
    pytest.importorskip("rayline.schedules")
    schedule = client.schedule.create("nightly", ui_flows.echo, args=["tick"], every="1h")
    browser.get(_page(ui, "/schedules"))
    _click(browser, '[data-schedule="nightly"] a')  # once the index lists it
    _until(browser, lambda b: b.find_element(By.ID, "schedule").is_displayed(), "the schedule")

    _click(browser, "#btn-pause")
    _click(browser, '[data-confirm="dlg-pause"]')
    _until(browser, lambda b: "paused" in b.find_element(By.ID, "notice").text, "the notice")
    _until(browser, lambda b: schedule.describe().paused, "the schedule paused")
    _click(browser, "#btn-unpause")  # enabled once the page shows it paused
    _click(browser, '[data-confirm="dlg-unpause"]')
    _until(browser, lambda b: not schedule.describe().paused, "the schedule unpaused")

    _click(browser, "#btn-trigger")
    _click(browser, '[data-confirm="dlg-trigger"]')
    _until(browser, lambda b: schedule.describe().fired == 1, "a run triggered")
    run = schedule.describe().recent_actions[-1]
    assert run.kind == "trigger"
    _until(browser, lambda b: b.find_elements(
        By.CSS_SELECTOR, f'#schedule a[href$="{urllib.parse.quote(run.workflow_id, safe="")}"]'),
        "the triggered run, linked")
    assert client.workflow.get_handle(run.workflow_id).result(timeout=WAIT) == "tick"


# ------------------------------------------------------------------ over plain HTTP

def _post(url: str, fields: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(),
                                     method="POST")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=WAIT) as answer:
            return answer.status, answer.headers.get("location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("location", "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_actions_need_the_pages_token_and_a_read_only_ui_has_none(
        client: rayline.Client, ui: UIServer) -> None:
    handle = client.workflow.start(ui_flows.approval, args=["x"], workflow_id="guarded")
    url = _workflow_page(ui, "guarded")
    page = urllib.request.urlopen(url, timeout=WAIT).read().decode()
    assert 'id="btn-terminate"' in page
    token = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    # no token, or another's: refused, and nothing happens
    assert _post(url + "/terminate", {})[0] == 403
    assert _post(url + "/terminate", {"csrf": "forged"})[0] == 403
    assert handle.describe().state is RunStatus.RUNNING
    # a page of another origin is refused even with the token
    forged = urllib.request.Request(url + "/cancel", data=b"csrf=" + token.encode(),
                                    headers={"Origin": "http://evil.example"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.build_opener(_NoRedirect).open(forged, timeout=WAIT)
    assert refused.value.code == 403
    # a Host that is not this machine's is refused (DNS rebinding)
    rebound = urllib.request.Request(url, headers={"Host": "evil.example"})
    with pytest.raises(urllib.error.HTTPError) as wrong_host:
        urllib.request.urlopen(rebound, timeout=WAIT)
    assert wrong_host.value.code == 400
    # bad JSON is reported back on the page, and nothing is sent
    status, location = _post(url + "/signal", {"csrf": token, "name": "approve",
                                               "payload": "{not json"})
    assert status == 303 and "error=" in location and "JSON" in urllib.parse.unquote(location)

    read_only = _serve(client, read_only=True)
    try:
        other = _workflow_page(read_only, "guarded")
        page = urllib.request.urlopen(other, timeout=WAIT).read().decode()
        assert "btn-terminate" not in page and 'name="csrf"' not in page
        assert "read-only" in page
        # refused even with the server's own token (which its pages never show)
        own = read_only.app.state.csrf
        for action in ("terminate", "cancel", "signal"):
            assert _post(other + "/" + action, {"csrf": own, "name": "approve"})[0] == 403
    finally:
        client.run(read_only.stop())
    assert handle.describe().state is RunStatus.RUNNING
    headers = urllib.request.urlopen(ui.url, timeout=WAIT).headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_rayline_ui_serves_until_interrupted_and_says_how_to_install_it(
        ray_cluster: dict[str, Any], storage: str, namespace: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "rayline.actors._cli", "ui", "--port", "0", "--read-only",
         "--address", ray_cluster["address"], "--storage", storage, "--namespace", namespace],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the line that tells where it serves
            if line.startswith("rayline UI"):
                break
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url is not None, line
        page = urllib.request.urlopen(url.group(0), timeout=WAIT).read().decode()
        assert "<h1>Workflows</h1>" in page and "read-only" in page
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: it stops serving and exits
        _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err[-2000:]

    # without the ui extra, it says what to install (and exits 2, before connecting)
    missing = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['starlette'] = None; "
         "from rayline.actors._cli import main; sys.exit(main(['ui']))"],
        capture_output=True, text=True, timeout=WAIT, env=env)
    assert missing.returncode == 2
    assert "starlette" in missing.stderr and "pip install 'rayline[ui]'" in missing.stderr


# ------------------------------------------------------------------ 10,000 workflows



class _Index:
    """A ``Connection`` whose registry is the engine's own, in this process, over an
    index of ``N`` workflows (as test_index.py fills it); it records each list call."""

    version = None

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.lists: list[ListRequest] = []

    async def open(self) -> RegistryInfo:
        return RegistryInfo(storage="memory://", namespace="t", resumed=0)

    def registry(self) -> Any:
        return self

    async def list(self, request: ListRequest) -> Any:
        self.lists.append(request)
        return await self._registry.list(request)

    async def count(self, request: CountRequest) -> Any:
        return await self._registry.count(request)




def test_the_list_answers_10000_workflows_a_page_of_100_at_a_time(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(registry_module, "INDEX_SAVE_EVERY", 0)
    store = MemoryStore(f"ui-{os.getpid()}-{id(monkeypatch)}")
    runs = RunStore(store, "t")
    registry = Registry(runs, store.url, Launcher(runs))
    index = _Index(registry)

    def get(url: str) -> str:
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return answer.read().decode()

    async def main() -> None:
        summaries = [_summary(i) for i in range(N)]
        for start in range(0, N, 500):  # as hosts report, in batches
            await registry.report(summaries[start:start + 500])
        client = AsyncClient(storage=store.url, namespace="t", connection=index)
        server = await serve(client, port=0)
        try:
            first = json.loads(await asyncio.to_thread(get, server.url + "api/workflows"))
            assert len(first["items"]) == 100 and first["next_page_token"]
            assert first["count"] == N and first["groups"] == {"running": 1000,
                                                               "completed": 9000}
            assert [r["workflow_id"] for r in first["items"]] == [
                f"wf-{i:05d}" for i in range(N - 1, N - 101, -1)]  # newest first
            second = json.loads(await asyncio.to_thread(
                get, server.url + "api/workflows?page_token="
                + urllib.parse.quote(first["next_page_token"])))
            assert [r["workflow_id"] for r in second["items"]] == [
                f"wf-{i:05d}" for i in range(N - 101, N - 201, -1)]
            page = await asyncio.to_thread(get, server.url + "?status=running")
            assert page.count("<tr data-workflow-id=") == 100
            assert 'id="next-page"' in page and "Showing 100 of 1000 workflows" in page
        finally:
            await server.stop()
        # every page asked the index for 100 rows at most: nothing loaded them all
        assert len(index.lists) == 3 and all(r.limit == 100 for r in index.lists)

    asyncio.run(main())
