"""FT recipe sweep on a fictional world (every fact asked): FT-reg, FT-par N, FT-mix N, each scored on the
held-out half of the questions (split by chunk, seed 0) with a direct cloze scorer equal to the
``kinject_fictional_cloze`` prompt (description + "Question: ...\\nAnswer:", the option text after a space).
Fast enough to try recipes on 2 CPU cores; ``kinject demo`` then runs the chosen one through lm-eval.

    python benchmarks/ft_recipe.py --base
    python benchmarks/ft_recipe.py --arm reg --epochs 10 --lr 3e-4      # or par4, mix4 (N paraphrases)
    python benchmarks/ft_recipe.py --arm par4 --fact-passes 10 --lr 3e-4 # equal token budget with FT-reg
    python benchmarks/ft_recipe.py --events 20 --arm mix3 --epochs 4 --lr 5e-4 --qa-passages 1 --qa-layout chunk \
        --practice-events 30 --no-split   # QA of 30 practice events only; every question of the world scored
    python benchmarks/ft_recipe.py --events 20 --no-split --checkpoint runs/demo/checkpoints/ID  # score a model

Prints one JSON line per run (accuracy, tokens, steps, seconds, losses, per-question correctness).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DESCRIPTION = "The following are questions (with answers) about historical events.\n\n"


def _world(work: Path, events: int, practice: int = 0) -> tuple[Path, Path]:
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.fictional import SLOTS, FictionalConfig, write_world
    from lm_eval_kinject.kb import build_kb, is_kb

    world, kb = work / (f"world{events}" + (f"q{practice}" if practice else "")), work / f"kb{events}"
    if not (world / "manifest.json").is_file():
        write_world(FictionalConfig(seed=0, events=events, paraphrases=11, asked=tuple(SLOTS),
                                    practice_events=practice), world)
    if not is_kb(kb):
        build_kb(read_source(world / "chunks.jsonl"), kb, sources=[str(world / "chunks.jsonl")], show_progress=False)
    return world, kb


def score(model_dir: str, questions: list[dict], batch: int = 32, passages: dict | None = None) -> list[list[float]]:
    """Each question's options' summed log-likelihoods (the best one is the model's answer). With ``passages``
    (chunk_id -> text), the question's gold chunk goes before it as kinject-rag's ``plain`` template puts a
    retrieved passage (oracle RAG, k = 1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    def context(q: dict) -> str:
        passage = f"{passages[q['chunk_id']]}\n\n" if passages else ""
        return DESCRIPTION + passage + f"Question: {q['question'].strip()}\nAnswer:"

    rows = [(tok(context(q))["input_ids"],
             tok(" " + c, add_special_tokens=False)["input_ids"]) for q in questions for c in q["choices"]]
    lls = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            ids = torch.full((len(part), max(len(c) + len(d) for c, d in part)), tok.eos_token_id or 0)
            for j, (c, d) in enumerate(part):
                ids[j, :len(c) + len(d)] = torch.tensor(c + d)
            logp = model(ids).logits.log_softmax(-1)
            lls += [sum(logp[j, len(c) + k - 1, t].item() for k, t in enumerate(d)) for j, (c, d) in enumerate(part)]
    n = len(questions[0]["choices"])
    return [lls[i * n:(i + 1) * n] for i in range(len(questions))]


def accuracy(lls: list[list[float]], questions: list[dict], trained_answers: set | None = None) -> dict:
    """Accuracy, and (with ``trained_answers``: the answers of the training-split QA pairs) how many wrong
    answers are a trained answer, and the accuracy when the distractors that are trained answers are dropped
    (each question then keeps its answer and the distractors no QA pair taught after "Answer:")."""
    chosen = [max(range(len(row)), key=row.__getitem__) for row in lls]
    right = [int(c == q["answer"]) for c, q in zip(chosen, questions)]
    out = {"acc": sum(right) / len(right), "correct": right}
    if trained_answers is not None:
        wrong = [q["choices"][c] for c, q, r in zip(chosen, questions, right) if not r]
        kept = [[i for i, c in enumerate(q["choices"]) if i == q["answer"] or c not in trained_answers]
                for q in questions]
        clean = [int(max(keep, key=row.__getitem__) == q["answer"]) for row, q, keep in zip(lls, questions, kept)]
        share = sum(len(q["choices"]) - len(k) for q, k in zip(questions, kept)) / sum(len(q["choices"]) - 1
                                                                                       for q in questions)
        out.update(wrong_is_trained_answer=f"{sum(c in trained_answers for c in wrong)}/{len(wrong)}",
                   distractors_trained_share=round(share, 3), acc_without_trained_distractors=sum(clean) / len(clean))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--arm", default="reg", help="reg | parN | mixN (N paraphrases)")
    parser.add_argument("--base", action="store_true", help="score the base model only")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--fact-passes", type=float, help="equal budgets: epochs = passes / (1 + N)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("runs/ft_recipe"))
    parser.add_argument("--method", default="full", choices=["full", "lora"])
    parser.add_argument("--qa-repeats", type=int, default=1, help="mix arms: times each QA pair is read per epoch")
    parser.add_argument("--qa-passages", type=float, default=0.0,
                        help="mix arms: share of the QA pairs trained after their gold chunk (RAFT)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2r)")
    parser.add_argument("--rag", action="store_true", help="also score with the gold chunk in the prompt")
    parser.add_argument("--train-fraction", type=float, default=0.5,
                        help="share of the events whose questions mix arms train on (the rest are scored)")
    parser.add_argument("--no-split", action="store_true",
                        help="score every question; mix arms train on practice questions only (--practice-events)")
    parser.add_argument("--practice-events", type=int, default=0,
                        help="mix arms: also train on the QA of this many practice events (never scored)")
    parser.add_argument("--qa-layout", default="pair", choices=["pair", "chunk"],
                        help="with --qa-passages: a passage per QA pair, or one per chunk before all its pairs")
    parser.add_argument("--checkpoint", help="score this model folder instead of training")
    args = parser.parse_args()

    from lm_eval_kinject.presets import resolve_pretrained
    from lm_eval_kinject.questions import read_current_events_questions
    from lm_eval_kinject.splits import QuestionSplit

    world, kb = _world(args.work, args.events, args.practice_events)
    questions = read_current_events_questions(world / "questions.jsonl")
    split = QuestionSplit(args.train_fraction)
    held = questions if args.no_split else split.select(questions, "heldout")
    trained = set() if args.no_split else {q["choices"][q["answer"]] for q in split.select(questions, "train")}
    if args.practice_events:
        trained |= {q["choices"][q["answer"]]
                    for q in read_current_events_questions(world / "practice_questions.jsonl")}
    passages = {c["chunk_id"]: c["text"] for c in map(json.loads, (world / "chunks.jsonl").read_text().splitlines())}
    if args.base or args.checkpoint:
        folder = args.checkpoint or resolve_pretrained("smollm2-135m")["pretrained"]
        closed = accuracy(score(folder, held), held, trained)
        rag = accuracy(score(folder, held, passages=passages), held) if args.rag else None
        print(json.dumps({"arm": args.checkpoint or "base", "n": len(held), **closed,
                          "rag_acc": rag["acc"] if rag else None,
                          "rag_correct": rag["correct"] if rag else None}))
        return
    from lm_eval_kinject.finetune import FinetuneConfig, finetune

    kind, n = args.arm.rstrip("0123456789"), int(args.arm.lstrip("regparmix") or 0)
    out = args.work / (f"ck-{args.events}-{args.arm}-e{args.fact_passes or args.epochs}-lr{args.lr}-b{args.block}"
                       + (f"-lora{args.lora_r}" if args.method == "lora" else "")
                       + (f"-qa{args.qa_repeats}" if kind == "mix" else "")
                       + (f"-psg{args.qa_passages}" if args.qa_passages else "")
                       + (f"-tf{args.train_fraction}" if args.train_fraction != 0.5 and not args.no_split else "")
                       + ("-nosplit" if args.no_split and kind == "mix" else "")
                       + (f"-q{args.practice_events}" if args.practice_events and kind == "mix" else "")
                       + ("-bychunk" if args.qa_layout == "chunk" and args.qa_passages else ""))
    config = FinetuneConfig(kb=str(kb), out=str(out), paraphrases=str(world / "paraphrases.jsonl"), n_paraphrases=n,
                            qa=str(world / "questions.jsonl") if kind == "mix" and not args.no_split else None,
                            qa_practice=str(world / "practice_questions.jsonl")
                            if kind == "mix" and args.practice_events else None,
                            qa_practice_chunks=str(world / "practice_chunks.jsonl")
                            if kind == "mix" and args.practice_events else None,
                            qa_layout=args.qa_layout, epochs=args.epochs,
                            fact_passes=args.fact_passes, learning_rate=args.lr, block_size=args.block,
                            batch_size=args.batch, logging_steps=20, save_steps=1000, show_progress=False,
                            method=args.method, merge=args.method == "lora", qa_repeats=args.qa_repeats,
                            qa_passages=args.qa_passages, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                            qa_train_fraction=args.train_fraction)
    started = time.time()
    meta = finetune(config, resume=True).metadata
    seconds = time.time() - started
    closed = accuracy(score(str(out), held), held, trained)
    rag = accuracy(score(str(out), held, passages=passages), held) if args.rag else None
    training = meta["training"]
    print(json.dumps({"arm": args.arm, "train_fraction": None if args.no_split else args.train_fraction,
                      "practice_events": args.practice_events, "qa_layout": args.qa_layout,
                      "epochs": config.train_epochs,
                      "lr": args.lr, "block": args.block,
                      "n": len(held), "method": args.method, "qa_repeats": args.qa_repeats,
                      "qa_passages": args.qa_passages,
                      "rag_acc": rag["acc"] if rag else None, "rag_correct": rag["correct"] if rag else None,
                      "tokens": meta["data"]["train_tokens_per_epoch"] * config.train_epochs,
                      "steps": training["steps"], "ft_s": round(seconds), "final_loss": training["final_loss"],
                      "val": training["validation"][-1]["eval_loss"] if training["validation"] else None,
                      **closed}))


if __name__ == "__main__":
    main()
