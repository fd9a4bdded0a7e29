"""Dataset hook of the kinject MMLU tasks (``custom_dataset: !function utils.load_mmlu``)."""
from lm_eval_kinject.questions import load_mmlu

__all__ = ["load_mmlu"]
