"""A minimal Chrome DevTools Protocol client over --remote-debugging-pipe (no dependencies): opens
a local page in headless Chromium, records every network request the page makes, evaluates
JavaScript in it and takes screenshots. For tests that look at the report as a reviewer would."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional

# Headless, and nothing of Chromium's own that would go to the network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--remote-debugging-pipe")


def executable() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _high(fds):
    """The pipe's fds moved to 10 and above, clear of the 3 and 4 the shell assigns (a pipe end
    at 3 or 4 would be overwritten by the other's redirection)."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved


class Browser:
    """`with Browser() as b: b.open(path)`; then b.requests, b.evaluate(js), b.screenshot()."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.width, self.height, self.timeout = width, height, timeout
        self.requests: List[Dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""

    def __enter__(self) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="chromium-profile")
        self._log = open(os.path.join(self._profile, "stderr.log"), "wb")
        to_browser_r, self._to_browser = _high(os.pipe())
        self._from_browser, from_browser_w = _high(os.pipe())
        # Chromium reads commands on fd 3 and writes replies on fd 4: bash puts the pipes there.
        command = [executable(), *FLAGS, f"--user-data-dir={self._profile}",
                   f"--window-size={self.width},{self.height}", "about:blank"]
        self._process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', *command],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                  height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close")
        except Exception:   # noqa: BLE001 - closing anyway
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _send(self, message: Dict[str, Any]) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self) -> Dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                with open(self._log.name, "rb") as f:
                    log = f.read().decode("utf-8", "replace")[-2000:]
                raise RuntimeError(f"chromium closed the DevTools pipe; its stderr ends:\n{log}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if message.get("method") == "Network.requestWillBeSent":
            self.requests.append(message["params"]["request"])
        return message

    def call(self, method: str, session: bool = False, **params) -> Dict[str, Any]:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(method)

    def open(self, path: str, bypass_csp: bool = True) -> None:
        """Navigates to the local file and waits for its load event. The page's Content Security
        Policy is bypassed by default, so that `requests` shows every fetch the page would make
        without it (a CSP only hides them)."""
        self.call("Page.setBypassCSP", session=True, enabled=bypass_csp)
        self.call("Page.navigate", session=True, url="file://" + os.path.abspath(path))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._receive().get("method") == "Page.loadEventFired":
                return
        raise TimeoutError("the page did not finish loading")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, clip: Optional[Dict[str, float]] = None) -> bytes:
        params = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, **params)["data"])
