"""Dataset hook of the fictional-world tasks (``custom_dataset: !function utils.load_fictional``)."""
from lm_eval_kinject.questions import load_fictional

__all__ = ["load_fictional"]
