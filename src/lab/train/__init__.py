"""The one trainer (``transformers.Trainer``): methods supply data, a collator and a loss; see :mod:`lab.train.trainer`.

Settings (:mod:`lab.train.settings`) carry no ML imports; this package's other modules import torch and
transformers when first used.
"""

from lab.train.settings import FitResult, LoraSettings, TrainSettings

__all__ = ["FitResult", "LoraSettings", "TrainSettings", "fit", "gather_with_grad", "apply_lora", "fp32_master"]


def __getattr__(name):
    if name == "fit":
        from lab.train.trainer import fit

        return fit
    if name == "gather_with_grad":
        from lab.train.distributed import gather_with_grad

        return gather_with_grad
    if name == "apply_lora":
        from lab.train.lora import apply_lora

        return apply_lora
    if name == "fp32_master":
        from lab.train.precision import fp32_master

        return fp32_master
    raise AttributeError(name)
