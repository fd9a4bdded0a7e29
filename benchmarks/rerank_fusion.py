#!/usr/bin/env python
"""Where reranking falls short of the 0.95 target, and whether mixing the first stage's score in lifts it: recall@1
on current_events_v2 against the rerank depth, and score mixing with its weight chosen on one half of the questions
and reported on the other.

    .venv/bin/python benchmarks/rerank_fusion.py KB [--shared ../shared/data] [--depth 10] [--out fusion.json]

KB: a knowledge base of the 388 current_events_v2 chunks (e.g. the grid's ``runs/current_events/kb/current_events-*``,
or ``kinject kb build ../shared/data/current_events_v2/chunks.jsonl --out kb/ce``). For each first stage (bm25,
dense, hybrid) the top --depth chunks are reranked by ``rerank=lm`` (scores from the on-disk score cache when
``kinject kb eval --rerank lm`` ran before), then ordered by

- ``first``: the first stage alone; ``lm``: the reranker alone (what ``rerank=lm`` does);
- ``rrf``: reciprocal rank fusion of the two orders (k = 60);
- ``mix a``: a * minmax(first-stage score) + (1 - a) * minmax(reranker score), per query, a in 0.1..0.9.

The questions are split as the grid's ``qa_split`` splits them (by chunk, half and half, seed 0): a weight is chosen
on the ``train`` half (the questions the mixed arms train on) and recall@1 reported on the ``heldout`` half, so no
setting is chosen on the questions it is scored on.

The depth curve (no setting chosen, every question): reranking the top d chunks by the same per-pair scores is what
``rerank_depth=d`` does, so one scoring pass at --depth gives every d below it. For each d: the ceiling (recall@d of
the first stage), recall@1 after reranking, the reranker's accuracy on the questions whose gold chunk it was shown,
and how many of its misorders put a chunk of the gold chunk's own article first. Prints two Markdown tables.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEPTHS = (1, 2, 3, 5, 10, 20, 50)


def minmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kb", type=Path)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from lm_eval_kinject.kb import KnowledgeBase
    from lm_eval_kinject.questions import read_current_events_questions
    from lm_eval_kinject.rerank import build_reranker
    from lm_eval_kinject.retrieval import RetrieverConfig, build_retriever
    from lm_eval_kinject.retrieval_eval import question_query
    from lm_eval_kinject.splits import QuestionSplit

    kb = KnowledgeBase.load(args.kb)
    questions = [q for q in read_current_events_questions(args.shared / "current_events_v2" / "questions.jsonl")
                 if q["chunk_id"] and kb.has_chunk(q["chunk_id"])]
    train_chunks = QuestionSplit(0.5, 0).train_chunks([q["chunk_id"] for q in questions])
    train = np.array([q["chunk_id"] in train_chunks for q in questions])
    gold = np.array([q["chunk_id"] for q in questions], dtype=object)
    texts = [question_query(q) for q in questions]
    reranker = build_reranker("lm")
    depth, ranks = args.depth, np.arange(1, args.depth + 1)
    article = {c.chunk_id: c.article for c in kb.chunks}
    rows, curve = [], []
    for name in ("bm25", "dense", "hybrid"):
        first = build_retriever(kb, RetrieverConfig(name)).retrieve(texts, depth)
        passages = [[f"{c.article}\n{c.text}" if c.article else c.text for c in (kb.chunk(str(i)) for i in row)]
                    for row in first.ids]
        lm = reranker.score(texts, passages)

        def top_of(order_scores, d: int = depth) -> np.ndarray:
            """Each query's first chunk when its top d are ordered by order_scores (ties: the first stage's order)."""
            return np.array([str(row[int(np.argsort(-s[:d], kind="stable")[0])])
                             for row, s in zip(first.ids, order_scores)], dtype=object)

        def hits(order_scores) -> np.ndarray:
            return top_of(order_scores) == gold

        def rrf(q: int) -> np.ndarray:
            lm_rank = np.empty(depth)
            lm_rank[np.argsort(-lm[q], kind="stable")] = ranks
            return 1 / (60 + ranks) + 1 / (60 + lm_rank)

        variants = {"first": hits([-ranks.astype(float)] * len(texts)), "lm": hits(lm),
                    "rrf": hits([rrf(q) for q in range(len(texts))])}
        variants.update({f"mix {a}": hits([a * minmax(first.scores[q]) + (1 - a) * minmax(lm[q])
                                           for q in range(len(texts))]) for a in WEIGHTS})
        for d in [d for d in DEPTHS if d < depth] + [depth]:
            shown = np.array([g in set(map(str, row[:d])) for row, g in zip(first.ids, gold)])
            top = top_of(lm, d)
            wrong = shown & (top != gold)
            curve.append({"first_stage": name, "depth": d, "ceiling": shown.mean(), "reranked": (top == gold).mean(),
                          "accuracy_when_shown": (shown & ~wrong).sum() / max(1, shown.sum()),
                          "misordered": int(wrong.sum()), "misordered_same_article":
                          int(sum(article[t] == article[g] for t, g in zip(top[wrong], gold[wrong])))})
        chosen = max((k for k in variants if k.startswith("mix")), key=lambda k: variants[k][train].mean())
        for key, hit in variants.items():
            rows.append({"first_stage": name, "order": key, "train": hit[train].mean(), "heldout": hit[~train].mean(),
                         "all": hit.mean(), "chosen_on_train": key == chosen})
    print(f"recall@1 on current_events_v2 ({int(train.sum())} train-half / {int((~train).sum())} held-out questions; "
          f"rerank=lm at depth {depth}; * = the mix weight chosen on the train half)\n")
    print("| first stage | order | train half | held-out half | all |\n|---|---|---:|---:|---:|")
    for r in rows:
        mark = " *" if r["chosen_on_train"] else ""
        print(f"| {r['first_stage']} | {r['order']}{mark} | {r['train']:.3f} | {r['heldout']:.3f} | {r['all']:.3f} |")
    print(f"\nrecall@1 against the rerank depth d (rerank=lm; all {len(texts)} questions; no setting chosen)\n")
    print("| first stage | d | ceiling (recall@d) | reranked recall@1 | right when shown the gold chunk "
          "| misordered (same article) |\n|---|---:|---:|---:|---:|---:|")
    for c in curve:
        print(f"| {c['first_stage']} | {c['depth']} | {c['ceiling']:.3f} | {c['reranked']:.3f} | "
              f"{c['accuracy_when_shown']:.3f} | {c['misordered']} ({c['misordered_same_article']}) |")
    if args.out:
        args.out.write_text(json.dumps({"mixing": rows, "depth_curve": curve}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
