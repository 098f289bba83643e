"""Every params key a dvc.yaml stage tracks is in params.yaml's top level (DVC reads the file, not lab.config's
profile merge: a key set only under `profiles.paper` is invisible to DVC, and a missing one fails `dvc repro`);
the NanoVDR-Train and FIRST paper-profile settings are tracked by the stages that read them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from lab import config

REPO = Path(__file__).resolve().parents[3]


def _stages():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _tracked(stage: dict) -> list[str]:
    return [p for p in stage.get("params", []) if isinstance(p, str)]


def test_every_tracked_param_is_in_the_top_level_of_params_yaml():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    missing = []
    for name, stage in _stages().items():
        for key in _tracked(stage):
            node = raw
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{name}: {key}")
                    break
                node = node[part]
    assert not missing, missing


def test_stages_track_the_paper_profile_settings_they_read():
    stages = _stages()
    index = set(_tracked(stages["nanovdr_index"]))
    fields = {f.name for f in dataclasses.fields(config.schema("nanovdr"))}
    read_by_index = {"train_source", "train_repo", "train_dir", "val_split", "train_languages", "per_language",
                     "objectives"}
    assert read_by_index <= fields
    assert {f"nanovdr.{k}" for k in read_by_index} <= index
    assert "src/lab/data/nanovdr_train.py" in stages["nanovdr_index"]["deps"]
    train, rerank = stages["first_train"], stages["first_rerank"]
    assert "first.optim" in _tracked(train) and "src/lab/methods/first/launched.py" in train["deps"]
    assert "first.rerank" in _tracked(rerank)            # engine, vllm_*, beir, beir_runs
    assert {"first.fix_text", "first.context_size"} <= set(_tracked(rerank))
    assert "src/lab/data/beir.py" in rerank["deps"]
