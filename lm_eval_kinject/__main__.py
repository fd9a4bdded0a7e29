"""``python -m lm_eval_kinject ...``: the stock lm_eval CLI with kinject registered explicitly.

Works with the start-up hook turned off (``LM_EVAL_KINJECT_NO_HOOK=1``); the arguments are
exactly those of ``lm_eval``.
"""
from __future__ import annotations

import sys

from lm_eval_kinject.cli import run_lm_eval

if __name__ == "__main__":
    sys.exit(run_lm_eval(sys.argv[1:]))
