"""`make lab` serves the jupytext .py notebooks as notebooks, bound to 127.0.0.1."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_jupyter_server_opens_py_notebook_as_notebook():
    port, token = free_port(), "labtest"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--ip", "127.0.0.1", f"--port={port}", "--no-browser", "--allow-root",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api/contents/notebooks/foundation/03-foundation-firststage.py?type=notebook&content=1"
    try:
        for _ in range(60):
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
                body = json.loads(urllib.request.urlopen(req, timeout=5).read())
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer on 127.0.0.1")
        assert body["type"] == "notebook"
        cells = body["content"]["cells"]
        assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
