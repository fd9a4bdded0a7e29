"""Generation runs as the CLI calls them: load chunks, make the LLM, generate, write files + manifest.

Every file is written atomically, after the generation finished; an interrupted run leaves the
previous outputs and resumes from the response cache (nothing already answered is asked again).
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject import __version__
from lm_eval_kinject.artifacts import library_versions, sha256_file, write_json_atomic, write_jsonl_atomic
from lm_eval_kinject.chunking import Chunk
from lm_eval_kinject.generate.cache import ResponseCache, default_cache_path
from lm_eval_kinject.generate.llm import ChatLLM, HFChat, make_llm
from lm_eval_kinject.generate.paraphrase import ParaphraseConfig, generate_paraphrases
from lm_eval_kinject.generate.questions import QuestionConfig, generate_questions
from lm_eval_kinject.generate.sources import chunk_record, load_chunks

logger = logging.getLogger(__name__)

__all__ = ["LLMOptions", "paraphrase_run", "questions_run", "open_llm"]


@dataclass(frozen=True)
class LLMOptions:
    spec: str
    concurrency: int = 4
    max_retries: int = 5
    timeout_s: float = 120.0
    cache: Path | None = None  # None: the default cache; use_cache False: none
    use_cache: bool = True


def open_llm(options: LLMOptions) -> tuple[ChatLLM, ResponseCache]:
    llm = make_llm(options.spec, options.concurrency, options.max_retries, options.timeout_s)
    cache = ResponseCache((options.cache or default_cache_path()) if options.use_cache else None)
    return llm, cache


def _source_info(source: Path) -> dict:
    source = Path(source)
    if source.is_file():
        return {"path": str(source), "sha256": sha256_file(source)}
    from lm_eval_kinject.kb import read_manifest

    return {"path": str(source), "kb_fingerprint": read_manifest(source).get("fingerprint")}


def _stamp() -> dict:
    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "kinject_version": __version__,
            "library_versions": library_versions(("openai", "transformers", "torch", "lm-eval"))}


def paraphrase_run(source: Path | list[Chunk], out: Path, llm_options: LLMOptions, config: ParaphraseConfig,
                   limit: int | None = None, llm_cache=None, show_progress: bool = True) -> dict:
    """Write ``out`` (paraphrase rows), ``out``'s ``.rejected.jsonl`` and ``.manifest.json``; returns the summary."""
    chunks = source if isinstance(source, list) else load_chunks(source, limit)
    llm, cache = llm_cache or open_llm(llm_options)
    rows, rejected, summary = generate_paraphrases(chunks, llm, config, cache, show_progress)
    out = Path(out)
    stem = out.name[:-len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    write_jsonl_atomic(out, rows)
    write_jsonl_atomic(out.with_name(f"{stem}.rejected.jsonl"), rejected)
    manifest = {"kind": "kinject-paraphrases", "source": None if isinstance(source, list) else _source_info(source),
                "llm": llm.describe(), "cache": str(cache.path) if cache.path else None, **summary, **_stamp()}
    write_json_atomic(out.with_name(f"{stem}.manifest.json"), manifest)
    return manifest


def questions_run(source: Path | list[Chunk], out: Path, llm_options: LLMOptions, config: QuestionConfig,
                  limit: int | None = None, check_model: str | None = None, filter_answerable: bool = False,
                  llm_cache=None, show_progress: bool = True) -> dict:
    """Write ``out``/questions.jsonl, candidates.jsonl, chunks.jsonl (if absent) and manifest.json."""
    chunks = source if isinstance(source, list) else load_chunks(source, limit)
    llm, cache = llm_cache or open_llm(llm_options)
    check = None
    if check_model:
        from lm_eval_kinject.generate.answerable import make_answerability_check

        loaded = llm.load() if isinstance(llm, HFChat) and llm.model_name == check_model else None
        check = make_answerability_check({c.chunk_id: c.text for c in chunks}, check_model, loaded=loaded)
    questions, candidates, summary = generate_questions(chunks, llm, config, cache, check, filter_answerable,
                                                        show_progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "chunks.jsonl").is_file():
        write_jsonl_atomic(out / "chunks.jsonl", [chunk_record(c) for c in chunks])
    write_jsonl_atomic(out / "candidates.jsonl", candidates)
    write_jsonl_atomic(out / "questions.jsonl", questions)
    manifest = {"kind": "kinject-questions", "source": None if isinstance(source, list) else _source_info(source),
                "llm": llm.describe(), "cache": str(cache.path) if cache.path else None,
                "answerability_model": check_model, **summary, **_stamp()}
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
