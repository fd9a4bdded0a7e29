"""Fine-tuning budgets (a grid's ``sweep:``): each FT arm's budget chosen on validation, and the budget figure.

A swept experiment trains every fine-tuned arm once per combination of the listed settings (learning
rate, epochs, ...). The tables and paired tests compare arms at one budget each: the one with the
lowest *held-out paraphrase loss* (the paper's validation set: paraphrases of the chunks that are never
trained on), ties to fewer training tokens. The scored questions never choose. Closed-book and +RAG
cells of a checkpoint share its choice. The figure draws every budget: accuracy against training
tokens per arm, with intervals, the chosen budget marked, and as horizontal lines the experiment's own
base and RAG cells and the gold-chunk oracle on the same questions (:func:`reference_lines`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject.arms import ARMS, parse_arm, variant
from lm_eval_kinject.report.results import Entry
from lm_eval_kinject.report.stats import align

__all__ = ["Choice", "choose_budgets", "budget_markdown", "budget_figure", "reference_lines"]


@dataclass
class Choice:
    experiment: str
    model: str
    arm: str  # the checkpoint's arm variant without +rag (ft-par3)
    budget: dict
    validation_loss: float | None
    tokens: int | None
    candidates: int  # budgets trained for this arm


def _checkpoint_key(e: Entry) -> tuple[str, str, str]:
    kind, n = parse_arm(e.arm)
    return e.experiment, e.model, variant(ARMS[kind.stem], n)  # the checkpoint's variant: ft-par3+rag -> ft-par3


def _budget_key(budget: dict | None) -> tuple:
    return tuple(sorted((budget or {}).items()))


def choose_budgets(entries: list[Entry]) -> tuple[list[Entry], list[Choice]]:
    """(the entries the tables use: every unswept one and the chosen budget's, the choices).

    An arm whose budgets have no validation loss (no held-out paraphrases) keeps every budget out of the
    tables rather than choose on the scored questions; its choice says so (``budget == {}``).
    """
    swept: dict[tuple, dict[tuple, list[Entry]]] = {}
    for e in entries:
        if e.budget:
            swept.setdefault(_checkpoint_key(e), {}).setdefault(_budget_key(e.budget), []).append(e)
    chosen: set[int] = set()
    choices: list[Choice] = []
    for key, budgets in swept.items():
        scored = []
        for budget, members in budgets.items():
            training = next((m.training for m in members if m.training), None) or {}
            loss = training.get("validation_loss")
            if loss is not None:
                scored.append((loss, training.get("tokens") or 0, budget, members))
        if not scored:
            choices.append(Choice(*key, {}, None, None, len(budgets)))
            continue
        loss, tokens, budget, members = min(scored, key=lambda item: (item[0], item[1]))
        chosen.update(id(m) for m in members)
        choices.append(Choice(*key, dict(budget), loss, tokens, len(budgets)))
    kept = [e for e in entries if not e.budget or id(e) in chosen]
    return kept, choices


def _format_budget(budget: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(budget.items()))


def budget_markdown(choices: list[Choice], experiment: str) -> str:
    """The choices of ``experiment`` as a note under its table (empty without a sweep)."""
    mine = [c for c in choices if c.experiment == experiment]
    if not mine:
        return ""
    lines = ["*Fine-tuned arms at the budget with the lowest held-out paraphrase loss (never chosen on the scored "
             "questions); every budget is in the budget figure:*", ""]
    for c in mine:
        if not c.budget:
            lines.append(f"- {c.model} {c.arm}: no validation loss (no held-out paraphrases), none of its "
                         f"{c.candidates} budgets is in the table")
        else:
            lines.append(f"- {c.model} {c.arm}: {_format_budget(c.budget)} (validation loss {c.validation_loss:.4f}, "
                         f"{c.tokens:,} training tokens; {c.candidates} budgets)")
    return "\n".join(lines)


def budget_figure(entries: list[Entry], choices: list[Choice], experiment: str, title: str,
                  out: Path) -> list[Path]:
    """Accuracy vs training tokens, one line per FT arm variant and (task, model); RAG cells as lines."""
    from lm_eval_kinject.report.figures import _pyplot, _save

    points: dict[tuple, list[Entry]] = {}
    for e in entries:
        if e.experiment == experiment and e.role == "main" and e.status == "done" and e.budget and e.training:
            points.setdefault((e.row, e.arm), []).append(e)
    if not points:
        return []
    picked = {(c.experiment, c.model, c.arm): _budget_key(c.budget) for c in choices}
    rows = sorted({row for row, _ in points})
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(9 * len(rows), 4.5), squeeze=False)
    for ax, row in zip(axes[0], rows):
        arms = sorted({arm for r, arm in points if r == row}, key=lambda a: (ARMS[parse_arm(a)[0].name].order, a))
        for i, arm in enumerate(arms):
            line = sorted(points[(row, arm)], key=lambda e: (e.training["tokens"], _budget_key(e.budget)))
            xs = [e.training["tokens"] for e in line]
            ys = [e.acc for e in line]
            err = [[e.acc - e.ci[0] for e in line], [e.ci[1] - e.acc for e in line]]
            kind = parse_arm(arm)[0]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=f"C{i}", alpha=0.85,
                        linestyle="--" if kind.rag else "-", label=f"{kind.label}{_n(arm)}")
            best = picked.get(_checkpoint_key(line[0]))
            for e in line:
                if best and _budget_key(e.budget) == best:
                    ax.scatter([e.training["tokens"]], [e.acc], marker="*", s=180, color=f"C{i}", zorder=4)
        scored = next(e for arm in arms for e in points[(row, arm)])
        for label, acc, style in reference_lines(entries, experiment, row, scored.per_question):
            ax.axhline(acc, color="black", alpha=0.75, linewidth=1,
                       linestyle={"base": ":", "rag": "-.", "oracle": "-"}[style], label=f"{label} {acc:.3f}")
        ax.set_xscale("log")
        ax.set_xlabel("training tokens (tokens per epoch x epochs)")
        ax.set_ylabel("log-likelihood accuracy")
        ax.set_title(f"{title}: {row[0]} · {row[1]}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the points, not on them
    fig.suptitle("Accuracy vs fine-tuning budget (star: chosen on held-out paraphrase loss)", fontsize=10)
    paths = _save(fig, out, f"budget_{experiment}")
    plt.close(fig)
    return paths


def reference_lines(entries: list[Entry], experiment: str, row: tuple[str, str],
                    questions: dict) -> list[tuple[str, float, str]]:
    """The budget figure's horizontal lines for (task, model) ``row``: ``(label, accuracy, style)`` with style
    ``base``, ``rag`` or ``oracle``.

    The experiment's own base and RAG cells, and every gold-chunk oracle cell on the same row, whatever its
    experiment, scored on the questions the fine-tuned arms were scored on (``questions``: a cell's
    ``per_question``; an oracle that scored more, e.g. every question against a held-out half, is restricted to
    them; one that lacks some of them is left out). Other experiments' RAG variants are not lines: they may be
    scored on other questions, and a line per variant would not say which is which.
    """
    lines: list[tuple[str, float, str]] = []
    done = [e for e in entries if e.role == "main" and e.status == "done" and e.row == row and e.acc is not None]
    for e in sorted((e for e in done if e.experiment == experiment and e.arm in ("base", "base+rag")),
                    key=lambda e: (e.arm, e.retriever or "")):
        if e.arm == "base":
            lines.append(("base", e.acc, "base"))
        else:
            lines.append((f"RAG ({e.retriever or 'bm25'})", e.acc, "oracle" if e.retriever == "oracle" else "rag"))
    n = len(questions.get("correct", ()))
    for e in sorted((e for e in done if e.experiment != experiment and e.arm == "base+rag"
                     and e.retriever == "oracle"), key=lambda e: e.experiment):
        _, theirs = align(questions, e.per_question) if e.per_question else ([], [])
        if n and len(theirs) == n:
            restricted = f", same {n} q" if e.n != n else ""
            lines.append((f"RAG (oracle{restricted})", sum(theirs) / n, "oracle"))
    return lines


def _n(arm: str) -> str:
    n = parse_arm(arm)[1]
    return f" (N = {n})" if n else ""
