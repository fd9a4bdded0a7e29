"""transformers' Trainer with atomic checkpoints and a tokens/s reading in its logs.

Trainer writes ``checkpoint-N`` in place, so a kill during a save leaves a half-written folder that
``--resume`` would pick as the latest. Here each checkpoint is written into ``.staging/`` and
renamed into place once whole; the rest of the training loop is Trainer's own (so ``accelerate
launch`` / multi-GPU works unchanged).
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

__all__ = ["AtomicCheckpointTrainer", "FinalStepCallback", "ThroughputCallback", "last_checkpoint"]

STAGING = ".staging"


class AtomicCheckpointTrainer(Trainer):
    """Trainer whose checkpoints appear only when complete."""

    _staging: str | None = None

    def _get_output_dir(self, trial) -> str:
        return self._staging or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        root = super()._get_output_dir(trial)
        staging = os.path.join(root, STAGING)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every rank's RNG file is in before the rename
        if self.args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            target = os.path.join(root, name)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(os.path.join(staging, name), target)
            shutil.rmtree(staging, ignore_errors=True)
            _rotate(Path(root), self.args.save_total_limit)
        self.accelerator.wait_for_everyone()


def _rotate(root: Path, keep: int | None) -> None:
    if not keep:
        return
    found = sorted((p for p in root.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder`` (staging leftovers are ignored)."""
    if not Path(folder).is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    return Path(found) if found else None


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_s`` (trained, non-padding tokens) and ``perplexity`` to Trainer's logs."""

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time, self._last_tokens = time.perf_counter(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        now = time.perf_counter()
        if "loss" in logs and self._last_time is not None:
            seen = state.num_input_tokens_seen
            elapsed = now - self._last_time
            if elapsed > 0 and seen > self._last_tokens:
                logs["tokens_per_s"] = round((seen - self._last_tokens) / elapsed, 1)
            self._last_time, self._last_tokens = now, seen
        if "eval_loss" in logs:
            logs["eval_perplexity"] = round(math.exp(min(logs["eval_loss"], 50.0)), 3)


class FinalStepCallback(TrainerCallback):
    """At the last step: always log (every run records its final loss), and skip the resumable
    checkpoint Trainer writes there unless it falls on ``save_steps`` — the finished model is saved
    right after, so that copy (weights + optimizer: 3x a full model) would be written to be deleted.
    Must run after Trainer's ``DefaultFlowCallback``."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
            if not args.save_steps or state.global_step % int(args.save_steps):
                control.should_save = False
        return control
