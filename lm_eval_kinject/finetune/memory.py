"""Pre-flight memory check: refuse a run that cannot fit, before loading gigabytes of weights.

The estimate is deliberately simple and stated in the error: weights + gradients + AdamW state of
the trained parameters + the activations and logits of one micro-batch. It is a lower bound of
what PyTorch will use, so a run that fails it would certainly fail later, hours into loading.
"""
from __future__ import annotations

from dataclasses import dataclass

from lm_eval_kinject.errors import ConfigError

__all__ = ["MemoryEstimate", "estimate_memory", "available_memory", "check_memory"]

GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    trainable: int
    weights: int
    gradients_and_optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients_and_optimizer + self.activations

    def describe(self) -> str:
        return (f"{self.total / GIB:.1f} GiB = weights {self.weights / GIB:.1f} + gradients and AdamW state "
                f"{self.gradients_and_optimizer / GIB:.1f} + activations {self.activations / GIB:.1f} "
                f"({self.parameters / 1e6:.0f}M parameters, {self.trainable / 1e6:.1f}M trained)")


def count_parameters(model_config) -> int:
    """Parameters of the model ``model_config`` describes, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return sum(p.numel() for p in model.parameters())


def estimate_memory(model_config, parameters: int, method: str, weight_bytes: int, batch_size: int,
                    block_size: int, lora_r: int) -> MemoryEstimate:
    """Bytes a run needs at least. LoRA's trainable share is estimated from the hidden size and rank."""
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    layers = int(getattr(model_config, "num_hidden_layers", 0) or 0)
    vocab = int(getattr(model_config, "vocab_size", 0) or 0)
    if method == "full":
        trainable = parameters
    else:  # ~7 adapted matrices per layer, each r x (in + out) ~ r x 2 x (about 2 hidden)
        trainable = layers * 7 * lora_r * 4 * hidden
    # gradients in the weights' dtype; AdamW keeps two fp32 moments (+ an fp32 master copy when not fp32)
    optimizer = trainable * (weight_bytes + 8 + (4 if weight_bytes != 4 else 0))
    tokens = batch_size * block_size
    # per layer ~ 16 hidden-sized tensors kept for backward; the logits and their gradient in fp32
    activations = tokens * (layers * hidden * 16 * weight_bytes + vocab * 4 * 2)
    return MemoryEstimate(parameters, trainable, parameters * weight_bytes, optimizer, activations)


def available_memory(on_gpu: bool) -> int:
    """Free bytes on the device the run will use (the first GPU, or system RAM)."""
    if on_gpu:
        import torch

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(estimate: MemoryEstimate, budget: int, where: str, method: str) -> None:
    """Raise a ConfigError naming the estimate when it exceeds ``budget`` bytes."""
    if estimate.total > budget:
        hint = " Try --method lora, a smaller --batch-size or --block-size," if method == "full" else \
            " Try a smaller --batch-size or --block-size,"
        raise ConfigError(f"the model does not fit: this run needs at least {estimate.describe()}, but {where} "
                          f"has {budget / GIB:.1f} GiB.{hint} or a machine with more memory.")
