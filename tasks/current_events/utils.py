"""Dataset hook of the current-events tasks (``custom_dataset: !function utils.load_current_events``)."""
from lm_eval_kinject.questions import load_current_events

__all__ = ["load_current_events"]
