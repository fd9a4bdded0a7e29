"""lm-eval-kinject: fine-tuning or retrieval? Knowledge-injection experiments inside lm-eval.

Importing this package is cheap on purpose (the start-up hook imports it in every interpreter):
torch, transformers and lm_eval are imported only by the modules that use them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
