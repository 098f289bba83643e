"""Wall time of the pipeline's stages, from their MLflow runs (start to end of each FINISHED stage run).

    python bench/stage_times.py [--profile smoke] [--out outputs/bench/stage_times.json]

For every notebook stage of ``dvc.yaml`` (but ``report``, which runs after this script) the latest FINISHED,
non-interactive run of ``--profile`` (default: params.yaml's) in this checkout's MLflow database; a run spans the
stage's notebook and its logging (``lab.stage``), not DVC's own hashing. Groups sum a paper's stages (FIRST:
first_train + first_rerank + first_report; NanoVDR: its three stages; ``all``: every stage) and are written only
when every stage of the group has a run. The claims on wall time in ``experiments/*/expected.yaml`` read
``groups.*``; they count as measured in a clean clone with an empty ``LAB_CACHE`` on idle cores only if that is how
the stages ran, which this script cannot see (``runs`` lists the run ids and start times so the reader can check).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

import lab.config
from lab import tracking
from lab.paths import repo_root, write_json

GROUPS = {"foundation": ("data", "models", "firststage"), "first": ("first_train", "first_rerank", "first_report"),
          "first_feedback": ("first_feedback",), "nanovdr": ("nanovdr_index", "nanovdr_distill", "nanovdr_report"),
          "laser": ("laser_reasoning", "laser_train", "laser_eval", "laser_report"),
          "specontext": ("specontext_dlm", "specontext_heads", "specontext_eval", "specontext_report")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--out", default=str(Path("outputs") / "bench" / "stage_times.json"))
    args = ap.parse_args(argv)
    root = repo_root()
    profile = args.profile or lab.config.active_profile(root / "params.yaml")
    # notebook stages only (bench stages open no MLflow run); `report` runs after this script (stage bench_stages)
    stages = [name for name, st in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items()
              if st["cmd"].startswith("python -m lab.stage ") and name != "report"]
    client = tracking._client(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    seconds, runs = {}, {}
    for stage in stages:
        found = client.search_runs(experiments, f"tags.stage = '{stage}' and tags.profile = '{profile}' and "
                                                f"attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
        found = [r for r in found if r.data.tags.get("interactive") != "true" and r.info.end_time
                 and tracking.PARENT_TAG not in r.data.tags]   # a stage's own run, not its per-configuration children
        if found:
            r = found[0]
            seconds[stage] = round((r.info.end_time - r.info.start_time) / 1000, 1)
            runs[stage] = {"run_id": r.info.run_id, "start_time_ms": r.info.start_time,
                           "git_rev": r.data.tags.get("git_rev", "")}
            print(f"{stage:<16} {seconds[stage]:8.1f} s   (run {r.info.run_id[:8]})")
        else:
            print(f"{stage:<16}        - (no FINISHED {profile} run)")
    groups = {name: round(sum(seconds[s] for s in members), 1) for name, members in GROUPS.items()
              if all(s in seconds for s in members)}
    if all(s in seconds for s in stages):
        groups["all"] = round(sum(seconds.values()), 1)
    for name, total in groups.items():
        print(f"group {name:<12} {total:8.1f} s")
    write_json(args.out, {"profile": profile, "command": shlex.join(["python", "bench/stage_times.py", *sys.argv[1:]]),
                          "seconds": seconds, "groups": groups, "runs": runs})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
