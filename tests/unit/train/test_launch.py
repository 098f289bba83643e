"""Two CPU processes under ``accelerate launch`` (gloo) train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("launch_tiny.py")


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_accelerate_launch_matches_one_process(tmp_path):
    _run([sys.executable, str(SCRIPT), "--batch", "8", "--out", "one.json"], tmp_path)
    # `--multi_gpu` is accelerate's torch-elastic launcher; with no CUDA device the processes join over gloo on
    # the CPU (`--cpu` alone would start ONE process unless MPI is installed)
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(SCRIPT),
          "--batch", "4", "--out", "two.json"], tmp_path)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert (one["world"], two["world"]) == (1, 2)
    assert [r["step"] for r in one["curve"]] == [r["step"] for r in two["curve"]] == list(range(1, 9))
    # tolerance: fp32 sums in another order (DDP all-reduce of two half-batch gradients) over 8 steps
    for a, b in zip(one["curve"], two["curve"]):
        for k in ("loss", "nce", "mse"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), (a["step"], k)
    for k, w in one["weights"].items():
        assert two["weights"][k] == pytest.approx(w, rel=1e-4, abs=1e-6), k
