"""Documents -> chunks: token-aware, sentence boundaries kept, stable ids, duplicates removed."""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from lm_eval_kinject.corpus import Document
from lm_eval_kinject.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["Chunk", "ChunkConfig", "ChunkStats", "chunk_documents", "split_sentences"]

# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by whitespace and an
# upper-case letter, digit or opening quote/bracket; a blank line always ends one. A rule, not a
# model: abbreviations like "e.g. The" split wrongly, which costs one early chunk break at worst.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])|\n\s*\n")


@dataclass(frozen=True)
class Chunk:
    """One retrievable passage. ``article`` is the title of the document it came from."""

    chunk_id: str
    article: str
    text: str
    doc_id: str


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut into chunks."""

    # all-MiniLM-L6-v2 embeds at most 256 word pieces: a longer chunk would be embedded truncated.
    chunk_tokens: int = 256
    # Sentences repeated at the start of the next chunk, up to this many tokens, so a fact that
    # straddles a boundary is whole in one chunk.
    overlap_tokens: int = 32
    # Tokenizer that counts tokens: "embedder" (the KB's embedder's own) or a HF name/path.
    tokenizer: str = "embedder"

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_tokens, int) or self.chunk_tokens < 8:
            raise ConfigError(f"chunk_tokens={self.chunk_tokens!r}: expected an integer >= 8")
        if not isinstance(self.overlap_tokens, int) or not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ConfigError(f"overlap_tokens={self.overlap_tokens!r}: expected 0 <= overlap < chunk_tokens "
                              f"({self.chunk_tokens})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ChunkStats:
    """Counts reported by :func:`chunk_documents` (and stored in the KB manifest)."""

    documents: int = 0
    empty_skipped: int = 0
    duplicate_documents: int = 0
    duplicate_chunks: int = 0
    chunks: int = 0
    long_sentences_split: int = 0
    sources: list[str] = field(default_factory=list)


def split_sentences(text: str) -> list[str]:
    """Pieces of ``text`` that end at sentence boundaries; ``"".join(pieces) == text``."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start:match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return [p for p in pieces if p]


def _count_tokens(tokenizer, pieces: list[str]) -> list[int]:
    if not pieces:
        return []
    return [len(ids) for ids in tokenizer(pieces, add_special_tokens=False)["input_ids"]]


def _split_long(tokenizer, piece: str, limit: int) -> list[str]:
    """Cut one over-long sentence into windows of at most ``limit`` tokens (by character offsets)."""
    offsets = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cuts = [offsets[i][0] for i in range(limit, len(offsets), limit)]
    bounds = [0, *cuts, len(piece)]
    return [piece[a:b] for a, b in zip(bounds, bounds[1:]) if piece[a:b]]


def _pack(pieces: list[str], counts: list[int], config: ChunkConfig) -> list[str]:
    """Greedy packing of sentence pieces into chunks of <= chunk_tokens, with sentence overlap."""
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    total = 0
    for piece, count in zip(pieces, counts):
        if current and total + count > config.chunk_tokens:
            chunks.append("".join(p for p, _ in current).strip())
            tail, tail_total = [], 0
            for p, c in reversed(current):
                if tail_total + c > config.overlap_tokens:
                    break
                tail.insert(0, (p, c))
                tail_total += c
            current, total = (tail, tail_total) if tail_total + count <= config.chunk_tokens else ([], 0)
        current.append((piece, count))
        total += count
    if current:
        chunks.append("".join(p for p, _ in current).strip())
    return [c for c in chunks if c]


def _normal(text: str) -> str:
    return " ".join(text.split())


def chunk_documents(documents: Iterable[Document], config: ChunkConfig, tokenizer,
                    show_progress: bool = False) -> tuple[list[Chunk], ChunkStats]:
    """Cut documents into chunks.

    A document that fits in ``chunk_tokens`` is one chunk with the document's id; a longer one gives
    ``<doc_id>#<n>`` (n from 0). A ``prechunked`` document is kept whole under its own id. Empty
    documents are skipped (counted); exact duplicate documents and chunks are dropped (counted).

    Raises:
        DataError: two documents share an id but differ in text, or every document is empty.
    """
    from tqdm.auto import tqdm

    stats = ChunkStats()
    seen_docs: dict[str, tuple[str, str]] = {}
    seen_texts: set[str] = set()
    chunks: list[Chunk] = []
    first_empty = None
    for doc in tqdm(documents, desc="chunking", unit="doc", disable=not show_progress):
        stats.documents += 1
        if not doc.text.strip():
            stats.empty_skipped += 1
            first_empty = first_empty or doc.source
            continue
        previous = seen_docs.get(doc.doc_id)
        if previous is not None:
            if previous[0] != _normal(doc.text):
                raise DataError(f"duplicate id {doc.doc_id!r} with different text: {previous[1]} and {doc.source}")
            stats.duplicate_documents += 1
            continue
        seen_docs[doc.doc_id] = (_normal(doc.text), doc.source)
        if doc.prechunked:
            texts = [doc.text.strip()]
        else:
            pieces = split_sentences(doc.text)
            counts = _count_tokens(tokenizer, pieces)
            if sum(counts) <= config.chunk_tokens:
                texts = [doc.text.strip()]
            else:
                fitted_pieces, fitted_counts = [], []
                for piece, count in zip(pieces, counts):
                    parts = [piece] if count <= config.chunk_tokens else _split_long(tokenizer, piece, config.chunk_tokens)
                    stats.long_sentences_split += len(parts) > 1
                    fitted_pieces += parts
                    fitted_counts += [count] if len(parts) == 1 else _count_tokens(tokenizer, parts)
                texts = _pack(fitted_pieces, fitted_counts, config)
        for n, text in enumerate(texts):
            key = _normal(text)
            if key in seen_texts:
                stats.duplicate_chunks += 1
                continue
            seen_texts.add(key)
            chunk_id = doc.doc_id if len(texts) == 1 else f"{doc.doc_id}#{n}"
            chunks.append(Chunk(chunk_id, doc.title, text, doc.doc_id))
    if stats.documents == 0 or stats.empty_skipped == stats.documents:
        raise DataError(f"no text to index: {stats.documents} document(s), all empty"
                        + (f" (the first: {first_empty})" if first_empty else ""))
    stats.chunks = len(chunks)
    if stats.empty_skipped:
        logger.warning("skipped %d empty document(s)", stats.empty_skipped)
    return chunks, stats
