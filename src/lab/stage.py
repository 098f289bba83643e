"""Run one DVC stage: a jupytext notebook executed by papermill, tracked in MLflow.

    python -m lab.stage <stage> <notebook.py> [--section NAME]

Steps: validate the whole ``params.yaml``, every section under every profile (:func:`lab.config.check`;
bad params fail before anything is touched: no output moved, no MLflow run opened), open the MLflow run
(tags: stage, profile, git rev, DVC experiment), execute the notebook with papermill (kernel ``python3``;
parameters ``profile`` and ``out_dir``) into a staging folder, log the executed notebook, then rename the
staging folder onto ``outputs/<stage>`` and mark the run FINISHED.
If the notebook raises, the run is marked FAILED (the failed notebook is kept as an MLflow artifact
for debugging) and the previous outputs stay as they were.

dvc.yaml marks every out ``persist: true``, so DVC no longer deletes a stage's outputs before its command:
this runner replaces them, and only on success. Outputs the notebook writes outside ``outputs/<stage>``
(``data/``, ``models/``) are moved aside before it runs, dropped on success (so a persisted folder never keeps
stale files of an earlier run) and moved back on failure.

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

import yaml

from lab import config, preflight, tracking
from lab.paths import repo_root


class StageFailed(RuntimeError):
    pass


def _interrupt(signum, frame):
    # DVC and CI stop jobs with SIGTERM; turning it into KeyboardInterrupt runs the FAILED bookkeeping below.
    raise KeyboardInterrupt(f"signal {signum}")


def outputs_dir(stage: str, root: Path) -> Path:
    return root / "outputs" / stage


def stage_outs(stage: str, root: Path) -> dict[str, bool]:
    """``{path: persist}`` of every out, metric and plot of ``stage`` in ``root/dvc.yaml`` ({} without one)."""
    path = root / "dvc.yaml"
    try:
        spec = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}).get(stage) or {}
    except (OSError, yaml.YAMLError):
        return {}
    outs: dict[str, bool] = {}
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind) or []:
            if isinstance(entry, str):
                outs[entry] = False
            elif isinstance(entry, dict):
                for name, opts in entry.items():
                    outs[str(name)] = bool((opts or {}).get("persist", False))
    return outs


def untouched(stage: str, root: Path) -> str:
    """What a run of ``stage`` rejected by :mod:`lab.config` left as it was, for the error message."""
    outs = stage_outs(stage, root)
    under_dvc = bool(os.environ.get("DVC_STAGE"))
    kept = [p for p, persist in outs.items() if persist or not under_dvc]
    removed = [p for p in outs if p not in kept]  # an out without persist: DVC deleted it before this command
    prefix = f"outputs/{stage}/"
    inside = [p.removeprefix(prefix) for p in kept if p.startswith(prefix)]
    named = ([f"{prefix} ({', '.join(inside)})"] if inside else []) + [p for p in kept if not p.startswith(prefix)]
    msg = f"stage {stage}: nothing was run, no MLflow run opened; left as they were: {', '.join(named or [prefix])}"
    if removed:
        msg += (f"; DVC removed {', '.join(removed)} before running this stage (not `persist: true` in dvc.yaml):"
                f" `dvc checkout {stage}` restores cached ones")
    return msg


def _external_outs(stage: str, root: Path, final: Path) -> list[Path]:
    """The stage's outputs outside ``outputs/<stage>`` (the notebook writes them in place: data/, models/)."""
    out = []
    for rel in stage_outs(stage, root):
        path = (root / rel).resolve()
        if not path.is_relative_to(final.resolve()) and path.is_relative_to(root.resolve()):
            out.append(path)
    return out


def _stash(paths: list[Path], root: Path, stage: str) -> Path:
    """Move ``paths`` aside into ``outputs/.<stage>.prev`` so the notebook writes them afresh."""
    prev = root / "outputs" / f".{stage}.prev"
    for path in paths:  # a killed earlier run: its stash is the last good state when the path is gone
        kept = prev / path.relative_to(root.resolve())
        if kept.exists() and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(kept, path)
    shutil.rmtree(prev, ignore_errors=True)
    for path in paths:
        if path.exists() or path.is_symlink():
            kept = prev / path.relative_to(root.resolve())
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, kept)
    return prev


def _unstash(paths: list[Path], root: Path, prev: Path) -> None:
    """Undo :func:`_stash` after a failure: drop what the notebook half-wrote, put the old outputs back."""
    for path in paths:
        kept = prev / path.relative_to(root.resolve())
        if kept.exists() or kept.is_symlink():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            shutil.move(kept, path)
    shutil.rmtree(prev, ignore_errors=True)


def run_stage(stage: str, notebook: str | os.PathLike, section: str | None = None,
              root: Path | None = None) -> Path:
    """Execute ``notebook`` for ``stage``; return the final output folder."""
    root = Path(root or repo_root())
    config.check(root / "params.yaml")  # first of all: every section, every profile; a typo touches nothing
    preflight.check(stage, config.active_profile(root / "params.yaml"))   # paper profile: GPU + Hub, or dry run
    import jupytext
    import papermill

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
        extra_tags={"notebook": str(notebook.relative_to(root)) if notebook.is_relative_to(root) else str(notebook),
                    **({"paper_dry_run": "true"} if profile == "paper" and preflight.dry_run() else {})},
    )
    os.environ.update({
        tracking.ENV_RUN_ID: run.run_id, tracking.ENV_STAGE: stage, tracking.ENV_OUT_DIR: str(staging),
        # Byte-stable outputs: hash-ordered sets/dicts and tokenizer threads must not vary per run.
        "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false",
    })
    executed = staging / "notebook.ipynb"
    previous = signal.signal(signal.SIGTERM, _interrupt)
    external = _external_outs(stage, root, final)
    prev = None
    try:
        prev = _stash(external, root, stage)
        nb = jupytext.read(notebook)
        papermill.execute_notebook(
            nb, str(executed), parameters={"profile": profile, "out_dir": str(staging)},
            kernel_name="python3", language="python", cwd=str(root), progress_bar=False,
            stdout_file=sys.stdout, stderr_file=sys.stderr,
        )
    except BaseException as e:
        try:
            if prev is not None:
                _unstash(external, root, prev)
            if executed.is_file():
                run.log_artifact(executed, "failed")
        finally:
            tracking.end_run(run.run_id, "FAILED", root)
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise StageFailed(f"stage {stage} failed ({type(e).__name__}); MLflow run {run.run_id} marked FAILED, "
                          f"no outputs written, the previous ones left as they were. {e}") from e
    finally:
        signal.signal(signal.SIGTERM, previous)
    run.log_artifact(executed)
    data_dir = tracking.data_folder(root, profile)
    if data_dir is not None:
        run.log_datasets(data_dir)  # the `data` stage materialised them just now; others logged them at start
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(prev, ignore_errors=True)
    tracking.end_run(run.run_id, "FINISHED", root)
    return final


def _root() -> Path | None:
    try:
        return repo_root()
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.stage", description=__doc__.splitlines()[0])
    parser.add_argument("stage")
    parser.add_argument("notebook")
    parser.add_argument("--section", default=None, help="params.yaml section (default: the stage name)")
    args = parser.parse_args(argv)
    try:
        out = run_stage(args.stage, args.notebook, args.section)
    except config.ConfigError as e:
        root = _root()
        print(f"error: {e}", file=sys.stderr)
        print(untouched(args.stage, root) if root else f"stage {args.stage}: nothing was run", file=sys.stderr)
        print("fix params.yaml (`python -m lab.config check` validates it) and run again", file=sys.stderr)
        return 1
    except preflight.PreflightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (StageFailed, FileNotFoundError) as e:
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
