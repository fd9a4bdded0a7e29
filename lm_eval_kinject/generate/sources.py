"""The chunks that questions and paraphrases are generated from: a KB folder or a chunks JSONL file."""
from __future__ import annotations

from pathlib import Path

from lm_eval_kinject.chunking import Chunk
from lm_eval_kinject.errors import DataError

__all__ = ["load_chunks", "chunk_record"]


def load_chunks(source: Path, limit: int | None = None) -> list[Chunk]:
    """Chunks of a KB folder (``kinject kb build``) or of a JSONL file with ``chunk_id``, ``text`` [, ``article``].

    Raises:
        DataError: neither, or no chunk in it.
    """
    from lm_eval_kinject.kb import KnowledgeBase, is_kb
    from lm_eval_kinject.records import read_jsonl

    source = Path(source)
    if source.is_dir():
        if not is_kb(source):
            raise DataError(f"{source}: not a KB folder (no manifest.json); build one with `kinject kb build` "
                            "or give a chunks .jsonl file")
        chunks = KnowledgeBase.load(source).chunks
    elif source.is_file():
        chunks = []
        for number, record in read_jsonl(source, {"chunk_id": str, "text": str}):
            article = record.get("article", record.get("title", ""))
            chunks.append(Chunk(record["chunk_id"], str(article or ""), record["text"], str(record.get("doc_id", ""))))
    else:
        raise DataError(f"{source}: no such KB folder or chunks file")
    chunks = [c for c in chunks if c.text.strip()]
    if not chunks:
        raise DataError(f"{source}: no chunks with text; nothing to generate from")
    return chunks[:limit] if limit else chunks


def chunk_record(chunk: Chunk) -> dict:
    """A chunk in the current-events ``chunks.jsonl`` format."""
    return {"chunk_id": chunk.chunk_id, "article": chunk.article, "text": chunk.text}
