"""Corpus sources -> ``Document`` records: JSONL, folders of .txt/.md/.html, Wikipedia XML dumps,
Hugging Face datasets and the MediaWiki API.

A record that already carries a chunk id (``chunk_id``, as in the current-events data) is marked
``prechunked``: the chunker keeps it whole under that id so retrieval can be scored against gold ids.
"""
from __future__ import annotations

import bz2
import html.parser
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject.errors import ConfigError, DataError
from lm_eval_kinject.records import read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["Document", "JsonlFields", "read_source", "read_jsonl_corpus", "read_folder", "read_wikipedia_dump",
           "read_hf_dataset", "read_mediawiki", "wikitext_to_text", "only_chunks_of", "TEXT_SUFFIXES"]

TEXT_SUFFIXES = (".txt", ".md", ".html", ".htm")


@dataclass(frozen=True)
class Document:
    """One source document; ``prechunked`` documents become exactly one chunk with id ``doc_id``."""

    doc_id: str
    title: str
    text: str
    source: str
    prechunked: bool = False


@dataclass(frozen=True)
class JsonlFields:
    """Field names of a JSONL corpus. ``chunk_id``/``article`` are understood when the defaults are absent."""

    id: str = "id"
    title: str = "title"
    text: str = "text"


def read_jsonl_corpus(path: Path, fields: JsonlFields = JsonlFields()) -> Iterator[Document]:
    """Documents of a JSONL corpus; a missing text field or an unusable id names file and line."""
    for number, record in read_jsonl(path, {fields.text: str}):
        where = f"{path}:{number}"
        prechunked = fields.id not in record and "chunk_id" in record
        doc_id = record.get(fields.id, record.get("chunk_id"))
        if doc_id is None or isinstance(doc_id, (dict, list)) or str(doc_id).strip() == "":
            raise DataError(f"{where}: missing field {fields.id!r} (or 'chunk_id') holding the document id")
        title = record.get(fields.title, record.get("article", ""))
        yield Document(str(doc_id), str(title or ""), record[fields.text], f"{path}:{number}", prechunked)


class _TextOfHTML(html.parser.HTMLParser):
    """Visible text of an HTML page (scripts and styles dropped), block elements as line breaks."""

    _SKIP = {"script", "style", "head", "noscript"}
    _BLOCK = {"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skipping += 1
        self._in_title = tag == "title"
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skipping:
            self.parts.append(data)


def _read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte offset {exc.start})") from None


def read_text_document(path: Path, root: Path) -> Document:
    """One .txt/.md/.html file as a document; its id is the path relative to ``root``."""
    text = _read_text_file(path)
    title = path.stem.replace("_", " ")
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOfHTML()
        parser.feed(text)
        text = re.sub(r"[ \t]+", " ", "".join(parser.parts))
        text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
        title = parser.title.strip() or title
    elif path.suffix.lower() == ".md":
        first = text.lstrip().splitlines()[0] if text.strip() else ""
        if first.startswith("#"):
            title = first.lstrip("#").strip()
    return Document(path.relative_to(root).as_posix(), title, text, str(path))


def read_folder(folder: Path) -> Iterator[Document]:
    """Every .txt/.md/.html file below ``folder`` (sorted), one document each, id = relative path."""
    folder = Path(folder)
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()):
        yield read_text_document(path, folder)


def wikitext_to_text(wikitext: str) -> str:
    """Plain text of wikitext (dumps and the MediaWiki API): templates, refs and tables dropped, markup stripped."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for node in code.filter_templates(recursive=False) + code.filter_tags(matches=lambda n: n.tag in ("ref", "table")):
        try:
            code.remove(node)
        except ValueError:  # already gone with a parent
            pass
    text = code.strip_code(normalize=True, collapse=True)
    text = re.sub(r"[ \t]{2,}", " ", text)  # removed templates and refs leave double spaces
    text = re.sub(r" +([.,;:])", r"\1", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def read_wikipedia_dump(path: Path, titles: set[str] | None = None, category: str | None = None) -> Iterator[Document]:
    """Articles of a MediaWiki XML dump (``.xml`` or ``.xml.bz2``), wikitext cleaned by mwparserfromhell.

    Args:
        path: the dump.
        titles: keep only these titles (None: all).
        category: keep only pages in this category (``[[Category:...]]`` in the wikitext).
    """
    import xml.etree.ElementTree as ET

    opener = bz2.open if str(path).endswith(".bz2") else open
    category_re = re.compile(r"\[\[\s*Category\s*:\s*" + re.escape(category) + r"\s*(\||\]\])", re.I) if category else None
    with opener(path, "rb") as fh:
        try:
            for _, elem in ET.iterparse(fh, events=("end",)):
                if elem.tag.rsplit("}", 1)[-1] != "page":
                    continue
                fields = {child.tag.rsplit("}", 1)[-1]: child for child in elem}
                title = fields["title"].text if "title" in fields else ""
                ns = fields["ns"].text if "ns" in fields else "0"
                revision = fields.get("revision")
                text_el = next((c for c in revision if c.tag.rsplit("}", 1)[-1] == "text"), None) if revision is not None else None
                wikitext = (text_el.text or "") if text_el is not None else ""
                keep = ns == "0" and not wikitext.lstrip().lower().startswith("#redirect")
                keep = keep and (titles is None or title in titles)
                keep = keep and (category_re is None or bool(category_re.search(wikitext)))
                if keep:
                    page_id = fields["id"].text if "id" in fields else title
                    yield Document(f"wiki:{page_id}", title, wikitext_to_text(wikitext), f"{path}#{title}")
                elem.clear()
        except ET.ParseError as exc:
            raise DataError(f"{path}: not a MediaWiki XML dump ({exc})") from None


def read_hf_dataset(name: str, split: str = "train", fields: JsonlFields = JsonlFields()) -> Iterator[Document]:
    """Rows of a Hugging Face dataset (``name`` or ``name:config``) as documents."""
    import datasets

    path, _, config = name.partition(":")
    try:
        rows = datasets.load_dataset(path, config or None, split=split)
    except Exception as exc:  # network, auth or cache errors surface from deep inside datasets
        raise DataError(f"could not load Hugging Face dataset {name!r} split {split!r}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if fields.text not in rows.column_names:
        raise DataError(f"dataset {name!r} has no text column {fields.text!r}; columns: {rows.column_names}")
    for i, row in enumerate(rows):
        yield Document(str(row.get(fields.id, f"{path}/{i}")), str(row.get(fields.title, "") or ""),
                       row[fields.text], f"hf:{name}/{split}/{i}")


def read_mediawiki(titles: list[str] | None = None, category: str | None = None, api: str | None = None,
                   timeout_s: float = 10.0, as_of: str | None = None) -> Iterator[Document]:
    """Pages (a title list and/or a category's articles) via the MediaWiki API, as plain text.

    Online only: an unreachable endpoint fails fast with a clear error. See :mod:`lm_eval_kinject.mediawiki`.
    """
    from lm_eval_kinject.mediawiki import MEDIAWIKI_API, MediaWiki

    wiki = MediaWiki(api or MEDIAWIKI_API, timeout_s)
    titles = list(titles or [])
    if category:
        titles += [t for t in wiki.category_members(category) if t not in titles]
    for page in wiki.pages(titles, as_of=as_of):
        yield Document(f"wiki:{page.pageid}", page.title, page.text, page.url)


def read_source(source: str | Path, fields: JsonlFields = JsonlFields()) -> Iterator[Document]:
    """Documents of one source: a ``.jsonl`` file, a folder, a ``.xml``/``.xml.bz2`` dump, or the corpus of a dataset
    written by ``kinject export`` (its folder or Hub id)."""
    from lm_eval_kinject.hub_data import data_file, is_dataset

    path = Path(source)
    if is_dataset(source):  # a dataset of `kinject export` (folder or Hub id): its corpus
        yield from read_jsonl_corpus(data_file(source, "corpus"), fields)
    elif path.is_dir():
        yield from read_folder(path)
    elif path.is_file() and path.suffix == ".jsonl":
        yield from read_jsonl_corpus(path, fields)
    elif path.is_file() and (path.name.endswith(".xml") or path.name.endswith(".xml.bz2")):
        yield from read_wikipedia_dump(path)
    elif path.is_file() and path.suffix.lower() in TEXT_SUFFIXES:
        yield read_text_document(path, path.parent)
    elif not path.exists():
        raise ConfigError(f"source {str(source)!r}: no such file or folder")
    else:
        raise ConfigError(f"source {str(source)!r}: unsupported kind; expected a .jsonl file, a folder of "
                          ".txt/.md/.html files, or a Wikipedia .xml/.xml.bz2 dump")


def read_sources(sources: Iterable[str | Path], fields: JsonlFields = JsonlFields()) -> Iterator[Document]:
    for source in sources:
        yield from read_source(source, fields)


def only_chunks_of(documents: Iterable[Document], questions: str | Path) -> Iterator[Document]:
    """The documents that the questions of ``questions`` (a questions JSONL with ``chunk_id``) are about.

    A document is kept when its id is a question's ``chunk_id``, or when a ``chunk_id`` is one of its
    chunks (``<doc id>#<n>``). Used to fine-tune on the part of a corpus that is asked about, while
    retrieval reads all of it (a CPU budget cannot fine-tune on a whole corpus). Raises when no
    document is kept; logs how many question chunks were not found.
    """
    from lm_eval_kinject.questions import read_current_events_questions

    questions = Path(questions)
    wanted = {q["chunk_id"] for q in read_current_events_questions(questions) if q["chunk_id"]}
    if not wanted:
        raise DataError(f"{questions}: no question has a chunk_id; cannot select the chunks it asks about")
    parents = {chunk_id.rsplit("#", 1)[0] for chunk_id in wanted if "#" in chunk_id}
    found: set[str] = set()
    for document in documents:
        if document.doc_id in wanted or document.doc_id in parents:
            found.add(document.doc_id)
            yield document
    missing = {c for c in wanted if c not in found and c.rsplit("#", 1)[0] not in found}
    if not found:
        raise DataError(f"{questions}: none of its {len(wanted)} chunk ids is a document of the sources")
    if missing:
        logger.warning("%s: %d of %d question chunk ids are not in the sources (e.g. %r)", questions, len(missing),
                       len(wanted), sorted(missing)[0])
