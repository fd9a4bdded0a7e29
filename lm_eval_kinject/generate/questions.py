"""Multiple-choice questions from chunks, the paper's recipe: candidates, checks, the most specific kept.

Per chunk the LLM writes ``per_chunk`` candidate questions as JSON; every candidate is checked
(:func:`~lm_eval_kinject.generate.checks.check_question`: 4 distinct options, an answer in range, no
reference to "the passage", names its subject, correct option supported by the chunk). A chunk whose
answer is malformed or gives fewer than ``keep`` valid candidates is asked again (``retries`` times,
new seed). Then the LLM picks the ``keep`` most specific of the valid ones (answerable without the
chunk, least ambiguous); an unusable pick is retried, then replaced by the first ``keep`` valid
candidates and counted as a fallback. Near-duplicate questions are dropped across the whole set, an
optional log-likelihood check (:mod:`~lm_eval_kinject.generate.answerable`) reports or filters
questions the scoring LM cannot answer with the chunk / answers without it, and the correct
positions are re-balanced over A-D by a seeded shuffle. Every candidate, kept or not, is written to
``candidates.jsonl`` with its status and reasons.
"""
from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from lm_eval_kinject.chunking import Chunk
from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.generate.cache import CallStats, ResponseCache, ask
from lm_eval_kinject.generate.checks import check_question, extract_json, normalize_option
from lm_eval_kinject.generate.llm import ChatLLM, GenParams
from lm_eval_kinject.generate.paraphrase import request_seed

__all__ = ["QuestionConfig", "generate_questions", "balance_answers", "CANDIDATE_PROMPT", "SELECT_PROMPT"]

SYSTEM_PROMPT = "You write multiple-choice exam questions about facts stated in encyclopedia passages."
CANDIDATE_PROMPT = (
    "Passage{title}:\n{text}\n\n"
    "Write {n} different multiple-choice questions that test specific facts stated in the passage.\n"
    "Rules:\n"
    "- Each question must make sense on its own, without the passage: name the event, person or place it is "
    "about, and never mention \"the passage\", \"the article\" or \"the text\".\n"
    "- Each question has exactly 4 options; exactly one is correct according to the passage, the other 3 are "
    "plausible but wrong.\n"
    "- Prefer precise facts: dates, numbers, names, places.\n"
    "Answer with JSON only, a list of {n} objects like "
    "{{\"question\": \"...\", \"options\": [\"...\", \"...\", \"...\", \"...\"], \"answer\": 0}} "
    "where \"answer\" is the index (0-3) of the correct option.")
SELECT_PROMPT = (
    "Here are multiple-choice questions about the same passage:\n\n{listing}\n\n"
    "Pick the {keep} most specific questions: those that someone who knows the facts could answer without "
    "seeing the passage, with the least ambiguity. Answer with JSON only: a list of {keep} question numbers, "
    "e.g. {example}.")


@dataclass(frozen=True)
class QuestionConfig:
    per_chunk: int = 4
    keep: int = 2
    retries: int = 2  # extra candidate requests for a chunk with fewer than `keep` valid candidates
    temperature: float = 0.7
    max_tokens: int = 1024
    dedup: float = 0.8  # content-word Jaccard between two questions at or above which the later is dropped
    seed: int = 0
    id_prefix: str = "q"

    def __post_init__(self) -> None:
        problems = []
        if self.per_chunk < 1:
            problems.append(f"--per-chunk must be at least 1, got {self.per_chunk}")
        if self.keep < 1:
            problems.append(f"--keep must be at least 1, got {self.keep}")
        if self.keep > self.per_chunk:
            problems.append(f"--keep {self.keep} is larger than --per-chunk {self.per_chunk}: "
                            "can only keep some of the candidates asked for")
        if self.retries < 0:
            problems.append(f"--retries must be 0 or more, got {self.retries}")
        if not 0 < self.dedup <= 1:
            problems.append(f"--dedup must be in (0, 1], got {self.dedup}")
        if problems:
            raise ConfigError("; ".join(problems))


def _candidate_messages(chunk: Chunk, n: int) -> list[dict]:
    title = f' (from the article "{chunk.article}")' if chunk.article else ""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": CANDIDATE_PROMPT.format(title=title, text=chunk.text, n=n)}]


def _select_messages(questions: list[dict], keep: int) -> list[dict]:
    listing = "\n\n".join(f"{i + 1}. {q['question']}\n" + "\n".join(f"   {'ABCD'[j]}) {c}"
                                                                   for j, c in enumerate(q["choices"]))
                          for i, q in enumerate(questions))
    example = str(list(range(1, keep + 1)))
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": SELECT_PROMPT.format(listing=listing, keep=keep, example=example)}]


def _parse_candidates(text: str) -> tuple[list | None, str | None]:
    try:
        value = extract_json(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    if isinstance(value, dict):
        value = value.get("questions", [value] if "question" in value else None)
    if not isinstance(value, list):
        return None, "not a JSON list of questions"
    return value, None


def _parse_pick(text: str, count: int, keep: int) -> list[int] | None:
    try:
        value = extract_json(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return None
    picked = list(dict.fromkeys(value))
    if len(picked) != keep or not all(1 <= v <= count for v in picked):
        return None
    return [v - 1 for v in picked]


def _words(question: str) -> set[str]:
    return set(normalize_option(question).split())


def balance_answers(questions: list[dict], seed: int) -> None:
    """Move each correct option so that positions A-D are used equally (counts differ by at most 1)."""
    targets = [i % 4 for i in range(len(questions))]
    random.Random(seed).shuffle(targets)
    for question, target in zip(questions, targets):
        choices = question["choices"]
        correct = choices[question["answer"]]
        others = [c for i, c in enumerate(choices) if i != question["answer"]]
        question["choices"] = others[:target] + [correct] + others[target:]
        question["answer"] = target


def generate_questions(chunks: list[Chunk], llm: ChatLLM, config: QuestionConfig, cache: ResponseCache,
                       answerable: Callable[[list[dict]], list[dict]] | None = None, filter_answerable: bool = False,
                       show_progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """(questions, candidates, summary). Questions are in the current-events format, ids in chunk order."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    stats = CallStats()
    candidates: list[dict] = []
    valid: dict[str, list[dict]] = {c.chunk_id: [] for c in chunks}
    attempts = {c.chunk_id: 0 for c in chunks}
    bar = tqdm(total=0, desc="questions: candidate requests", unit="req", disable=not show_progress)
    while True:
        todo = [c for c in chunks if len(valid[c.chunk_id]) < config.keep and attempts[c.chunk_id] <= config.retries]
        if not todo:
            break
        bar.total += len(todo)
        params = [GenParams(temperature=config.temperature, max_tokens=config.max_tokens,
                            seed=request_seed(config.seed, "candidates", c.chunk_id, attempts[c.chunk_id])) for c in todo]
        answers = ask(llm, cache, [_candidate_messages(c, config.per_chunk) for c in todo], params, stats, bar)
        for chunk, answer in zip(todo, answers):
            attempt = attempts[chunk.chunk_id]
            attempts[chunk.chunk_id] += 1
            items, problem = (None, answer.error) if answer.error else _parse_candidates(answer.text)
            if items is None:
                candidates.append({"chunk_id": chunk.chunk_id, "attempt": attempt, "status": "rejected",
                                   "reasons": [problem], "raw": answer.text[:2000]})
                continue
            for number, item in enumerate(items):
                question, reasons = check_question(item, chunk.text, chunk.article)
                seen = {normalize_option(q["question"]) for q in valid[chunk.chunk_id]}
                if question and normalize_option(question["question"]) in seen:
                    question, reasons = None, ["repeats another candidate"]
                if question and len(valid[chunk.chunk_id]) >= config.per_chunk:
                    question, reasons = None, [f"more than --per-chunk {config.per_chunk} candidates"]
                record = {"chunk_id": chunk.chunk_id, "attempt": attempt, "number": number,
                          "status": "valid" if question else "rejected", "reasons": reasons,
                          **(question or {"raw": item})}
                candidates.append(record)
                if question:
                    valid[chunk.chunk_id].append(record)
        bar.set_postfix(valid=sum(map(len, valid.values())), rejected=sum(c["status"] == "rejected" for c in candidates))
    bar.close()

    picks, fallbacks = _select(chunks, valid, llm, config, cache, stats, show_progress)
    kept: list[dict] = []
    for chunk in chunks:
        for record in picks.get(chunk.chunk_id, []):
            duplicate = next((q for q in kept if _jaccard(_words(q["question"]), _words(record["question"]))
                              >= config.dedup), None)
            if duplicate is not None:
                record.update(status="dropped", reasons=[f"near-duplicate of {duplicate['question']!r}"])
                continue
            record["status"] = "selected"
            kept.append(record)
    for chunk in chunks:
        for record in valid[chunk.chunk_id]:
            if record["status"] == "valid":
                record.update(status="not selected", reasons=[f"not among the {config.keep} most specific"])

    answerability = None
    if answerable is not None and kept:
        verdicts = answerable([{"question": r["question"], "choices": r["choices"], "answer": r["answer"],
                                "chunk_id": r["chunk_id"]} for r in kept])
        for record, verdict in zip(kept, verdicts):
            record["answerability"] = verdict
        answerability = {"questions": len(kept), "answerable_with_chunk": sum(v["with_chunk"] for v in verdicts),
                         "correct_without_chunk": sum(v["without_chunk"] for v in verdicts),
                         "filtered": filter_answerable}
        if filter_answerable:
            for record in kept:
                verdict = record["answerability"]
                if not verdict["with_chunk"] or verdict["without_chunk"]:
                    record.update(status="dropped", reasons=["answerability check: " + (
                        "answered without the chunk" if verdict["with_chunk"] else "not answered with the chunk")])
            kept = [r for r in kept if r["status"] == "selected"]
        answerability["kept"] = len(kept)
    questions = [{"id": "", "question": r["question"], "choices": list(r["choices"]), "answer": r["answer"],
                  "chunk_id": r["chunk_id"]} for r in kept]
    balance_answers(questions, config.seed)
    for number, question in enumerate(questions, start=1):
        question["id"] = f"{config.id_prefix}-{number:04d}"
    for record, question in zip(kept, questions):
        record["id"] = question["id"]
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for record in candidates:
        statuses[record["status"]] = statuses.get(record["status"], 0) + 1
        for reason in record["reasons"] if record["status"] == "rejected" else []:
            key = _reason_kind(reason)
            reasons[key] = reasons.get(key, 0) + 1
    summary = {"config": asdict(config), "chunks": len(chunks), "requests": sum(attempts.values()),
               "candidates": statuses, "questions": len(questions),
               "chunks_without_questions": sum(1 for c in chunks if not any(q["chunk_id"] == c.chunk_id
                                                                          for q in questions)),
               "selection_fallbacks": fallbacks, "rejection_reasons": reasons, "answerability": answerability,
               "answer_positions": {letter: sum(q["answer"] == i for q in questions) for i, letter in enumerate("ABCD")},
               "calls": stats.as_dict(), "wall_seconds": round(time.perf_counter() - started, 2),
               "prompts": {"system": SYSTEM_PROMPT, "candidates": CANDIDATE_PROMPT, "select": SELECT_PROMPT}}
    return questions, candidates, summary


def _reason_kind(reason: str) -> str:
    """A rejection reason without its specifics (quoted values, numbers, details after a colon), for counting."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", reason).split(":")[0].strip()


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _select(chunks, valid, llm, config, cache, stats, show_progress) -> tuple[dict[str, list[dict]], int]:
    """The ``keep`` picked candidates of every chunk, and how many chunks fell back to the first ``keep``."""
    from tqdm.auto import tqdm

    picks = {cid: list(records) for cid, records in valid.items() if 0 < len(records) <= config.keep}
    choose = [c for c in chunks if len(valid[c.chunk_id]) > config.keep]
    fallbacks = 0
    bar = tqdm(total=len(choose), desc="questions: selection", unit="chunk", disable=not show_progress or not choose)
    for attempt in range(config.retries + 1):
        if not choose:
            break
        params = [GenParams(temperature=0.0 if attempt == 0 else 0.5, max_tokens=64,
                            seed=request_seed(config.seed, "select", c.chunk_id, attempt)) for c in choose]
        answers = ask(llm, cache, [_select_messages(valid[c.chunk_id], config.keep) for c in choose], params, stats)
        again = []
        for chunk, answer in zip(choose, answers):
            picked = None if answer.error else _parse_pick(answer.text, len(valid[chunk.chunk_id]), config.keep)
            if picked is None:
                again.append(chunk)
                continue
            picks[chunk.chunk_id] = [valid[chunk.chunk_id][i] for i in picked]
            bar.update(1)
        choose = again
    for chunk in choose:
        fallbacks += 1
        picks[chunk.chunk_id] = valid[chunk.chunk_id][:config.keep]
        for record in picks[chunk.chunk_id]:
            record["selection"] = "fallback: first valid candidates (the LLM's pick was unusable)"
        bar.update(1)
    bar.close()
    return picks, fallbacks
