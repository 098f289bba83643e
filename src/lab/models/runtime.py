"""Process-wide torch settings every stage makes before it touches a model."""

from __future__ import annotations


def setup_torch(threads: int, seed: int) -> None:
    """Fixed intra-op thread count (float sums depend on it), seeded RNG, deterministic kernels where torch has
    them (on CPU: all we use)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
