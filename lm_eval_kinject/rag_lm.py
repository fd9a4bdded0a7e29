"""``kinject-rag``: lm-eval's ``HFLM`` with kinject's model presets and strict arguments.

With no knowledge base it is the *base* arm of every comparison and scores exactly like
``--model hf`` with the same arguments (nothing in the scoring path is overridden). What it adds:

* ``pretrained`` may be a preset name (``models/*.yaml``); omitted, it is the embedded
  SmolLM2-135M-Instruct. Preset settings (dtype, max_length) apply unless given explicitly.
* Unknown ``model_args`` keys are an error listing the valid ones, instead of being forwarded
  silently to ``from_pretrained`` as ``HFLM`` does.
"""
from __future__ import annotations

import inspect
import logging

from lm_eval.models.huggingface import HFLM

from lm_eval_kinject import __version__
from lm_eval_kinject.errors import ConfigError, did_you_mean
from lm_eval_kinject.presets import DEFAULT_MODEL, get_preset, resolve_pretrained

logger = logging.getLogger(__name__)

__all__ = ["KinjectRAGLM", "valid_model_args"]

# ``from_pretrained`` options users of lm-eval's hf model commonly pass through HFLM's **kwargs.
FROM_PRETRAINED_ARGS = frozenset({
    "attn_implementation", "low_cpu_mem_usage", "device_map", "load_in_8bit", "load_in_4bit",
    "bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant",
})


def valid_model_args() -> list[str]:
    """Every ``model_args`` key ``kinject-rag`` accepts."""
    params = inspect.signature(HFLM.__init__).parameters.values()
    hflm = {p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    return sorted(hflm | FROM_PRETRAINED_ARGS)


def _check_model_args(kwargs: dict) -> None:
    valid = valid_model_args()
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        hints = "".join(did_you_mean(k, valid) for k in unknown)
        raise ConfigError(f"kinject-rag: unknown model_args key(s) {unknown}{hints}; "
                          f"valid keys: {', '.join(valid)}")


class KinjectRAGLM(HFLM):
    """lm-eval model ``kinject-rag`` (see the module docstring)."""

    def __init__(self, pretrained: str | None = None, **kwargs) -> None:
        _check_model_args({"pretrained": pretrained, **kwargs})
        if pretrained is not None and not isinstance(pretrained, str):
            raise ConfigError("kinject-rag: pretrained must be a preset name, a folder or a Hub id")
        self._kinject_preset = (pretrained or DEFAULT_MODEL) if get_preset(pretrained or DEFAULT_MODEL) else None
        resolved = resolve_pretrained(pretrained)
        logger.info("kinject-rag: pretrained=%s -> %s", pretrained or DEFAULT_MODEL, resolved["pretrained"])
        super().__init__(**{**resolved, **kwargs})

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["kinject"] = {"version": __version__, "preset": self._kinject_preset,
                           "model": "kinject-rag", "kb": None}
        return info
