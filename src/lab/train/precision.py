"""Mixed precision keeps fp32 master weights: autocast computes in bf16/fp16, the optimizer steps fp32.

Why: Adam moves each weight by about ``lr`` per step, and bf16 keeps 8 significant bits, so an update is lost
when ``lr < |w| * 2**-9`` (half a unit in the last place). At FIRST's lr 5e-6 that is every weight with
``|w| > 2.6e-3`` — nearly all of a 7B model (weights ~ N(0, 0.02)). Trainable params are therefore upcast to
fp32 before the optimizer is built; frozen params (a LoRA base model) may stay bf16 to save memory.
"""

from __future__ import annotations

import torch

__all__ = ["fp32_master"]


def fp32_master(model) -> int:
    """Cast every parameter that requires grad to float32 in place; returns how many were cast."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n

