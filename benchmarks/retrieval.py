#!/usr/bin/env python
"""Retrieval benchmarks (issue: knowledge bases), every ratio measured in this same run.

    .venv/bin/python benchmarks/retrieval.py --shared ../shared/data [--skip-hnsw] [--out retrieval.json]

1. BM25 queries/s: the bm25s path vs rank-bm25 on the largest shared textbook KB, same top-10.
2. HNSW vs exact search on >= 100k x 384 real MiniLM vectors (sentences of the shared KBs; the
   embeddings are cached under the kinject cache for re-runs): recall@10 and queries/s.
3. Embedding passages/s: our embed() vs a bare SentenceTransformer.encode loop on the same texts.
4. Peak memory (max RSS) and wall time of `kinject kb build` on the largest shared corpus.
5. Retrieval quality on the current-events sample: recall@1/4/10 and MRR for bm25, dense, hybrid.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SUBJECTS = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")


def _queries(shared: Path) -> list[str]:
    return [row[0] for s in SUBJECTS for row in csv.reader(open(shared / "mmlu" / "test" / f"{s}_test.csv", encoding="utf-8"))]


def _kb_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def bench_bm25(shared: Path) -> dict:
    from lm_eval_kinject.index.bm25 import BM25Config, bm25_tokenize, build_bm25, reference_bm25, search_bm25

    largest = max((shared / "kb").glob("*.jsonl"), key=lambda p: p.stat().st_size)
    texts, queries, config = _kb_texts(largest), _queries(shared), BM25Config()
    index, reference = build_bm25(texts, config), reference_bm25(texts, config)
    search_bm25(index, queries[:10], 10, config)  # warm-up
    start = time.perf_counter()
    positions, _ = search_bm25(index, queries, 10, config)
    fast_s = time.perf_counter() - start
    numba = {}
    if importlib.util.find_spec("numba"):
        numba_config = BM25Config(backend="numba")
        start = time.perf_counter()
        search_bm25(index, queries[:10], 10, numba_config)  # JIT compilation, once per process
        numba["jit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        numba_positions, _ = search_bm25(index, queries, 10, numba_config)
        numba["qps"] = len(queries) / (time.perf_counter() - start)
        numba["same_as_numpy"] = bool(np.array_equal(numba_positions, positions))
    start = time.perf_counter()
    ref_top = [np.argsort(-reference.get_scores(bm25_tokenize(q)), kind="stable")[:10] for q in queries]
    ref_s = time.perf_counter() - start
    same = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(positions, ref_top)]))
    return {"corpus": largest.name, "chunks": len(texts), "queries": len(queries), "bm25s_qps": len(queries) / fast_s,
            "rank_bm25_qps": len(queries) / ref_s, "speedup": ref_s / fast_s, "top10_overlap": same,
            "numba": numba, "numba_speedup": numba["qps"] * ref_s / len(queries) if numba else None}


def _sentence_vectors(shared: Path, minimum: int) -> tuple[np.ndarray, int]:
    from lm_eval_kinject.chunking import split_sentences
    from lm_eval_kinject.index.dense import embed, load_embedder
    from lm_eval_kinject.presets import cache_dir

    texts = []
    for path in sorted((shared / "kb").glob("*.jsonl")):
        for passage in _kb_texts(path):
            texts += [s.strip() for s in split_sentences(passage) if len(s.split()) >= 4]
            texts.append(passage)
    texts = texts[: max(minimum, 0) or None]
    cache = cache_dir() / "bench" / f"sentences-{len(texts)}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False), len(texts)
    vectors = embed(load_embedder("all-MiniLM-L6-v2"), texts, batch_size=128, show_progress=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors, allow_pickle=False)
    return vectors, len(texts)


def bench_hnsw(shared: Path, minimum: int) -> dict:
    from lm_eval_kinject.index.dense import DenseConfig, build_hnsw, embed, load_embedder, search_dense

    vectors, n = _sentence_vectors(shared, minimum)
    queries = embed(load_embedder("all-MiniLM-L6-v2"), _queries(shared), batch_size=128)
    start = time.perf_counter()
    index = build_hnsw(vectors, DenseConfig())
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    exact, _ = search_dense(vectors, queries, 10)
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    approx, _ = search_dense(vectors, queries, 10, hnsw=index, ef_search=DenseConfig().hnsw_ef_search)
    approx_s = time.perf_counter() - start
    recall = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]))
    return {"vectors": int(vectors.shape[0]), "dim": int(vectors.shape[1]), "queries": len(queries),
            "build_s": build_s, "exact_qps": len(queries) / exact_s, "hnsw_qps": len(queries) / approx_s,
            "speedup": exact_s / approx_s, "recall_at_10": recall}


def bench_embedding(shared: Path, count: int = 800, rounds: int = 3) -> dict:
    """Best of ``rounds`` interleaved timings each, the order alternating per round (whichever ran second
    was measured slower on a shared machine), so drift hits both alike."""
    from lm_eval_kinject.index.dense import DenseConfig, embed, load_embedder

    texts = _kb_texts(shared / "kb" / "prehistory.jsonl")[:count]
    model = load_embedder("all-MiniLM-L6-v2")
    model.encode(texts[:64])  # warm-up
    runs = {"bare": lambda: model.encode(texts),  # the bare loop: sentence-transformers' defaults
            "ours": lambda: embed(model, texts, DenseConfig().batch_size)}
    times: dict[str, list[float]] = {"bare": [], "ours": []}
    for round_ in range(rounds):
        for name in (("ours", "bare") if round_ % 2 == 0 else ("bare", "ours")):
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    bare, ours = times["bare"], times["ours"]
    return {"passages": len(texts), "rounds": rounds, "bare_per_s": len(texts) / min(bare),
            "ours_per_s": len(texts) / min(ours), "ratio": min(bare) / min(ours)}


def bench_build(shared: Path) -> dict:
    largest = max((shared / "kb").glob("*.jsonl"), key=lambda p: p.stat().st_size)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "kinject"), "kb", "build", str(largest), "--out",
                        f"{tmp}/kb"], check=True, capture_output=True)
        wall = time.perf_counter() - start
        manifest = json.loads(Path(f"{tmp}/kb/manifest.json").read_text())
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"corpus": largest.name, "chunks": manifest["counts"]["chunks"], "wall_s": wall, "peak_rss_mib": peak_mib}


def bench_quality(shared: Path) -> list[dict]:
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb
    from lm_eval_kinject.retrieval_eval import evaluate_retrieval

    sample = shared / "current_events_sample"
    with tempfile.TemporaryDirectory() as tmp:
        kb = build_kb(read_source(sample / "chunks.jsonl"), Path(tmp) / "kb", show_progress=False)
        return evaluate_retrieval(kb, sample / "questions.jsonl", [1, 4, 10], ["bm25", "dense", "hybrid"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--hnsw-vectors", type=int, default=100_000, help="at least this many vectors")
    parser.add_argument("--skip-hnsw", action="store_true")
    parser.add_argument("--only-hnsw", action="store_true", help="run only the HNSW vs exact benchmark")
    parser.add_argument("--out", type=Path, default=Path("retrieval_benchmark.json"))
    args = parser.parse_args()
    report = {}
    if args.only_hnsw:
        _print_hnsw(report, args)
        args.out.write_text(json.dumps(report, indent=2))
        return
    report["bm25"] = bench_bm25(args.shared)
    print(f"BM25 on {report['bm25']['corpus']} ({report['bm25']['chunks']} chunks, {report['bm25']['queries']} queries): "
          f"bm25s {report['bm25']['bm25s_qps']:.0f} q/s vs rank-bm25 {report['bm25']['rank_bm25_qps']:.1f} q/s = "
          f"{report['bm25']['speedup']:.0f}x, top-10 overlap {report['bm25']['top10_overlap']:.4f}", flush=True)
    if report["bm25"]["numba"]:
        n = report["bm25"]["numba"]
        print(f"  numba backend: {n['qps']:.0f} q/s = {report['bm25']['numba_speedup']:.0f}x rank-bm25 (after a one-time "
              f"{n['jit_s']:.1f} s JIT), same top-10 as numpy: {n['same_as_numpy']}", flush=True)
    report["embedding"] = bench_embedding(args.shared)
    e = report["embedding"]
    print(f"Embedding {e['passages']} passages: ours {e['ours_per_s']:.1f}/s vs bare encode {e['bare_per_s']:.1f}/s "
          f"= {e['ratio']:.2f}x", flush=True)
    report["build"] = bench_build(args.shared)
    b = report["build"]
    print(f"kb build {b['corpus']} ({b['chunks']} chunks): {b['wall_s']:.0f} s, peak RSS {b['peak_rss_mib']:.0f} MiB", flush=True)
    report["quality"] = bench_quality(args.shared)
    from lm_eval_kinject.retrieval_eval import format_table

    print("Current-events sample:\n" + format_table(report["quality"], [1, 4, 10]), flush=True)
    if not args.skip_hnsw:
        _print_hnsw(report, args)
    args.out.write_text(json.dumps(report, indent=2))


def _print_hnsw(report: dict, args) -> None:
    report["hnsw"] = bench_hnsw(args.shared, args.hnsw_vectors)
    h = report["hnsw"]
    print(f"HNSW on {h['vectors']} x {h['dim']} ({h['queries']} queries): recall@10 {h['recall_at_10']:.4f}, "
          f"{h['hnsw_qps']:.0f} q/s vs exact {h['exact_qps']:.0f} q/s = {h['speedup']:.1f}x "
          f"(build {h['build_s']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
