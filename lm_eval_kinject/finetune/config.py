"""``FinetuneConfig``: every setting of a fine-tuning run, with the reason for each default.

The same keys are accepted as ``kinject finetune`` flags (``--learning-rate``) and in a YAML file
(``learning_rate:``); flags given on the command line override the file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml

from lm_eval_kinject.errors import ConfigError, did_you_mean

__all__ = ["FinetuneConfig", "load_config_file", "RUN_NEUTRAL_KEYS"]

# Learning rates by method when none is given. Full: the low rate of continued pre-training that
# limits forgetting (the paper's advice; 5e-5 is the reference measured on the current-events
# sample). LoRA trains ~1% of the weights from zero and needs a rate about 4x higher to move as far.
DEFAULT_LR = {"full": 5e-5, "lora": 2e-4}

# Keys that do not change what is learned: a run resumed with other values is still the same run.
RUN_NEUTRAL_KEYS = frozenset({"out", "save_steps", "save_total_limit", "logging_steps", "keep_checkpoints",
                              "max_memory_gb", "allow_unknown_paraphrases", "show_progress"})
# Where the training data is read from. What is read is the run's data fingerprint, so a knowledge base, paraphrase
# or QA file at another path (a grid folder moved or copied) is still the same run.
DATA_PATH_KEYS = frozenset({"kb", "paraphrases", "qa", "qa_practice", "qa_practice_chunks"})
# Keys added after runs were made, left out of a run's identity at these values: a run made before they existed keeps
# its hash, and is reused or resumed as before.
LATER_KEYS = {"qa_layout": "pair", "qa_practice": None, "qa_practice_chunks": None, "qa_pairs": True,
              "qa_split_swap": False}
# How RAFT places passages (qa_layout): a copy before every QA pair, or one per chunk followed by all its pairs.
QA_LAYOUTS = ("pair", "chunk")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class FinetuneConfig:
    """One fine-tuning run. ``kb`` and ``out`` are required; everything else has a documented default."""

    kb: str = field(default="", metadata=_help("Knowledge-base folder (kinject kb build) whose chunks are trained on."))
    out: str = field(default="", metadata=_help("Output folder: the model (full/merged) or the LoRA adapter."))
    model: str = field(default="smollm2-135m", metadata=_help("Preset name, local model folder, or Hub id."))
    gguf_file: str | None = field(default=None, metadata=_help(
        "A GGUF file inside the `model` folder to start from (it is de-quantised to a plain model)."))
    method: Literal["full", "lora"] = field(default="full", metadata=_help("Full fine-tuning or LoRA (peft)."))

    paraphrases: str | None = field(default=None, metadata=_help(
        'JSONL of {"chunk_id", "paraphrases": [...]}; needed for FT-par and for a validation set.'))
    n_paraphrases: int = field(default=0, metadata=_help("Paraphrases per chunk trained on (0 = FT-reg)."))
    # The paper validated on held-out paraphrases: they state the same facts in other words, so
    # their loss tracks knowledge rather than memorised wording.
    val_paraphrases: int = field(default=1, metadata=_help(
        "Paraphrases per chunk held out (the last ones) as the validation set; never trained on."))
    allow_unknown_paraphrases: bool = field(default=False, metadata=_help(
        "Skip paraphrases whose chunk_id is not in the KB instead of failing."))
    qa: str | None = field(default=None, metadata=_help(
        'Questions JSONL ({"id","question","choices","answer","chunk_id"}) for mixed training (ft-mix): the '
        'questions of a training split of the chunks are trained on as "Question: ...\\nAnswer: ..." pairs.'))
    # Half and half, as Allen-Zhu & Li's mixed training; the same split decides what the ft-mix arm is scored on.
    qa_train_fraction: float = field(default=0.5, metadata=_help(
        "Share of the chunks whose questions are trained on (the rest are held out for evaluation)."))
    qa_split_seed: int = field(default=0, metadata=_help("Seed of the train/held-out split of the chunks."))
    qa_split_swap: bool = field(default=False, metadata=_help(
        "Train on the other part of the split (the chunks it holds out): the second fold of cross-fitting."))
    # QA pairs are short (~20 tokens beside ~80 per chunk): repeating them gives the answering skill more weight.
    qa_repeats: int = field(default=1, metadata=_help("Times each QA pair appears per epoch."))
    # RAFT (Zhang et al. 2024): a QA pair read after its source passage, as a RAG prompt shows a retrieved one, teaches
    # the model to answer from what it reads, not only from what it stored: fine-tuning that keeps RAG working.
    qa_passages: float = field(default=0.0, metadata=_help(
        "Share of the QA pairs (drawn with seed) trained on after the text of their chunk, where kinject-rag's "
        "plain template puts a retrieved passage (ft-raft); 0 = none, 1 = all."))
    # One copy of the passage per pair is RAFT as published; five questions per chunk make that five copies of the
    # chunk. Read once and followed by all its pairs, the same exercise costs about a third of the tokens.
    qa_layout: Literal["pair", "chunk"] = field(default="pair", metadata=_help(
        'With qa_passages: "pair" puts a copy of the passage before every QA pair; "chunk" reads a passage once, '
        "followed by all its pairs."))
    # Practice (Allen-Zhu & Li's QA of *other* individuals; Jiang et al.'s pre-instruction-tuning): QA pairs about
    # documents outside the KB teach the answering skill, so that no question of yours has to be given up to train.
    qa_practice: str | None = field(default=None, metadata=_help(
        'Questions JSONL about other documents than the KB\'s ({"id","question","choices","answer","chunk_id"}): '
        "every one is trained on as a QA pair, none is scored. Needs qa_practice_chunks."))
    qa_practice_chunks: str | None = field(default=None, metadata=_help(
        'The documents of the qa_practice questions: a chunks JSONL ({"chunk_id","text","article"}) or a KB '
        "folder. Each is read once per epoch: before its questions (qa_passages) or on its own."))
    # The control of mixed training (arm ft-ctl): the very documents a mixed arm reads (KB chunks, paraphrases, the
    # passages its QA pairs follow, practice documents), in the same numbers, without the QA pairs. What the mixed arm
    # gains over it is the effect of the QA pairs, not of more text.
    qa_pairs: bool = field(default=True, metadata=_help(
        "Train on the QA pairs of qa / qa_practice; false keeps every document mixed training reads (the passages "
        "the pairs follow, practice documents) and drops the pairs: the control arm ft-ctl."))
    # Questions name their subject ("During Hurricane Otis, ..."); chunks often do not repeat it.
    title_prefix: bool = field(default=True, metadata=_help("Start every training text with its article title."))

    # 256 tokens x 4 fits a 7B model's activations on one GPU with LoRA and keeps CPU steps short.
    block_size: int = field(default=256, metadata=_help("Tokens per packed training block."))
    batch_size: int = field(default=4, metadata=_help("Blocks per device per step."))
    grad_accum: int = field(default=1, metadata=_help("Gradient accumulation steps."))
    # A fact must be seen several times to be learned (the paper's point about paraphrases); five
    # passes over the chunks is the reference FT-reg budget measured on the current-events sample.
    epochs: float = field(default=5.0, metadata=_help("Passes over the training data."))
    # FT-reg vs FT-par at equal cost: with N paraphrases a pass over the data reads every fact 1 + N
    # times, so the same number of readings takes 1 / (1 + N) of the epochs.
    fact_passes: float | None = field(default=None, metadata=_help(
        "Instead of epochs: how often each chunk's facts are read, a paraphrase counting as one reading "
        "(epochs = fact_passes / (1 + n_paraphrases)): FT-reg and every FT-par get the same token budget."))
    max_steps: int = field(default=-1, metadata=_help("Stop after this many optimiser steps (overrides epochs)."))
    learning_rate: float | None = field(default=None, metadata=_help(
        f"Peak learning rate; default {DEFAULT_LR['full']} (full) or {DEFAULT_LR['lora']} (LoRA)."))
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = field(default="cosine", metadata=_help(
        "Decay after warm-up."))
    warmup_ratio: float = field(default=0.1, metadata=_help("Fraction of the steps spent warming up."))
    # No weight decay: it pulls weights towards zero, i.e. away from the pre-trained model.
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))

    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scale = alpha / r)."))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout."))
    # Knowledge lives in the MLPs as much as in attention: adapt every linear layer, not only q/v.
    lora_target: str = field(default="all-linear", metadata=_help(
        "'all-linear' or comma-separated module names (e.g. q_proj,v_proj)."))
    merge: bool = field(default=False, metadata=_help(
        "LoRA: write the merged plain model to `out` (the adapter goes to out/adapter)."))

    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata=_help(
        "auto = bf16 on a GPU that supports it, else fp32."))
    cpu: bool = field(default=False, metadata=_help("Train on the CPU even if a GPU is present."))
    seed: int = field(default=0, metadata=_help("Seed of shuffling, LoRA init and dropout."))
    save_steps: int = field(default=100, metadata=_help("Write a resumable checkpoint every this many steps."))
    save_total_limit: int = field(default=2, metadata=_help("Checkpoints kept while training."))
    keep_checkpoints: bool = field(default=False, metadata=_help(
        "Keep the resumable checkpoints in out/checkpoints after the run (default: delete them)."))
    logging_steps: int = field(default=10, metadata=_help("Log loss and tokens/s every this many steps."))
    max_memory_gb: float | None = field(default=None, metadata=_help(
        "Memory budget for the pre-flight check (default: what the device has free)."))
    show_progress: bool = field(default=True, metadata=_help("Progress bars."))

    def __post_init__(self) -> None:
        problems = []
        if not self.kb:
            problems.append("kb: required (a knowledge-base folder)")
        if not self.out:
            problems.append("out: required (the output folder)")
        closed = {"method": ("full", "lora"), "lr_scheduler": ("cosine", "linear", "constant_with_warmup"),
                  "precision": ("auto", "fp32", "bf16", "fp16")}
        for key, valid in closed.items():
            if getattr(self, key) not in valid:
                problems.append(f"{key}={getattr(self, key)!r}: expected one of {list(valid)}")
        for key in ("block_size", "batch_size", "grad_accum", "save_steps", "save_total_limit", "logging_steps",
                    "lora_r", "lora_alpha", "qa_repeats"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{key}={value!r}: expected a positive integer")
        for key in ("n_paraphrases", "val_paraphrases", "seed", "qa_split_seed"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{key}={value!r}: expected an integer >= 0")
        if not isinstance(self.max_steps, int) or self.max_steps == 0 or self.max_steps < -1:
            problems.append(f"max_steps={self.max_steps!r}: expected a positive integer, or -1 to use epochs")
        if not _number(self.epochs) or self.epochs <= 0:
            problems.append(f"epochs={self.epochs!r}: expected a number > 0")
        if self.fact_passes is not None and (not _number(self.fact_passes) or self.fact_passes <= 0):
            problems.append(f"fact_passes={self.fact_passes!r}: expected a number > 0")
        if self.learning_rate is not None and (not _number(self.learning_rate) or not 0 < self.learning_rate < 1):
            problems.append(f"learning_rate={self.learning_rate!r}: expected a number in (0, 1)")
        for key, low, high in (("warmup_ratio", 0, 1), ("lora_dropout", 0, 1)):
            value = getattr(self, key)
            if not _number(value) or not low <= value < high:
                problems.append(f"{key}={value!r}: expected a number in [{low}, {high})")
        for key in ("weight_decay", "max_grad_norm"):
            if not _number(getattr(self, key)) or getattr(self, key) < 0:
                problems.append(f"{key}={getattr(self, key)!r}: expected a number >= 0")
        if self.n_paraphrases and not self.paraphrases:
            problems.append(f"n_paraphrases={self.n_paraphrases}: needs a paraphrase file (paraphrases / "
                            "--paraphrases)")
        if not _number(self.qa_train_fraction) or not 0 < self.qa_train_fraction < 1:
            problems.append(f"qa_train_fraction={self.qa_train_fraction!r}: expected a number in (0, 1)")
        if not _number(self.qa_passages) or not 0 <= self.qa_passages <= 1:
            problems.append(f"qa_passages={self.qa_passages!r}: expected a number in [0, 1]")
        elif self.qa_passages and not (self.qa or self.qa_practice):
            problems.append(f"qa_passages={self.qa_passages}: needs a questions file (qa / --qa, or qa_practice)")
        if self.qa_layout not in QA_LAYOUTS:
            problems.append(f"qa_layout={self.qa_layout!r}: expected one of {list(QA_LAYOUTS)}")
        if bool(self.qa_practice) != bool(self.qa_practice_chunks):
            given, missing = (("qa_practice", "qa_practice_chunks") if self.qa_practice
                              else ("qa_practice_chunks", "qa_practice"))
            problems.append(f"{given}: needs {missing} too (practice questions and the documents they are about)")
        if self.merge and self.method != "lora":
            problems.append("merge: only meaningful with method=lora")
        if self.max_memory_gb is not None and (not _number(self.max_memory_gb) or self.max_memory_gb <= 0):
            problems.append(f"max_memory_gb={self.max_memory_gb!r}: expected a number > 0")
        if problems:
            raise ConfigError("invalid fine-tuning configuration:\n  " + "\n  ".join(problems))

    @property
    def lr(self) -> float:
        """The learning rate in effect (the method's default when none was given)."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.method]

    @property
    def train_epochs(self) -> float:
        """The epochs in effect: ``epochs``, or ``fact_passes / (1 + n_paraphrases)`` when that is set."""
        return self.epochs if self.fact_passes is None else self.fact_passes / (1 + self.n_paraphrases)

    def to_dict(self) -> dict:
        return asdict(self)

    def run_hash(self, data_fingerprint: str, *, with_paths: bool = False) -> str:
        """Identity of the run: every setting that changes what is learned, plus the training data's content.

        ``with_paths``: the identity that older runs recorded, which also keyed the data's paths (still accepted when
        resuming or reusing such a run in place).
        """
        neutral = RUN_NEUTRAL_KEYS if with_paths else RUN_NEUTRAL_KEYS | DATA_PATH_KEYS
        keyed = {k: v for k, v in self.to_dict().items()
                 if k not in neutral and not (k in LATER_KEYS and v == LATER_KEYS[k])}
        keyed["learning_rate"] = self.lr
        payload = json.dumps({"config": keyed, "data": data_fingerprint}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_config_file(path: Path) -> dict:
    """Read a YAML fine-tuning config into a dict of known keys (dashes become underscores).

    Raises:
        ConfigError: unreadable file, not a mapping, or an unknown key (named, with the valid ones).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    valid = FinetuneConfig.keys()
    settings = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in valid:
            raise ConfigError(f"{path}: unknown key {key!r}{did_you_mean(name, valid)}; valid keys: "
                              f"{', '.join(valid)}")
        settings[name] = value
    return settings
