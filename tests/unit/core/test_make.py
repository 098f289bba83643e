"""The Makefile's commands beside the two: `make repro` checks params.yaml before DVC runs, `make mlflow` is lean."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

STAMP = ".venv/.lab-installed"  # -o: never (re)install the venv from a test


def make_n(*args):
    return subprocess.run(["make", "-n", "-o", STAMP, *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_repro_checks_params_before_dvc():
    lines = make_n("repro")
    check = next(i for i, line in enumerate(lines) if "-m lab.config check" in line)
    repro = next(i for i, line in enumerate(lines) if line.endswith("dvc repro"))
    assert check < repro


def test_mlflow_command_is_lean_and_loopback():
    cmd = " ".join(make_n("mlflow"))
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in cmd
    assert "--host 127.0.0.1" in cmd and "--workers 1" in cmd


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for child in Path(f"/proc/{p}/task/{p}/children").read_text().split() if Path(f"/proc/{p}").exists() else []:
            out.append(int(child))
            todo.append(int(child))
    return out


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_make_mlflow_starts_one_server_process_and_no_job_workers(tmp_path):
    """MLflow 3.17's defaults start 4 uvicorn workers and huey job consumers beside the server."""
    port = _free_port()
    proc = subprocess.Popen(["make", "-s", "-o", STAMP, "mlflow", f"MLFLOW_PORT={port}",
                             f"MLFLOW_DB={tmp_path / 'mlflow.db'}"], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})
    try:
        deadline = time.time() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "mlflow did not answer /health within 90 s"
            time.sleep(0.5)
        time.sleep(2)  # job consumers, when enabled, start right after the server
        pythons = [_cmdline(p) for p in _descendants(proc.pid)]
        pythons = [c for c in pythons if "python" in c or "mlflow" in c]
        assert not [c for c in pythons if "huey" in c or "job" in c.lower()], pythons
        assert len(pythons) <= 2, pythons  # the mlflow CLI and one uvicorn process serving the app
        assert any("--host 127.0.0.1" in c and "--workers 1" in c for c in pythons), pythons
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
