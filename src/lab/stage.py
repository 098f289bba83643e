"""Run one DVC stage: a jupytext notebook executed by papermill, tracked in MLflow.

    python -m lab.stage <stage> <notebook.py> [--section NAME]

Steps: load and validate the ``params.yaml`` section (bad params fail before anything runs), open the
MLflow run (tags: stage, profile, git rev, DVC experiment), execute the notebook with papermill
(kernel ``python3``; parameters ``profile`` and ``out_dir``) into a staging folder, log the executed
notebook, then rename the staging folder onto ``outputs/<stage>`` and mark the run FINISHED.
If the notebook raises, the run is marked FAILED (the failed notebook is kept as an MLflow artifact
for debugging) and nothing is left under ``outputs/<stage>``.

Parameters are read here from ``params.yaml`` with their YAML types and handed to papermill as
Python values: DVC's ``${...}`` command templating would turn ``true`` into the string ``"true"``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

from lab import config, tracking
from lab.paths import repo_root


class StageFailed(RuntimeError):
    pass


def _interrupt(signum, frame):
    # DVC and CI stop jobs with SIGTERM; turning it into KeyboardInterrupt runs the FAILED bookkeeping below.
    raise KeyboardInterrupt(f"signal {signum}")


def outputs_dir(stage: str, root: Path) -> Path:
    return root / "outputs" / stage


def run_stage(stage: str, notebook: str | os.PathLike, section: str | None = None,
              root: Path | None = None) -> Path:
    """Execute ``notebook`` for ``stage``; return the final output folder."""
    import jupytext
    import papermill

    root = Path(root or repo_root())
    notebook = (root / notebook) if not Path(notebook).is_absolute() else Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"stage {stage}: notebook {notebook} not found")
    section = section or stage
    profile = config.active_profile(root / "params.yaml")
    cfg = config.load(section, profile, root / "params.yaml")
    track = config.load("tracking", profile, root / "params.yaml")
    seed = config.read_params(root / "params.yaml").get("seed", 0)

    final = outputs_dir(stage, root)
    staging = final.parent / f".{final.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed run are never reused
    staging.mkdir(parents=True)

    run = tracking.start_run(
        stage, profile=profile, params={"seed": seed, section: config.as_plain(cfg)}, out_dir=staging,
        experiment=track.experiment, artifacts_dir=track.artifacts_dir, root=root,
        extra_tags={"notebook": str(notebook.relative_to(root)) if notebook.is_relative_to(root) else str(notebook)},
    )
    os.environ.update({
        tracking.ENV_RUN_ID: run.run_id, tracking.ENV_STAGE: stage, tracking.ENV_OUT_DIR: str(staging),
        # Byte-stable outputs: hash-ordered sets/dicts and tokenizer threads must not vary per run.
        "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
    })
    executed = staging / "notebook.ipynb"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        nb = jupytext.read(notebook)
        papermill.execute_notebook(
            nb, str(executed), parameters={"profile": profile, "out_dir": str(staging)},
            kernel_name="python3", language="python", cwd=str(root), progress_bar=False,
            stdout_file=sys.stdout, stderr_file=sys.stderr,
        )
    except BaseException as e:
        try:
            if executed.is_file():
                run.log_artifact(executed, "failed")
        finally:
            tracking.end_run(run.run_id, "FAILED", root)
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise StageFailed(f"stage {stage} failed ({type(e).__name__}); MLflow run {run.run_id} marked FAILED, "
                          f"no outputs written. {e}") from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    run.log_artifact(executed)
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    tracking.end_run(run.run_id, "FINISHED", root)
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.stage", description=__doc__.splitlines()[0])
    parser.add_argument("stage")
    parser.add_argument("notebook")
    parser.add_argument("--section", default=None, help="params.yaml section (default: the stage name)")
    args = parser.parse_args(argv)
    try:
        out = run_stage(args.stage, args.notebook, args.section)
    except (StageFailed, config.ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        if os.environ.get("LAB_DEBUG"):
            traceback.print_exc()
        return 1
    except KeyboardInterrupt as e:
        print(f"error: stage {args.stage} interrupted ({e}); its MLflow run is marked FAILED", file=sys.stderr)
        return 130
    print(f"stage {args.stage}: outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
