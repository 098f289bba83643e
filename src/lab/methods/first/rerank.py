"""FIRST reranking (Reddy et al., EMNLP 2024, arXiv 2406.15657): single-token listwise reranking, wired from the layers.

models (base + the adapters of :mod:`lab.methods.first.train`) -> rerank (prompt, scorers, latency) -> eval
(nDCG@10, paired tests, Kendall tau). Notebook ``notebooks/first/02-first-rerank.py`` calls these functions.
A configuration is ``"<model>:<mode>"``: model ``zeroshot`` or a trained objective, mode ``single`` (FIRST's
single-token ranking) or ``gen`` (generation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lab.data.trecdl import load_materialised
from lab.methods.first.common import load_base
from lab.methods.first.config import FirstConfig
from lab.records import Candidate, Qrels, Run
from lab.rerank.listwise import GenerationScorer, SingleTokenScorer, window_token_budget
from lab.rerank.prompts import load_prompt
from lab.rerank.runner import windows_per_query

MODES = ("single", "gen")


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
    from lab.eval import shard

    dev = shard.device()               # under `accelerate launch`: this process's GPU (CPU without CUDA); else as is
    if dev is not None:
        model = model.to(dev)
    model.eval()
    if model.generation_config is not None:                   # greedy decoding: drop sampling defaults
        model.generation_config.do_sample = False
        for key in ("temperature", "top_p", "top_k"):
            setattr(model.generation_config, key, None)
    return model, tok


def scorer(cfg: FirstConfig, mode: str, model, tok, generation: str | None = None, engine=None):
    """``single`` -> FIRST; ``gen`` -> free or grammar-constrained greedy generation (``first.rerank.generation``).

    ``engine``: a :mod:`lab.rerank.engines` engine (default: HF on ``model``)."""
    from lab.rerank.constrained import ConstrainedScorer

    gen = generation or cfg.rerank.generation
    cls = SingleTokenScorer if mode == "single" else ConstrainedScorer if gen == "constrained" else GenerationScorer
    return cls(model, tok, load_prompt(cfg.prompt), max_words=cfg.max_words, fix_text=cfg.fix_text,
               max_tokens=window_token_budget(tok, cfg.context_size, cfg.rerank.window), engine=engine)


def load_engine(cfg: FirstConfig, model_path: str | Path, adapter: str | Path | None = None):
    """``(model, tokenizer, engine)``: HF loads :func:`load_reranker` (engine ``None`` = HF on the model); vLLM
    serves the model folder itself (no HF copy in memory) and needs a whole model: the base (zero-shot) or a
    full fine-tuning output, not a LoRA adapter."""
    if cfg.rerank.engine == "hf":
        model, tok = load_reranker(cfg, model_path, adapter)
        return model, tok, None
    from lab.models import load_tokenizer
    from lab.rerank.engines import make_engine

    folder = Path(adapter) if adapter is not None else Path(model_path)
    if (folder / "adapter_config.json").is_file():
        raise ValueError(f"{folder} is a LoRA adapter: the vLLM engine serves whole models (first.optim.lora: false, "
                         "as the paper trains), or use first.rerank.engine: hf")
    r = cfg.rerank
    if r.generation == "constrained":
        raise ValueError("first.rerank.generation: constrained decodes through the HF model's KV cache; with "
                         "first.rerank.engine: vllm use generation: free (the paper's baseline)")
    tok = load_tokenizer(folder)
    return None, tok, make_engine("vllm", str(folder), tok, logprobs=r.vllm_logprobs, dtype=cfg.optim.dtype,
                                  max_model_len=r.vllm_max_model_len,
                                  gpu_memory_utilization=r.vllm_gpu_memory_utilization)


@dataclass
class EvalSet:
    name: str
    qrels: Qrels
    runs: dict[str, Run]                 # first stage -> top-100 candidates with text


def _beir_set(name: str, run_path: str, first_stage: str, depth: int = 100) -> EvalSet:
    """A BEIR set with its first-stage run; passage texts (``title + ". " + text``, as the official
    convert_results.py) are read for the run's top ``depth`` only, streaming the corpus once."""
    from lab.data.beir import beir_files, judged_queries, read_beir_texts
    from lab.data.formats import read_trec_run

    files = beir_files(name, split="dev" if Path(name).name == "msmarco" else "test")   # BEIR's MS MARCO is dev
    queries, qrels = judged_queries(files)
    run = read_trec_run(run_path, first_stage, queries).subset([q.qid for q in queries]).top(depth)
    texts = read_beir_texts(files.corpus, {c.docid for ranking in run for c in ranking.candidates})
    for ranking in run:
        ranking.candidates = [Candidate(c.docid, c.score, c.rank, texts[c.docid]) for c in ranking.candidates]
    return EvalSet(files.name, qrels, {first_stage: run})


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

    ``rerank.launch: accelerate`` (paper profile): when :func:`lab.methods.first.launched.rerank_plan` says so,
    the sets and the config go to ``python -m lab.methods.first.rerank`` under ``accelerate launch`` (each
    process reranks a block of every run's queries on its own GPU, rank 0 writes the merged result) and this
    process reads the same three values back.
    """
    if cfg.rerank.launch == "accelerate":
        from lab.methods.first import launched

        plan = launched.rerank_plan(cfg)
        if plan.mode == "accelerate":
            return launched.rerank_launched(plan, cfg, sets, model_path=model_path, adapters_dir=adapters_dir,
                                            progress=progress)
    r = cfg.rerank
    identifiers = load_prompt(cfg.prompt).identifiers
    runs = {s.name: {fs: run for fs, run in s.runs.items()} for s in sets}
    timing, generations = [], []
    for model_name in models_needed(cfg):
        adapter = None if model_name == "zeroshot" else Path(adapters_dir) / model_name
        model, tok, engine = load_engine(cfg, model_path, adapter)
        for s in sets:
            for fs, base in s.runs.items():
                names = [n for n in r.configs.get(fs, ()) if parse_config_name(n)[0] == model_name]
                shared = _shared_decoder(cfg, names, base, model, tok)   # one constrained decode serves both modes
                scorers = {f"{fs}/{config_label(n)}": _config_scorer(cfg, n, model, tok, shared, engine)
                           for n in names}
                results = _run_sharded(base, scorers, window=r.window, stride=r.stride, depth=r.depth,
                                       batch_size=r.batch_size, identifiers=identifiers, progress=progress)
                for name, res in zip(names, results.values()):
                    runs[s.name][res.run.name] = res.run
                    timing.append({"dataset": s.name, "first_stage": fs, "config": config_label(name),
                                   "windows": res.windows, "seconds": res.seconds,
                                   "seconds_per_window": res.seconds / max(1, res.windows), "complete": res.complete,
                                   "decoding": _decoding(cfg, parse_config_name(name)[1], shared)})
                    generations += [{"dataset": s.name, "first_stage": fs, "config": config_label(name), "query": q,
                                     "passages": n, "complete": ok, "text": t} for q, n, t, ok in res.texts]
        del model, engine
    gen_cols = ["dataset", "first_stage", "config", "query", "passages", "complete", "text"]
    return runs, pd.DataFrame(timing), pd.DataFrame(generations, columns=gen_cols)


def _run_sharded(base: Run, scorers, **kw):
    """:func:`lab.rerank.runner.run_scorers` over this process's block of ``base``'s queries (each query's windows
    stay on one process: sliding windows run bottom-up within a query); under ``accelerate launch`` every process
    gets the merged results (:mod:`lab.eval.shard`): rankings and generated texts in query order, windows counted
    over all queries, seconds = the slowest process (the stage's wall time). One process: ``run_scorers(base)``.

    The blocks are whole batches (``batch_size`` consecutive queries advance together in
    :func:`lab.rerank.listwise.rerank`): every window meets the batch, hence the padding, it meets in one process,
    so the logits, the runs and the order of the generated texts are the single process's (a 2-process CPU launch
    writes byte-equal TREC files, tests/unit/first/test_first_rerank_launch.py). The price: balance in steps of one
    batch (DL19's 43 queries in batches of 8 keep 6 of 8 GPUs busy; a BEIR set's hundreds of queries all 8)."""
    from lab.eval import shard
    from lab.rerank.runner import ConfigResult, run_scorers, windows_per_query

    qids, bs = list(base.rankings), max(1, kw["batch_size"])
    mine = base.subset([q for chunk in shard.split([qids[i: i + bs] for i in range(0, len(qids), bs)]) for q in chunk])
    parts = shard.gather_parts(run_scorers(mine, scorers, **kw))          # one {name: ConfigResult} per rank
    if len(parts) == 1:
        return parts[0]
    n_win = len(base) * windows_per_query(base, kw["window"], kw["stride"], kw["depth"])
    out = {}
    for name in scorers:
        run = Run(name)
        for p in parts:
            for ranking in p[name].run:
                run.add(ranking)
        texts = [t for p in parts for t in p[name].texts]
        ok = [c for *_, c in texts]
        out[name] = ConfigResult(run, n_win, max(p[name].seconds for p in parts),
                                 sum(ok) / len(ok) if ok else float("nan"), texts)
    return out


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


def _config_scorer(cfg: FirstConfig, name: str, model, tok, shared, engine=None):
    mode = parse_config_name(name)[1]
    if shared is None:
        return scorer(cfg, mode, model, tok, engine=engine)
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
    from lab.eval import shard

    if not shard.is_main():            # under `accelerate launch` every rank holds the gathered runs: rank 0 writes
        return
    for set_name, by_name in runs.items():
        for name, run in by_name.items():
            write_trec_run(run, Path(folder) / set_name / f"{name.replace('/', '__')}.trec", tag=name.replace("/", "__"))


# ----------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m lab.methods.first.rerank rerank --cfg CFG.json --sets DIR --result DIR --model M --adapters A``:
    what :func:`lab.methods.first.launched.rerank_launched` starts under ``accelerate launch``. Every process
    reranks its block of each run's queries on its own device; rank 0 writes the merged result."""
    import argparse
    import json

    from lab.eval import shard
    from lab.methods.first import launched
    from lab.methods.first.common import setup_torch

    p = argparse.ArgumentParser(prog="python -m lab.methods.first.rerank", description=main.__doc__)
    p.add_argument("command", choices=["rerank"])
    p.add_argument("--cfg", required=True, help="the first section as JSON")
    p.add_argument("--sets", required=True, help="evaluation sets (lab.methods.first.launched.write_sets)")
    p.add_argument("--result", required=True, help="rank 0 writes the runs and tables here")
    p.add_argument("--model", required=True, help="base model folder")
    p.add_argument("--adapters", required=True, help="trained adapters / models folder (<adapters>/<objective>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    cfg = launched.load_cfg(args.cfg)
    setup_torch(cfg, args.seed)
    sets = [EvalSet(*fields) for fields in launched.read_sets(args.sets)]
    runs, timing, generations = rerank_all(cfg, sets, model_path=args.model, adapters_dir=args.adapters,
                                           progress=args.progress)
    if shard.is_main():                # every rank holds the gathered runs; one writes them
        launched.write_rerank_result(args.result, runs, timing, generations)
        print(json.dumps({"command": "rerank", "world": shard.world()[1], "sets": len(sets),
                          "runs": sum(len(r) for r in runs.values())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
