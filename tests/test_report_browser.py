"""The HTML report in a real browser: headless Chromium, driven over the DevTools protocol.

The demo report (the audit run in-process on the sandbox) and reports of 1 and 10,000 sessions are opened from
`file://` with every host name unresolvable. Each page must load with no console error and no request leaving the
file (the HTML is self-contained: inline CSS and SVG); its tables and chart must be visible; no two axis labels of
the chart may overlap; and `chromium --print-to-pdf` must print it to a PDF with pages.

Chromium is the distribution's `chromium` package (`.ci/run` installs it when missing). Without it these tests are
skipped with a loud reason; with `COVIU_TEST_BROWSER_REQUIRED=1` (set by `.ci/run`) they fail instead.
`COVIU_REPORT_SCREENSHOT=docs/report.png` also writes the demo report's screenshot there (the README shows it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets

from graphs.context import Services
from reporting.audit_report import write_reports
from sandbox import Sandbox
from tests.conftest import make_services
from tests.test_audit import run_audit
from tests.test_report import OPTIONS, implausible, make_report, session, unreadable
from tools.clock import FakeClock

BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
LOAD_TIMEOUT_S = 60.0
VIEWPORT = {"width": 1280, "height": 900}
CLINIC = "Harbour Street Clinic"


def find_browser() -> str | None:
    given = os.environ.get("COVIU_TEST_CHROMIUM")
    if given:
        return given
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser_path() -> str:
    path = find_browser()
    if path is None:
        reason = (
            "NO CHROMIUM: the HTML report was NOT tested in a browser. Install the distribution's `chromium` "
            "package (.ci/run does) or set COVIU_TEST_CHROMIUM to a Chromium/Chrome binary."
        )
        if os.environ.get("COVIU_TEST_BROWSER_REQUIRED") == "1":
            pytest.fail(reason)
        warnings.warn(reason, UserWarning, stacklevel=1)  # listed in the run's warnings summary, not only with -rs
        pytest.skip(reason)
    return path


def browser_flags() -> list[str]:
    flags = [
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--mute-audio",
        # Any request for a host fails (and is reported): the page must not need one.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size={VIEWPORT['width']},{VIEWPORT['height']}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox (CI containers)
    return flags


# --- a minimal DevTools protocol client ------------------------------------------------------------------


@dataclass
class Page:
    """One tab: commands go to it, and the events that matter are collected while it loads."""

    connection: Any
    session_id: str
    next_id: int = 0
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        message = {"id": self.next_id, "method": method, "params": params, "sessionId": self.session_id}
        await self.connection.send(json.dumps(message))
        reply = await asyncio.wait_for(future, LOAD_TIMEOUT_S)
        if "error" in reply:
            raise AssertionError(f"DevTools {method}: {reply['error']}")
        return dict(reply.get("result") or {})

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(f"log ({params['entry'].get('source')}): {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(str(params["request"]["url"]))
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"evaluate: {result['exceptionDetails']}")
        return result["result"].get("value")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the browser this test started, and its helper processes (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.asynccontextmanager
async def open_browser(path: str) -> AsyncIterator[Any]:
    """Chromium with a throwaway profile and a DevTools port; yields the browser-level websocket."""
    with tempfile.TemporaryDirectory(prefix="coviu-chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [path, *browser_flags(), "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the browser's helpers end with it
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(int(LOAD_TIMEOUT_S * 10)):
                if port_file.exists() and len(port_file.read_text().split()) >= 2:
                    break
                if process.poll() is not None:
                    raise AssertionError(f"{path} exited with {process.returncode} before opening DevTools")
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{path} did not open DevTools within {LOAD_TIMEOUT_S:.0f} s")
            port, ws_path = port_file.read_text().split()[:2]
            async with websockets.connect(f"ws://127.0.0.1:{port}{ws_path}", max_size=None) as connection:
                yield connection
        finally:
            stop(process)


async def load(connection: Any, url: str) -> Page:
    """Open `url` in a new tab and wait for its load event, collecting errors and requests on the way."""
    await connection.send(json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}))
    target_id = json.loads(await connection.recv())["result"]["targetId"]
    await connection.send(
        json.dumps({"id": 2, "method": "Target.attachToTarget", "params": {"targetId": target_id, "flatten": True}})
    )
    session_id = None
    while session_id is None:
        message = json.loads(await connection.recv())
        if message.get("id") == 2:
            session_id = message["result"]["sessionId"]
    page = Page(connection, session_id, next_id=2)

    async def pump() -> None:
        async for raw in connection:
            message = json.loads(raw)
            if message.get("sessionId") != page.session_id:
                continue
            if "id" in message and message["id"] in page.pending:
                page.pending.pop(message["id"]).set_result(message)
            elif "method" in message:
                page.on_event(message["method"], message.get("params") or {})

    page_pump = asyncio.create_task(pump())
    page.pump = page_pump  # type: ignore[attr-defined]
    for domain in ("Runtime", "Log", "Network", "Page"):
        await page.send(f"{domain}.enable")
    await page.send("Emulation.setDeviceMetricsOverride", deviceScaleFactor=1, mobile=False, **VIEWPORT)
    await page.send("Page.navigate", url=url)
    await asyncio.wait_for(page.loaded.wait(), LOAD_TIMEOUT_S)
    await page.evaluate("document.fonts.ready.then(() => true)")
    return page


# What the page looks like to a reader, measured in the browser.
MEASURE = r"""
(() => {
  const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0
      && getComputedStyle(el).visibility !== 'hidden' && getComputedStyle(el).display !== 'none'; };
  const boxes = (sel) => [...document.querySelectorAll(sel)]
      .filter((t) => t.textContent.trim() && visible(t))
      .map((t) => { const r = t.getBoundingClientRect();
                    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom}; });
  const overlaps = (list) => { const out = [];
    for (let i = 0; i < list.length; i++) for (let j = i + 1; j < list.length; j++) {
      const a = list[i], b = list[j];
      if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
        out.push([a.text, b.text]);
    } return out; };
  const svg = document.querySelector('#chart svg');
  const svgBox = svg ? svg.getBoundingClientRect() : null;
  const labels = {x: boxes('#chart svg .axis.x text'), y: boxes('#chart svg .axis.y text')};
  const outside = svgBox ? [...labels.x, ...labels.y].filter((l) => l.left < svgBox.left - 1
      || l.right > svgBox.right + 1 || l.top < svgBox.top - 1 || l.bottom > svgBox.bottom + 1).map((l) => l.text) : [];
  return {
    title: document.title,
    h1: document.querySelector('h1').textContent,
    headings: [...document.querySelectorAll('h2, h3')].filter(visible).map((h) => h.textContent),
    banner: (() => { const b = document.querySelector('.banner'); return b && visible(b) ? b.textContent : null; })(),
    tables: [...document.querySelectorAll('table')].filter(visible).map((t) => ({
      cls: t.className, rows: [...t.querySelectorAll('tbody tr')].filter(visible).length })),
    chart: svgBox ? {width: svgBox.width, height: svgBox.height,
      bars: [...svg.querySelectorAll('.rect.reactive')].filter(visible).length} : null,
    xLabels: labels.x.map((l) => l.text), yLabels: labels.y.map((l) => l.text),
    overlapX: overlaps(labels.x), overlapY: overlaps(labels.y), labelsOutside: outside,
    pageWidth: document.documentElement.scrollWidth,
  };
})()
"""


@dataclass(frozen=True)
class Seen:
    layout: dict[str, Any]
    errors: list[str]
    external: list[str]


async def inspect(browser: str, html_path: Path, screenshot: Path | None = None) -> Seen:
    async with open_browser(browser) as connection:
        page = await load(connection, html_path.resolve().as_uri())
        layout = await page.evaluate(MEASURE)
        # As printed: A4 landscape less 10 mm margins is 1047 CSS px wide; nothing may be cut off at the right.
        await page.send("Emulation.setEmulatedMedia", media="print")
        await page.send("Emulation.setDeviceMetricsOverride", deviceScaleFactor=1, mobile=False, width=1047, height=740)
        layout["printWidth"] = await page.evaluate("document.documentElement.scrollWidth")
        await page.send("Emulation.setEmulatedMedia", media="")
        await page.send("Emulation.setDeviceMetricsOverride", deviceScaleFactor=1, mobile=False, **VIEWPORT)
        if screenshot is not None:
            metrics = await page.send("Page.getLayoutMetrics")
            height = min(int(metrics["cssContentSize"]["height"]), 3200)
            shot = await page.send(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height, "scale": 1},
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        page.pump.cancel()  # type: ignore[attr-defined]
        external = [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))]
        return Seen(layout, page.errors, external)


def print_pdf(browser: str, html_path: Path, pdf: Path) -> None:
    """What a clinic does: print the page to PDF with the browser's own command line."""
    result = subprocess.run(
        [browser, *browser_flags(), "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html_path.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(pdf.parent)},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def pdf_pages(pdf: Path) -> int:
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
        match = re.search(r"^Pages:\s+(\d+)", info, re.M)
        assert match, info
        return int(match.group(1))
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.read_bytes()))


def assert_readable(seen: Seen) -> None:
    layout = seen.layout
    assert seen.errors == [], seen.errors
    assert seen.external == [], seen.external
    assert layout["chart"] and layout["chart"]["width"] > 300 and layout["chart"]["height"] > 150, layout["chart"]
    assert layout["chart"]["bars"] > 0
    assert layout["overlapX"] == [] and layout["overlapY"] == [], (layout["overlapX"], layout["overlapY"])
    assert layout["labelsOutside"] == [], layout["labelsOutside"]
    assert layout["xLabels"] and layout["yLabels"]


# --- the tests -------------------------------------------------------------------------------------------


@pytest.fixture
async def demo_html(sandbox: Sandbox, clock: FakeClock, tmp_path: Path) -> AsyncIterator[Path]:
    """The demo day's report, as the audit writes it (in-process, on the embedded sandbox)."""
    services: Services = await make_services(sandbox, clock, tmp_path / "reports", clinic_name=CLINIC)
    try:
        state = await run_audit(services)
    finally:
        await services.toolbox.aclose()
    yield Path(state["report_paths"]["html"])


@pytest.mark.profiles("default")  # the demo day as the README shows it (one browser run is enough)
async def test_demo_report_in_chromium(browser_path: str, demo_html: Path, tmp_path: Path) -> None:
    wanted = os.environ.get("COVIU_REPORT_SCREENSHOT")
    screenshot = Path(wanted) if wanted else tmp_path / "report.png"
    seen = await inspect(browser_path, demo_html, screenshot=screenshot)
    assert_readable(seen)
    layout = seen.layout
    assert CLINIC in layout["h1"] and CLINIC in layout["title"]
    assert layout["headings"][:3] == ["Summary", "To do", "Chase intake forms (2 sessions)"]
    assert "All sessions" in layout["headings"]
    tables = {t["cls"]: t["rows"] for t in layout["tables"]}
    assert tables["totals"] >= 6 and tables["sessions all-sessions"] == 8
    assert len(layout["yLabels"]) == 8  # one labelled row per session
    assert layout["banner"] is None
    assert layout["pageWidth"] <= VIEWPORT["width"], "the page scrolls sideways"
    assert layout["printWidth"] <= 1047, "the printed page is cut off at the right"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


@pytest.mark.profiles("default")
async def test_demo_report_prints_to_pdf(browser_path: str, demo_html: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    print_pdf(browser_path, demo_html, pdf)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 5_000
    assert pdf_pages(pdf) >= 1
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        text = " ".join(text.split())  # a long title wraps: words, not line breaks, are what is checked
        for words in (CLINIC, "To do", "Chase intake forms", "All sessions"):
            assert words in text, words


def write_html(report: dict[str, Any], out: Path) -> Path:
    return write_reports(report, out, "day", narrative=None, **OPTIONS)["html"]


@pytest.mark.parametrize("count", [1, 10_000])
async def test_chart_is_readable_at_any_size(browser_path: str, tmp_path: Path, count: int) -> None:
    rows = [session(i, name=f"Patient with a long name {i}", over=float(i % 23)) for i in range(count)]
    seen = await inspect(browser_path, write_html(make_report(rows), tmp_path))
    assert_readable(seen)
    if count == 1:
        assert len(seen.layout["yLabels"]) == 1
    else:
        assert len(seen.layout["xLabels"]) <= 24


async def test_incomplete_report_shows_its_banner(browser_path: str, tmp_path: Path) -> None:
    report = make_report([session(0), unreadable(1, "UpstreamError: 403"), implausible(2, "x", "9999-01-01")])
    seen = await inspect(browser_path, write_html(report, tmp_path))
    assert_readable(seen)
    assert seen.layout["banner"] and seen.layout["banner"].startswith("Incomplete: 1 session could not be checked")
    assert "Could not be checked (1 session)" in seen.layout["headings"]
    assert "Implausible times (1 session)" in seen.layout["headings"]


async def test_the_assertions_catch_an_external_request(browser_path: str, tmp_path: Path) -> None:
    """The harness itself: a page that loads a CDN script is reported (so a pass means something)."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><head><title>x</title><script src="https://cdn.example.com/x.js"></script></head>'
        "<body><h1>x</h1><script>console.error('boom')</script></body></html>"
    )
    seen = await inspect(browser_path, page)
    assert any("cdn.example.com" in url for url in seen.external)
    assert any("boom" in error for error in seen.errors)
