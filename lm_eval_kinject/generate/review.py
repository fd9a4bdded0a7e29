"""The manual verification step: export the questions for review, apply the reviewer's verdicts and edits.

``export`` writes a CSV (one row per question: id, keep, question, options A-D, answer letter,
comment, and the chunk it came from) or a read-only markdown listing. The reviewer sets ``keep`` to
``no`` to drop a question and may edit its text, options or answer; ``apply`` re-checks every edited
question with the same automatic checks as generation, refuses the whole file on any problem (naming
the line), then rewrites ``questions.jsonl`` atomically and records the review in the manifest.
"""
from __future__ import annotations

import csv
import datetime
import io
import json
from pathlib import Path

from lm_eval_kinject.artifacts import sha256_file, write_json_atomic, write_jsonl_atomic, write_text_atomic
from lm_eval_kinject.errors import DataError
from lm_eval_kinject.generate.checks import check_question
from lm_eval_kinject.records import read_jsonl

__all__ = ["export_review", "apply_review", "REVIEW_COLUMNS"]

REVIEW_COLUMNS = ("id", "keep", "question", "A", "B", "C", "D", "answer", "comment", "chunk_id", "article", "chunk")
_YES, _NO = {"", "y", "yes", "1", "true", "keep", "ok"}, {"n", "no", "0", "false", "drop"}


def _load(folder: Path) -> tuple[list[dict], dict[str, dict]]:
    folder = Path(folder)
    for name in ("questions.jsonl", "chunks.jsonl"):
        if not (folder / name).is_file():
            raise DataError(f"{folder}: no {name}; expected a folder written by `kinject questions`")
    questions = [r for _, r in read_jsonl(folder / "questions.jsonl", {"id": str, "question": str, "choices": list,
                                                                        "answer": int, "chunk_id": str})]
    chunks = {r["chunk_id"]: r for _, r in read_jsonl(folder / "chunks.jsonl", {"chunk_id": str, "text": str})}
    return questions, chunks


def export_review(folder: Path, out: Path) -> int:
    """Write ``out`` (.csv: editable; .md: for reading); returns the number of questions."""
    questions, chunks = _load(folder)
    out = Path(out)
    if out.suffix.lower() == ".md":
        lines = [f"# Review of {folder}\n", f"{len(questions)} questions. Edit and apply the CSV export; "
                 "this listing is for reading.\n"]
        for q in questions:
            chunk = chunks.get(q["chunk_id"], {})
            lines.append(f"## {q['id']} — {chunk.get('article', '')} (`{q['chunk_id']}`)\n")
            lines.append(f"> {chunk.get('text', '(chunk not found)')}\n")
            lines.append(f"**{q['question']}**\n")
            lines += [f"- {'ABCD'[i]}) " + (f"**{c}** ✓" if i == q["answer"] else c) for i, c in enumerate(q["choices"])]
            lines.append("")
        write_text_atomic(out, "\n".join(lines) + "\n")
        return len(questions)
    if out.suffix.lower() != ".csv":
        raise DataError(f"--export {out}: use a .csv (editable) or .md (reading) file name")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REVIEW_COLUMNS)
    for q in questions:
        chunk = chunks.get(q["chunk_id"], {})
        writer.writerow([q["id"], "yes", q["question"], *q["choices"], "ABCD"[q["answer"]], "", q["chunk_id"],
                         chunk.get("article", ""), chunk.get("text", "")])
    write_text_atomic(out, buffer.getvalue())
    return len(questions)


def apply_review(folder: Path, review: Path) -> dict:
    """Apply a reviewed CSV to ``folder``; returns counts (kept, dropped, edited).

    Raises:
        DataError: not a review CSV, an unknown or repeated id, a bad keep/answer value, or an edited
            question failing the checks — every problem, with its line, in one message.
    """
    folder, review = Path(folder), Path(review)
    if review.suffix.lower() != ".csv":
        raise DataError(f"--apply {review}: only the CSV export can be applied (the markdown one is for reading)")
    questions, chunks = _load(folder)
    by_id = {q["id"]: q for q in questions}
    problems, verdicts = [], {}
    with open(review, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("id", "keep", "question", "A", "B", "C", "D", "answer") if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{review}: not a review CSV, missing column(s) {missing}; export one with --export")
        for row in reader:
            where = f"{review}:{reader.line_num}"
            qid = (row["id"] or "").strip()
            if qid not in by_id:
                problems.append(f"{where}: unknown question id {qid!r}")
                continue
            if qid in verdicts:
                problems.append(f"{where}: question {qid} appears twice")
                continue
            keep = (row["keep"] or "").strip().lower()
            if keep not in _YES | _NO:
                problems.append(f"{where}: keep={row['keep']!r}; expected yes or no")
                continue
            if keep in _NO:
                verdicts[qid] = None
                continue
            answer = (row["answer"] or "").strip().upper()
            if answer not in ("A", "B", "C", "D"):
                problems.append(f"{where}: answer={row['answer']!r}; expected a letter A-D")
                continue
            original = by_id[qid]
            item = {"question": row["question"], "options": [row[c] for c in "ABCD"], "answer": "ABCD".index(answer)}
            chunk = chunks.get(original["chunk_id"], {})
            checked, reasons = check_question(item, chunk.get("text", ""), chunk.get("article", ""))
            if checked is None:
                problems.append(f"{where}: question {qid} fails the checks: {'; '.join(reasons)}")
                continue
            verdicts[qid] = {**original, **checked}
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the review, nothing applied:\n  " + "\n  ".join(problems))
    kept, edited = [], 0
    for q in questions:
        verdict = verdicts.get(q["id"], q)  # a question missing from the CSV is kept unchanged
        if verdict is None:
            continue
        edited += verdict != q
        kept.append(verdict)
    write_jsonl_atomic(folder / "questions.jsonl", kept)
    summary = {"file": str(review), "sha256": sha256_file(review),
               "applied": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "reviewed": len(verdicts), "kept": len(kept), "dropped": len(questions) - len(kept), "edited": edited}
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("reviews", []).append(summary)
    write_json_atomic(manifest_path, manifest)
    return summary
