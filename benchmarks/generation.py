#!/usr/bin/env python
"""Question and paraphrase generation on the current-events sample: pass rates per 100 chunks, throughput, samples.

    .venv/bin/python benchmarks/generation.py --shared ../shared/data --work runs/gen_measure \
        [--llm hf:smollm2-135m,batch_size=16] [--chunks 100] [--n 2] [--check-answerable smollm2-135m]

Runs ``kinject questions`` (4 candidates, keep 2) and ``kinject paraphrase`` on the first ``--chunks``
chunks of the sample through the Python API, with the response cache under ``--work`` (a re-run, or a
run on more chunks, only asks what is new), then prints what passed the checks, why the rest did not,
the LLM's throughput, and 5 accepted questions and paraphrases verbatim. The same script measures a
strong model behind an endpoint: ``--llm openai-compatible:http://HOST:8000/v1,model=NAME``.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("runs/gen_measure"))
    parser.add_argument("--llm", default="hf:smollm2-135m,batch_size=16")
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--n", type=int, default=2, help="paraphrases per chunk")
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--question-max-tokens", type=int, default=600)
    parser.add_argument("--check-answerable", default="smollm2-135m", help="'' to skip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from lm_eval_kinject.generate.paraphrase import ParaphraseConfig
    from lm_eval_kinject.generate.questions import QuestionConfig
    from lm_eval_kinject.generate.run import LLMOptions, open_llm, paraphrase_run, questions_run
    from lm_eval_kinject.generate.sources import load_chunks

    args.work.mkdir(parents=True, exist_ok=True)
    chunks = load_chunks(args.shared / "current_events_sample" / "chunks.jsonl", args.chunks)
    options = LLMOptions(args.llm, cache=args.work / "cache.sqlite")
    llm_cache = open_llm(options)
    q = questions_run(chunks, args.work / "questions", options,
                      QuestionConfig(retries=args.retries, max_tokens=args.question_max_tokens, seed=args.seed),
                      check_model=args.check_answerable or None, llm_cache=llm_cache)
    p = paraphrase_run(chunks, args.work / "paraphrases.jsonl", options,
                       ParaphraseConfig(n=args.n, retries=args.retries, seed=args.seed), llm_cache=llm_cache)
    per100 = 100 / len(chunks)
    print(f"\n{args.llm} on {len(chunks)} chunks of the current-events sample")
    print("| | requests | passed the checks | per 100 chunks | generated tokens | tokens/s |\n|---|---:|---:|---:|---:|---:|")
    for name, m, passed in (("questions", q, q["questions"]), ("paraphrases", p, p["accepted"])):
        calls = m["calls"]
        print(f"| {name} | {calls['fresh'] + calls['cached']} | {passed} | {passed * per100:.1f} | "
              f"{calls['generated_tokens']} | {calls['tokens_per_second']} |")
    print(f"\nquestion candidates: {q['candidates']}; rejected for: {q['rejection_reasons']}")
    print(f"selection fallbacks: {q['selection_fallbacks']}; answerability: {q['answerability']}")
    print(f"paraphrases rejected for: {p['rejection_reasons']}")
    rng = random.Random(args.seed)
    questions = [json.loads(line) for line in (args.work / "questions" / "questions.jsonl").read_text().splitlines()]
    print("\n5 accepted questions:")
    for item in rng.sample(questions, min(5, len(questions))):
        print(json.dumps(item, ensure_ascii=False))
    candidates = [json.loads(line) for line in (args.work / "questions" / "candidates.jsonl").read_text().splitlines()]
    print("\n5 rejected candidates:")
    for item in rng.sample([c for c in candidates if c["status"] == "rejected"],
                           min(5, sum(c["status"] == "rejected" for c in candidates))):
        print(json.dumps(item, ensure_ascii=False)[:600])
    rows = [json.loads(line) for line in (args.work / "paraphrases.jsonl").read_text().splitlines()]
    texts = {c.chunk_id: c.text for c in chunks}
    print("\n5 accepted paraphrases (chunk, then paraphrase):")
    for row in rng.sample(rows, min(5, len(rows))):
        print(json.dumps({"chunk": texts[row["chunk_id"]], "paraphrase": row["paraphrases"][0]}, ensure_ascii=False))
    rejected = [json.loads(line) for line in (args.work / "paraphrases.rejected.jsonl").read_text().splitlines()]
    print("\n5 rejected paraphrases:")
    for item in rng.sample(rejected, min(5, len(rejected))):
        print(json.dumps(item, ensure_ascii=False)[:600])


if __name__ == "__main__":
    main()
