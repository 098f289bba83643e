"""Schema of the ``first`` section of ``params.yaml`` (FIRST: frozen dataclasses; no ML imports, no ``lab.config``).

Reddy et al., EMNLP 2024 (arXiv 2406.15657): single-token listwise reranking. Stages first_firststage,
first_train, first_rerank, first_report, first_feedback (notebooks/first); wiring in
:mod:`lab.methods.first.firststage`, :mod:`~lab.methods.first.train`, :mod:`~lab.methods.first.rerank` and
:mod:`~lab.methods.first.feedback`. :mod:`lab.config` finds
:data:`SCHEMA` under :data:`SECTION`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

FIRST_OBJECTIVES = ("joint", "lm", "rank")


@dataclass(frozen=True)
class FirstTrainData:
    source: Literal["trec", "rank_zephyr"] = "trec"  # trec: windows + gold orders from graded qrels
    dataset: str = "trec-dl-2020"      # never an evaluation set (refused)
    first_stage: str = "bm25"
    rank_zephyr: str = ""              # source rank_zephyr: HF dataset id (mirror first) or local .jsonl(.gz)/.parquet
    max_queries: int = 0               # 0 = every judged query
    depth: int = 100                   # windows are drawn from the first-stage top `depth`
    window: int = 20                   # passages per training window
    top_windows: int = 1               # the first `top_windows` sliding windows (first-stage order) per query
    random_windows: int = 0            # + augmented windows per query: random subsets holding relevant passages
    shuffle: bool = False              # present augmented windows shuffled (else in first-stage order)
    min_relevant: int = 1              # a window needs this many passages with grade > 0
    max_examples: int = 0              # 0 = all (rank_zephyr: the first N rows)


@dataclass(frozen=True)
class FirstOptim:
    rank_loss: Literal["ranknet", "listnet", "lambdarank"] = "ranknet"
    weighted: bool = True
    lam: float = 10.0                  # L = L_LM + lam * L_rank (paper: weighted RankNet, lam 10)
    steps: int = 0                     # optimizer steps; 0 = from epochs
    epochs: float = 1.0
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1.0e-4
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0         # 0 = no clipping
    neftune_alpha: float = 0.0         # NEFTune noise on input embeddings (paper: 5)
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    lora_layers: int = 0               # LoRA on the top N decoder layers only (0 = all); cheaper backward
    dtype: Literal["float32", "bfloat16"] = "float32"   # load dtype; trained params are fp32 masters either way
    # autocast in lab.train ("fp32" = none: DVC -S rewrites a quoted "no" bare, which YAML reads as false)
    mixed_precision: Literal["fp32", "bf16"] = "fp32"
    gradient_checkpointing: bool = False
    deepspeed: str = ""                # "" | "zero3" (lab.train's ZeRO-3 config, official FIRST) | a JSON path
    # "accelerate": each variant trains under `accelerate launch` (paper profile: one process per GPU, or
    # LAB_NUM_PROCESSES; lab.train.launch); "inprocess": in the notebook's kernel (smoke, tiny)
    launch: Literal["inprocess", "accelerate"] = "inprocess"
    checkpoint_every: int = 0          # steps between resumable checkpoints; 0 = only the last step


@dataclass(frozen=True)
class FirstRerank:
    datasets: tuple[str, ...] = ("trec-dl-2019",)    # materialised TREC DL sets (never the training set)
    first_stages: tuple[str, ...] = ("bm25", "splade_pp_ed")
    baseline: str = "bm25"             # per first stage: the first-stage order itself
    max_queries: int = 0
    depth: int = 20                    # rerank the top `depth` of each first stage
    window: int = 20
    stride: int = 10
    batch_size: int = 4                # windows per forward (single-token) / per generate call
    # gen mode: "free" greedy generation, parsed (the paper's baseline), or "constrained" to the [X] > [Y]
    # grammar (lab.rerank.constrained): small models do not write a permutation by themselves
    generation: Literal["free", "constrained"] = "free"
    # first stage -> configurations "<model>:<mode>", model zeroshot | an objective, mode single | gen
    configs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    measures: Mapping[str, str] = field(default_factory=dict)
    test: Literal["ttest", "permutation"] = "ttest"
    alpha: float = 0.05
    latency_windows: int = 4           # windows timed one at a time, single-token vs generation
    # inference engine (lab.rerank.engines): hf = transformers (CPU/smoke, and constrained decoding), vllm = the
    # official code's engine (GPU, pip install vllm; full model folders: zero-shot base or full fine-tuning)
    engine: Literal["hf", "vllm"] = "hf"
    vllm_logprobs: int = 30            # top-k logprobs at "[" (official LLM(max_logprobs=30))
    vllm_max_model_len: int = 8192
    vllm_gpu_memory_utilization: float = 0.9
    # "accelerate": the rerank stage runs under `accelerate launch`, each process reranking a block of the queries
    # on its own GPU (paper profile; lab.train.launch, lab.eval.shard); "inprocess": in the notebook's kernel
    launch: Literal["inprocess", "accelerate"] = "inprocess"
    beir: tuple[str, ...] = ()         # paper profile: BEIR sets (local BEIR folders or hf ids) ...
    # ... and their first-stage top-100 TREC run files, a "{name}" pattern (paper: stage first_firststage's runs)
    beir_runs: str = ""
    beir_first_stage: str = "contriever"


@dataclass(frozen=True)
class FirstDense:
    """Dense first stage for the ``rerank.beir`` sets (stage first_firststage, lab.retrieval.first_stage): writes
    ``outputs/first_firststage/runs/<set>.trec``, which ``rerank.beir_runs`` names in the paper profile. Defaults:
    Contriever's BEIR evaluation (facebookresearch/contriever src/beir_utils.py): maxlength 512, no L2 norm, dot."""

    encoder: str = ""                  # model ref ("" = none: no BEIR set to retrieve for); paper: Contriever
    max_length: int = 512
    batch_size: int = 128
    chunk: int = 65536                 # passages encoded + indexed at a time (corpus streamed, never one dict)
    depth: int = 100                   # FIRST reranks the top 100
    skip_self: bool = True             # BEIR's exact search drops a hit whose docid equals the qid
    measures: Mapping[str, str] = field(default_factory=dict)   # the runs' own scores (stage first_firststage)


@dataclass(frozen=True)
class FirstFeedback:
    """FIRST §5 relevance feedback (stage first_feedback, lab.retrieval.feedback): the LLM's ranking refits the
    dense query vector, which retrieves again. Defaults: gangiswag/llm-reranker scripts/distill.py and
    bash/run_distill.sh (ce_top_k 100, Adam lr 0.005, 100 updates; LLM stage lr / 5, updates // 5, ranknet)."""

    encoder_role: str = "encoder"      # models/<role>: the dense retriever whose query vectors are refit
    # stage-1 teacher: models/<role> bi-encoder scores stand in for the paper's cross-encoder; "none" skips stage 1
    teacher_role: str = "encoder_large"
    teacher_scale: float = 20.0        # teacher logits = scale * cosine (all-mpnet-base-v2 trained at scale 20)
    first_stage: str = "splade_pp_ed"  # whose first_rerank runs give the LLM rankings
    # first_rerank run names <model>_<mode>; "first_stage" = the first stage's own order (control: no LLM)
    configs: tuple[str, ...] = ("first_stage", "zeroshot_single", "joint_single")
    # stage-2 passages: "dense_overlap" = the LLM-ordered passages that are also in the dense top `depth` (the
    # official LLM reranked the retriever's own list); "reranked" = every passage the LLM ordered
    llm_pools: tuple[Literal["dense_overlap", "reranked"], ...] = ("dense_overlap", "reranked")
    depth: int = 100                   # dense top-k: candidates for the teacher and the re-retrieval depth
    teacher_top_k: int = 100           # ce_top_k (0 = no stage 1)
    llm_top_k: int = 20                # LLM-ordered prefix used; at most first.rerank.depth
    lr: float = 0.005
    updates: int = 100
    llm_lr_divisor: float = 5.0
    llm_updates_divisor: int = 5
    weighted: bool = True
    passage_max_length: int = 256      # tokens (all-MiniLM-L6-v2's own max_seq_length)
    query_max_length: int = 32
    batch_size: int = 16               # encoder batch (length-sorted)
    # torch threads; encoding dominates: 25 vs 12 passages/s with 1 vs 2 threads while another job held both cores
    threads: int = 1
    max_queries: int = 0               # 0 = every judged query
    measures: Mapping[str, str] = field(default_factory=dict)
    test: Literal["ttest", "permutation"] = "ttest"
    alpha: float = 0.05


@dataclass(frozen=True)
class FirstConfig:
    model_role: str = "llm"            # models/<role>, materialised by the models stage
    prompt: str = "first_alpha_v1"
    threads: int = 2                   # torch intra-op threads (fixed: float sums depend on it)
    max_words: int = 300               # passage truncation (words), train and rerank
    fix_text: bool = False             # ftfy.fix_text on every rendered prompt, train and rerank (official: on)
    context_size: int = 0              # rerank window token budget, prompt + output estimate (official 4096; 0 = none)
    variants: tuple[str, ...] = FIRST_OBJECTIVES   # objectives trained (joint = FIRST; lm, rank: ablation)
    checkpoint_dir: str = "outputs/checkpoints/first_train"   # resumable state, outside the stage outputs
    train: FirstTrainData = field(default_factory=FirstTrainData)
    optim: FirstOptim = field(default_factory=FirstOptim)
    rerank: FirstRerank = field(default_factory=FirstRerank)
    dense: FirstDense = field(default_factory=FirstDense)
    feedback: FirstFeedback = field(default_factory=FirstFeedback)


SECTION = "first"
SCHEMA = FirstConfig
