"""The train / held-out split of a question set, by chunk: the data contract of mixed training (``ft-mix``).

Mixed training fine-tunes on the documents *and* on question-answer pairs of some facts, and is
scored on questions about the *other* facts. The split is made over the questions' ``chunk_id``s
(a chunk states an event's facts), so no fact of a held-out question is ever seen as a QA pair, not
even through another question about the same chunk. It is a pure function of the chunk ids, the
fraction and the seed: the fine-tuning side (which pairs to train on) and the task side (which
questions lm-eval scores, ``--metadata '{"question_split": "heldout", ...}'``) compute it alike.

The QA text trained on is the cloze task's own prompt and answer::

    Question: {question}
    Answer: {correct option}

Cross-fitting: ``swap`` exchanges the two parts. A second model trained on the swapped split's QA pairs is
scored on the questions the first one trained on, so the two together score every question, each by a model that
never saw its QA pair (``kinject report`` pools them).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from lm_eval_kinject.errors import ConfigError, DataError

__all__ = ["QuestionSplit", "PARTS", "qa_text", "METADATA_KEYS"]

PARTS = ("train", "heldout")
# lm-eval --metadata keys that the current-events and fictional tasks read to score one part.
METADATA_KEYS = ("question_split", "question_split_fraction", "question_split_seed", "question_split_swap")


@dataclass(frozen=True)
class QuestionSplit:
    """Which chunks' questions are trained on as QA pairs (``train``); the rest are scored (``heldout``)."""

    # Half and half: Allen-Zhu & Li (Physics of LMs 3.1) train on the QA of half the individuals.
    train_fraction: float = 0.5
    seed: int = 0
    swap: bool = False  # the complement: train on the chunks the unswapped split holds out (cross-fitting)

    def __post_init__(self) -> None:
        fraction = self.train_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"question split train_fraction={fraction!r}: expected a number in (0, 1)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"question split seed={self.seed!r}: expected an integer >= 0")
        if not isinstance(self.swap, bool):
            raise ConfigError(f"question split swap={self.swap!r}: expected true or false")

    def identity(self) -> dict:
        """The split's settings; ``swap`` only when set, so names made before it existed are kept."""
        return {"train_fraction": self.train_fraction, "seed": self.seed, **({"swap": True} if self.swap else {})}

    def train_chunks(self, chunk_ids) -> frozenset[str]:
        """The chunk ids whose questions are trained on (at least one chunk on each side)."""
        unique = sorted(set(chunk_ids))
        if len(unique) < 2:
            raise DataError(f"a question split needs questions about at least 2 chunks; got {len(unique)}")
        random.Random(f"kinject-question-split/{self.seed}").shuffle(unique)
        n_train = min(len(unique) - 1, max(1, round(self.train_fraction * len(unique))))
        return frozenset(unique[n_train:] if self.swap else unique[:n_train])

    def select(self, questions: list[dict], part: str, source: str = "questions") -> list[dict]:
        """The questions of ``part`` (``train`` or ``heldout``), in their original order.

        Raises:
            DataError: a question without a ``chunk_id`` (it could not be kept apart from its facts).
        """
        if part not in PARTS:
            raise ConfigError(f"question_split={part!r}: expected one of {', '.join(PARTS)}")
        missing = [q.get("id", i) for i, q in enumerate(questions) if not q.get("chunk_id")]
        if missing:
            raise DataError(f"{source}: {len(missing)} question(s) have no chunk_id (e.g. {missing[0]!r}); "
                            "a train/held-out split is made by chunk, so every question needs one")
        train = self.train_chunks(q["chunk_id"] for q in questions)
        return [q for q in questions if (q["chunk_id"] in train) == (part == "train")]

    def metadata(self, part: str = "heldout") -> dict:
        """The lm-eval ``--metadata`` entries that make a task score ``part`` of its questions."""
        return {"question_split": part, "question_split_fraction": self.train_fraction,
                "question_split_seed": self.seed, **({"question_split_swap": True} if self.swap else {})}

    @classmethod
    def from_metadata(cls, metadata: dict) -> tuple[QuestionSplit, str] | None:
        """(split, part) from a task's metadata, or None when it asks for no split."""
        part = metadata.get("question_split")
        if part in (None, "", "all"):
            return None
        if part not in PARTS:
            raise ConfigError(f"--metadata question_split={part!r}: expected one of all, {', '.join(PARTS)}")
        return cls(metadata.get("question_split_fraction", 0.5), metadata.get("question_split_seed", 0),
                   metadata.get("question_split_swap", False)), part


def qa_text(question: dict) -> str:
    """One training QA pair, in the cloze tasks' prompt format (``doc_to_text`` + " " + answer)."""
    return f"Question: {question['question'].strip()}\nAnswer: {question['choices'][question['answer']]}"
