"""Training losses as pure functions of tensors."""

from lab.losses.ranking import (
    first_loss,
    kl_to_teacher,
    lambdarank,
    listnet,
    lm_nll,
    targets_from_ranks,
    weighted_ranknet,
)

__all__ = [
    "first_loss",
    "kl_to_teacher",
    "lambdarank",
    "listnet",
    "lm_nll",
    "targets_from_ranks",
    "weighted_ranknet",
]
