"""Inference engines behind the listwise scorers: HF transformers (default, the CPU/smoke path) and vLLM.

Both take the SAME prompt token ids (built by :func:`lab.rerank.listwise.build_inputs`, one list per window)
and answer the two questions the scorers ask:

* ``identifier_scores(seqs, nums, identifier_ids) -> [B, max(nums)]``: the scores of the identifier tokens at
  each prompt's last position (the ``[``); ``-inf`` past ``nums[b]``. HF returns raw logits gathered from
  the full vocabulary (one forward, :func:`~lab.rerank.listwise.single_token_scores`). vLLM returns the
  log-probabilities of its top-``logprobs`` tokens, as the official FIRST code reads them
  (rank_listwise_os_llm.py ``run_llm``: ``SamplingParams(max_tokens=1, temperature=0, logprobs=...)``,
  ``outputs[0].logprobs[0]``); an identifier outside that top-k scores ``-inf`` and so ranks after the
  found ones in input order, which is what the official ``receive_permutation`` does with missing
  identifiers. log-softmax is monotonic, so where every identifier is in the top-k both engines order alike.
* ``generate(seqs, max_new_tokens) -> list[str]``: greedy continuation text per prompt (the generation
  baseline; the official code runs ``temperature=0`` with ``min_tokens = max_tokens``, i.e. no early stop:
  here decoding stops at EOS like the HF path, so both engines write the same text).

vLLM is imported lazily (it is not installable here; ``pip install vllm`` on a CUDA machine). Prompts go to
vLLM as token ids (``{"prompt_token_ids": ids}``), not text, so the tokens are exactly the HF path's.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

__all__ = ["InferenceEngine", "HFEngine", "VLLMEngine", "VLLM_HINT", "make_engine"]

VLLM_HINT = ("the vLLM engine needs the vllm package on a CUDA machine (pip install vllm); "
             "first.rerank.engine: hf runs everything through transformers")


class InferenceEngine(Protocol):
    name: str

    def identifier_scores(self, seqs: Sequence[Sequence[int]], nums: Sequence[int],
                          identifier_ids: Sequence[int]) -> Tensor: ...

    def generate(self, seqs: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]: ...


class HFEngine:
    """transformers model + tokenizer: left-padded batches, one forward per batch (the smoke path)."""

    name = "hf"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def _batch(self, seqs, nums, identifier_ids):
        from lab.rerank.listwise import collate_windows, pad_token_id

        return collate_windows(seqs, nums, identifier_ids, pad_token_id(self.tokenizer))

    def identifier_scores(self, seqs, nums, identifier_ids) -> Tensor:
        from lab.rerank.listwise import single_token_scores

        return single_token_scores(self.model, self._batch(seqs, nums, identifier_ids))      # [B, n]

    def generate(self, seqs, max_new_tokens: int) -> list[str]:
        from lab.rerank.listwise import generate_permutation

        return generate_permutation(self.model, self.tokenizer, self._batch(seqs, [1] * len(seqs), []),
                                    max_new_tokens)


class VLLMEngine:
    """A ``vllm.LLM`` (or any object with its ``generate(prompts, sampling_params, use_tqdm=...)``).

    ``sampling_params``: the ``SamplingParams`` class (default: ``vllm.SamplingParams``, imported here);
    tests pass a stand-in. ``logprobs``: top-k log-probabilities requested at the ``[`` position (official:
    30 batched, 120 unbatched, with ``LLM(max_logprobs=30)``; vLLM refuses more than the LLM's max_logprobs).
    """

    name = "vllm"

    def __init__(self, llm: Any, tokenizer, *, logprobs: int = 30, sampling_params: Any = None):
        if sampling_params is None:
            try:
                from vllm import SamplingParams as sampling_params
            except ImportError as e:
                raise ImportError(VLLM_HINT) from e
        if logprobs < 1:
            raise ValueError(f"logprobs must be >= 1, got {logprobs}")
        self.llm, self.tokenizer, self.logprobs, self.params = llm, tokenizer, logprobs, sampling_params

    @classmethod
    def from_pretrained(cls, model_path: str, tokenizer, *, logprobs: int = 30, dtype: str = "bfloat16",
                        max_model_len: int = 8192, gpu_memory_utilization: float = 0.9,
                        tensor_parallel_size: int = 1, **kwargs) -> "VLLMEngine":
        """``vllm.LLM`` on a full model folder (official: enforce_eager, no chunked prefill; no remote code)."""
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(VLLM_HINT) from e
        llm = LLM(model=str(model_path), dtype=dtype, max_logprobs=max(logprobs, 20), max_model_len=max_model_len,
                  gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                  enforce_eager=True, enable_chunked_prefill=False, trust_remote_code=False, **kwargs)
        return cls(llm, tokenizer, logprobs=logprobs)

    def _run(self, seqs, params) -> list:
        prompts = [{"prompt_token_ids": list(map(int, s))} for s in seqs]
        outs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        if len(outs) != len(seqs):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(seqs)} prompts")
        return outs

    def identifier_scores(self, seqs, nums, identifier_ids) -> Tensor:
        params = self.params(max_tokens=1, temperature=0.0, logprobs=self.logprobs)
        ids = [int(i) for i in identifier_ids]
        scores = torch.full((len(seqs), len(ids)), float("-inf"))                           # [B, n]
        for b, out in enumerate(self._run(seqs, params)):
            top = out.outputs[0].logprobs[0]                 # {token id: Logprob(logprob, rank, decoded_token)}
            for j, tid in enumerate(ids[: nums[b]]):
                if tid in top:
                    scores[b, j] = float(getattr(top[tid], "logprob", top[tid]))
        return scores

    def generate(self, seqs, max_new_tokens: int) -> list[str]:
        params = self.params(max_tokens=max_new_tokens, temperature=0.0)
        return [out.outputs[0].text for out in self._run(seqs, params)]


def make_engine(kind: str, model, tokenizer, **vllm_kwargs) -> InferenceEngine:
    """``hf`` -> :class:`HFEngine` on ``model``; ``vllm`` -> :class:`VLLMEngine` on ``model`` (a folder path)."""
    if kind == "hf":
        return HFEngine(model, tokenizer)
    if kind == "vllm":
        return VLLMEngine.from_pretrained(model, tokenizer, **vllm_kwargs)
    raise ValueError(f"unknown inference engine {kind!r}; expected 'hf' or 'vllm'")
