"""bench/device_check.sh: fails cleanly without CUDA (one JSON line, exit 3) or without its modules (exit 2); its dry
CPU path runs the one trainer's bf16-over-fp32 steps and needs nothing beyond torch/transformers/accelerate/peft."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "bench" / "device_check.sh"


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_no_cuda_fails_at_once_with_one_json_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "dc.json")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    out = _last_json(proc.stdout)
    assert out["ok"] is False and out["error"].startswith("no CUDA device (torch ") and out["sections"] == {}
    assert json.loads((tmp_path / "dc.json").read_text()) == out


def test_missing_modules_are_named(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import device_check
    finally:
        sys.path.remove(str(REPO / "bench"))
    monkeypatch.setattr(device_check, "REQUIRED", ("torch", "no_such_module_xyz"))
    assert device_check.main(["--out", str(tmp_path / "dc.json")]) == 2
    out = _last_json(capsys.readouterr().out)
    assert out["error"] == "missing python modules: no_such_module_xyz (this check needs torch, no_such_module_xyz)"


PROBE = r"""
import json, sys
import torch, transformers, accelerate, peft
base = {m.split(".")[0] for m in sys.modules}
sys.path.insert(0, "bench")
import device_check
rc = device_check.main(["--dry", "--only", "env,train", "--out", sys.argv[1]])
extra = sorted({m.split(".")[0] for m in sys.modules} - base - set(sys.stdlib_module_names)
               - {"lab", "device_check", "nanovdr_latency", "specontext_device"})
print(json.dumps({"rc": rc, "extra": extra}))
"""


@pytest.mark.slow
def test_dry_path_trains_bf16_over_fp32_and_imports_only_the_four(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "dc.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    probe = _last_json(proc.stdout)
    assert probe == {"rc": 0, "extra": []}, probe
    out = json.loads((tmp_path / "dc.json").read_text())
    assert out["ok"] and out["dry"]
    for name in ("nanovdr_student_bf16", "first_full_finetune_bf16"):
        t = out["sections"]["train"][name]
        assert t["ok"] and t["master_dtypes"] == ["torch.float32"] and t["steps"] == 3 and t["params_moved"] > 0.5


SPEC_PROBE = PROBE.replace('"--only", "env,train"', '"--only", "specontext"')


def test_dry_specontext_section_decodes_every_path_and_imports_only_the_four(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", SPEC_PROBE, str(tmp_path / "dc.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _last_json(proc.stdout) == {"rc": 0, "extra": []}
    spec = json.loads((tmp_path / "dc.json").read_text())["sections"]["specontext"]
    assert spec["full"]["tokens_per_s"] > 0 and spec["placement_kv_on_gpu"] is True and spec["crossover_tokens"] > 0
    for path in ("elastic", "host"):       # host: the pinned-memory path, synchronous on the CPU
        r = spec[path]
        assert r["tokens_per_s"] > 0 and r["gather_rows_per_step"] == 2 * 2 * 32   # batch x layers x budget
        assert 0 < r["rows_per_step"] <= r["gather_rows_per_step"]
    # the host store never regathers: it moves only the rows that entered (random K/V: about half)
    assert spec["host"]["reload_steps"] == 0 and spec["host"]["moved_fraction"] < 1
    # on the device a step that changes more than 40% regathers the set (cheaper than scattering on CPU)
    e = spec["elastic"]
    assert 0 <= e["reload_steps"] <= e["steps"] and e["moved_fraction"] <= 1.0
    assert e["moved_fraction"] == 1.0 or e["reload_steps"] < e["steps"]
    assert spec["hf_offloaded"] == {"skipped": "transformers 5.24 offloads through CUDA streams only"}
