"""`make lab` in a real (headless) browser: the jupytext .py notebooks open as notebooks, not as text files.

The JSON contents API already says ``type=notebook`` (test_jupyterlab.py); what a user sees is decided by
JupyterLab's default viewer for ``python`` files, which `make setup` installs (tools/jupyterlab/overrides.json).
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import browser
from tests.conftest import REPO

NOTEBOOK = "notebooks/first/02-first-rerank.py"

# truthy once the notebook panel shows cells; what it reports is checked below
READY = """(() => {
  const cells = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell');
  const editors = document.querySelectorAll('.jp-FileEditor .cm-editor');
  if (cells.length < 3 && editors.length === 0) return null;
  return {cells: cells.length, code: document.querySelectorAll('.jp-Notebook .jp-CodeCell').length,
          markdown: document.querySelectorAll('.jp-Notebook .jp-MarkdownCell').length, editors: editors.length,
          parameters: [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .cm-content')]
                        .some(e => e.textContent.includes('profile = "smoke"')),
          title: document.title};
})()"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(browser.chromium() is None, reason=browser.SKIP_REASON)
def test_make_lab_opens_the_py_notebook_as_notebook_cells(tmp_path):
    port, token, venv = free_port(), "labtest13", Path(sys.prefix)
    # `make lab` as a user runs it; -o: the venv exists (no reinstall), the settings override is still installed
    proc = subprocess.Popen(["make", "-s", "lab", f"VENV={venv}", f"LAB_PORT={port}", f"LAB_TOKEN={token}",
                             "-o", f"{venv}/.lab-installed"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/lab/tree/notebooks?token={token}" in first, first
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("make lab did not serve on 127.0.0.1")
        shot = tmp_path / "lab.png"
        seen = browser.open_app(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?reset&token={token}", shot, READY)
        out = seen["ready"]
        assert out, "JupyterLab showed neither notebook cells nor an editor"
        assert out["editors"] == 0, f"{NOTEBOOK} opened in the text editor: {out}"
        assert out["cells"] >= 3 and out["code"] >= 2 and out["markdown"] >= 1 and out["parameters"], out
        assert shot.stat().st_size > 20_000
        if os.environ.get("LAB_SCREENSHOTS"):     # docs/jupyterlab-notebook.png is made this way
            Path(os.environ["LAB_SCREENSHOTS"], "jupyterlab-notebook.png").write_bytes(shot.read_bytes())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
