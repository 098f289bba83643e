"""Schema of the ``nanovdr`` section of ``params.yaml`` (NanoVDR, arXiv 2603.12824: frozen dataclasses; no ML
imports, no ``lab.config``). :mod:`lab.config` finds :data:`SCHEMA` under :data:`SECTION`; wiring in
:mod:`lab.methods.nanovdr.index`, :mod:`~lab.methods.nanovdr.distill`, :mod:`~lab.methods.nanovdr.evaluate`
and :mod:`~lab.methods.nanovdr.vidore`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

from lab.sections import FIRST_STAGES

NANOVDR_OBJECTIVES = ("cosine", "mse", "infonce", "listwise_kl", "margin_mse", "cosine_kl")
SMOKE_COMPARISON = NANOVDR_OBJECTIVES      # the smoke profile's six-objective comparison
# the paper profile's table: (alignment weight, ranking-KL weight) sweep + InfoNCE on ground-truth pages
# (lab.retrieval.distill parses the names; PAPER_SWEEP there holds the weights)
PAPER_TABLE = ("align1_kl0", "align1_kl0.5", "align1_kl1", "align0.5_kl1", "align0_kl1", "infonce_hard")


@dataclass(frozen=True)
class NanoVDRPagesConfig:
    width: int = 320                   # rendered page size in pixels (Pillow default font)
    height: int = 416
    font_size: int = 12


@dataclass(frozen=True)
class NanoVDRTrainConfig:
    epochs: int = 20                   # paper (model card): 20 epochs, lr 2e-4
    batch_size: int = 64
    lr: float = 2.0e-4
    weight_decay: float = 0.01         # AdamW
    warmup_pct: float = 0.03           # OneCycle, cosine annealing, 3% warm-up
    grad_clip: float = 1.0
    finetune_backbone: bool = True     # false: projector only, on backbone states computed once (smoke budget)
    temperature: float = 0.05          # InfoNCE / listwise-KL softmax temperature
    kl_top_k: int = 16                 # teacher top-K pages for the listwise KL
    kl_weight: float = 1.0             # λ in cosine + λ·KL
    negatives: int = 4                 # teacher-mined negatives per query (InfoNCE, Margin-MSE)
    negative_offset: int = 3           # negatives = teacher ranks offset+1 .. offset+negatives
    select_by: Literal["objective", "cosine"] = "objective"   # best epoch by validation loss of ...
    num_threads: int = 0               # torch threads while training; 0 = 1 for a frozen backbone, else default
    mixed_precision: Literal["fp32", "bf16", "fp16"] = "fp32"   # autocast over fp32 masters (paper: bf16 on GPU)
    # "accelerate": the paper profile's students train under `accelerate launch` (one process per GPU or
    # LAB_NUM_PROCESSES; lab.train.launch); "inprocess": in the notebook's kernel (smoke, tiny)
    launch: Literal["inprocess", "accelerate"] = "inprocess"


@dataclass(frozen=True)
class NanoVDRTranslateConfig:
    """-Multi machine translation of the training queries (``languages`` with ``translator: marian``)."""
    model: str = "hf:Helsinki-NLP/opus-mt-en-{lang}"   # lab.models ref per language; a local folder path works
    # each language translates a seeded sample of at most this many English queries; 0 = every query. The paper:
    # ~156K per language (1.49M-query mixture - 711K English = ~779K translations / 5; lab.data.translate)
    per_language: int = 0
    batch_size: int = 64
    num_beams: int = 1                 # 1 = greedy: the same queries give the same translations
    max_length: int = 64               # source tokens kept (truncation) and new tokens generated


@dataclass(frozen=True)
class NanoVDRConfig:
    # teacher: "text" = smoke stand-in (sentence encoder over the page's source text);
    # "qwen3_vl" = the paper's Qwen3-VL-Embedding-2B over the page image
    teacher_kind: Literal["text", "qwen3_vl"] = "text"
    teacher: str = "all-mpnet-base-v2"
    teacher_instruction: str = ""      # query-side instruction of the teacher (targets are cached with it)
    teacher_batch_size: int = 32
    page_max_length: int = 64          # text teacher: page tokens kept
    query_max_length: int = 32
    student: str = "paraphrase-minilm-l3-v2"
    projector_hidden: int = 768        # MLP in -> hidden -> teacher dim (GELU); 0 = one linear layer
    student_max_length: int = 32
    eval_dataset: str = "trec-dl-2019"      # test queries and page pool (never used in training)
    train_dataset: str = "trec-dl-2020"     # its queries train; its page pool feeds the document-aware objectives
    pool_first_stages: tuple[str, ...] = FIRST_STAGES   # page pool = union of these runs' top-depth candidates
    eval_pool_depth: int = 10
    train_pool_depth: int = 5
    query_pool: str = "msmarco-passage-dev-subset"      # unlabelled training queries
    # "trec": the smoke split (query_pool + train_dataset queries); "nanovdr_train": the paper's training queries
    # (Hub dataset train_repo, lab.data.nanovdr_train) and its validation split, which the best epoch is chosen on
    train_source: Literal["trec", "nanovdr_train"] = "trec"
    train_repo: str = "nanovdr/NanoVDR-Train"
    train_dir: str = ""                # local root holding <owner>/<name>/; "" = <LAB_DATA_MIRROR>/hf-datasets, then Hub
    val_split: str = "validation"
    train_languages: tuple[str, ...] = ()   # keep these `language` values of train_repo; empty = all
    per_language: int = 0              # -Multi balance: at most this many queries per non-English language; 0 = all
    train_queries: int = 1200          # taken from the pool after the validation ones; 0 = all the rest
    val_queries: int = 150
    languages: tuple[str, ...] = ()    # "-Multi": machine-translated copies of the training queries
    translator: Literal["none", "fake", "marian"] = "none"
    translate: NanoVDRTranslateConfig = field(default_factory=NanoVDRTranslateConfig)
    objectives: tuple[str, ...] = NANOVDR_OBJECTIVES
    train: NanoVDRTrainConfig = field(default_factory=NanoVDRTrainConfig)
    pages: NanoVDRPagesConfig = field(default_factory=NanoVDRPagesConfig)
    render_pages: bool = True
    # ViDoRe evaluation (paper profile): keys of lab/data/vidore.yaml ("v1/docvqa", ...); empty = none
    benchmarks: tuple[str, ...] = ()
    benchmark_dir: str = ""            # local root with <owner>/<name>/ laid out like the Hub; "" = mirror, then Hub
    benchmark_languages: tuple[str, ...] = ()   # keep v2/v3 queries in these `language` values; empty = all
    # "accelerate": the index stage's teacher encoding and the report stage's student query encoding run under
    # `accelerate launch`, each process encoding a block on its own GPU (paper profile; lab.eval.shard)
    inference_launch: Literal["inprocess", "accelerate"] = "inprocess"
    search_depth: int = 100
    measures: Mapping[str, str] = field(default_factory=dict)
    test: Literal["ttest", "permutation"] = "ttest"
    alpha: float = 0.05
    data_dir: str = "data"
    index_dir: str = "outputs/nanovdr_index"
    distill_dir: str = "outputs/nanovdr_distill"


SECTION = "nanovdr"
SCHEMA = NanoVDRConfig

# nanovdr.train keys of lab.retrieval.distill.ObjectiveSettings (the index stage needs its top-K too)
OBJECTIVE_KEYS = ("temperature", "kl_top_k", "kl_weight", "negatives", "negative_offset")


def translator_kwargs(cfg: NanoVDRConfig) -> dict:
    """``nanovdr.translate`` as keyword arguments of :func:`lab.data.translate.build_translator`."""
    t = cfg.translate
    return {"model": t.model, "batch_size": t.batch_size, "num_beams": t.num_beams, "max_length": t.max_length}


def objective_kwargs(cfg: NanoVDRConfig) -> dict:
    """``nanovdr.train``'s objective settings as keyword arguments (shared by the index and distill wiring)."""
    return {f: getattr(cfg.train, f) for f in OBJECTIVE_KEYS}
