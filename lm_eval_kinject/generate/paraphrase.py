"""Paraphrases of every chunk (the FT-par data): reword, keep every fact, check, retry, record.

Each chunk needs ``n`` accepted paraphrases. A round asks for what is still missing, one request per
missing paraphrase, each with its own seed; an answer is accepted when it keeps every number, month
and named entity of the chunk (:func:`~lm_eval_kinject.generate.checks.missing_facts`), is reworded
(word-trigram Jaccard with the chunk at most ``max_overlap``, and at most ``max_copied`` of its
trigrams taken from the chunk), does not repeat a 10-word run (small models loop), is not a
near-duplicate of a paraphrase already accepted, and has a plausible length. A chunk gets at most
``n * (1 + retries)`` requests; what stays missing is recorded with the reasons. Output:
``{"chunk_id", "paraphrases": [...]}`` rows — the format ``kinject finetune --paraphrases`` reads —
plus ``*.rejected.jsonl`` and a manifest.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass

from lm_eval_kinject.chunking import Chunk
from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.generate.cache import CallStats, ResponseCache, ask
from lm_eval_kinject.generate.checks import (clean_paraphrase, containment, missing_facts, repeated_span,
                                             word_overlap)
from lm_eval_kinject.generate.llm import ChatLLM, GenParams

__all__ = ["ParaphraseConfig", "PARAPHRASE_PROMPT", "generate_paraphrases", "check_paraphrase", "request_seed"]

SYSTEM_PROMPT = "You rewrite encyclopedia passages. You never add or drop information."
PARAPHRASE_PROMPT = (
    "Paraphrase the following passage. Keep all of its information: every name, number, date and fact must "
    "still be there. Change the wording and the sentence structure. Answer with the paraphrase only.\n\n"
    "Passage{title}:\n{text}")


@dataclass(frozen=True)
class ParaphraseConfig:
    n: int = 10
    retries: int = 2  # extra requests per missing paraphrase before it is recorded as failed
    temperature: float = 0.8  # paraphrases of one chunk must differ: sample
    max_tokens: int | None = None  # None: 2x the chunk's length in words, at least 256
    max_overlap: float = 0.8  # word-trigram Jaccard with the chunk above this = a copy, not a paraphrase
    max_copied: float = 0.9  # share of the answer's trigrams found in the chunk above this = cut from it
    max_duplicate: float = 0.85  # ... with an accepted paraphrase of the same chunk = a duplicate
    min_length: float = 0.5  # words of the paraphrase / words of the chunk
    max_length: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.n < 1:
            problems.append(f"--n must be at least 1, got {self.n}")
        if self.retries < 0:
            problems.append(f"--retries must be 0 or more, got {self.retries}")
        if not 0 <= self.temperature <= 2:
            problems.append(f"--temperature must be in [0, 2], got {self.temperature}")
        if self.max_tokens is not None and self.max_tokens < 1:
            problems.append(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if not all(0 < v <= 1 for v in (self.max_overlap, self.max_duplicate, self.max_copied)):
            problems.append("--max-overlap, --max-duplicate and --max-copied must be in (0, 1]")
        if problems:
            raise ConfigError("; ".join(problems))


def request_seed(*parts) -> int:
    """A seed for one request, derived from the run seed and what the request is for."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big") & 0x7FFFFFFF


def check_paraphrase(chunk_text: str, text: str, accepted: list[str], config: ParaphraseConfig) -> list[str]:
    """Why ``text`` is not an acceptable paraphrase of ``chunk_text`` (empty: accepted)."""
    if not text:
        return ["empty answer"]
    reasons = []
    ratio = len(text.split()) / max(1, len(chunk_text.split()))
    if not config.min_length <= ratio <= config.max_length:
        reasons.append(f"length {ratio:.2f}x the chunk's (allowed {config.min_length}-{config.max_length}x)")
    lost = missing_facts(chunk_text, text)
    if lost:
        reasons.append("lost: " + ", ".join(repr(x) for x in lost[:8]) + (f" (+{len(lost) - 8})" if len(lost) > 8 else ""))
    overlap, copied = word_overlap(chunk_text, text), containment(text, chunk_text)
    if overlap > config.max_overlap or copied > config.max_copied:
        reasons.append(f"not reworded (trigram overlap {overlap:.2f} with the chunk; {copied:.0%} of its trigrams "
                       "are the chunk's)")
    looped = repeated_span(text, chunk_text)
    if looped:
        reasons.append(f"repeats itself ({looped!r} twice)")
    duplicate = max((word_overlap(text, other) for other in accepted), default=0.0)
    if duplicate > config.max_duplicate:
        reasons.append(f"near-duplicate of an accepted paraphrase (overlap {duplicate:.2f})")
    return reasons


def _messages(chunk: Chunk) -> list[dict]:
    title = f' (from the article "{chunk.article}")' if chunk.article else ""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": PARAPHRASE_PROMPT.format(title=title, text=chunk.text)}]


def generate_paraphrases(chunks: list[Chunk], llm: ChatLLM, config: ParaphraseConfig, cache: ResponseCache,
                         show_progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """(rows, rejected, summary) for ``chunks``: rows hold the accepted paraphrases, in acceptance order."""
    from tqdm.auto import tqdm

    accepted: dict[str, list[str]] = {c.chunk_id: [] for c in chunks}
    attempts = {c.chunk_id: 0 for c in chunks}
    rejected: list[dict] = []
    stats = CallStats()
    budget = config.n * (1 + config.retries)
    started = time.perf_counter()
    bar = tqdm(total=0, desc="paraphrase requests", unit="req", disable=not show_progress)
    round_ = 0
    while True:
        wanted = [(c, k) for c in chunks for k in range(min(config.n - len(accepted[c.chunk_id]),
                                                            budget - attempts[c.chunk_id]))]
        if not wanted:
            break
        conversations = [_messages(c) for c, _ in wanted]
        params = [GenParams(temperature=config.temperature, max_tokens=config.max_tokens or
                            max(256, 2 * len(c.text.split())),
                            seed=request_seed(config.seed, c.chunk_id, attempts[c.chunk_id] + k))
                  for c, k in wanted]
        bar.total += len(wanted)
        answers = ask(llm, cache, conversations, params, stats, bar)
        for (chunk, _), answer, param in zip(wanted, answers, params):
            attempts[chunk.chunk_id] += 1
            text = clean_paraphrase(answer.text)
            reasons = [answer.error] if answer.error else check_paraphrase(chunk.text, text, accepted[chunk.chunk_id],
                                                                          config)
            if reasons:
                rejected.append({"chunk_id": chunk.chunk_id, "round": round_, "seed": param.seed,
                                 "reasons": reasons, "text": text})
            else:
                accepted[chunk.chunk_id].append(text)
        bar.set_postfix(accepted=sum(map(len, accepted.values())), rejected=len(rejected))
        round_ += 1
    bar.close()
    rows = [{"chunk_id": c.chunk_id, "paraphrases": accepted[c.chunk_id]} for c in chunks if accepted[c.chunk_id]]
    incomplete = {cid: len(v) for cid, v in accepted.items() if len(v) < config.n}
    reasons: dict[str, int] = {}
    for item in rejected:
        for reason in item["reasons"]:
            key = reason.split(":")[0] if reason.startswith(("lost", "HTTP")) else reason.split(" (")[0]
            key = "length" if key.startswith("length") else key
            reasons[key] = reasons.get(key, 0) + 1
    summary = {"config": asdict(config), "chunks": len(chunks), "requested": len(chunks) * config.n,
               "accepted": sum(map(len, accepted.values())), "rejected": len(rejected), "attempts": sum(attempts.values()),
               "rounds": round_, "incomplete_chunks": incomplete, "rejection_reasons": reasons,
               "calls": stats.as_dict(), "wall_seconds": round(time.perf_counter() - started, 2),
               "prompt": {"system": SYSTEM_PROMPT, "user": PARAPHRASE_PROMPT}}
    return rows, rejected, summary
