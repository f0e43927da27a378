"""Headless Chromium driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`).

No driver binary, no websocket library, no node: Chromium reads JSON commands on fd 3 and writes replies
and events on fd 4, each message ended by a NUL byte. One browser per `chromium()` context, with a fresh
profile and the flags that keep it off the network (docs: shared/DESIGN.md, "Chromium for pages we
produce"). `Page.open` loads a file and records what a person would notice and what a test must fail on:
console errors, uncaught exceptions, and every request that left the file (http, https, ws).

    with chromium(tmp_path) as browser:
        page = browser.open(path, ready="window.__ready === true")
        assert page.errors == [] and page.network == []
        page.screenshot(out / "page.png")
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.real import require_binary

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--disable-breakpad",
    "--disable-crash-reporter",
]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "devtools:")


class ChromiumError(RuntimeError):
    pass


class Browser:
    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []

    # -- protocol --------------------------------------------------------------------------------

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        return self._next_id

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise ChromiumError("no answer from Chromium in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise ChromiumError(f"Chromium closed its pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout=30.0) -> dict:
        ident = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._read(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self._events.append(message)

    def wait_event(self, method: str, session: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for i, event in enumerate(self._events):
            if event["method"] == method and event.get("sessionId") == session:
                return self._events.pop(i)
        while True:
            message = self._read(deadline)
            if message.get("method") == method and message.get("sessionId") == session:
                return message
            if "method" in message:
                self._events.append(message)

    def drain(self, session: str) -> list[dict]:
        """Events received so far for one page (and those waiting in the pipe)."""
        with contextlib.suppress(ChromiumError):
            while select.select([self._in], [], [], 0.05)[0] or b"\0" in self._buffer:
                message = self._read(time.monotonic() + 1)
                if "method" in message:
                    self._events.append(message)
        mine = [e for e in self._events if e.get("sessionId") == session]
        self._events = [e for e in self._events if e.get("sessionId") != session]
        return mine

    # -- pages -----------------------------------------------------------------------------------

    def open(
        self,
        path: Path | str,
        ready: str = "document.readyState === 'complete'",
        width: int = 1400,
        height: int = 900,
        timeout: float = 60.0,
    ) -> Page:
        """Load a file, wait until `ready` (a JS expression) is true, and say what happened on the way."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        url = Path(path).resolve().as_uri() if not str(path).startswith(("file:", "http:")) else str(path)
        started = time.monotonic()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired", session, timeout)
        loaded = time.monotonic() - started
        page = Page(self, session, target, loaded_s=loaded)
        deadline = started + timeout
        while not page.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                page.collect()
                raise ChromiumError(f"page not ready after {timeout:g}s ({ready}); errors: {page.errors}")
            time.sleep(0.05)
        page.ready_s = time.monotonic() - started
        page.collect()
        return page

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # its helpers, started in its session
            os.killpg(self.proc.pid, signal.SIGKILL)
        os.close(self._out)
        os.close(self._in)


@dataclass
class Page:
    browser: Browser
    session: str
    target: str
    loaded_s: float = 0.0  # navigate -> load event
    ready_s: float = 0.0  # navigate -> the ready expression is true (every plot drawn)
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    network: list[str] = field(default_factory=list)  # URLs requested beyond the file itself

    def collect(self) -> None:
        for event in self.browser.drain(self.session):
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                self.errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(LOCAL_SCHEMES):
                    self.network.append(url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (JSON-serializable), awaiting a promise."""
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.browser.call("Page.getLayoutMetrics", session=self.session)["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.browser.call("Page.captureScreenshot", params, session=self.session, timeout=60)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})


def chromium_binary() -> str:
    return require_binary("chromium", "apt-get install chromium; `make test` does it as root")


@contextlib.contextmanager
def chromium(binary: str | None = None) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile, stopped (and its profile removed) on exit."""
    binary = binary or chromium_binary()
    with tempfile.TemporaryDirectory(prefix="llmobs-chromium-") as profile:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Chromium reads commands on fd 3 and writes on fd 4: bash puts the pipe ends there (dash cannot
        # redirect from descriptors above 9).
        command = [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        log = open(Path(profile) / "chromium.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "chromium", *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(to_browser_r, from_browser_w),
            start_new_session=True,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        browser = Browser(proc, to_browser_w, from_browser_r)
        try:
            try:
                browser.call("Browser.getVersion", timeout=60)
            except (ChromiumError, OSError) as exc:
                tail = (Path(profile) / "chromium.log").read_text(errors="replace")[-2000:]
                raise ChromiumError(f"Chromium did not start: {exc}\n{tail}") from None
            yield browser
        finally:
            browser.close()
            log.close()


def artifacts(name: str) -> Path:
    """Where a test keeps its screenshots and pages: $LLMOBS_ARTIFACTS/NAME, else .cache/artifacts/NAME."""
    root = Path(
        os.environ.get("LLMOBS_ARTIFACTS") or Path(__file__).resolve().parents[2] / ".cache" / "artifacts"
    )
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
