"""The paper's tables from report entries: one per experiment, rows (task, model), columns arms.

Each cell: accuracy and its 95 % bootstrap interval; beside a +RAG cell the retriever's recall of
the gold chunk (when the questions name one), beside an FT cell the change on the control tasks
(forgetting). Written as markdown, CSV (one line per cell, every number in its own column) and
LaTeX (booktabs).
"""
from __future__ import annotations

import csv
import io

from lm_eval_kinject.grid.cells import ARM_ORDER
from lm_eval_kinject.report.results import Entry
from lm_eval_kinject.report.stats import align, mcnemar, paired_bootstrap_ci

__all__ = ["experiment_table", "markdown_table", "latex_table", "csv_rows", "paired_tests", "PAIRS", "LABELS"]

LABELS = {"base": "Base", "base+rag": "Base + RAG", "ft": "FT", "ft+rag": "FT + RAG", "ft-reg": "FT-reg",
          "ft-par": "FT-par", "ft-reg+rag": "FT-reg + RAG", "ft-par+rag": "FT-par + RAG"}
# Claims the paper makes, as (arm A, arm B): "A beats B" is tested on the same questions.
PAIRS = [("base+rag", "base"), ("ft", "base"), ("ft-reg", "base"), ("base+rag", "ft"), ("base+rag", "ft-reg"),
         ("ft+rag", "base+rag"), ("ft-reg+rag", "base+rag"), ("ft-par", "ft-reg"), ("ft-par+rag", "base+rag"),
         ("ft-par", "base")]


def experiment_table(entries: list[Entry], experiment: str) -> tuple[list[str], dict]:
    """(column labels in Table order, {(task alias, model): {label: Entry}}) of the main cells.

    FT-par columns hold the largest paraphrase count; the others are in Figure 4.
    """
    rows: dict[tuple[str, str], dict[str, Entry]] = {}
    for e in entries:
        if e.experiment != experiment or e.role != "main":
            continue
        slot = rows.setdefault(e.row, {})
        current = slot.get(e.label)
        if current is None or (e.n_paraphrases or 0) > (current.n_paraphrases or 0):
            slot[e.label] = e
    labels = [a for a in ARM_ORDER if any(a in r for r in rows.values())]
    return labels, rows


def _cell_text(e: Entry | None, forgetting: dict) -> str:
    if e is None:
        return "–"
    if e.status != "done":
        return "failed" if e.status == "failed" else "pending"
    text = f"{e.acc:.3f} [{e.ci[0]:.2f}, {e.ci[1]:.2f}]"
    if e.recall is not None:
        text += f" R@{e.k} {e.recall:.2f}"
    if (f := forgetting.get((e.experiment, e.model, e.arm))) is not None:
        text += f" Δctl {f['delta']:+.3f}"
    return text


def markdown_table(entries: list[Entry], experiment: str, title: str, forgetting: dict) -> str:
    labels, rows = experiment_table(entries, experiment)
    lines = [f"### {title}", "", "| task | model | " + " | ".join(LABELS[a] for a in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for (task, model), slot in sorted(rows.items()):
        lines.append(f"| {task} | {model} | " + " | ".join(_cell_text(slot.get(a), forgetting) for a in labels) + " |")
    ns = sorted({e.n for slot in rows.values() for e in slot.values() if e.status == "done"})
    pars = sorted({e.n_paraphrases for slot in rows.values() for e in slot.values() if e.n_paraphrases})
    notes = []
    if ns:
        notes.append(f"Accuracy [95 % bootstrap interval over questions]; n = {', '.join(map(str, ns))} questions "
                     "per cell.")
    if any(e.recall is not None for slot in rows.values() for e in slot.values()):
        notes.append("R@k: share of questions whose gold chunk was among the k retrieved.")
    if any(key[0] == experiment for key in forgetting):
        notes.append("Δctl: accuracy change of the fine-tuned model on the control tasks (outside the KB) "
                     "vs the base model, same questions (forgetting when negative).")
    if pars:
        notes.append(f"FT-par: {pars[-1]} paraphrases per chunk (other counts in Figure 4).")
    failed = [e for slot in rows.values() for e in slot.values() if e.status == "failed"]
    notes += [f"Failed: {e.model} {e.arm} {e.task}: {e.error}" for e in failed]
    return "\n".join(lines + [""] + [f"*{n}*" if not n.startswith("Failed") else f"**{n}**" for n in notes])


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def latex_table(entries: list[Entry], experiment: str, title: str) -> str:
    labels, rows = experiment_table(entries, experiment)
    head = " & ".join(["Task", "Model", *[LABELS[a] for a in labels]])
    body = []
    for (task, model), slot in sorted(rows.items()):
        cells = []
        for a in labels:
            e = slot.get(a)
            cells.append("--" if e is None or e.status != "done" else
                         f"{e.acc:.3f} {{\\scriptsize [{e.ci[0]:.2f}, {e.ci[1]:.2f}]}}")
        body.append(" & ".join([_latex_escape(task), _latex_escape(model), *cells]) + r" \\")
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small",
                      r"\begin{tabular}{ll" + "c" * len(labels) + "}", r"\toprule", head + r" \\", r"\midrule",
                      *body, r"\bottomrule", r"\end{tabular}",
                      rf"\caption{{{_latex_escape(title)}: log-likelihood accuracy [95\% bootstrap interval].}}",
                      r"\end{table}", ""])


def csv_rows(entries: list[Entry], forgetting: dict) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["experiment", "role", "task", "alias", "num_fewshot", "model", "arm", "column", "n_paraphrases",
                     "status", "n", "acc", "ci_low", "ci_high", "recall", "k", "forgetting", "error", "cell"])
    for e in entries:
        f = forgetting.get((e.experiment, e.model, e.arm)) if e.role == "main" else None
        writer.writerow([e.experiment, e.role, e.task, e.alias, e.num_fewshot, e.model, e.arm, e.label,
                         e.n_paraphrases, e.status, e.n or "", _num(e.acc), _num(e.ci and e.ci[0]),
                         _num(e.ci and e.ci[1]), _num(e.recall), e.k or "", _num(f and f["delta"]), e.error or "",
                         e.hash])
    return buffer.getvalue()


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def paired_tests(entries: list[Entry], seed: int = 0) -> list[dict]:
    """Every claim of ``PAIRS`` that a table row can test: McNemar p and the difference's interval."""
    out = []
    for experiment in sorted({e.experiment for e in entries}):
        _, rows = experiment_table(entries, experiment)
        for (task, model), slot in sorted(rows.items()):
            for a, b in PAIRS:
                ea, eb = slot.get(a), slot.get(b)
                if not (ea and eb and ea.status == eb.status == "done"):
                    continue
                xa, xb = align(ea.per_question, eb.per_question)
                test = mcnemar(xa, xb)
                low, high = paired_bootstrap_ci(xa, xb, seed=seed)
                out.append({"experiment": experiment, "task": task, "model": model, "a": a, "b": b, "n": len(xa),
                            "acc_a": sum(xa) / len(xa), "acc_b": sum(xb) / len(xb),
                            "diff": (sum(xa) - sum(xb)) / len(xa), "diff_ci": [low, high], **test})
    return out


def paired_markdown(tests: list[dict]) -> str:
    lines = ["### Paired tests (same questions)", "",
             "| experiment | task | model | A | B | acc A | acc B | A − B [95 % CI] | only A / only B | McNemar p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        star = " *" if t["p_value"] < 0.05 else ""
        lines.append(f"| {t['experiment']} | {t['task']} | {t['model']} | {LABELS[t['a']]} | {LABELS[t['b']]} | "
                     f"{t['acc_a']:.3f} | {t['acc_b']:.3f} | {t['diff']:+.3f} [{t['diff_ci'][0]:+.2f}, "
                     f"{t['diff_ci'][1]:+.2f}] | {t['only_a']} / {t['only_b']} | {t['p_value']:.3g}{star} |")
    lines += ["", "*Exact McNemar test on the questions only one arm got right (two-sided); * p < 0.05, "
                  "uncorrected for the number of tests.*"]
    return "\n".join(lines)
