#!/usr/bin/env python
"""Reranking's cost beside a RAG cell's: one process, the same questions, ratios in the same run (issue: retrieval as
a first-class stage; target: reranking <= 10 % of a RAG cell's evaluation time at depth 10).

    .venv/bin/python benchmarks/rerank.py --shared ../shared/data [--limit 60] [--retriever dense] [--depth 10] \
        [--rerank lm] [--out rerank.json]

Steps, on the first --limit questions of current_events_v2 (cloze), each timed: (1) the RAG cell (kinject-rag, BM25,
k = 1, through lm-eval); (2) the first stage alone; (3) the same queries reranked at --depth with a fresh score cache
(every pair computed); (4) again, from the cache. Prints one Markdown table with each step's seconds and its ratio to
the RAG cell, and recall@1 before and after reranking.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--retriever", default="dense")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--rerank", default="lm")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from lm_eval import simple_evaluate

    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb
    from lm_eval_kinject.rag_lm import KinjectRAGLM
    from lm_eval_kinject.registration import task_manager
    from lm_eval_kinject.rerank import ScoreCache, build_reranker
    from lm_eval_kinject.retrieval import RetrieverConfig, build_retriever, recall_at_k

    data = args.shared / "current_events_v2"
    work = Path(tempfile.mkdtemp(prefix="kinject-rerank-bench-"))
    kb = build_kb(read_source(data / "chunks.jsonl"), work / "kb", sources=[str(data / "chunks.jsonl")],
                  show_progress=False)
    questions = [json.loads(line) for line in (data / "questions.jsonl").read_text().splitlines()][:args.limit]
    queries, gold = [q["question"] for q in questions], [q["chunk_id"] for q in questions]

    lm = KinjectRAGLM(device="cpu", batch_size=8, kb=str(kb.path), k=1, retriever="bm25")
    started = time.perf_counter()
    simple_evaluate(model=lm, tasks=["current_events_cloze"], limit=args.limit,
                    task_manager=task_manager({"current_events_dir": str(data)}))
    rag_s = time.perf_counter() - started

    first = RetrieverConfig(args.retriever)
    started = time.perf_counter()
    plain = build_retriever(kb, first).retrieve(queries, 1)
    first_s = time.perf_counter() - started

    reranker = build_reranker(args.rerank)
    if hasattr(reranker, "cache"):
        reranker.cache = ScoreCache(reranker.cache.identity, work / "scores")  # every pair computed
    config = RetrieverConfig(args.retriever, rerank=args.rerank, rerank_depth=args.depth)
    retriever = build_retriever(kb, config, reranker=reranker)
    started = time.perf_counter()
    reranked = retriever.retrieve(queries, 1)
    rerank_s = time.perf_counter() - started
    started = time.perf_counter()
    retriever.retrieve(queries, 1)
    cached_s = time.perf_counter() - started

    rows = [("RAG cell (BM25, k = 1, lm-eval)", rag_s, None), (f"{args.retriever} first stage", first_s,
                                                              recall_at_k(plain.ids, gold, 1)),
            (f"{config.label()} (computed)", rerank_s, recall_at_k(reranked.ids, gold, 1)),
            (f"{config.label()} (score cache)", cached_s, recall_at_k(reranked.ids, gold, 1))]
    print(f"\n{args.limit} questions of current_events_v2\n")
    print("| step | seconds | / RAG cell | recall@1 |\n|---|---:|---:|---:|")
    for name, seconds, recall in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / rag_s:.2f} | {'' if recall is None else f'{recall:.3f}'} |")
    if args.out:
        args.out.write_text(json.dumps([{"step": n, "seconds": s, "recall@1": r} for n, s, r in rows], indent=2))


if __name__ == "__main__":
    main()
