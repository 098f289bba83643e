"""What the ``paper`` profile needs before a stage starts: a CUDA GPU and the Hugging Face Hub.

``dvc exp run -S profile=paper`` on a machine without them used to fail minutes later with a stack trace deep
inside a stage (a model download or ``.cuda()``). :func:`check` runs first thing in :func:`lab.stage.run_stage`
(after ``params.yaml`` is validated, before any output is moved or an MLflow run is opened) and raises
:class:`PreflightError` naming everything missing at once, so DVC stops at the first stage with one message.

``LAB_PAPER_DRY_RUN=1`` skips the check: the paper profile then runs the paper *architectures* as random-init tiny
models on tiny data (each section's ``profiles.paper_dry_run`` block, merged over ``profiles.paper`` by
:mod:`lab.config`), which is what CPU tests and a laptop can run. Smoke and tiny profiles are never checked.

No ML import at module level: torch is imported only when the paper profile is checked.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from typing import Callable

__all__ = ["PreflightError", "dry_run", "missing", "check", "ENV_DRY_RUN"]

ENV_DRY_RUN = "LAB_PAPER_DRY_RUN"
_TRUE = ("1", "true", "yes", "on")
# Stages of the paper profile that run no model (cheap CPU bookkeeping): they need neither GPU nor Hub.
NO_DEVICE_STAGES = frozenset({"report", "first_report", "specontext_report"})
# Stages that download (Hub data sets / models) and compute on CPU: they check the GPU too, because the paper
# pipeline's later stages need one and failing at the first stage is the point (nothing downloaded in vain);
# LAB_PAPER_CPU_STAGES=1 lets them run on a CPU machine (e.g. to fetch data ahead of a GPU job).
CPU_STAGES = frozenset({"data", "models", "firststage"})


class PreflightError(RuntimeError):
    pass


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def dry_run() -> bool:
    """``LAB_PAPER_DRY_RUN`` is set: paper profile on random-init paper-architecture tiny models, no preflight."""
    return _flag(ENV_DRY_RUN)


def gpu_problem() -> str | None:
    """``None`` when torch sees a CUDA device, else what is missing (one phrase)."""
    try:
        import torch
    except ImportError:
        return "a CUDA GPU (torch is not installed)"
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else f"torch {torch.__version__}"
        return f"a CUDA GPU (torch.cuda.is_available() is False; {why})"
    return None


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def hub_problem(timeout: float = 3.0) -> str | None:
    """``None`` when the Hub's host accepts a TCP connection, else what is missing. Offline switches count as
    missing (the paper profile's models and ViDoRe / NanoVDR-Train data come from the Hub; a fully populated local
    HF cache + data mirror is the way to run it offline: ``LAB_PAPER_ASSUME_HUB=1`` then skips this check)."""
    if _flag("LAB_PAPER_ASSUME_HUB"):
        return None
    for var in ("HF_HUB_OFFLINE", "LAB_OFFLINE"):
        if _flag(var):
            return f"Hugging Face Hub access ({var} is set)"
    url = urllib.parse.urlsplit(_endpoint())
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"Hugging Face Hub access ({host}:{port} unreachable: {type(e).__name__})"


def missing(stage: str, *, gpu: Callable[[], str | None] = gpu_problem,
            hub: Callable[[], str | None] = hub_problem) -> list[str]:
    """What ``stage`` of the paper profile needs and this machine lacks (``[]``: ready)."""
    if stage in NO_DEVICE_STAGES:
        return []
    needs = [hub] if stage in CPU_STAGES and _flag("LAB_PAPER_CPU_STAGES") else [gpu, hub]
    return [p for p in (f() for f in needs) if p]


def check(stage: str, profile: str, **probes) -> None:
    """Raise :class:`PreflightError` when the paper profile's ``stage`` cannot run here (never for smoke/tiny, never
    under ``LAB_PAPER_DRY_RUN``)."""
    if profile != "paper" or dry_run():
        return
    problems = missing(stage, **probes)
    if problems:
        raise PreflightError(
            f"stage {stage}: the paper profile needs {' and '.join(problems)}; nothing was run, no MLflow run opened."
            f" Run it on a GPU machine with Hub access, or set {ENV_DRY_RUN}=1 for a dry run on random-init"
            f" paper-architecture tiny models")
