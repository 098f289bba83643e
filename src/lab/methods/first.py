"""FIRST (Reddy et al., EMNLP 2024, arXiv 2406.15657): single-token listwise reranking, wired from the layers.

data (TREC DL windows, or the paper's rank_zephyr data) -> models (``models/<role>``) -> rerank (prompt,
training loop, scorers, latency) -> eval (nDCG@10, paired tests, Kendall tau). The notebooks in
``notebooks/first`` call these functions; ``python -m lab.methods.first train ...`` is the same training
as a command that ``accelerate launch`` can start on several GPUs (see :func:`main`).

Never trains on an evaluation set: with ``first.train.source: trec`` the training dataset must not be
one of ``first.rerank.datasets`` and no training qid may be an evaluation qid (both checked).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lab import config as lab_config
from lab.data.trecdl import load_materialised
from lab.records import Candidate, Qrels, Query, Ranking, Run
from lab.rerank.augment import training_windows
from lab.rerank.listwise import GenerationScorer, SingleTokenScorer
from lab.rerank.prompts import load_prompt
from lab.rerank.runner import windows_per_query
from lab.rerank.train import RankExample, TrainConfig, TrainResult
from lab.sections import FirstConfig

MODES = ("single", "gen")


# ------------------------------------------------------------------------------------------- setup
def setup_torch(cfg: FirstConfig, seed: int) -> None:
    """:func:`lab.models.setup_torch` with ``first.threads``."""
    from lab.models import setup_torch as setup

    setup(cfg.threads, seed)


def parse_config_name(name: str) -> tuple[str, str]:
    """``"joint:single"`` -> ``("joint", "single")``; the model is ``zeroshot`` or an objective."""
    model, _, mode = name.partition(":")
    if mode not in MODES or not model:
        raise ValueError(f"configuration {name!r}: expected '<model>:<mode>' with mode in {MODES}")
    return model, mode


def config_label(name: str) -> str:
    """``"joint:single"`` -> ``"joint_single"`` (metric keys and run names)."""
    model, mode = parse_config_name(name)
    return f"{model}_{mode}"


class Stopwatch:
    """Wall-clock seconds since creation (stage timings in metrics.json)."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


# --------------------------------------------------------------------------------------- training data
@dataclass
class TrainingSet:
    examples: list[RankExample]
    qids: list[str]                      # per example ("" for rank_zephyr rows: MS MARCO training queries)
    kinds: list[str]                     # "top" | "random" | "rank_zephyr"
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {"examples": len(self.examples), "queries": len(set(self.qids) - {""}),
                "top_windows": self.kinds.count("top"), "random_windows": self.kinds.count("random"),
                "passages_per_window": sum(len(e.passages) for e in self.examples) / max(1, len(self.examples))}


def eval_qids(cfg: FirstConfig, data_dir: str | Path) -> set[str]:
    """Every query id of the TREC DL evaluation sets (read from the materialised topics)."""
    from lab.data.formats import read_topics

    return {q.qid for name in cfg.rerank.datasets for q in read_topics(Path(data_dir) / name / "queries.tsv")}


def training_set(cfg: FirstConfig, data_dir: str | Path, seed: int) -> TrainingSet:
    """The training windows the config names, checked never to hold an evaluation query."""
    t = cfg.train
    if t.source == "rank_zephyr":
        from lab.rerank.rank_zephyr import load_rank_zephyr

        data = load_rank_zephyr(t.rank_zephyr, max_examples=t.max_examples)
        return TrainingSet(data.examples, [""] * len(data.examples), ["rank_zephyr"] * len(data.examples),
                           {"skipped": len(data.skipped), "repaired": data.repaired})
    if t.dataset in cfg.rerank.datasets:
        raise ValueError(f"first.train.dataset {t.dataset!r} is an evaluation set ({list(cfg.rerank.datasets)})")
    ds = load_materialised(data_dir, t.dataset, [t.first_stage])
    wins = training_windows(ds.runs[t.first_stage], ds.qrels, window=t.window, depth=t.depth,
                            top_windows=t.top_windows, random_windows=t.random_windows, shuffle=t.shuffle,
                            min_relevant=t.min_relevant, seed=seed, max_queries=t.max_queries)
    if t.max_examples:
        wins = wins[: t.max_examples]
    leaked = {w.qid for w in wins} & eval_qids(cfg, data_dir)
    if leaked:
        raise ValueError(f"training windows hold {len(leaked)} evaluation queries: {sorted(leaked)[:5]}")
    return TrainingSet([w.example for w in wins], [w.qid for w in wins], [w.kind for w in wins])


# ------------------------------------------------------------------------------------------ training
def train_config(cfg: FirstConfig, variant: str, n_examples: int, seed: int, world: int = 1) -> TrainConfig:
    o = cfg.optim
    steps = o.steps or max(1, math.ceil(o.epochs * n_examples / (o.batch_size * o.grad_accum * world)))
    return TrainConfig(
        objective=variant, rank_loss=o.rank_loss, weighted=o.weighted, lam=o.lam, steps=steps,
        batch_size=o.batch_size, grad_accum=o.grad_accum, lr=o.lr, weight_decay=o.weight_decay,
        scheduler="linear", warmup_steps=o.warmup_steps, max_grad_norm=o.max_grad_norm or None, seed=seed,
        lora=o.lora, lora_r=o.lora_r, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout,
        lora_targets=tuple(o.lora_targets), max_words=cfg.max_words)


def fingerprint(cfg: FirstConfig, tcfg: TrainConfig, ts: TrainingSet, model_path: str | Path) -> str:
    """What a checkpoint must share with the run that resumes it: settings, examples, base model."""
    folder = Path(model_path)
    marker = folder / "lab_model.json"
    model_id = (marker if marker.is_file() else folder / "config.json").read_text() if folder.is_dir() else str(model_path)
    h = hashlib.sha256()
    h.update(json.dumps({"train": vars(tcfg), "optim": lab_config.as_plain(cfg.optim), "prompt": cfg.prompt},
                        sort_keys=True, default=str).encode())
    h.update(model_id.encode())
    for ex in ts.examples:
        h.update(json.dumps([ex.query, ex.passages, ex.ranks]).encode())
    return h.hexdigest()


def load_base(model_path: str | Path, dtype: str = "float32"):
    from lab.models import load_model, load_tokenizer

    return load_model(model_path, kind="causal_lm", dtype=dtype), load_tokenizer(model_path)


def train_variant(cfg: FirstConfig, variant: str, ts: TrainingSet, *, model_path: str | Path,
                  adapters_dir: str | Path | None, seed: int, checkpoint_root: str | Path | None = None,
                  stop_after: int | None = None, accelerator=None, steps: int | None = None) -> TrainResult:
    """Train one objective (``joint`` = FIRST, ``lm``, ``rank``); save its adapter to ``adapters_dir/variant``.

    Resumes from ``checkpoint_root/variant`` when that checkpoint was written for the same fingerprint.
    """
    from dataclasses import replace

    from lab.rerank.fit import FitOptions, fit

    model, tok = load_base(model_path, cfg.optim.dtype)
    world = accelerator.num_processes if accelerator else 1
    tcfg = train_config(cfg, variant, len(ts.examples), seed, world)
    if steps is not None:
        tcfg = replace(tcfg, steps=steps)
    opts = FitOptions(scheduler=cfg.optim.scheduler, neftune_alpha=cfg.optim.neftune_alpha,
                      lora_layers=cfg.optim.lora_layers,
                      checkpoint_dir=Path(checkpoint_root) / variant if checkpoint_root else None,
                      checkpoint_every=cfg.optim.checkpoint_every, fingerprint=fingerprint(cfg, tcfg, ts, model_path),
                      stop_after=stop_after, accelerator=accelerator)
    result = fit(model, tok, ts.examples, tcfg, opts, prompt=load_prompt(cfg.prompt))
    if adapters_dir is not None and (accelerator is None or accelerator.is_main_process):
        result.model.save_pretrained(Path(adapters_dir) / variant)   # LoRA: adapter safetensors + config
        tok.save_pretrained(Path(adapters_dir) / variant)
    return result


def curves(results: dict[str, TrainResult]) -> pd.DataFrame:
    """Per-step losses of every variant (long form without timings, so the table is byte-stable)."""
    rows = [{"variant": v, **{k: r[k] for k in ("step", "lr", "loss", "lm", "rank")}}
            for v, res in results.items() for r in res.losses]
    return pd.DataFrame(rows, columns=["variant", "step", "lr", "loss", "lm", "rank"])


def log_curves(run, table: pd.DataFrame) -> None:
    """Learning curves to MLflow as stepped metrics ``curve.<variant>.{loss,lm,rank,lr}``."""
    for row in table.itertuples():
        run.log_metrics({f"curve.{row.variant}": {"loss": row.loss, "lm": row.lm, "rank": row.rank, "lr": row.lr}},
                        step=int(row.step))


def curve_endpoints(table: pd.DataFrame, k: int = 5) -> dict[str, dict[str, float]]:
    """Mean of each loss over the first and the last ``k`` steps, per variant."""
    out: dict[str, dict[str, float]] = {}
    for variant, g in table.groupby("variant", sort=False):
        g = g.sort_values("step")
        out[variant] = {f"{part}_{end}": float(frame[part].mean())
                        for end, frame in (("first", g.head(k)), ("last", g.tail(k)))
                        for part in ("loss", "lm", "rank")}
        out[variant]["steps"] = float(g["step"].max())
    return out


# ------------------------------------------------------------------------------------------ reranking
def load_reranker(cfg: FirstConfig, model_path: str | Path, adapter: str | Path | None = None):
    """Base model (zero-shot) or base + trained adapter merged into the weights, in eval mode."""
    if adapter is not None and (Path(adapter) / "adapter_config.json").is_file():
        from peft import PeftModel

        model, tok = load_base(model_path, cfg.optim.dtype)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    elif adapter is not None:                                  # full fine-tuning saved a whole model
        model, tok = load_base(adapter, cfg.optim.dtype)
    else:
        model, tok = load_base(model_path, cfg.optim.dtype)
    model.eval()
    if model.generation_config is not None:                   # greedy decoding: drop sampling defaults
        model.generation_config.do_sample = False
        for key in ("temperature", "top_p", "top_k"):
            setattr(model.generation_config, key, None)
    return model, tok


def scorer(cfg: FirstConfig, mode: str, model, tok, generation: str | None = None):
    """``single`` -> FIRST; ``gen`` -> free or grammar-constrained greedy generation (``first.rerank.generation``)."""
    from lab.rerank.constrained import ConstrainedScorer

    gen = generation or cfg.rerank.generation
    cls = SingleTokenScorer if mode == "single" else ConstrainedScorer if gen == "constrained" else GenerationScorer
    return cls(model, tok, load_prompt(cfg.prompt), max_words=cfg.max_words)


@dataclass
class EvalSet:
    name: str
    qrels: Qrels
    runs: dict[str, Run]                 # first stage -> top-100 candidates with text


def _beir_set(name: str, run_path: str, first_stage: str, depth: int = 100) -> EvalSet:
    from lab.data.beir import load_beir
    from lab.data.formats import read_trec_run

    beir = load_beir(name, split="dev" if Path(name).name == "msmarco" else "test")   # BEIR's MS MARCO is dev
    run = read_trec_run(run_path, first_stage, beir.queries).subset([q.qid for q in beir.queries]).top(depth)
    for ranking in run:
        ranking.candidates = [Candidate(c.docid, c.score, c.rank, " ".join(p for p in beir.corpus[c.docid] if p))
                              for c in ranking.candidates]
    return EvalSet(beir.name, beir.qrels, {first_stage: run})


def eval_sets(cfg: FirstConfig, data_dir: str | Path) -> list[EvalSet]:
    """TREC DL sets (materialised by the data stage) and, in the paper profile, BEIR sets with their runs."""
    r = cfg.rerank
    out = []
    for name in r.datasets:
        ds = load_materialised(data_dir, name, r.first_stages)
        qids = ds.qids[: r.max_queries] if r.max_queries else ds.qids
        out.append(EvalSet(name, ds.qrels.subset(qids), {fs: run.subset(qids) for fs, run in ds.runs.items()}))
    for name in r.beir:
        out.append(_beir_set(name, r.beir_runs.format(name=Path(name).name), r.beir_first_stage))
    return out


def models_needed(cfg: FirstConfig) -> list[str]:
    """Models the configurations use, zero-shot first, then in ``variants`` order."""
    used = {parse_config_name(c)[0] for cs in cfg.rerank.configs.values() for c in cs}
    unknown = used - {"zeroshot", *cfg.variants}
    if unknown:
        raise ValueError(f"first.rerank.configs use models {sorted(unknown)} that first.variants does not train")
    return [m for m in ("zeroshot", *cfg.variants) if m in used]


def rerank_all(cfg: FirstConfig, sets: list[EvalSet], *, model_path: str | Path, adapters_dir: str | Path,
               progress: bool = False) -> tuple[dict[str, dict[str, Run]], pd.DataFrame, pd.DataFrame]:
    """Rerank every (set, first stage, configuration); each model is loaded once.

    Returns ``{set: {run name: Run}}`` (run names ``<first stage>`` and ``<first stage>/<model>_<mode>``), a
    timing table (set, first_stage, config, windows, seconds, seconds_per_window, complete: the share of
    generated outputs that name every passage exactly once) and every generated text.
    """
    from lab.rerank.runner import run_scorers

    r = cfg.rerank
    identifiers = load_prompt(cfg.prompt).identifiers
    runs = {s.name: {fs: run for fs, run in s.runs.items()} for s in sets}
    timing, generations = [], []
    for model_name in models_needed(cfg):
        adapter = None if model_name == "zeroshot" else Path(adapters_dir) / model_name
        model, tok = load_reranker(cfg, model_path, adapter)
        for s in sets:
            for fs, base in s.runs.items():
                names = [n for n in r.configs.get(fs, ()) if parse_config_name(n)[0] == model_name]
                shared = _shared_decoder(cfg, names, base, model, tok)   # one constrained decode serves both modes
                scorers = {f"{fs}/{config_label(n)}": _config_scorer(cfg, n, model, tok, shared) for n in names}
                results = run_scorers(base, scorers, window=r.window, stride=r.stride, depth=r.depth,
                                      batch_size=r.batch_size, identifiers=identifiers, progress=progress)
                for name, res in zip(names, results.values()):
                    runs[s.name][res.run.name] = res.run
                    timing.append({"dataset": s.name, "first_stage": fs, "config": config_label(name),
                                   "windows": res.windows, "seconds": res.seconds,
                                   "seconds_per_window": res.seconds / max(1, res.windows), "complete": res.complete,
                                   "decoding": _decoding(cfg, parse_config_name(name)[1], shared)})
                    generations += [{"dataset": s.name, "first_stage": fs, "config": config_label(name), "query": q,
                                     "passages": n, "complete": ok, "text": t} for q, n, t, ok in res.texts]
        del model
    gen_cols = ["dataset", "first_stage", "config", "query", "passages", "complete", "text"]
    return runs, pd.DataFrame(timing), pd.DataFrame(generations, columns=gen_cols)


def _shared_decoder(cfg: FirstConfig, names: list[str], base: Run, model, tok):
    """A constrained scorer that serves ``single`` and ``gen`` together, when that gives identical rankings.

    Needs constrained generation, both modes configured, and every query reranked in ONE window: with
    several windows the two modes reorder differently, so later windows hold different passages.
    """
    modes = {parse_config_name(n)[1] for n in names}
    r = cfg.rerank
    if r.generation != "constrained" or modes != set(MODES) or windows_per_query(base, r.window, r.stride, r.depth) != 1:
        return None
    return scorer(cfg, "gen", model, tok)


def _config_scorer(cfg: FirstConfig, name: str, model, tok, shared):
    mode = parse_config_name(name)[1]
    if shared is None:
        return scorer(cfg, mode, model, tok)
    return shared if mode == "gen" else shared.single_view()


def _decoding(cfg: FirstConfig, mode: str, shared) -> str:
    if mode == "single":
        return "single-token (first step of the shared constrained decode)" if shared is not None else "single-token"
    return f"{cfg.rerank.generation} generation" + (" (shared with single-token)" if shared is not None else "")


def latency(cfg: FirstConfig, model_path: str | Path, adapter: str | Path | None, run: Run, n: int):
    """Seconds per window on the first window of ``n`` queries of ``run``: single-token vs free generation (the
    paper's comparison), and grammar-constrained decoding alongside."""
    from lab.rerank.latency import measure_latency

    model, tok = load_reranker(cfg, model_path, adapter)
    rankings = list(run)[:n]
    windows = [[c.text for c in x.candidates[: cfg.rerank.window]] for x in rankings]
    return measure_latency(scorer(cfg, "single", model, tok), scorer(cfg, "gen", model, tok, "free"),
                           [x.query.text for x in rankings], windows,
                           constrained=scorer(cfg, "gen", model, tok, "constrained"))


def evaluate_all(cfg: FirstConfig, sets: list[EvalSet], runs: dict[str, dict[str, Run]]):
    """``(summary, per_query, taus)`` over every set: nDCG@10 with paired tests, single-vs-generation tau."""
    from lab.rerank.evaluation import agreement, compare

    parts = []
    for s in sets:
        base = cfg.rerank.baseline if cfg.rerank.baseline in s.runs else next(iter(s.runs))
        summary, per_query = compare(runs[s.name], s.qrels, cfg.rerank.measures, dataset=s.name, baseline=base,
                                     test=cfg.rerank.test, alpha=cfg.rerank.alpha)
        parts.append((summary, per_query, agreement(runs[s.name], dataset=s.name, depth=cfg.rerank.depth)))
    return tuple(pd.concat([p[i] for p in parts], ignore_index=True) for i in range(3))


def save_runs(runs: dict[str, dict[str, Run]], folder: str | Path) -> None:
    """TREC run files ``folder/<set>/<first stage>[__<config>].trec`` (reranked scores are ``len - position``)."""
    from lab.data.formats import write_trec_run

    for set_name, by_name in runs.items():
        for name, run in by_name.items():
            write_trec_run(run, Path(folder) / set_name / f"{name.replace('/', '__')}.trec", tag=name.replace("/", "__"))


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.first train --variant joint --out DIR`` (also under ``accelerate launch``)."""
    p = argparse.ArgumentParser(prog="python -m lab.methods.first", description=main.__doc__)
    p.add_argument("command", choices=["train"])
    p.add_argument("--profile", default=None, help="params.yaml profile (default: the file's)")
    p.add_argument("--params", default=None, help="params.yaml path")
    p.add_argument("--variant", default="joint", choices=["joint", "lm", "rank"])
    p.add_argument("--out", required=True, help="adapters folder (the variant lands in OUT/<variant>)")
    p.add_argument("--model", default=None, help="model reference or folder (default: models/<model_role>)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--train-data", default=None, help="rank_zephyr data (hf id or .jsonl) overriding the params")
    p.add_argument("--checkpoints", default=None, help="checkpoint folder (default: first.checkpoint_dir)")
    p.add_argument("--steps", type=int, default=None, help="override the number of optimizer steps")
    p.add_argument("--no-accelerate", action="store_true", help="plain torch loop instead of an Accelerator")
    args = p.parse_args(argv)
    cfg = lab_config.load("first", args.profile, args.params)
    if args.train_data:
        from dataclasses import replace

        cfg = replace(cfg, train=replace(cfg.train, source="rank_zephyr", rank_zephyr=args.train_data))
    seed = int(lab_config.read_params(args.params).get("seed", 0))
    setup_torch(cfg, seed)
    acc = None
    if not args.no_accelerate:
        from accelerate import Accelerator

        acc = Accelerator(mixed_precision={"fp32": "no"}.get(cfg.optim.mixed_precision, cfg.optim.mixed_precision))
    model = args.model or str(Path("models") / cfg.model_role)
    ts = training_set(cfg, args.data_dir, seed)
    res = train_variant(cfg, args.variant, ts, model_path=model, adapters_dir=args.out, seed=seed,
                        checkpoint_root=args.checkpoints or cfg.checkpoint_dir, accelerator=acc, steps=args.steps)
    if acc is None or acc.is_main_process:
        print(json.dumps({"variant": args.variant, "examples": len(ts.examples), "steps": len(res.losses),
                          "last": res.losses[-1] if res.losses else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
