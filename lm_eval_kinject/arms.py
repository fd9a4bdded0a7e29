"""The arms of a knowledge-injection experiment: one table, read by every part of the product.

An arm is a way of giving a model the knowledge of a corpus: none (``base``), retrieval (``+rag``),
fine-tuning on the corpus's chunks (``ft-reg``), on the chunks and N paraphrases of each
(``ft-par``), on the chunks plus question-answer pairs of *other* facts (``ft-mix``, mixed
training; ``ft-raft``, those pairs read after their passage), on ft-raft's documents without its
pairs (``ft-ctl``, the control), and the combinations. Grid configs,
cells, the runner, the report's tables, figures and paired tests and ``kinject demo`` all read this
table; none of them spells an arm again. Adding an arm is one entry here plus, if it trains on
something new, its recipe in ``finetune/data.py`` (or, if only its settings differ, its ``recipe``).

A *variant* is an arm with its paraphrase count, as cells and result files name it:
``ft-par4``, ``ft-par4+rag``, ``ft-mix4`` (``parse_arm`` reads it back). No heavy imports here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lm_eval_kinject.errors import ConfigError, did_you_mean

__all__ = ["Arm", "ARMS", "TRAINING", "parse_arm", "variant", "get_arm", "checkpoint_args", "PAIRS"]

# What a fine-tuned arm's checkpoint is trained on:
#   chunks               the KB's chunks (the paper's FT / FT-reg)
#   chunks+paraphrases   the chunks and N paraphrases of each (FT-par)
#   chunks+qa            the chunks (and the paraphrases, when the experiment has them) plus question-answer
#                        pairs: of a training split of the questions (evaluated on the held-out split), and/or of
#                        practice questions about other documents, never evaluated (ft-mix, ft-raft)
#   chunks+qa-documents  every document a chunks+qa arm reads (the passages before its pairs, practice documents),
#                        without the pairs: the control that tells the QA pairs' effect from more text's (ft-ctl)
TRAINING = ("none", "chunks", "chunks+paraphrases", "chunks+qa", "chunks+qa-documents")


@dataclass(frozen=True)
class Arm:
    name: str  # as written in a grid config: "ft-par", "ft-mix+rag"
    label: str  # column heading: "FT-par + RAG"
    order: int  # column order of the paper's tables (Table 1 / Table 2), then ours
    training: Literal["none", "chunks", "chunks+paraphrases", "chunks+qa", "chunks+qa-documents"]
    rag: bool
    # How many checkpoints the arm stands for when an experiment lists several paraphrase counts:
    # "each" (one cell per N: Figure 4), "largest" (the table's N), "none" (no paraphrases).
    paraphrase_counts: Literal["none", "each", "largest"] = "none"
    description: str = ""
    # FinetuneConfig settings the arm's checkpoint sets beyond the experiment's: its recipe, where its training data
    # is not all of it (ft-raft: the QA pairs read after their passage)
    recipe: tuple[tuple[str, object], ...] = ()

    @property
    def stem(self) -> str:
        """The arm without retrieval: ``ft-par+rag`` -> ``ft-par``."""
        return self.name.removesuffix("+rag")

    @property
    def fine_tuned(self) -> bool:
        return self.training != "none"

    @property
    def trains_on_questions(self) -> bool:
        """Trained on QA pairs: of a split of the experiment's questions (it is then scored on the other part only)
        or of practice questions about other documents."""
        return self.training == "chunks+qa"

    @property
    def uses_qa_data(self) -> bool:
        """Trained on what the QA settings (qa, qa_split, qa_practice) select: the pairs, or (the control) the
        documents they come with."""
        return self.training in ("chunks+qa", "chunks+qa-documents")


# After RAFT (Zhang et al. 2024, "Adapting Language Model to Domain Specific RAG"): the QA pairs with their passage in
# context, so that fine-tuning teaches answering from a retrieved passage as well as storing the facts. Every pair:
# on the demo's world that measured best closed-book and with RAG (0.82 / 1.00; half of them: 0.72 / 1.00; docs/demo.md).
# A passage read once before all its pairs ("chunk") costs a third of the tokens of a copy per pair, so the same
# training time covers three times the pairs: 150 practice pairs, 0.88 on the demo's world against FT-par's 0.64.
RAFT = (("qa_passages", 1.0), ("qa_layout", "chunk"))
# The control of FT-RAFT: its very documents, as often, without the QA pairs (FinetuneConfig.qa_pairs).
CONTROL = (*RAFT, ("qa_pairs", False))

_TABLE = [
    Arm("base", "Base", 0, "none", False, description="the model as it is"),
    Arm("base+rag", "Base + RAG", 1, "none", True, description="retrieved chunks in the prompt"),
    Arm("ft", "FT", 2, "chunks", False, description="fine-tuned on the chunks (Table 1's FT)"),
    Arm("ft-reg", "FT-reg", 3, "chunks", False, description="fine-tuned on the chunks"),
    Arm("ft-par", "FT-par", 4, "chunks+paraphrases", False, "each",
        "fine-tuned on the chunks and N paraphrases of each"),
    Arm("ft-mix", "FT-mix", 5, "chunks+qa", False, "largest",
        "fine-tuned on the chunks (+ paraphrases) and QA pairs of other facts"),
    Arm("ft-raft", "FT-RAFT", 6, "chunks+qa", False, "largest",
        "as ft-mix, the QA pairs read after their chunk, as a RAG prompt shows it (RAFT)", RAFT),
    Arm("ft-ctl", "FT-ctl", 7, "chunks+qa-documents", False, "largest",
        "the control of ft-raft: its documents (chunks, paraphrases, the passages before its QA pairs, practice "
        "documents) without the QA pairs", CONTROL),
    Arm("ft-ctl+rag", "FT-ctl + RAG", 13, "chunks+qa-documents", True, "largest", recipe=CONTROL),
    Arm("ft+rag", "FT + RAG", 8, "chunks", True),
    Arm("ft-reg+rag", "FT-reg + RAG", 9, "chunks", True),
    Arm("ft-par+rag", "FT-par + RAG", 10, "chunks+paraphrases", True, "largest"),
    Arm("ft-mix+rag", "FT-mix + RAG", 11, "chunks+qa", True, "largest"),
    Arm("ft-raft+rag", "FT-RAFT + RAG", 12, "chunks+qa", True, "largest", recipe=RAFT),
]
ARMS: dict[str, Arm] = {arm.name: arm for arm in _TABLE}

# Claims tested on the same questions, as (arm A, arm B): "A beats B". The paper's, then ours.
PAIRS = [("base+rag", "base"), ("ft", "base"), ("ft-reg", "base"), ("base+rag", "ft"), ("base+rag", "ft-reg"),
         ("ft+rag", "base+rag"), ("ft-reg+rag", "base+rag"), ("ft-par", "ft-reg"), ("ft-par+rag", "base+rag"),
         ("ft-par", "base"), ("ft-mix", "ft-par"), ("ft-mix", "ft-reg"), ("ft-mix", "base"),
         ("base+rag", "ft-mix"), ("ft-mix+rag", "base+rag"), ("ft-raft", "ft-par"), ("ft-raft", "ft-mix"),
         ("ft-raft", "ft-reg"), ("ft-raft", "base"), ("base+rag", "ft-raft"), ("ft-raft+rag", "base+rag"),
         ("ft-raft+rag", "ft-par+rag"), ("ft-raft", "ft-ctl"), ("ft-ctl", "ft-par"), ("ft-ctl", "ft-reg"),
         ("ft-raft+rag", "ft-ctl+rag")]

_VARIANT = re.compile(r"^(?P<stem>[a-z]+(?:-[a-z]+)?)(?P<n>\d+)?(?P<rag>\+rag)?$")


def get_arm(name: str, where: str = "arm") -> Arm:
    """The arm called ``name``, or a ConfigError with the closest valid name."""
    if not isinstance(name, str) or name not in ARMS:
        raise ConfigError(f"{where}: unknown arm {name!r}{did_you_mean(str(name), ARMS)}; valid: {', '.join(ARMS)}")
    return ARMS[name]


def parse_arm(text: str) -> tuple[Arm, int | None]:
    """A variant's arm and paraphrase count: ``"ft-par5+rag"`` -> (ft-par+rag, 5); ``"base"`` -> (base, None)."""
    match = _VARIANT.match(text or "")
    if match:
        name = match["stem"] + (match["rag"] or "")
        if name in ARMS and (match["n"] is None or ARMS[name].paraphrase_counts != "none"):
            return ARMS[name], int(match["n"]) if match["n"] is not None else None
    raise ConfigError(f"{text!r}: not an arm variant (an arm from {', '.join(ARMS)}, with its paraphrase count "
                      "for FT-par / FT-mix, e.g. ft-par4+rag)")


def variant(arm: Arm, n: int | None) -> str:
    """The name cells and results use: ``variant(ARMS["ft-par+rag"], 4)`` -> ``"ft-par4+rag"``."""
    count = str(n) if n and arm.paraphrase_counts != "none" else ""
    return f"{arm.stem}{count}" + ("+rag" if arm.rag else "")


def checkpoint_args(base: dict, folder: str, method: str = "full", merge: bool = False, backend: str = "hf",
                    lora_r: int = 16) -> dict:
    """The model arguments that load a fine-tuned checkpoint for evaluation on ``backend``.

    ``base``: the base model's arguments (``pretrained`` and others); ``folder``: what ``kinject
    finetune`` wrote. LoRA: the base model plus the adapter (``peft=`` on ``hf``, ``lora_local_path=``
    on ``vllm``). Full (or merged LoRA): the folder is a plain model; a GGUF base was de-quantised
    into it, so ``gguf_file`` no longer applies. The ``api`` backend evaluates a served model only.
    """
    if backend == "api":
        raise ConfigError("the api backend evaluates the model its server serves; fine-tuned arms need the hf or "
                          "vllm backend (or serve the checkpoint and evaluate it as a base model)")
    if method == "lora" and not merge:
        if backend == "vllm":  # vLLM serves adapters up to max_lora_rank (lm-eval's default 16)
            return {**base, "lora_local_path": str(folder), "max_lora_rank": max(16, lora_r)}
        return {**base, "peft": str(folder)}
    return {**{k: v for k, v in base.items() if k not in ("pretrained", "gguf_file")}, "pretrained": str(folder)}
