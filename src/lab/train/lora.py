"""LoRA through peft, for any model the trainer is given."""

from __future__ import annotations

from lab.train.settings import LoraSettings

__all__ = ["apply_lora"]


def _num_layers(model) -> int:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) or getattr(getattr(cfg, "text_config", None), "num_hidden_layers", None)
    if not n:
        raise ValueError(f"{type(model).__name__}: LoRA top_layers needs config.num_hidden_layers")
    return int(n)


def apply_lora(model, lora: LoraSettings, gradient_checkpointing: bool = False):
    """``peft.get_peft_model`` with ``lora``; every other parameter is frozen (peft's contract).

    ``top_layers`` = N puts adapters on the top N layers only (``layers_to_transform``), so backward stops
    below them. With gradient checkpointing the embeddings' output must require grad, or checkpointed
    blocks whose inputs carry no grad would drop the adapters' gradients.
    """
    from peft import LoraConfig, get_peft_model

    layers = None
    if lora.top_layers:
        n = _num_layers(model)
        layers = list(range(max(0, n - lora.top_layers), n))
    peft_model = get_peft_model(model, LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets),
        layers_to_transform=layers, bias="none", task_type=lora.task_type or None))
    if gradient_checkpointing and hasattr(peft_model, "enable_input_require_grads"):
        peft_model.enable_input_require_grads()
    return peft_model
