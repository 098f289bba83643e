"""Schema of the ``laser`` section of ``params.yaml`` (LaSER: frozen dataclasses; no ML imports, no ``lab.config``).

Jin et al., SIGIR 2026 (arXiv 2603.01425; code ignorejjj/LaSER). Stages laser_reasoning, laser_train, laser_eval,
laser_report (notebooks/laser); mechanism in :mod:`lab.retrieval.latent`, losses in :mod:`lab.losses.laser`, the
training wiring in :mod:`lab.retrieval.latent_train`. :mod:`lab.config` finds :data:`SCHEMA` under :data:`SECTION`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping


@dataclass(frozen=True)
class LaserVariant:
    """One row of the paper's Table 5 (or a control): what is trained and how it is encoded.

    The defaults are full LaSER with the code's weights: L = L_cl(latent) + L_cl(explicit) + 10 KL + 0.1 L_mid.
    """

    label: str = ""                    # the row's name in the paper's table ("" = the variant key)
    train: bool = True                 # false: the base model as it is (zero-shot)
    k: int = 3                         # thinking steps, training and inference (paper: 3)
    explicit: bool = True              # run the explicit view (false: no teacher, no KL, no L_mid)
    w_latent: float = 1.0
    w_explicit: float = 1.0            # explicit InfoNCE ("co-learning": it trains the shared weights)
    w_kl: float = 10.0                 # output distillation
    w_mid: float = 0.1                 # process (trajectory) alignment
    reasoning: Literal["generated", "oracle"] = "generated"   # oracle: a held-out rel-3 passage (a CONTROL)
    paper: float = -1.0                # the paper's BRIGHT avg nDCG@10 x100 for this row (Table 5); -1 = none


@dataclass(frozen=True)
class LaserReasoning:
    datasets: tuple[str, ...] = ("trec-dl-2020", "trec-dl-2019")   # DL19's only feeds rewrite-then-retrieve
    max_new_tokens: int = 256          # greedy; the paper's rewriter writes ~200-word rationales
    batch_size: int = 8
    max_queries: int = 0               # 0 = every judged query


@dataclass(frozen=True)
class LaserTrainData:
    dataset: str = "trec-dl-2020"      # never an evaluation set (refused, and no qid may be an evaluation qid)
    first_stages: tuple[str, ...] = ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed", "repllama")
    positive_grade: int = 2            # positives: qrels grade >= this, found in a first stage's top `depth`
    negative_stage: str = "bm25"       # hard negative: its highest-ranked grade-0 passage
    depth: int = 100
    max_positives: int = 0             # per query (0 = all); the rel-3 passage kept for the oracle is never one
    max_queries: int = 0
    max_examples: int = 0              # 0 = all (query, positive) pairs
    max_words: int = 64                # passage truncation (words) before tokenisation
    # "trec": the DL20 triples above (smoke, tiny); "laser_training": the paper's jinjiajie/LaSER-Training rows
    # (lab.data.laser_training: root, the mirror's hf-datasets/<repo>/, the Hub), reasoning = their reasoning_query
    source: Literal["trec", "laser_training"] = "trec"
    hub_repo: str = "jinjiajie/LaSER-Training"
    hub_subset: str = "bge_reasoning"  # the folder the official script trains on (./data/bge_reasoning)
    hub_root: str = ""                 # a folder holding <owner>/<name>/ ("" = the mirror, then the Hub)


@dataclass(frozen=True)
class LaserOptim:
    steps: int = 0                     # optimizer steps; 0 = from epochs
    epochs: float = 1.0                # paper: 1
    batch_size: int = 8                # queries per step (each brings 1 positive + 1 hard negative)
    grad_accum: int = 1
    lr: float = 1.0e-4                 # paper
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = 0.1          # paper
    max_grad_norm: float = 1.0
    lora: bool = True
    lora_r: int = 64                   # paper: r 64, alpha 32, dropout 0.1, all seven projections
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    lora_layers: int = 0               # LoRA on the top N decoder layers only (0 = all): cheaper backward on CPU
    dtype: Literal["float32", "bfloat16"] = "float32"
    mixed_precision: Literal["fp32", "bf16"] = "fp32"          # paper: bf16 (fp32 masters in lab.train)
    gradient_checkpointing: bool = False
    checkpoint_every: int = 0
    # "accelerate": each variant trains under `accelerate launch` (paper: one process per GPU, in-batch negatives
    # gathered across processes; lab.train.launch); "inprocess": in the notebook's kernel (smoke, tiny)
    launch: Literal["inprocess", "accelerate"] = "inprocess"


@dataclass(frozen=True)
class LaserLoss:
    temperature: float = 0.02          # InfoNCE and output KL (paper and code)
    mid_temperature: float = 0.05      # L_mid: code's latent_temperature (the paper writes 0.02)
    # segment ends: "token" = the code's encode("\n\n")[-1] id; "text" = tokens completing a blank line (SmolLM2's
    # pre-tokenizer splits "\n\n" inside text into two "\n" tokens, so the code's rule finds no boundary there)
    segment_rule: Literal["token", "text"] = "token"
    trajectory: Literal["linspace", "floor"] = "linspace"      # code: linspace(0, M-1, K); paper Eq. 11: floor(iM/K)
    query_max_len: int = 512           # paper: max length 512
    doc_max_len: int = 512
    reasoning_max_len: int = 1024      # code: the explicit input is cut at 1,024 tokens
    min_reasoning_chars: int = 5


@dataclass(frozen=True)
class LaserEval:
    dataset: str = "trec-dl-2019"
    pool_stages: tuple[str, ...] = ("bm25", "bm25rm3", "tasb", "ada2", "splade_pp_ed", "repllama")
    pool_depth: int = 100              # the pool is the union of every pool stage's top `pool_depth`
    max_queries: int = 0
    batch_size: int = 16
    k_sweep: tuple[int, ...] = (1, 2, 3, 4, 5)     # inference K for the sweep variant (queries and documents)
    sweep_variant: str = "full"
    baseline: str = "basic"            # paired tests of every variant against this one
    rewrite_model: str = "basic"       # rewrite-then-retrieve: this variant's model, K = 1, query + reasoning
    rewrite: bool = True
    measures: Mapping[str, str] = field(default_factory=dict)
    test: Literal["ttest", "permutation"] = "ttest"
    alpha: float = 0.05
    # "trec": the DL19 candidate pool above (smoke, tiny); "bright": the paper's BRIGHT tasks (lab.data.bright,
    # short documents, full corpus per task), scored under every `bright_exclusion` mode (both are written)
    benchmark: Literal["trec", "bright"] = "trec"
    bright_tasks: tuple[str, ...] = ("biology", "earth_science", "economics", "psychology", "robotics",
                                     "stackoverflow", "sustainable_living", "leetcode", "pony", "aops",
                                     "theoremqa_questions", "theoremqa_theorems")
    bright_exclusion: tuple[str, ...] = ("official", "mteb-1.x-compat")   # the first one is the reported number
    bright_root: str = ""              # a folder holding xlangai/BRIGHT/ ("" = the mirror, then the Hub)
    bright_max_docs: int = 0           # >0: first N documents + every gold one per task (dry runs)
    # code (src/eval/run_mteb.py run_bright): one query instruction for every task, though it lists per-task ones
    bright_instruction: str = "Given a post, retrieve relevant passages that help answer the post."


@dataclass(frozen=True)
class LaserConfig:
    model_role: str = "llm"            # models/<role> (smoke: SmolLM2-135M-Instruct; paper: Qwen3-0.6B)
    model_ref: str = ""                # a lab.models reference used instead of models/<role> (paper dry run)
    prompt: str = "laser_v1"           # lab/retrieval/prompts/<prompt>.yaml
    threads: int = 2                   # torch intra-op threads (fixed: float sums depend on it)
    variants: tuple[str, ...] = ("zeroshot_k1", "zeroshot_k3", "basic", "wo_explicit", "full")
    rows: Mapping[str, LaserVariant] = field(default_factory=dict)   # every defined row (Table 5 + controls)
    checkpoint_dir: str = "outputs/checkpoints/laser_train"
    reasoning: LaserReasoning = field(default_factory=LaserReasoning)
    train: LaserTrainData = field(default_factory=LaserTrainData)
    optim: LaserOptim = field(default_factory=LaserOptim)
    loss: LaserLoss = field(default_factory=LaserLoss)
    eval: LaserEval = field(default_factory=LaserEval)

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in self.rows]
        if unknown:
            raise ValueError(f"laser.variants: {unknown} not defined under laser.rows ({sorted(self.rows)})")
        for name, row in self.rows.items():
            if row.k < 1:
                raise ValueError(f"laser.rows.{name}.k: must be >= 1, got {row.k}")
        bad = [m for m in self.eval.bright_exclusion if m not in ("official", "mteb-1.x-compat")]
        if bad or not self.eval.bright_exclusion:
            raise ValueError(f"laser.eval.bright_exclusion: {bad or 'empty'}; expected official / mteb-1.x-compat")
        if self.train.source == "laser_training" and any(self.rows[v].reasoning == "oracle" for v in self.variants):
            raise ValueError("laser.variants: the oracle control needs laser.train.source trec (DL20 rel-3 passages)")


SECTION = "laser"
SCHEMA = LaserConfig
