"""A response cache for LLM calls, so an interrupted run resumes without paying twice.

Keyed by SHA-256 of (LLM name, messages, sampling params incl. seed); values are the answer text
and token count. SQLite (one file, transactional: a killed run loses at most the batch in flight,
never corrupts what was stored) — no pickle. Failed requests are not cached.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from lm_eval_kinject.errors import KinjectError
from lm_eval_kinject.generate.llm import ChatLLM, Completion, GenParams, Messages

__all__ = ["ResponseCache", "CallStats", "ask", "default_cache_path"]


def default_cache_path() -> Path:
    from lm_eval_kinject.presets import cache_dir

    return cache_dir() / "llm_responses.sqlite"


class ResponseCache:
    """``path`` None: nothing is stored (every call goes to the LLM)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        self._db = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(self.path)
                self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, llm TEXT, text TEXT, "
                                 "tokens INTEGER, created REAL)")
                self._db.commit()
            except sqlite3.DatabaseError as exc:
                raise KinjectError(f"--cache {self.path}: not a kinject response cache ({exc}); "
                                   "give another path or delete the file") from None

    @staticmethod
    def key(llm_name: str, messages: Messages, params: GenParams) -> str:
        payload = json.dumps({"llm": llm_name, "messages": messages, "params": params.as_dict()},
                             sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        if self._db is None or not keys:
            return {}
        found = {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, text, tokens FROM responses WHERE key IN ({','.join('?' * len(part))})",
                                    part)
            found.update({k: Completion(t, n) for k, t, n in rows})
        return found

    def put_many(self, llm_name: str, items: list[tuple[str, Completion]]) -> None:
        if self._db is None:
            return
        now = time.time()
        self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                             [(k, llm_name, c.text, c.tokens, now) for k, c in items if c.error is None])
        self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class CallStats:
    """Counts for the manifest: requests answered from the cache vs by the LLM, tokens, seconds."""

    cached: int = 0
    fresh: int = 0
    failed: int = 0
    tokens: int = 0
    seconds: float = 0.0
    failures: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        rate = self.tokens / self.seconds if self.seconds else None
        return {"cached": self.cached, "fresh": self.fresh, "failed": self.failed, "generated_tokens": self.tokens,
                "llm_seconds": round(self.seconds, 2), "tokens_per_second": rate and round(rate, 1)}


def ask(llm: ChatLLM, cache: ResponseCache, conversations: list[Messages], params: list[GenParams],
        stats: CallStats, progress=None) -> list[Completion]:
    """Answers for every conversation, from the cache where possible; new answers are stored batch by batch."""
    keys = [ResponseCache.key(llm.name, m, p) for m, p in zip(conversations, params)]
    known = cache.get_many(keys)
    out: list[Completion | None] = [known.get(k) for k in keys]
    stats.cached += sum(c is not None for c in out)
    if progress is not None:
        progress.update(sum(c is not None for c in out))
    # similar lengths together: less padding for batched local generation
    todo = sorted((i for i, c in enumerate(out) if c is None), key=lambda i: sum(len(m["content"]) for m in conversations[i]))
    for start in range(0, len(todo), llm.preferred_batch):
        batch = todo[start:start + llm.preferred_batch]
        started = time.perf_counter()
        answers = llm.complete([conversations[i] for i in batch], [params[i] for i in batch])
        stats.seconds += time.perf_counter() - started
        for i, answer in zip(batch, answers):
            out[i] = answer
            stats.tokens += answer.tokens
            if answer.error:
                stats.failed += 1
                stats.failures[answer.error] = stats.failures.get(answer.error, 0) + 1
            else:
                stats.fresh += 1
        cache.put_many(llm.name, [(keys[i], out[i]) for i in batch])
        if progress is not None:
            progress.update(len(batch))
    return out  # type: ignore[return-value]
