"""Run the three NanoVDR stages' logic (what the notebooks call) without DVC/papermill/MLflow.

    LAB_DATA_MIRROR=/work/shared/data python experiments/nanovdr/smoke.py [--profile smoke] [--out DIR]
        [--objectives cosine,mse] [--seed N] [--set train.epochs=5 ...]

Reads the ``nanovdr`` section of the repo's ``params.yaml`` (the profile resolved, ``--set`` overrides applied)
and validates it against its schema, ``lab.methods.nanovdr.config``; the seed defaults to ``params.yaml``'s, as
the stages use. Needs the ``data`` stage's output under ``nanovdr.data_dir`` (``dvc repro data``). Prints timings
and every metric, and writes ``<out>/smoke_results.json``. Tested on the tiny profile
(``tests/unit/methods/test_nanovdr_smoke_script.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import yaml

import lab.config
from lab.methods.nanovdr import config as nanovdr_config
from lab.paths import repo_root, write_json

def cpu_s() -> float:
    """CPU seconds (user + system) of this process: with other load on the machine, wall time
    overstates the cost; CPU time / 2 estimates the wall time on 2 idle cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_cfg(profile: str, overrides: list[str]):
    source = repo_root() / "params.yaml"
    raw = yaml.safe_load(source.read_text())["nanovdr"]
    values = lab.config.resolve_profile(raw, profile, f"{source.name}: nanovdr")
    for item in overrides:
        key, value = item.split("=", 1)
        *head, last = key.split(".")
        node = values
        for h in head:
            node = node.setdefault(h, {})
        node[last] = yaml.safe_load(value)
    return lab.config.build(nanovdr_config.SCHEMA, values, "nanovdr")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--out", default="outputs/nanovdr_smoke")
    ap.add_argument("--seed", type=int, default=None, help="default: params.yaml's seed (as the stages)")
    ap.add_argument("--objectives", default=None)
    ap.add_argument("--set", nargs="*", default=[])
    ap.add_argument("--skip-index", action="store_true")
    args = ap.parse_args(argv)
    from lab.methods.nanovdr import distill as nanovdr_distill, evaluate as nanovdr_evaluate, index as nanovdr_index

    out = Path(args.out)
    if args.seed is None:
        args.seed = lab.config.read_params(repo_root() / "params.yaml").get("seed", 0)
    cfg = load_cfg(args.profile, [f"index_dir={out / 'index'}", *args.set])
    objectives = args.objectives.split(",") if args.objectives else list(cfg.objectives)
    results: dict = {"profile": args.profile, "seed": args.seed, "config": lab.config.as_plain(cfg), "timings_s": {},
                     "cpu_s": {}, "loadavg_start": open("/proc/loadavg").read().split()[:3]}
    t_all, c_all = time.perf_counter(), cpu_s()
    if not args.skip_index:
        t0, c0 = time.perf_counter(), cpu_s()
        summary = nanovdr_index.build_index(cfg, out / "index", seed=args.seed)
        results["index"] = summary
        results["timings_s"]["index"], results["cpu_s"]["index"] = time.perf_counter() - t0, cpu_s() - c0
        print(json.dumps(summary, indent=1), flush=True)
    students, curves = {}, {}
    t0, c0 = time.perf_counter(), cpu_s()
    for objective in objectives:
        path = out / "students" / f"{objective}.safetensors"
        curve = nanovdr_distill.distill(cfg, objective, path, seed=args.seed)
        students[f"student-{objective}"] = path
        curves[objective] = {"history": curve.drop(columns="objective").to_dict("records"), **curve.attrs}
        print(objective, curve.attrs, curve.tail(1).to_dict("records"), flush=True)
    results["timings_s"]["distill"], results["cpu_s"]["distill"] = time.perf_counter() - t0, cpu_s() - c0
    results["distill"] = curves
    t0, c0 = time.perf_counter(), cpu_s()
    report = nanovdr_evaluate.evaluate(cfg, students, seed=args.seed)        # + student-untrained
    results["timings_s"]["evaluate"], results["cpu_s"]["evaluate"] = time.perf_counter() - t0, cpu_s() - c0
    results["timings_s"]["total"], results["cpu_s"]["total"] = time.perf_counter() - t_all, cpu_s() - c_all
    results["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["summary"] = report.comparison.summary.to_dict("records")
    results["retention"] = report.retention.to_dict("records")
    results["encode_ms_per_query_batched"] = report.encode_ms_per_query
    print(report.retention.pivot(index="run", columns="measure", values=["mean", "retention"]).round(4).to_string())
    print(report.comparison.summary.round(4).to_string())
    print(json.dumps({k: results[k] for k in ("timings_s", "cpu_s", "loadavg_start", "loadavg_end")}, indent=1))
    write_json(out / "smoke_results.json", json.loads(json.dumps(results, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
