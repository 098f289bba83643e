"""How a training stage runs: in the notebook's process (smoke, tiny) or under ``accelerate launch`` (paper).

:func:`plan` is the decision, a pure function of its arguments (tests drive it with fake machines):

* ``mode="inprocess"``: smoke / tiny, or already inside a launched process (``LOCAL_RANK`` / ``WORLD_SIZE`` set by
  accelerate or torchrun: never launch twice);
* ``mode="accelerate"``: the paper profile's training stages. Processes: ``LAB_NUM_PROCESSES`` if set, else one per
  visible CUDA device, at least one. ``--multi_gpu`` from two processes on (DDP; with no CUDA device the processes
  join over gloo on the CPU, as tests/unit/train/test_launch.py does). DeepSpeed ZeRO-3 when the method asks for it
  (FIRST's full fine-tuning of a 7B model: fp32 masters + AdamW state are ~112 GB, more than one GPU holds): the
  Trainer gets lab's ZeRO-3 JSON (``settings.deepspeed``) and configures DeepSpeed inside the launched processes
  (HF's "accelerate launch script.py --deepspeed ds.json" pattern; no launcher DeepSpeed flags, which would set
  a second, conflicting config).

:func:`command` turns a plan into the argv of ``python -m accelerate.commands.launch ... -m <module> <args>``;
:func:`run` executes it and raises with the tail of its output on failure. No torch import at module level.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

__all__ = ["LaunchPlan", "plan", "command", "run", "inside_launch", "cuda_devices", "ENV_PROCESSES", "train_args",
           "write_result", "read_result", "finish", "replay_curve"]

ENV_PROCESSES = "LAB_NUM_PROCESSES"
# LAB_LAUNCHED: set by :func:`run`; accelerate's single-process launcher sets none of the others, and a launched
# stage that plans again must not launch itself again
_LAUNCHED = ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_PROCESS_INDEX", "LAB_LAUNCHED")


@dataclass(frozen=True)
class LaunchPlan:
    mode: Literal["inprocess", "accelerate"]
    num_processes: int = 1
    multi_gpu: bool = False
    deepspeed: bool = False           # ZeRO-3 through the Trainer's DeepSpeed JSON (needs CUDA devices)
    mixed_precision: str = "no"       # accelerate's name: no | bf16 | fp16
    cpu: bool = False                 # no CUDA device: gloo on the CPU
    reason: str = ""


def inside_launch(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return any(env.get(k) not in (None, "") for k in _LAUNCHED)


def cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan(profile: str, *, launch: str = "inprocess", gpus: int | None = None, env: Mapping[str, str] | None = None,
         deepspeed: str = "", mixed_precision: str = "fp32") -> LaunchPlan:
    """The launch decision for one training run (see the module doc). ``launch``: the method's setting
    (``"accelerate"`` in the paper profile); ``gpus``: visible CUDA devices (default: counted); ``deepspeed``: the
    method's ``settings.deepspeed`` (``""``, ``"zero3"`` or a JSON path); ``mixed_precision``: fp32 | bf16 | fp16."""
    env = os.environ if env is None else env
    if profile != "paper" or launch != "accelerate":
        return LaunchPlan("inprocess", reason=f"profile {profile}, launch {launch}: in the notebook's process")
    if inside_launch(env):
        return LaunchPlan("inprocess", reason="already inside a launched process")
    gpus = cuda_devices() if gpus is None else gpus
    raw = env.get(ENV_PROCESSES, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_PROCESSES}={raw!r}: expected a positive int") from None
        if n < 1:
            raise ValueError(f"{ENV_PROCESSES}={raw!r}: expected a positive int")
        if gpus and n > gpus:
            raise ValueError(f"{ENV_PROCESSES}={n} but only {gpus} CUDA device(s) are visible")
        why = f"{ENV_PROCESSES}={n}"
    else:
        n, why = max(1, gpus), f"{gpus} CUDA device(s)"
    if deepspeed and not gpus:
        raise ValueError(f"deepspeed {deepspeed!r} needs CUDA devices (none visible)")
    mp = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[mixed_precision]
    return LaunchPlan("accelerate", num_processes=n, multi_gpu=n > 1, deepspeed=bool(deepspeed), mixed_precision=mp,
                      cpu=not gpus, reason=why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(p: LaunchPlan, module: str, args: Sequence[str], *, port: int | None = None,
            python: str = sys.executable) -> list[str]:
    """argv of the launch (``accelerate launch`` as a module of this python, so the venv's accelerate is used)."""
    if p.mode != "accelerate":
        raise ValueError(f"plan is {p.mode!r}: nothing to launch")
    argv = [python, "-m", "accelerate.commands.launch", "--num_processes", str(p.num_processes),
            "--num_machines", "1", "--mixed_precision", p.mixed_precision, "--dynamo_backend", "no"]
    if p.multi_gpu:
        argv += ["--multi_gpu", "--main_process_port", str(port or _free_port())]
    return argv + ["-m", module, *args]


def run(p: LaunchPlan, module: str, args: Sequence[str], *, cwd: str | None = None) -> None:
    """Run the launch, streaming its output; on failure raise with its last lines."""
    argv = command(p, module, args)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "LAB_LAUNCHED": "1"}
    if p.cpu:
        env["ACCELERATE_USE_CPU"] = "true"
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        tail = (tail + [line])[-40:]
    if proc.wait() != 0:
        raise RuntimeError(f"`{' '.join(argv[2:8])} ... -m {module}` exited with {proc.returncode} "
                           f"({p.reason}):\n{''.join(tail)}")


# ------------------------------------------------------------------ the hand-over every launched trainer shares
# The caller writes its exact config and examples, launches ``python -m <method>.train train --cfg ... --examples
# ...``, and reads the Trainer's log history back (:func:`read_result`); the launched CLI ends with :func:`finish`.


def train_args(cfg_file, examples_file, result_file, *, variant: str, model_path, seed: int, adapters_dir,
               checkpoint_root=None, steps: int | None = None) -> list[str]:
    """The launched ``train`` command's arguments (absolute paths: the launch may run from another folder)."""
    from pathlib import Path

    args = ["train", "--cfg", str(cfg_file), "--examples", str(examples_file), "--variant", variant,
            "--model", str(Path(model_path).resolve()), "--seed", str(seed), "--result", str(result_file),
            "--out", str(Path(adapters_dir).resolve()) if adapters_dir is not None else ""]
    args += ["--checkpoints", str(Path(checkpoint_root).resolve())] if checkpoint_root else ["--no-checkpoints"]
    return args + ([] if steps is None else ["--steps", str(steps)])


def write_result(path, result) -> None:
    """A :class:`lab.train.FitResult` without its model (rank 0 saved the adapter) as JSON."""
    from pathlib import Path

    from lab.paths import write_json

    write_json(Path(path), {"history": result.history, "resumed_from": result.resumed_from,
                            "best_step": result.best_step, "best_metric": result.best_metric,
                            "checkpoint": result.checkpoint})


def read_result(path):
    import json
    from pathlib import Path

    from lab.train.settings import FitResult

    return FitResult(model=None, **json.loads(Path(path).read_text()))


def finish(result_path, result, curve: list[dict], summary: dict) -> None:
    """End of a launched training CLI: rank 0 writes ``result`` (when asked) and prints ``summary``, the world
    size, the number of steps of ``curve`` (the method's per-step losses) and its last step as one JSON line; then
    every rank tears its process group down (see :func:`lab.eval.shard.close`)."""
    import json

    import torch.distributed as dist

    from lab.eval.shard import close

    dist_on = dist.is_available() and dist.is_initialized()
    if not dist_on or dist.get_rank() == 0:
        if result_path:
            write_result(result_path, result)
        print(json.dumps({**summary, "steps": len(curve), "world": dist.get_world_size() if dist_on else 1,
                          "last": curve[-1] if curve else None}))
    close()


def replay_curve(run, history, key: str = "curve") -> None:
    """Log a launched Trainer's log history to ``run`` as ``<key>.*`` per step, as the in-process run logs it."""
    import math

    if run is None:
        return
    for r in history:
        values = {k: float(v) for k, v in r.items() if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
        if values and "step" in r:
            run.log_metrics({key: values}, step=int(r["step"]))
