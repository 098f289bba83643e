"""Multi-process pieces: in-batch negatives across processes, DeepSpeed configs.

Launch any training command under ``accelerate launch --num_processes N`` (or torchrun): the Trainer reads
``WORLD_SIZE``/``RANK`` and runs DDP; ``settings.deepspeed = "zero3"`` switches to DeepSpeed ZeRO-3 with the
config beside this module (what FIRST's official code uses for full fine-tuning of 7B models).
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["gather_with_grad", "deepspeed_config", "ZERO3"]

ZERO3 = Path(__file__).with_name("deepspeed_zero3.json")


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` per process -> ``[world * B, ...]`` in rank order, differentiable.

    ``torch.distributed.nn.functional.all_gather`` sums the gradients of every process's copy back to its
    owner; with DDP averaging parameter gradients over processes, a loss computed identically on every
    process over the gathered batch gets exactly the single-process gradient of that loss (the in-batch
    negatives of contrastive losses, as sentence-transformers' ``gather_across_devices``).
    Single process: ``t`` itself.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    import warnings

    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():     # torch 2.13 calls it deprecated; its replacement is a private module
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(t.contiguous()), dim=0)


def deepspeed_config(name: str) -> str:
    """``"zero3"`` -> lab's ZeRO-3 JSON; any other value is a path. Checks that deepspeed is importable."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise ImportError("settings.deepspeed needs DeepSpeed: pip install deepspeed (GPU machines; it compiles "
                          "CUDA ops on first use)") from None
    path = ZERO3 if name == "zero3" else Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config {path} not found")
    return str(path)
