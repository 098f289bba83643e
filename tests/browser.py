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
