"""The paper's Figure 2 (every arm over all Table-1-style cells, box plot) and Figure 4 (accuracy
against the number of paraphrases, one line per model), with matplotlib, as PNG and SVG."""
from __future__ import annotations

from pathlib import Path

from lm_eval_kinject.arms import ARMS
from lm_eval_kinject.report.results import Entry
from lm_eval_kinject.report.tables import experiment_table

__all__ = ["figure2", "figure4"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for path in paths:
        tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)
    return paths


def figure2(entries: list[Entry], experiments: list[str], out: Path) -> list[Path]:
    """Box plot of each arm's accuracy over every (task, model) row of ``experiments``; with one row only, a bar
    per arm with its 95 % bootstrap interval (a box of one point says nothing)."""
    plt = _pyplot()
    values: dict[str, list[float]] = {}
    single: dict[str, Entry] = {}
    for experiment in experiments:
        _, rows = experiment_table(entries, experiment)
        for slot in rows.values():
            for label, e in slot.items():
                if e.status == "done":
                    values.setdefault(label, []).append(e.acc)
                    single[label] = e
    labels = sorted(values, key=lambda a: ARMS[a].order)
    if not labels:
        return []
    if all(len(v) == 1 for v in values.values()):
        return _figure2_bars(plt, [single[a] for a in labels], out)
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 1.5, 4))
    ax.boxplot([values[a] for a in labels], tick_labels=[ARMS[a].label for a in labels], showmeans=True)
    for i, a in enumerate(labels, 1):
        ax.scatter([i] * len(values[a]), values[a], s=10, alpha=0.5, color="tab:blue", zorder=3)
    n = max(len(v) for v in values.values())
    ax.set_ylabel("log-likelihood accuracy")
    ax.set_title(f"Every arm over the Table-1-style results (up to {n} task × model results per arm)")
    ax.grid(axis="y", alpha=0.3)
    paths = _save(fig, out, "figure2")
    plt.close(fig)
    return paths


def _figure2_bars(plt, cells: list[Entry], out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(1.3 * len(cells) + 1.5, 4))
    xs = range(len(cells))
    ax.bar(xs, [e.acc for e in cells], color=["tab:orange" if ARMS[e.label].rag else "tab:blue" for e in cells],
           yerr=[[e.acc - e.ci[0] for e in cells], [e.ci[1] - e.acc for e in cells]], capsize=4)
    ax.set_xticks(list(xs), [ARMS[e.label].label for e in cells], rotation=30, ha="right")
    ax.set_ylabel("log-likelihood accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Every arm on {cells[0].alias or cells[0].task} · {cells[0].model} (n = {cells[0].n}; bars: 95 % "
                 "bootstrap interval)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    paths = _save(fig, out, "figure2")
    plt.close(fig)
    return paths


def figure4(entries: list[Entry], experiment: str, title: str, out: Path) -> list[Path]:
    """Accuracy vs paraphrases per chunk (0 = FT-reg), one line per (model, task), base as a dotted line."""
    plt = _pyplot()
    lines: dict[tuple[str, str], dict[int, Entry]] = {}
    bases: dict[tuple[str, str], Entry] = {}
    for e in entries:
        if e.experiment != experiment or e.role != "main" or e.status != "done" or e.arm.endswith("+rag"):
            continue
        training = ARMS[e.label].training
        if training == "chunks":
            lines.setdefault(e.row, {})[0] = e
        elif training == "chunks+paraphrases":
            lines.setdefault(e.row, {})[e.n_paraphrases] = e
        elif training == "none":
            bases[e.row] = e
    lines = {row: points for row, points in lines.items() if any(n > 0 for n in points)}
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    several_tasks = len({task for task, _ in lines}) > 1
    for i, ((task, model), points) in enumerate(sorted(lines.items())):
        color = f"C{i}"
        xs = sorted(points)
        ys = [points[x].acc for x in xs]
        low = [points[x].acc - points[x].ci[0] for x in xs]
        high = [points[x].ci[1] - points[x].acc for x in xs]
        label = f"{model} · {task}" if several_tasks else model
        ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=color, label=label)
        if (task, model) in bases:
            ax.axhline(bases[(task, model)].acc, color=color, linestyle=":", linewidth=1)
    ax.set_xlabel("paraphrases per chunk (0 = FT-reg)")
    ax.set_ylabel("log-likelihood accuracy")
    ax.set_title(f"{title}: accuracy vs paraphrases (dotted: base model)")
    ax.set_xticks(sorted({x for points in lines.values() for x in points}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths = _save(fig, out, f"figure4_{experiment}")
    plt.close(fig)
    return paths
