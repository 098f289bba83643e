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

Convention (every paper follows it, later ones too: LaSER variants, SpeContext methods):

* **One experiment per paper**: ``<tracking.experiment>/<paper>``, i.e. ``lab/first``, ``lab/nanovdr``,
  ``lab/laser``, ``lab/specontext``, and ``lab/foundation`` for the shared stages (data, models, firststage,
  report). The paper is the stage name's prefix before ``_`` when ``lab.methods.<prefix>`` exists (or is one of
  :data:`PAPERS`), else ``foundation``; ``start_run(..., paper=...)`` overrides it. Experiments are created with
  the MLflow 3 tag ``mlflow.experimentKind = custom_model_development`` so the UI opens on the runs table (not
  the GenAI traces overview); MLflow 3.17's UI also has a global GenAI / Model-training toggle that wins over
  the tag, so the links ``make mlflow`` prints (:func:`experiment_urls`) carry ``?workflowType=machine_learning``.
* **A stage run is the parent; each configuration / variant / objective / method is a child run**
  (:meth:`StageRun.child`, tag ``mlflow.parentRunId``) whose *params* say what distinguishes it (FIRST:
  ``model``, ``decoding``, ``first_stage``; NanoVDR: ``objective``; LaSER: ``variant``; SpeContext:
  ``method``) and whose *metrics* use the **same flat names across siblings** (``ndcg_10``, ``ndcg_5``,
  ``retention``, ``seconds_per_window``, ``p_value``, ...), never the configuration baked into the metric
  name, so the compare view puts siblings side by side and "which one is best" is one sort. Evaluated metrics
  belong on the child they evaluate, also when a later stage computes them (:func:`child_runs` finds them).
* **Inputs and source**: every run (children too) carries the TREC DL sets it reads as MLflow dataset inputs
  (``trec-dl-2019``: qrels + topics, sha256 digest), the git commit (``mlflow.source.git.commit``, plus
  ``mlflow.source.git.dirty``) and the notebook as source (``mlflow.source.name``, type ``NOTEBOOK``).
* Tag ``source``: ``stage`` under :mod:`lab.stage` (DVC), ``interactive`` for a notebook run by hand.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from lab.paths import atomic_path, repo_root, write_json
from lab.tracking_inputs import trec_datasets

ENV_RUN_ID = "LAB_MLFLOW_RUN_ID"
ENV_STAGE = "LAB_STAGE"
ENV_OUT_DIR = "LAB_OUT_DIR"

PAPERS = ("first", "nanovdr", "laser", "specontext")
FOUNDATION = "foundation"
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"   # MLflow 3: runs table, not traces
PARENT_TAG = "mlflow.parentRunId"


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


def paper_of(stage: str) -> str:
    """``first_rerank`` -> ``first``; a stage of no paper (data, models, firststage, report) -> ``foundation``."""
    prefix = stage.split("_", 1)[0]
    methods = Path(__file__).resolve().parent / "methods"   # the installed package, not the repo: no import
    if prefix in PAPERS or (methods / prefix / "config.py").is_file():
        return prefix
    return FOUNDATION


def experiment_name(base: str, paper: str) -> str:
    """``("lab", "first")`` -> ``lab/first``; a base that already names a paper experiment stays as it is."""
    return base if "/" in base else f"{base}/{paper}"


def experiment_id(name: str, artifacts_dir: str = "mlartifacts", root: Path | None = None) -> str:
    """Get or create the experiment (a model-training one), artifacts in an explicit folder beside ``mlflow.db``."""
    client = _client(root)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            location = (tracking_root(root) / artifacts_dir).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})
        except Exception:  # created concurrently by another stage
            exp = client.get_experiment_by_name(name)
    if exp.tags.get(KIND_TAG) != KIND:  # made by an older lab or by hand: the UI would infer GenAI
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    return exp.experiment_id


def git_commit(root: Path) -> str:
    rev = git_rev(root)
    return rev.removesuffix("-dirty")


def data_folder(root: Path, profile: str) -> Path | None:
    from lab import config

    try:
        return root / config.load("data", profile, root / "params.yaml").out_dir
    except Exception:  # a params.yaml without a data section (unit tests): no inputs to log
        return None


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
    """Logging handle for one stage run (one MLflow run + the stage's output folder).

    A child (:meth:`child`) has no output folder of its own (``out_dir=None``): its metrics go to MLflow only,
    the parent's ``metrics.json`` stays what DVC tracks.
    """

    def __init__(self, run_id: str, stage: str, out_dir: Path | None, root: Path | None = None,
                 interactive: bool = False):
        self.run_id, self.stage, self.interactive = run_id, stage, interactive
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.root = Path(root or repo_root())
        self._client = _client(self.root)
        self._metrics: dict[str, float] = {}
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / "metrics.json"
            if path.is_file():  # resume: keep what an earlier cell of this run logged
                self._metrics = flatten(json.loads(path.read_text()))

    def output_path(self, path: str | os.PathLike | None) -> Any:
        """Where this run writes an output that lives outside ``out_dir`` (``data/``, ``models/``, checkpoints):
        ``path`` itself under :mod:`lab.stage`, ``outputs/interactive/<stage>/<path>`` interactively, so
        exploring never rewrites what DVC tracks."""
        if not path or not self.interactive:   # "" / None (e.g. checkpoints off) stays as given
            return path
        path = Path(path)
        if path.is_absolute():
            root = self.root.resolve()
            path = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        return self.out_dir / path

    # -- children ---------------------------------------------------------------------------------
    def child(self, name: str, *, params: Mapping[str, Any] | None = None,
              metrics: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
              end: bool = True) -> "StageRun":
        """A child run of this one: one configuration / variant / objective / method.

        ``params`` say what distinguishes it from its siblings (``model``, ``decoding``, ``objective``...);
        ``metrics`` use the same flat names across siblings (``ndcg_10``, ``retention``...). The child inherits
        stage, paper, profile, source (git commit, notebook) and dataset inputs. With ``end=True`` (default) it
        is logged and closed FINISHED at once; with ``end=False`` use it as a context manager (``with
        run.child("cosine", params=..., end=False) as c:``), closed FINISHED, or FAILED if the block raises.
        """
        from mlflow.entities import DatasetInput

        parent = self._client.get_run(self.run_id)
        inherited = ("stage", "paper", "profile", "source", "git_rev", "dvc_exp", "notebook", "interactive")
        run_tags = {k: v for k, v in parent.data.tags.items()
                    if k in inherited or k.startswith("mlflow.source.")}
        run_tags.update({PARENT_TAG: self.run_id, "mlflow.runName": f"{self.stage}-{name}", "child": name,
                         **{k: str(v) for k, v in (tags or {}).items()}})
        run = self._client.create_run(parent.info.experiment_id, tags=run_tags)
        handle = StageRun(run.info.run_id, self.stage, None, self.root)
        inputs = [DatasetInput(d.dataset, d.tags) for d in (parent.inputs.dataset_inputs if parent.inputs else [])]
        if inputs:
            self._client.log_inputs(handle.run_id, datasets=inputs)
        try:
            if params:
                handle.log_params(params)
            if metrics:
                handle.log_metrics(metrics)
        except BaseException:
            handle.end("FAILED")
            raise
        if end:
            handle.end("FINISHED")
        return handle

    def children(self) -> list:
        """The MLflow runs whose parent is this run (oldest first)."""
        exp = self._client.get_run(self.run_id).info.experiment_id
        found = self._client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'",
                                         max_results=10000)
        return sorted(found, key=lambda r: r.info.start_time)

    def end(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> "StageRun":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type else "FINISHED")

    # -- inputs -----------------------------------------------------------------------------------
    def log_datasets(self, data_dir: str | os.PathLike, names: list[str] | None = None) -> None:
        """Log the TREC DL sets under ``data_dir`` as dataset inputs (each digest once per run)."""
        logged = self._client.get_run(self.run_id).inputs.dataset_inputs or []
        have = {(d.dataset.name, d.dataset.digest) for d in logged}
        new = [d for d in trec_datasets(data_dir, names) if (d.dataset.name, d.dataset.digest) not in have]
        if new:
            self._client.log_inputs(self.run_id, datasets=new)

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
            if self.out_dir is not None:
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
              extra_tags: Mapping[str, str] | None = None, paper: str | None = None,
              source: str = "stage") -> StageRun:
    """Open the MLflow run of a stage in its paper's experiment, with tags, source, dataset inputs and params.

    ``experiment`` is the prefix (``lab`` -> ``lab/<paper>``; a name with ``/`` is used as it is); ``paper``
    defaults to :func:`paper_of` the stage. ``extra_tags["notebook"]`` becomes the run's source name.
    """
    root = Path(root or repo_root())
    client = _client(root)
    paper = paper or paper_of(stage)
    extra = dict(extra_tags or {})
    if PARENT_TAG in extra and "notebook" not in extra:   # a child opened with start_run: its parent's notebook
        extra["notebook"] = client.get_run(extra[PARENT_TAG]).data.tags.get("notebook", "")
    tags = {
        "stage": stage,
        "paper": paper,
        "profile": profile,
        "source": source,
        "git_rev": git_rev(root),
        "dvc_exp": os.environ.get("DVC_EXP_NAME", ""),
        "mlflow.runName": f"{stage}-{profile}",
        "mlflow.source.type": "NOTEBOOK",
        "mlflow.source.name": extra.get("notebook") or stage,
        "mlflow.source.git.commit": git_commit(root),
        "mlflow.source.git.dirty": str(git_rev(root).endswith("-dirty")).lower(),
        **extra,
    }
    run = client.create_run(experiment_id(experiment_name(experiment, paper), artifacts_dir, root), tags=tags)
    handle = StageRun(run.info.run_id, stage, out_dir, root)
    data_dir = data_folder(root, profile)
    if data_dir is not None:
        handle.log_datasets(data_dir)   # the `data` stage has none yet: lab.stage logs them again at the end
    handle.log_params({"profile": profile, **params})
    return handle


def end_run(run_id: str, status: str = "FINISHED", root: Path | None = None) -> None:
    _client(root).set_terminated(run_id, status=status)


def child_runs(stage: str, *, profile: str, experiment: str = "lab", root: Path | None = None,
               paper: str | None = None) -> list:
    """The children of the latest FINISHED run of ``stage`` (same profile, not interactive), oldest first.

    A later stage uses this to put what it evaluated on the children that trained it (NanoVDR's report logs
    ``retention`` on the distill stage's objective runs). ``[]`` when that stage never ran into this database.
    """
    client = _client(root)
    exp = client.get_experiment_by_name(experiment_name(experiment, paper or paper_of(stage)))
    if exp is None:
        return []
    query = f"tags.stage = '{stage}' and tags.profile = '{profile}' and attributes.status = 'FINISHED'"
    parents = [r for r in client.search_runs([exp.experiment_id], filter_string=query,
                                             order_by=["attributes.start_time DESC"], max_results=50)
               if PARENT_TAG not in r.data.tags and r.data.tags.get("source") != "interactive"
               and r.data.tags.get("interactive") != "true"]
    if not parents:
        return []
    found = client.search_runs([exp.experiment_id], max_results=10000,
                               filter_string=f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'")
    return sorted(found, key=lambda r: r.info.start_time)


def current(stage: str, out_dir: str | os.PathLike | None = None, params: Mapping[str, Any] | None = None,
            profile: str = "smoke") -> StageRun:
    """The StageRun of the notebook being executed.

    Under :mod:`lab.stage` this binds to the runner's MLflow run and staging folder. Interactively (JupyterLab:
    the kernel's cwd is the notebook's folder) it moves the kernel to the repo root, as papermill runs it
    under :mod:`lab.stage`, so the notebook's relative paths read the pipeline's outputs; it starts a run tagged
    ``source=interactive`` whose ``out_dir`` is ``outputs/interactive/<stage>`` (ignored by git and DVC; the
    notebook writes there through ``run.out_dir``), ended at exit.
    """
    run_id = os.environ.get(ENV_RUN_ID)
    if run_id and os.environ.get(ENV_STAGE) == stage:
        return StageRun(run_id, stage, Path(os.environ.get(ENV_OUT_DIR) or out_dir))
    root = repo_root()
    os.chdir(root)
    notebook = os.environ.get("JPY_SESSION_NAME")   # set by jupyter_server for the kernel of an open notebook
    tags = {"interactive": "true"}
    if notebook:
        path = Path(notebook).resolve()
        tags["notebook"] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    from lab import config

    track = config.load("tracking", profile, root / "params.yaml")
    handle = start_run(stage, profile=profile, params=params or {}, root=root, source="interactive",
                       experiment=track.experiment, artifacts_dir=track.artifacts_dir,
                       out_dir=root / "outputs" / "interactive" / stage, extra_tags=tags)
    handle.interactive = True
    print(f"interactive run of {stage}: outputs in {handle.out_dir}, MLflow run {handle.run_id} (source=interactive)")
    atexit.register(end_run, handle.run_id, "FINISHED", root)
    return handle


def experiment_urls(base_url: str = "http://127.0.0.1:5000", root: Path | None = None) -> dict[str, str]:
    """``{experiment name: runs-table URL}`` of the paper experiments in this database."""
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}   # no database yet: do not create one just to list it
    client = _client(root)
    exps = [e for e in client.search_experiments() if e.tags.get(KIND_TAG) == KIND and "/" in e.name]
    # MLflow 3.17's sidebar toggle (GenAI / Model training, default GenAI) wins over the experiment's kind tag:
    # the URL parameter selects model training, so the link opens on the runs table
    return {e.name: f"{base_url.rstrip('/')}/#/experiments/{e.experiment_id}/runs?workflowType=machine_learning"
            for e in sorted(exps, key=lambda e: e.name)}


if __name__ == "__main__":   # `python -m lab.tracking urls [BASE_URL]`: what `make mlflow` prints
    import sys

    if sys.argv[1:2] != ["urls"]:
        sys.exit("usage: python -m lab.tracking urls [BASE_URL]")
    urls = experiment_urls(*sys.argv[2:3])
    for name, url in urls.items():
        print(f"  {name:<18} {url}")
    if not urls:
        print("  (no paper experiments yet: `make repro` logs them)")
