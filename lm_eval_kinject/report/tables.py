"""The paper's tables from report entries: one per experiment, rows (task, model), columns arms.

Each cell: accuracy and its 95 % bootstrap interval; beside a +RAG cell the retriever's recall of
the gold chunk (when the questions name one), beside an FT cell the change on the control tasks
(forgetting). Written as markdown, CSV (one line per cell, every number in its own column) and
LaTeX (booktabs).
"""
from __future__ import annotations

import csv
import io

from lm_eval_kinject.arms import ARMS, PAIRS
from lm_eval_kinject.report.results import Entry
from lm_eval_kinject.report.stats import align, known_unknown, mcnemar, paired_bootstrap_ci

__all__ = ["experiment_table", "markdown_table", "latex_table", "csv_rows", "paired_tests", "known_markdown"]


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
    labels = sorted({label for r in rows.values() for label in r}, key=lambda a: ARMS[a].order)
    return labels, rows


def _cell_text(e: Entry | None, forgetting: dict) -> str:
    if e is None:
        return "–"
    if e.status != "done":
        return e.status if e.status in ("failed", "damaged") else "pending"
    text = f"{e.acc:.3f} [{e.ci[0]:.2f}, {e.ci[1]:.2f}]"
    if e.recall is not None:
        text += f" R@{e.k} {e.recall:.2f}"
    if (f := forgetting.get((e.experiment, e.model, e.arm))) is not None:
        text += f" Δctl {f['delta']:+.3f}"
    return text


def markdown_table(entries: list[Entry], experiment: str, title: str, forgetting: dict) -> str:
    labels, rows = experiment_table(entries, experiment)
    lines = [f"### {title}", "", "| task | model | " + " | ".join(ARMS[a].label for a in labels) + " |",
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
    head = " & ".join(["Task", "Model", *[ARMS[a].label for a in labels]])
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
    """Every claim of ``arms.PAIRS`` that a table row can test: McNemar p and the difference's interval."""
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
             "| experiment | task | model | A | B | acc A | acc B | A − B [95 % CI] | only A / only B | McNemar p | "
             "detectable |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        star = " *" if t["p_value"] < 0.05 else ""
        gap = t.get("significant_gap")
        detectable = "–" if gap is None else f"±{gap / t['n']:.3f}"
        lines.append(f"| {t['experiment']} | {t['task']} | {t['model']} | {ARMS[t['a']].label} | {ARMS[t['b']].label} | "
                     f"{t['acc_a']:.3f} | {t['acc_b']:.3f} | {t['diff']:+.3f} [{t['diff_ci'][0]:+.2f}, "
                     f"{t['diff_ci'][1]:+.2f}] | {t['only_a']} / {t['only_b']} | {t['p_value']:.3g}{star} | "
                     f"{detectable} |")
    lines += ["", "*Exact McNemar test on the questions only one arm got right (two-sided); * p < 0.05, "
                  "uncorrected for the number of tests. Detectable: the smallest |A − B| that reaches p < 0.05 at this "
                  "n with this many questions won by one arm only (– : too few to ever reach it).*"]
    return "\n".join(lines)


def known_splits(entries: list[Entry], experiment: str) -> dict[tuple[str, str], dict[str, dict]]:
    """{(task alias, model): {column: known_unknown(...)}} for the rows whose base cell is finished."""
    _, rows = experiment_table(entries, experiment)
    out = {}
    for row, slot in sorted(rows.items()):
        base = slot.get("base")
        if base is None or base.status != "done":
            continue
        out[row] = {label: known_unknown(e.per_question, base.per_question) for label, e in slot.items()
                    if e.status == "done"}
    return out


def known_markdown(entries: list[Entry], experiment: str, title: str) -> str:
    """Every arm's accuracy on the questions the base model knew and on those it did not (SliCK)."""
    splits = known_splits(entries, experiment)
    if not splits:
        return ""
    labels = sorted({label for row in splits.values() for label in row}, key=lambda a: ARMS[a].order)
    lines = [f"#### {title}: known vs unknown", "",
             "| task | model | part | n | " + " | ".join(ARMS[a].label for a in labels) + " |",
             "|---|---|---|---:|" + "---|" * len(labels)]
    for (task, model), row in splits.items():
        for part in ("known", "unknown"):
            n = next(iter(row.values()))[part]["n"]
            cells = [_rate(row[a][part]["acc"]) if a in row else "–" for a in labels]
            lines.append(f"| {task} | {model} | {part} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "*Known: questions the base model already answered (its log-likelihood choice was right); "
                  "unknown: the others. Injected knowledge shows as accuracy on the unknown part; with four options "
                  "a quarter of unknown facts are guessed right by chance, and land among the known ones.*"]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
