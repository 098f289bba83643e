"""One entry point for logging a stage run: MLflow + ``metrics.json`` for DVC.

The stage runner (:mod:`lab.stage`) opens the MLflow run, executes the notebook, then logs the
executed notebook and closes the run FINISHED, or FAILED if the notebook raised. Inside the notebook,
:func:`current` returns a :class:`StageRun` bound to that same MLflow run (ids travel by environment
variables, because the notebook kernel is another process). Opened by hand in JupyterLab,
:func:`current` starts a run of its own, tagged ``interactive``, writing under ``outputs/interactive``
so DVC-tracked outputs are never touched by exploration.

Where: ``MLFLOW_TRACKING_URI`` if set (e.g. a shared server), else ``sqlite:///<root>/mlflow.db``
with artifacts in ``<root>/mlartifacts``. ``<root>`` is the *main* checkout even when DVC runs the
stage in a temporary copy (``dvc exp run --temp/--queue`` works in ``.dvc/tmp/exps/...``), so every
experiment lands in the same database.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from lab.paths import atomic_path, repo_root, write_json

ENV_RUN_ID = "LAB_MLFLOW_RUN_ID"
ENV_STAGE = "LAB_STAGE"
ENV_OUT_DIR = "LAB_OUT_DIR"


def tracking_root(root: Path | None = None) -> Path:
    """The main checkout: a DVC temp experiment workspace maps back to the repo that owns it."""
    root = Path(root or repo_root()).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i] == ".dvc" and parts[i + 1] == "tmp" and parts[i + 2] == "exps":
            return Path(*parts[:i])
    return root


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{tracking_root(root) / 'mlflow.db'}"


def _client(root: Path | None = None):
    # No mlflow.set_tracking_uri(): it exports MLFLOW_TRACKING_URI, which would then read as a user
    # override (and drop the explicit artifact location) in this process and in the notebook kernel.
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root))


def experiment_id(name: str, artifacts_dir: str = "mlartifacts", root: Path | None = None) -> str:
    """Get or create the experiment, with an explicit artifact location next to ``mlflow.db``."""
    client = _client(root)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (tracking_root(root) / artifacts_dir).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another stage
        return client.get_experiment_by_name(name).experiment_id


def git_rev(root: Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("-dirty" if dirty else "")


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _nest(flat: Mapping[str, Any]) -> dict:
    """Inverse of flatten for metrics.json: ``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict = {}
    for key, v in flat.items():
        node = out
        *head, last = key.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return out


class StageRun:
    """Logging handle for one stage run (one MLflow run + the stage's output folder)."""

    def __init__(self, run_id: str, stage: str, out_dir: Path, root: Path | None = None):
        self.run_id, self.stage, self.out_dir = run_id, stage, Path(out_dir)
        self.root = Path(root or repo_root())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._client = _client(self.root)
        self._metrics: dict[str, float] = {}
        path = self.out_dir / "metrics.json"
        if path.is_file():  # resume: keep what an earlier cell of this run logged
            self._metrics = flatten(json.loads(path.read_text()))

    # -- params -----------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        existing = self._client.get_run(self.run_id).data.params
        batch = [Param(k, str(v)[:6000]) for k, v in sorted(flat.items()) if k not in existing]
        for i in range(0, len(batch), 100):
            self._client.log_batch(self.run_id, params=batch[i : i + 100])

    # -- metrics ----------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log (nested) metrics to MLflow and merge them into ``metrics.json`` (sorted keys).

        With ``step`` (learning curves) values go to MLflow only; ``metrics.json`` holds final values.
        """
        import time

        from mlflow.entities import Metric

        flat = {k: float(v) for k, v in flatten(metrics).items()}
        ts = int(time.time() * 1000)
        batch = [Metric(k, v, ts, step or 0) for k, v in sorted(flat.items())]
        for i in range(0, len(batch), 500):
            self._client.log_batch(self.run_id, metrics=batch[i : i + 500])
        if step is None:
            self._metrics.update(flat)
            write_json(self.out_dir / "metrics.json", _nest(self._metrics))

    # -- artifacts --------------------------------------------------------------------------------
    def log_figure(self, fig, name: str, dpi: int = 120) -> Path:
        """Save a matplotlib/seaborn figure as ``<out_dir>/figures/<name>.png`` and log it."""
        path = self.out_dir / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            # Fixed metadata keeps the PNG byte-stable across runs.
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
        self._client.log_artifact(self.run_id, str(path), artifact_path="figures")
        return path

    def log_table(self, df, name: str) -> Path:
        """Write a pandas DataFrame as ``<out_dir>/<name>.csv`` (stable row order is the caller's) and log it."""
        path = self.out_dir / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
        self._client.log_artifact(self.run_id, str(path), artifact_path="tables")
        return path

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self._client.set_tag(self.run_id, k, str(v))

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


def start_run(stage: str, *, profile: str, params: Mapping[str, Any], out_dir: Path,
              experiment: str = "lab", artifacts_dir: str = "mlartifacts", root: Path | None = None,
              extra_tags: Mapping[str, str] | None = None) -> StageRun:
    """Open the MLflow run of a stage with its tags and flattened params."""
    root = Path(root or repo_root())
    client = _client(root)
    tags = {
        "stage": stage,
        "profile": profile,
        "git_rev": git_rev(root),
        "dvc_exp": os.environ.get("DVC_EXP_NAME", ""),
        "mlflow.runName": f"{stage}-{profile}",
        **(extra_tags or {}),
    }
    run = client.create_run(experiment_id(experiment, artifacts_dir, root), tags=tags)
    handle = StageRun(run.info.run_id, stage, out_dir, root)
    handle.log_params({"profile": profile, **params})
    return handle


def end_run(run_id: str, status: str = "FINISHED", root: Path | None = None) -> None:
    _client(root).set_terminated(run_id, status=status)


def current(stage: str, out_dir: str | os.PathLike | None = None, params: Mapping[str, Any] | None = None,
            profile: str = "smoke") -> StageRun:
    """The StageRun of the notebook being executed.

    Under :mod:`lab.stage` this binds to the runner's MLflow run and staging folder. Interactively it
    starts a run tagged ``interactive`` writing to ``outputs/interactive/<stage>``, ended at exit.
    """
    run_id = os.environ.get(ENV_RUN_ID)
    if run_id and os.environ.get(ENV_STAGE) == stage:
        return StageRun(run_id, stage, Path(os.environ.get(ENV_OUT_DIR) or out_dir))
    root = repo_root()
    handle = start_run(stage, profile=profile, params=params or {}, root=root,
                       out_dir=root / "outputs" / "interactive" / stage, extra_tags={"interactive": "true"})
    atexit.register(end_run, handle.run_id, "FINISHED", root)
    return handle
