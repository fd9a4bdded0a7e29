"""BM25 over chunk texts: bm25s for speed, rank-bm25 kept as the reference implementation.

Both see the same tokens (:func:`bm25_tokenize`) and the same Okapi formula: bm25s
``method="robertson"`` is rank-bm25's ``BM25Okapi`` with ``epsilon=0`` (a term in more than half of
the chunks gets idf 0 in both) and without the constant factor ``k1 + 1``, so they rank alike; a
test checks it on a real corpus.
bm25s saves to its own JSON + ``.npy`` files, never pickle.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lm_eval_kinject.errors import ConfigError

__all__ = ["BM25Config", "BM25Index", "bm25_tokenize", "reference_bm25"]

_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s' and scikit-learn's default token pattern


@dataclass(frozen=True)
class BM25Config:
    # Okapi BM25's usual term-frequency saturation and length normalisation (rank-bm25's defaults).
    k1: float = 1.5
    b: float = 0.75
    # "robertson" is the Okapi formula of rank-bm25's BM25Okapi; bm25s also offers lucene, atire, bm25l, bm25+.
    method: str = "robertson"
    # Drop English stopwords (bm25s' list): they carry no signal and slow scoring.
    stopwords: bool = True
    # "numpy" (default) or "numba": numba scores ~3.5x faster but JIT-compiles for ~10 s in every
    # new process, so it pays off only for large query batches (pip install numba).
    backend: str = "numpy"

    def __post_init__(self) -> None:
        if self.method not in ("robertson", "lucene", "atire", "bm25l", "bm25+"):
            raise ConfigError(f"bm25 method {self.method!r}: expected robertson, lucene, atire, bm25l or bm25+")
        if self.backend not in ("numpy", "numba"):
            raise ConfigError(f"bm25 backend {self.backend!r}: expected numpy or numba")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ConfigError(f"bm25 k1={self.k1}, b={self.b}: expected k1 >= 0 and 0 <= b <= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def bm25_tokenize(text: str, stopwords: bool = True) -> list[str]:
    """Lower-cased word tokens of two or more characters, English stopwords removed."""
    from bm25s.stopwords import STOPWORDS_EN

    tokens = _TOKEN.findall(text.lower())
    return [t for t in tokens if t not in STOPWORDS_EN] if stopwords else tokens


class BM25Index:
    """A bm25s index over chunk texts that owns its folder: build, save, load, count, search.

    Nothing outside this class reads bm25s' files."""

    PARAMS = "params.index.json"  # bm25s' own file of settings and counts

    def __init__(self, index, config: BM25Config) -> None:
        self.index, self.config = index, config

    @classmethod
    def build(cls, texts: list[str], config: BM25Config, show_progress: bool = False) -> BM25Index:
        import bm25s

        index = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        documents = [bm25_tokenize(t, config.stopwords) for t in texts]
        # bm25s numbers tokens in the order of a Python set (it changes with PYTHONHASHSEED); numbering them in
        # sorted order makes two builds of one corpus byte-identical. Same tokens, same scores.
        vocab = {token: i for i, token in enumerate(sorted({token for document in documents for token in document}))}
        index.index(([[vocab[token] for token in document] for document in documents], vocab),
                    show_progress=show_progress)
        return cls(index, config)

    def save(self, folder: Path) -> None:
        self.index.save(str(folder), allow_pickle=False, show_progress=False)

    @classmethod
    def load(cls, folder: Path, config: BM25Config) -> BM25Index:
        import bm25s

        return cls(bm25s.BM25.load(str(folder), allow_pickle=False, mmap=False), config)

    @classmethod
    def count(cls, folder: Path) -> int:
        """How many documents the saved index at ``folder`` holds, read from its settings file alone.

        Raises:
            OSError, ValueError, KeyError: the file is missing or damaged.
        """
        return int(json.loads((Path(folder) / cls.PARAMS).read_text(encoding="utf-8"))["num_docs"])

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` chunk positions and scores, each of shape ``(len(queries), k)``, best first."""
        if self.config.backend == "numba" and importlib.util.find_spec("numba") is None:
            raise ConfigError("bm25 backend 'numba' needs the numba package: pip install numba")
        self.index.backend = self.config.backend  # a search-time choice; the saved index is the same
        tokens = [bm25_tokenize(q, self.config.stopwords) for q in queries]
        positions, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        return np.asarray(positions, dtype=np.int64), np.asarray(scores, dtype=np.float32)


def reference_bm25(texts: list[str], config: BM25Config):
    """rank-bm25's ``BM25Okapi`` over the same tokens: the reference the bm25s path is checked against."""
    from rank_bm25 import BM25Okapi

    if config.method != "robertson":
        raise ConfigError("the rank-bm25 reference implements only method='robertson' (Okapi)")
    return BM25Okapi([bm25_tokenize(t, config.stopwords) for t in texts], k1=config.k1, b=config.b, epsilon=0.0)
