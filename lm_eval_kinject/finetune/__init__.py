"""Unsupervised fine-tuning (continued pre-training) on a knowledge base: the paper's FT arms.

Data flow: KB chunks (+ paraphrases) -> training texts -> packed token blocks (``data``) -> a
transformers ``Trainer`` with atomic checkpoints (``trainer``) -> a plain model folder or a PEFT
adapter that lm-eval loads (``run``). ``config`` holds :class:`FinetuneConfig`; importing it does
not import torch or transformers (the CLI builds its options from it).
"""
from lm_eval_kinject.finetune.config import FinetuneConfig, load_config_file

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "load_config_file"]


def __getattr__(name: str):
    if name in ("finetune", "FinetuneResult"):
        from lm_eval_kinject.finetune import run

        return getattr(run, name)
    raise AttributeError(name)
