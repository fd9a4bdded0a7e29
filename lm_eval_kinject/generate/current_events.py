"""The paper's current-events dataset, rebuilt: MediaWiki pages -> KB chunks -> questions -> paraphrases.

By default the pages are the articles of Wikipedia's monthly categories "<Month> <year> events in the
United States" (the subcategories of "2023 events in the United States by month") for a month range;
``categories`` and ``titles`` add or replace sources, and ``api`` points at any MediaWiki. Output is a
folder in the ``current_events`` task's format (``chunks.jsonl``, ``questions.jsonl``,
``paraphrases.jsonl``) plus the KB (``kb/``), every candidate and rejection, and ``manifest.json``
(pages with their revision ids and timestamps, the LLM, prompts, settings, counts).

Resumable: the KB is reused when the pages (titles and revisions) are the same, and every LLM answer
comes from the response cache on a re-run.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from lm_eval_kinject.artifacts import write_json_atomic, write_jsonl_atomic
from lm_eval_kinject.errors import DataError

__all__ = ["WikiSource", "build_current_events", "slug"]


@dataclass(frozen=True)
class WikiSource:
    start: str | None = "2023-08"
    end: str | None = "2023-11"
    categories: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    api: str = "https://en.wikipedia.org/w/api.php"
    as_of: str | None = None  # ISO timestamp: the revisions current then (None: the latest)
    category_template: str = "{month} {year} events in the United States"

    def category_names(self) -> list[str]:
        from lm_eval_kinject.mediawiki import month_categories

        if (self.start is None) != (self.end is None):
            raise DataError("give both --from and --to (a month range), or neither")
        months = month_categories(self.start, self.end, self.category_template) if self.start else []
        return months + [c for c in self.categories if c not in months]


def slug(title: str) -> str:
    """``2023 Hawaii wildfires`` -> ``2023-hawaii-wildfires`` (the chunk-id stem of the current-events data)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "page"


def build_current_events(out: Path, source: WikiSource, llm_options, question_config, paraphrase_config,
                         kb_config=None, check_model: str | None = None, filter_answerable: bool = False,
                         limit_pages: int | None = None, show_progress: bool = True) -> dict:
    """Build the folder ``out``; returns its manifest."""
    from lm_eval_kinject.corpus import Document
    from lm_eval_kinject.generate.run import open_llm, paraphrase_run, questions_run
    from lm_eval_kinject.generate.sources import chunk_record
    from lm_eval_kinject.kb import KBConfig, KnowledgeBase, build_kb, is_kb
    from lm_eval_kinject.mediawiki import MediaWiki

    out = Path(out)
    wiki = MediaWiki(source.api)
    categories = source.category_names()
    titles: list[str] = list(dict.fromkeys(source.titles))
    members = {}
    for category in categories:
        members[category] = wiki.category_members(category)
        titles += [t for t in members[category] if t not in titles]
    if limit_pages:
        titles = titles[:limit_pages]
    if not titles:
        raise DataError(f"no pages to build from: categories {categories} have no articles and no titles were given")
    pages = list(wiki.pages(titles, as_of=source.as_of))
    if not pages:
        raise DataError(f"none of the {len(titles)} titles exists at {source.api}")
    page_records = [{"title": p.title, "pageid": p.pageid, "revid": p.revid, "timestamp": p.timestamp, "url": p.url}
                    for p in pages]
    out.mkdir(parents=True, exist_ok=True)
    kb_dir, pages_file = out / "kb", out / "pages.json"
    same_pages = pages_file.is_file() and json.loads(pages_file.read_text()) == page_records
    if not (same_pages and is_kb(kb_dir)):
        documents = [Document(slug(p.title), p.title, p.text, p.url) for p in pages]
        build_kb(documents, kb_dir, kb_config or KBConfig(), sources=[p.url for p in pages], overwrite=True,
                 show_progress=show_progress)
        write_json_atomic(pages_file, page_records)
    chunks = KnowledgeBase.load(kb_dir).chunks
    write_jsonl_atomic(out / "chunks.jsonl", [chunk_record(c) for c in chunks])
    llm_cache = open_llm(llm_options)
    questions = questions_run(chunks, out, llm_options, question_config, check_model=check_model,
                              filter_answerable=filter_answerable, llm_cache=llm_cache, show_progress=show_progress)
    paraphrases = paraphrase_run(chunks, out / "paraphrases.jsonl", llm_options, paraphrase_config,
                                 llm_cache=llm_cache, show_progress=show_progress)
    manifest = {"kind": "kinject-current-events",
                "source": {**asdict(source), "categories_used": categories, "category_members": members,
                           "pages": page_records},
                "counts": {"pages": len(pages), "chunks": len(chunks), "questions": questions["questions"],
                           "paraphrased_chunks": paraphrases["chunks"] - len(paraphrases["incomplete_chunks"]),
                           "paraphrases": paraphrases["accepted"]},
                "llm": questions["llm"], "questions": questions, "paraphrases": paraphrases}
    write_json_atomic(out / "manifest.json", manifest)
    return manifest
