"""Training data for the FT arms: KB chunks (+ N paraphrases each, + QA pairs) -> texts -> packed token blocks.

The objective is the causal-LM loss on the text itself. FT-reg and FT-par (the paper's arms) train
on documents only; mixed training (ft-mix) adds question-answer pairs of a training split of the
questions (``splits.py``), as plain text in the same stream.
Texts are separated by EOS and packed into fixed-length blocks (the last one padded, its padding
masked out of the loss), as in transformers' ``run_clm`` example.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lm_eval_kinject.errors import ConfigError, DataError
from lm_eval_kinject.finetune.config import QA_LAYOUTS
from lm_eval_kinject.records import read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["TrainingTexts", "PackedBlocks", "read_paraphrases", "qa_pairs", "qa_texts", "practice_texts",
           "read_practice_chunks", "training_texts", "pack"]


@dataclass
class TrainingTexts:
    """What a run trains and validates on, with the counts a user needs to check it."""

    train: list[str]
    validation: list[str]
    stats: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps([self.train, self.validation], ensure_ascii=False).encode())
        return digest.hexdigest()


def read_paraphrases(path: Path) -> dict[str, list[str]]:
    """``chunk_id -> paraphrases`` from a JSONL file of ``{"chunk_id", "paraphrases": [...]}``.

    Raises:
        DataError: bad JSON or fields, an empty or non-string paraphrase, or a chunk id given twice
            (each with file and line).
    """
    from lm_eval_kinject.hub_data import as_file

    path = as_file(path, "paraphrases")
    if not path.is_file():
        raise DataError(f"{path}: no such paraphrase file")
    found: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    for number, record in read_jsonl(path, {"chunk_id": str, "paraphrases": list}):
        chunk_id = record["chunk_id"]
        if chunk_id in found:
            raise DataError(f"{path}:{number}: chunk_id {chunk_id!r} already given on line {lines[chunk_id]}")
        texts = record["paraphrases"]
        for position, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}:{number}: paraphrase {position} of {chunk_id!r} is "
                                f"{'empty' if isinstance(text, str) else type(text).__name__}; expected text")
        found[chunk_id], lines[chunk_id] = [t.strip() for t in texts], number
    return found


def _titled(title: str, text: str, with_title: bool) -> str:
    return f"{title}\n{text}" if with_title and title else text


def qa_pairs(path: Path, split, passages: dict[str, dict] | None = None, passage_share: float = 0.0,
             seed: int = 0, layout: str = "pair", pairs: bool = True) -> tuple[list[str], dict]:
    """The QA texts of mixed training: the ``train`` part of the questions in ``path`` under ``split``
    (a ``QuestionSplit``), as ``Question: ...\nAnswer: ...``; and their counts.

    ``passage_share`` of them follow the text of their chunk (``passages``: chunk_id -> {text, article,
    chunk_id}, as a KB chunk), as kinject-rag's ``plain`` template places a retrieved passage before the
    question (RAFT); ``layout`` as in ``qa_texts``.

    Raises:
        DataError: no such file, or a question to be given its passage whose chunk is not in ``passages``.
    """
    from lm_eval_kinject.questions import read_current_events_questions

    from lm_eval_kinject.hub_data import as_file

    path = as_file(path, "questions")
    if not path.is_file():
        raise DataError(f"{path}: no such questions file (qa: the question-answer pairs of mixed training)")
    questions = read_current_events_questions(path)
    train = split.select(questions, "train", source=str(path))
    stats = {"qa_questions": len(questions), "qa_pairs": len(train),
             "qa_train_chunks": len({q["chunk_id"] for q in train}),
             "qa_heldout_chunks": len({q["chunk_id"] for q in questions}) - len({q["chunk_id"] for q in train})}
    texts, with_passage, _ = qa_texts(train, passages, passage_share, seed, layout, source=str(path), pairs=pairs)
    if passage_share:
        stats["qa_with_passage"] = with_passage
    return texts, stats


def qa_texts(questions: list[dict], passages: dict[str, dict] | None, passage_share: float, seed: int,
             layout: str = "pair", source: str = "questions", pairs: bool = True) -> tuple[list[str], int, set[str]]:
    """Every question of ``questions`` as a training QA pair; how many of them follow their passage; and the
    chunk ids whose passage is read.

    ``passage_share`` of the pairs (``layout="pair"``: drawn among the pairs, each pair after its own copy
    of its chunk's text, as RAFT) or of their chunks (``layout="chunk"``: drawn among the chunks, a chunk's
    text once, then all its pairs, a blank line apart: the same reading for a fraction of the tokens) are
    preceded by their passage, rendered as kinject-rag's ``plain`` template renders a retrieved one.

    ``pairs=False`` (the control arm): the same texts without the QA pairs, i.e. only the passages, each as
    often as it is read before pairs (the same draw of ``seed``).

    Raises:
        DataError: a question to be given its passage whose chunk is not in ``passages``.
    """
    from lm_eval_kinject.prompting import TEMPLATES, render_passages
    from lm_eval_kinject.splits import qa_text

    if layout not in QA_LAYOUTS:
        raise ConfigError(f"qa_layout={layout!r}: expected one of {', '.join(QA_LAYOUTS)}")
    texts = [qa_text(q) if pairs else "" for q in questions]
    if not passage_share or not questions:
        return [t for t in texts if t], 0, set()
    rng = random.Random(seed)
    if layout == "pair":
        chosen_pairs = set(rng.sample(range(len(questions)), round(passage_share * len(questions))))
        chosen_chunks = {questions[i]["chunk_id"] for i in chosen_pairs}
    else:
        chunks = sorted({q["chunk_id"] for q in questions})
        chosen_chunks = set(rng.sample(chunks, round(passage_share * len(chunks))))
        chosen_pairs = {i for i, q in enumerate(questions) if q["chunk_id"] in chosen_chunks}
    missing = sorted(chosen_chunks - set(passages or {}))
    if missing:
        raise DataError(f"{source}: {len(missing)} chunk id(s) of its questions are not among the passages trained "
                        f"on (e.g. {missing[0]!r}); qa_passages needs each question's chunk in the KB (or, for "
                        "practice questions, in qa_practice_chunks)")
    block = {c: render_passages([passages[c]], TEMPLATES["plain"]) for c in chosen_chunks}
    if not pairs:  # the rendered passage alone, as a RAG prompt shows it, without the "Question:" that follows
        block = {c: text.rstrip() for c, text in block.items()}
    if layout == "pair":
        out = [block[questions[i]["chunk_id"]] + text if i in chosen_pairs else text for i, text in enumerate(texts)]
    else:
        grouped: dict[str, list[str]] = {}
        for i in sorted(chosen_pairs):
            grouped.setdefault(questions[i]["chunk_id"], []).append(texts[i])
        out = [block[c] + "\n\n".join(g for g in group if g) for c, group in grouped.items()]
        out += [text for i, text in enumerate(texts) if i not in chosen_pairs]
    return [t for t in out if t], len(chosen_pairs), chosen_chunks


def read_practice_chunks(path: Path) -> dict[str, dict]:
    """``chunk_id -> {chunk_id, text, article}`` of the practice documents: a KB folder (``kinject kb build``)
    or a chunks JSONL of ``{"chunk_id", "text"}`` (``"article"`` optional), as the current-events data.

    Raises:
        DataError: no such file or folder, a bad line, or a chunk id given twice (with file and line).
    """
    from lm_eval_kinject.kb import KnowledgeBase, is_kb

    path = Path(path)
    if path.is_dir() and is_kb(path):
        return {c.chunk_id: {"chunk_id": c.chunk_id, "text": c.text, "article": c.article}
                for c in KnowledgeBase.load(path).chunks}
    if not path.is_file():
        raise DataError(f"{path}: no such file or knowledge base (qa_practice_chunks: a chunks JSONL of "
                        '{"chunk_id", "text", "article"} or a KB folder)')
    found: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for number, record in read_jsonl(path, {"chunk_id": str, "text": str}):
        chunk_id, article = record["chunk_id"], record.get("article", "")
        if chunk_id in found:
            raise DataError(f"{path}:{number}: chunk_id {chunk_id!r} already given on line {lines[chunk_id]}")
        if not record["text"].strip():
            raise DataError(f"{path}:{number}: chunk {chunk_id!r} has an empty text")
        if not isinstance(article, str):
            raise DataError(f"{path}:{number}: article is {type(article).__name__}; expected text")
        found[chunk_id], lines[chunk_id] = {"chunk_id": chunk_id, "text": record["text"].strip(),
                                            "article": article}, number
    return found


def practice_texts(questions_path: Path, chunks_path: Path, kb_texts: set[str], passage_share: float, seed: int,
                   layout: str, title_prefix: bool, pairs: bool = True) -> tuple[list[str], dict]:
    """The texts of practice QA: questions about *other* documents than the KB's, every one trained on and none
    scored (mixed training without a split of your own questions). Every practice document is read once per epoch:
    as the passage its pairs follow (``passage_share``, ``layout``, as ``qa_texts``) or, when it is given none, on its
    own, as a KB chunk is. ``kb_texts``: the KB's chunk texts, which no practice document may repeat.

    Raises:
        DataError: a missing file, a question whose chunk is not among the practice documents, or a practice
            document that is also a KB chunk (its facts would be scored after being trained on as QA).
    """
    from lm_eval_kinject.questions import read_current_events_questions

    from lm_eval_kinject.hub_data import as_file

    questions_path, chunks_path = as_file(questions_path, "practice_questions"), as_file(chunks_path, "practice_corpus")
    if not questions_path.is_file():
        raise DataError(f"{questions_path}: no such questions file (qa_practice: QA pairs about other documents)")
    questions = read_current_events_questions(questions_path)
    chunks = read_practice_chunks(chunks_path)
    unknown = sorted({q.get("chunk_id") or "" for q in questions} - set(chunks))
    if unknown:
        raise DataError(f"{questions_path}: {len(unknown)} chunk id(s) of its questions are not in {chunks_path} "
                        f"(e.g. {unknown[0]!r}); every practice question needs its document")
    shared = [c for c, chunk in chunks.items() if chunk["text"] in kb_texts]
    if shared:
        raise DataError(f"{chunks_path}: {len(shared)} practice document(s) are also chunks of the KB (e.g. "
                        f"{shared[0]!r}); practice questions must be about other documents, or the facts they "
                        "teach as QA pairs would be scored")
    texts, with_passage, read = qa_texts(questions, chunks, passage_share, seed, layout, source=str(questions_path),
                                         pairs=pairs)
    asked = {q["chunk_id"] for q in questions}
    alone = [c for c in sorted(asked) if c not in read]
    texts += [_titled(chunks[c]["article"], chunks[c]["text"], title_prefix) for c in alone]
    return texts, {"practice_questions": len(questions), "practice_chunks": len(asked),
                   "practice_with_passage": with_passage}


def training_texts(kb, paraphrases: dict[str, list[str]] | None, n_paraphrases: int, val_paraphrases: int,
                   title_prefix: bool, allow_unknown: bool, source: str = "paraphrases",
                   qa: list[str] | None = None) -> TrainingTexts:
    """The training and validation texts of a run over the KB ``kb``.

    Every chunk is trained on once per epoch, and so is every QA pair of ``qa`` (mixed training). A
    paraphrase row matches a KB chunk by ``chunk_id``, or a KB document by ``doc_id`` when the KB
    builder split that document into several chunks.
    Of each row, the last ``val_paraphrases`` are held out for validation and the first
    ``n_paraphrases`` of the rest are trained on.

    Raises:
        DataError: paraphrase ids not in the KB (unless ``allow_unknown``).
    """
    train = [_titled(c.article, c.text, title_prefix) for c in kb.chunks]
    stats = {"chunks": len(kb.chunks), "paraphrase_rows": 0, "paraphrase_rows_matched": 0, "unknown_ids": 0,
             "paraphrases_trained": 0, "paraphrases_held_out": 0, "rows_short": 0}
    result = TrainingTexts(train=train, validation=[], stats=stats)
    train.extend(qa or ())
    if paraphrases is None:
        return result
    titles = {c.chunk_id: c.article for c in kb.chunks}
    titles.update({c.doc_id: c.article for c in kb.chunks if c.doc_id not in titles})
    unknown = [chunk_id for chunk_id in paraphrases if chunk_id not in titles]
    stats.update(paraphrase_rows=len(paraphrases), unknown_ids=len(unknown),
                 paraphrase_rows_matched=len(paraphrases) - len(unknown))
    if unknown:
        message = (f"{source}: {len(unknown)} of {len(paraphrases)} chunk ids are not in the KB {kb.path} "
                   f"(e.g. {', '.join(repr(u) for u in unknown[:3])})")
        if not allow_unknown:
            raise DataError(f"{message}; check that the paraphrases belong to this KB, or pass "
                            "--allow-unknown-paraphrases to skip them")
        result.warnings.append(message + "; skipped")
    shortest = None
    for chunk_id, texts in paraphrases.items():
        if chunk_id not in titles:
            continue
        held = texts[len(texts) - min(val_paraphrases, len(texts)):] if val_paraphrases else []
        pool = texts[:len(texts) - len(held)]
        if len(pool) < n_paraphrases:
            stats["rows_short"] += 1
            shortest = len(pool) if shortest is None else min(shortest, len(pool))
        used = pool[:n_paraphrases]
        train.extend(_titled(titles[chunk_id], t, title_prefix) for t in used)
        result.validation.extend(_titled(titles[chunk_id], t, title_prefix) for t in held)
        stats["paraphrases_trained"] += len(used)
        stats["paraphrases_held_out"] += len(held)
    if stats["rows_short"]:
        result.warnings.append(
            f"--n-paraphrases {n_paraphrases} is more than {stats['rows_short']} of "
            f"{stats['paraphrase_rows_matched']} chunks have after holding out {val_paraphrases} for validation "
            f"(fewest available: {shortest}); those chunks train on all they have")
    return result


class PackedBlocks:
    """Token blocks of equal length, as a map-style dataset of ``input_ids/attention_mask/labels``."""

    def __init__(self, ids: np.ndarray, valid: np.ndarray) -> None:
        self.ids, self.valid = ids, valid  # (n_blocks, block_size) int64 / bool

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        import torch

        ids = torch.from_numpy(self.ids[index])
        mask = torch.from_numpy(self.valid[index].astype(np.int64))
        labels = ids.masked_fill(mask == 0, -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    @property
    def tokens(self) -> int:
        return int(self.valid.sum())


def pack(texts: list[str], tokenizer, block_size: int, seed: int | None) -> PackedBlocks:
    """Tokenize ``texts``, join them with EOS and cut into ``block_size`` blocks.

    Args:
        seed: shuffle the texts' order with this seed first (so a chunk's paraphrases are not all in
            one block), or None to keep the order.
    """
    if tokenizer.eos_token_id is None:
        raise DataError("the model's tokenizer has no EOS token to separate documents with")
    order = list(range(len(texts)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    encoded = tokenizer([texts[i] for i in order], add_special_tokens=True, verbose=False)["input_ids"]
    stream = np.fromiter((t for ids in encoded for t in (*ids, tokenizer.eos_token_id)), dtype=np.int64)
    n_blocks = -(-len(stream) // block_size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = np.full(n_blocks * block_size, pad, dtype=np.int64)
    ids[:len(stream)] = stream
    valid = np.zeros(n_blocks * block_size, dtype=bool)
    valid[:len(stream)] = True
    return PackedBlocks(ids.reshape(n_blocks, block_size), valid.reshape(n_blocks, block_size))
