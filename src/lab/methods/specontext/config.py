"""Schema of the ``specontext`` section of ``params.yaml`` (frozen dataclasses; no ML imports).

SpeContext (arXiv 2512.00722): only the abstract and introduction are available and there is no public code;
every field marked *(our design)* is a choice of ours. Stages specontext_dlm, specontext_heads, specontext_eval,
specontext_report (notebooks/specontext).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

METHODS = ("specontext", "specontext_undistilled", "streamingllm", "h2o", "snapkv", "quest", "random", "gemfilter",
           "oracle_global", "oracle_layer")
NEEDLE_TASKS = ("passkey", "single", "multikey", "multivalue")
BENCH_SOURCES = ("ruler", "longbench")


@dataclass(frozen=True)
class SpecDLM:
    """*(our design)* DLM = target layers ``layers``, embedding shared and frozen, distilled by top-k KL."""

    layers: tuple[int, ...] = (0, 10, 20, 29)
    freeze_embedding: bool = True
    dataset: str = "trec-dl-2019"      # distillation + calibration text (evaluation haystacks use another set)
    first_stage: str = "bm25"          # whose candidate passages give the text
    seq_len: int = 256                 # tokens per training sequence
    sequences: int = 64                # training sequences
    val_sequences: int = 8             # held out: KL of distilled vs undistilled DLM
    top_k: int = 32                    # cached target logits per position
    temperature: float = 1.0
    steps: int = 40
    batch_size: int = 4
    lr: float = 2.0e-4
    warmup_steps: int = 2


@dataclass(frozen=True)
class SpecHeads:
    """*(our design)* rank DLM heads by captured target attention mass on calibration rows; keep ``keep``."""

    keep: int = 2
    sequences: int = 2                 # calibration sequences (after the distillation ones)
    length: int = 1024                 # tokens per calibration sequence
    rows: int = 16                     # the last ``rows`` positions are the queries
    budget: int = 256


@dataclass(frozen=True)
class SpecSelection:
    sinks: int = 4                     # StreamingLLM's 4 sinks
    window: int = 64                   # *(our design)* recent window of every scored method
    quest_page: int = 16               # Quest: 16-token pages
    quest_dense_layers: int = 2        # Quest §4: first two layers dense
    snapkv_obs_window: int = 32
    snapkv_kernel: int = 5
    snapkv_pooling: Literal["avg", "max"] = "avg"
    gemfilter_layer: int = 12          # GemFilter: an early layer (13 of 32 for Llama-3.1-8B)
    seed: int = 0                      # random baseline


@dataclass(frozen=True)
class SpecEval:
    dataset: str = "trec-dl-2020"      # haystack passages (never the distillation text)
    first_stage: str = "bm25"
    contexts: tuple[int, ...] = (2048, 4096, 8192)
    budgets: tuple[int, ...] = (256, 512, 1024)
    samples: int = 1                   # haystacks per context
    continuation: int = 128            # teacher-forced tokens of the full-KV greedy output
    methods: tuple[str, ...] = METHODS
    needle_tasks: tuple[str, ...] = NEEDLE_TASKS
    needle_contexts: tuple[int, ...] = (2048,)
    needle_depths: tuple[float, ...] = (0.1, 0.5, 0.9)
    needle_budgets: tuple[int, ...] = (256,)
    answer_tokens: int = 10
    # *(our design)* the question is decoded under selection (prefill = haystack only); false: prefilled in full
    question_decoded: bool = True
    # false: a needle full KV fails is not decoded by the methods (it would be scored for none of them)
    needles_unsolved: bool = False


@dataclass(frozen=True)
class SpecBench:
    """Paper profile: long-context benchmarks from the Hugging Face Hub, scored like the needles (full KV first).

    ``sets``: ``ruler/<length>`` (RULER, Hsieh et al. 2024, as exported by kvpress: ``simonjegou/ruler``, folders
    4096/8192/16384) or ``longbench/<task>`` (LongBench, Bai et al. 2024: ``Xnhyacinth/LongBench``, one folder per
    task); both repos are the ones kvpress 0.4.1's evaluation registry names (not checked online from here).
    """

    sets: tuple[str, ...] = ()         # empty: no benchmark (smoke; the dry run has no Hub)
    samples: int = 0                   # per set, the first N; 0 = all
    max_context: int = 32768           # prompt tokens; longer contexts lose their middle (LongBench's truncation)
    answer_tokens: int = 0             # greedy tokens per answer; 0 = the row's max_new_tokens
    budgets: tuple[int, ...] = (1024,)


@dataclass(frozen=True)
class SpecConfig:
    model_role: str = "llm"            # models/<role>: the target
    threads: int = 2
    dlm: SpecDLM = field(default_factory=SpecDLM)
    heads: SpecHeads = field(default_factory=SpecHeads)
    selection: SpecSelection = field(default_factory=SpecSelection)
    eval: SpecEval = field(default_factory=SpecEval)
    bench: SpecBench = field(default_factory=SpecBench)

    def __post_init__(self):
        bad = [m for m in self.eval.methods if m not in METHODS]
        if bad:
            raise ValueError(f"specontext.eval.methods: unknown {bad}; known {list(METHODS)}")
        bad = [t for t in self.eval.needle_tasks if t not in NEEDLE_TASKS]
        if bad:
            raise ValueError(f"specontext.eval.needle_tasks: unknown {bad}; known {list(NEEDLE_TASKS)}")
        bad = [x for x in self.bench.sets if x.partition("/")[0] not in BENCH_SOURCES or not x.partition("/")[2]]
        if bad:
            raise ValueError(f"specontext.bench.sets: {bad} are not <source>/<subset> with source in "
                             f"{list(BENCH_SOURCES)} (e.g. ruler/4096, longbench/hotpotqa)")


SECTION = "specontext"
SCHEMA = SpecConfig
