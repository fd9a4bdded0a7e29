"""Knowledge bases on disk: build (sources -> chunks -> BM25 + embeddings + HNSW) and load.

A KB folder holds ``manifest.json`` (format version, corpus fingerprint, settings, counts, library
versions, file sizes), ``chunks.jsonl``, ``embeddings.npy``, ``bm25/`` (bm25s' own JSON + .npy files)
and, for large KBs, ``hnsw.bin`` (hnswlib's own format). Nothing is pickled. A build writes into a
temporary folder beside the target and renames it at the end, so an interrupted build leaves the
old KB intact or nothing.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lm_eval_kinject import __version__
from lm_eval_kinject.artifacts import atomic_dir, library_versions, sha256_file
from lm_eval_kinject.chunking import Chunk, ChunkConfig, chunk_documents
from lm_eval_kinject.corpus import Document
from lm_eval_kinject.errors import ConfigError, DataError, KinjectError
from lm_eval_kinject.index.bm25 import BM25Config, BM25Index
from lm_eval_kinject.index.dense import DenseConfig, DenseIndex, embed, load_embedder
from lm_eval_kinject.records import read_jsonl

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

__all__ = ["FORMAT_VERSION", "KBConfig", "KnowledgeBase", "build_kb", "is_kb", "read_manifest", "verify_kb"]


@dataclass(frozen=True)
class KBConfig:
    """Everything that decides a KB's content; stored in its manifest."""

    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    bm25: BM25Config = field(default_factory=BM25Config)
    dense: DenseConfig = field(default_factory=DenseConfig)
    # Index "title + text" rather than text alone: chunks rarely repeat their article's name,
    # while questions name it ("During Hurricane Otis, ...").
    index_title: bool = True

    # option (``kinject kb build`` flags, grid ``knowledge_bases:`` blocks) -> (part, field); absent or None: the
    # part's default, written once on its dataclass
    OPTIONS = {"chunk_tokens": ("chunk", "chunk_tokens"), "overlap": ("chunk", "overlap_tokens"),
               "tokenizer": ("chunk", "tokenizer"), "embedder": ("dense", "embedder"),
               "exact_below": ("dense", "exact_below"), "seed": ("dense", "seed"), "hnsw_m": ("dense", "hnsw_m"),
               "hnsw_ef_construction": ("dense", "hnsw_ef_construction"),
               "hnsw_ef_search": ("dense", "hnsw_ef_search")}

    @classmethod
    def from_options(cls, **options) -> KBConfig:
        """The config the named ``options`` (:attr:`OPTIONS`) give; None leaves a setting at its default.

        Raises:
            ConfigError: an unknown option, or a bad value (the part's own check).
        """
        from lm_eval_kinject.errors import did_you_mean

        parts: dict[str, dict] = {"chunk": {}, "dense": {}}
        for key, value in options.items():
            if key not in cls.OPTIONS:
                raise ConfigError(f"{key}: unknown knowledge-base setting{did_you_mean(key, cls.OPTIONS)}; valid: "
                                  f"{', '.join(cls.OPTIONS)}")
            if value is not None:
                part, name = cls.OPTIONS[key]
                parts[part][name] = value
        try:
            return cls(chunk=ChunkConfig(**parts["chunk"]), dense=DenseConfig(**parts["dense"]))
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None


def is_kb(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _index_texts(chunks: list[Chunk], with_title: bool) -> list[str]:
    return [f"{c.article}\n{c.text}" if with_title and c.article else c.text for c in chunks]


def _fingerprint(chunks: list[Chunk]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(json.dumps([chunk.chunk_id, chunk.article, chunk.text], ensure_ascii=False).encode())
    return digest.hexdigest()


def build_kb(documents: Iterable[Document], out: Path, config: KBConfig = KBConfig(), sources: list[str] | None = None,
             overwrite: bool = False, show_progress: bool = True) -> KnowledgeBase:
    """Build a knowledge base from ``documents`` into the folder ``out`` (atomically).

    Raises:
        ConfigError: ``out`` exists and ``overwrite`` is False, or exists and is not a KB.
        DataError: bad or empty documents (see :func:`chunk_documents`).
    """
    out = Path(out)
    if out.exists():
        if out.is_dir() and not is_kb(out) and any(out.iterdir()):
            raise ConfigError(f"{out} exists and is not a knowledge base (no {MANIFEST}); refusing to replace it: "
                              "choose another --out or remove the folder")
        if not out.is_dir():
            raise ConfigError(f"{out} exists and is a file, not a folder; choose another --out")
        if not overwrite and is_kb(out):
            raise ConfigError(f"{out} already holds a knowledge base; pass --overwrite to replace it")
    started = time.time()
    # the first document before the embedder (~20 s to load): a missing or malformed source fails at once
    documents = iter(documents)
    first = next(documents, None)
    if first is None:
        raise DataError(f"no documents in {', '.join(map(str, sources or [])) or 'the sources'}: nothing to index")
    documents = itertools.chain([first], documents)
    embedder = load_embedder(config.dense.embedder)
    tokenizer_name = config.chunk.tokenizer
    if tokenizer_name == "embedder":
        tokenizer, tokenizer_name = embedder.tokenizer, f"embedder:{config.dense.embedder}"
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    chunks, stats = chunk_documents(documents, config.chunk, tokenizer, show_progress=show_progress)
    _check_unique_ids(chunks)
    texts = _index_texts(chunks, config.index_title)
    logger.info("embedding %d chunks with %s", len(chunks), config.dense.embedder)
    vectors = embed(embedder, texts, config.dense.batch_size, show_progress=show_progress)
    bm25 = BM25Index.build(texts, config.bm25, show_progress=show_progress)
    dense = DenseIndex.build(vectors, config.dense)

    with atomic_dir(out) as tmp:
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as fh:
            for chunk in chunks:
                fh.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
        dense.save(tmp)
        bm25.save(tmp / "bm25")
        manifest = {
            "format_version": FORMAT_VERSION, "kinject_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 1),
            "fingerprint": _fingerprint(chunks), "sources": [str(s) for s in sources or []],
            "chunking": config.chunk.to_dict(), "tokenizer": tokenizer_name, "index_title": config.index_title,
            "embedder": {"name": config.dense.embedder, "dimension": int(vectors.shape[1]), "normalized": True,
                         "max_seq_length": int(getattr(embedder, "max_seq_length", 0) or 0)},
            "bm25": config.bm25.to_dict(), "dense": config.dense.to_dict(), "hnsw": dense.hnsw is not None,
            "counts": asdict(stats), "libraries": library_versions(
                ("bm25s", "hnswlib", "sentence-transformers", "transformers", "torch", "numpy", "lm-eval")),
            "files": {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()},
            "sha256": {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("knowledge base with %d chunks written to %s", len(chunks), out)
    return KnowledgeBase.load(out, embedder=embedder)


def _check_unique_ids(chunks: list[Chunk]) -> None:
    seen: set[str] = set()
    for chunk in chunks:
        if chunk.chunk_id in seen:
            raise DataError(f"chunk id {chunk.chunk_id!r} occurs twice (a split document's '<id>#<n>' "
                            "collides with another document's id); rename one of the documents")
        seen.add(chunk.chunk_id)


class KnowledgeBase:
    """A KB loaded from disk. Indexes and the embedder load lazily, on first use."""

    def __init__(self, path: Path, manifest: dict, chunks: list[Chunk], embedder=None) -> None:
        self.path, self.manifest, self.chunks = path, manifest, chunks
        self._positions = {c.chunk_id: i for i, c in enumerate(chunks)}
        self._ids = np.array([c.chunk_id for c in chunks], dtype=object)
        self.bm25_config = _manifest_block(BM25Config, manifest, "bm25", path)
        self.dense_config = _manifest_block(DenseConfig, manifest, "dense", path)
        self._embedder, self._bm25, self._dense = embedder, None, None

    @classmethod
    def load(cls, path: Path, embedder=None, embedder_name: str | None = None,
             tokenizer: str | None = None, ef_search: int | None = None) -> KnowledgeBase:
        """Open the KB folder ``path``.

        Args:
            embedder: an already loaded SentenceTransformer to reuse for queries.
            embedder_name / tokenizer: what the caller expects; a mismatch with the manifest is an error.
            ef_search: the HNSW search beam for this session instead of the manifest's (more: higher
                recall, fewer queries/s; the index is unchanged).

        Raises:
            KinjectError: not a KB, half-written, from a newer format, or built with another embedder/tokenizer.
        """
        path = Path(path)
        manifest = read_manifest(path)
        built_with = manifest["embedder"]["name"]
        if embedder_name is not None and embedder_name != built_with:
            raise ConfigError(f"{path} was built with embedder {built_with!r}, not {embedder_name!r}: "
                              "queries must be embedded by the same model; rebuild the KB to change it")
        if tokenizer is not None and tokenizer != manifest["tokenizer"]:
            raise ConfigError(f"{path} was chunked with tokenizer {manifest['tokenizer']!r}, not {tokenizer!r}")
        fields = {"chunk_id": str, "article": str, "text": str, "doc_id": str}
        chunks = [Chunk(**{k: r[k] for k in fields}) for _, r in read_jsonl(path / "chunks.jsonl", fields)]
        _check_consistent(path, manifest, chunks)
        base = cls(path, manifest, chunks, embedder)
        if ef_search is not None:
            base.dense_config = replace(base.dense_config, hnsw_ef_search=ef_search)  # validated there
        return base

    def __len__(self) -> int:
        return len(self.chunks)

    def ids_of(self, positions: np.ndarray) -> np.ndarray:
        return self._ids[positions]

    def chunk(self, chunk_id: str) -> Chunk:
        return self.chunks[self._positions[chunk_id]]

    def has_chunk(self, chunk_id: str) -> bool:
        return chunk_id in self._positions

    @property
    def bm25(self) -> BM25Index:
        if self._bm25 is None:
            self._bm25 = BM25Index.load(self.path / "bm25", self.bm25_config)
        return self._bm25

    @property
    def dense(self) -> DenseIndex:
        if self._dense is None:
            self._dense = DenseIndex.load(self.path, self.dense_config, with_hnsw=self.manifest["hnsw"])
        return self._dense

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = load_embedder(self.manifest["embedder"]["name"])
        return embed(self._embedder, queries, self.dense_config.batch_size)



def _manifest_block(config_class, manifest: dict, key: str, path: Path):
    """A config dataclass from the manifest's ``key`` block; an unknown or bad key names the manifest."""
    from dataclasses import fields

    block = manifest[key]
    valid = {f.name for f in fields(config_class)}
    unknown = sorted(set(block) - valid)
    if unknown:
        raise KinjectError(f"{path / MANIFEST}: unknown key(s) {unknown} in its {key!r} block (valid: "
                           f"{', '.join(sorted(valid))}); the manifest was edited or is from another tool")
    try:
        return config_class(**block)
    except ConfigError as error:
        raise KinjectError(f"{path / MANIFEST}: {key}: {error}") from None


def _check_consistent(path: Path, manifest: dict, chunks: list[Chunk]) -> None:
    """Chunks, embedding rows and BM25 documents agree in number, and the chunks are the ones fingerprinted.

    Cheap (the embeddings are read as a memory map, only their shape): a KB that lost or changed a
    chunk would otherwise return the ids of its neighbours for every hit after the change.
    """
    damaged = "; the KB is damaged, rebuild it (kinject kb verify checks every file)"
    counts = {"chunks.jsonl": len(chunks), f"{MANIFEST} counts.chunks": manifest["counts"]["chunks"]}
    try:
        shape = DenseIndex.shape(path)
        counts[f"{DenseIndex.VECTORS} rows"] = int(shape[0])
        counts["bm25 documents"] = BM25Index.count(path / "bm25")
    except (OSError, ValueError, KeyError) as error:
        raise KinjectError(f"{path}: cannot read its indexes ({type(error).__name__}: {error}){damaged}") from None
    if len(set(counts.values())) > 1:
        raise KinjectError(f"{path}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" disagree{damaged}")
    if len(shape) != 2 or shape[1] != manifest["embedder"]["dimension"]:
        raise KinjectError(f"{path}: {DenseIndex.VECTORS} has shape {shape}, expected (n, "
                           f"{manifest['embedder']['dimension']}){damaged}")
    if _fingerprint(chunks) != manifest["fingerprint"]:
        raise KinjectError(f"{path}: chunks.jsonl does not match the manifest's fingerprint (a chunk was edited, "
                           f"added, removed or reordered){damaged}")


def verify_kb(path: Path) -> list[str]:
    """Every problem of the KB folder ``path``: load checks, then each file's SHA-256 against the manifest.

    KBs built before the manifest recorded SHA-256s are checked by size and fingerprint only.
    """
    path = Path(path)
    try:
        manifest = KnowledgeBase.load(path).manifest
    except KinjectError as error:
        return [str(error)]
    problems = []
    for name, digest in manifest.get("sha256", {}).items():
        if sha256_file(path / name) != digest:
            problems.append(f"{path / name}: content differs from the manifest's SHA-256 (edited after the build)")
    return problems


def read_manifest(path: Path) -> dict:
    """The checked manifest of the KB folder ``path`` (see :meth:`KnowledgeBase.load` for the errors)."""
    if not path.is_dir():
        raise ConfigError(f"{path}: no such knowledge-base folder")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        partial = "" if not any(path.iterdir()) else " (files without a manifest: an interrupted or foreign build)"
        raise ConfigError(f"{path} is not a knowledge base: no {MANIFEST}{partial}; build one with `kinject kb build`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KinjectError(f"{manifest_path}: not valid JSON ({exc}); rebuild the KB") from None
    if not isinstance(manifest, dict):
        raise KinjectError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}; the manifest is "
                           "damaged, rebuild the KB")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise KinjectError(f"{path}: KB format version {version!r} is newer than this lm-eval-kinject "
                           f"({__version__}) reads ({FORMAT_VERSION}); upgrade lm-eval-kinject")
    missing = [key for key in ("fingerprint", "counts", "embedder", "bm25", "dense", "hnsw", "tokenizer")
               if key not in manifest]
    if missing:
        raise KinjectError(f"{manifest_path}: missing key(s) {missing}; the manifest is damaged, rebuild the KB")
    for name, size in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size:
            raise KinjectError(f"{path}: {name} is missing or has the wrong size; the KB is damaged, rebuild it")
    return manifest
