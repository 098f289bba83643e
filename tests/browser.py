"""Open a report page in headless Chromium, offline: a screenshot and the DOM after load (the page's own script
counts its images and the broken ones into ``<body data-images data-broken-images>``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


SKIP_REASON = ("headless Chromium not found (looked for " + ", ".join(BROWSERS) +
               "; `.ci/run` installs Debian's `chromium` with apt-get when it can)")


def open_offline(page: Path, screenshot: Path | None, timeout: int = 120) -> dict:
    """Screenshot ``page`` and read its DOM; every network request goes to a dead proxy, so a resource the page does
    not embed fails to load (an image) instead of being fetched. Returns ``{dom, images, broken, central, ...}``."""
    exe = chromium()
    assert exe, SKIP_REASON
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=5000"]
    url = page.resolve().as_uri()
    if screenshot is not None:
        shot = subprocess.run([*flags, "--window-size=1280,2400", f"--screenshot={screenshot}", url],
                              capture_output=True, text=True, timeout=timeout)
        assert screenshot.is_file() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=timeout).stdout
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1))) if body else {}
    central = re.findall(r'<table class="results central" data-paper="([^"]+)"', dom)
    return {"dom": dom, "images": int(attrs.get("data-images", -1)), "broken": int(attrs.get("data-broken-images", -1)),
            "central": central, "sections": re.findall(r'<section class="paper" id="([^"]+)"', dom)}


def open_app(url: str, screenshot: Path | None, script: str, *, size: tuple[int, int] = (1280, 860),
             timeout: float = 90) -> dict:
    """Load a JavaScript app (JupyterLab, MLflow) in headless Chromium over the DevTools protocol: poll ``script``
    (a JS expression returning a JSON-serialisable value, truthy when the app is ready) until it is truthy,
    then screenshot. ``--dump-dom`` cannot do this: it returns before such an app has rendered anything."""
    import base64
    import json
    import socket
    import tempfile
    import time
    import urllib.request

    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    exe = chromium()
    assert exe, SKIP_REASON
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                             # the app's own server is on loopback; anything else goes to a dead proxy
                             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
                             f"--window-size={size[0]},{size[1]}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def drive() -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2).read())
                ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p.get("type") == "page")
                break
            except (OSError, StopIteration):
                assert time.monotonic() < deadline, "headless Chromium did not open its DevTools port"
                time.sleep(0.3)
        ws = await websocket_connect(ws_url, max_message_size=64 * 2**20)
        ids = iter(range(1, 10**6))

        async def call(method: str, **params):
            i = next(ids)
            await ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.read_message())
                if msg.get("id") == i:
                    assert "error" not in msg, msg
                    return msg["result"]

        await call("Page.enable")
        await call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                   mobile=False)
        await call("Page.navigate", url=url)
        value = None
        while time.monotonic() < deadline:
            res = await call("Runtime.evaluate", expression=f"JSON.stringify({script})", returnByValue=True)
            value = json.loads(res["result"].get("value") or "null")
            if value:
                break
            time.sleep(0.5)
        if value and screenshot is not None:
            time.sleep(1.0)   # let the last frame paint
            shot = await call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        ws.close()
        return {"ready": value}

    try:
        return IOLoop.current().run_sync(drive, timeout=timeout + 30)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
