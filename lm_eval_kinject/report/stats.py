"""Intervals and paired tests over per-question correctness (0/1 per question, same questions per arm).

- ``bootstrap_ci``: percentile bootstrap of the accuracy, resampling questions (seeded).
- ``mcnemar``: the exact McNemar test of two arms on the same questions: under "no difference"
  the discordant questions (right in one arm only) split 50/50, so the p-value is a two-sided
  binomial test on them (scipy). Exact rather than chi-squared: grids often have few discordant pairs.
- ``paired_bootstrap_ci``: the interval of the accuracy difference, resampling question pairs.
- ``known_unknown``: an arm's accuracy on the questions the base model already answered (known) and
  on the others (unknown), after SliCK (Gekhman et al. 2024), so injected knowledge is told apart
  from prior knowledge. "Known" is the base model's log-likelihood choice being right; with four
  options a quarter of truly unknown facts land there by chance.
"""
from __future__ import annotations

import numpy as np

__all__ = ["bootstrap_ci", "mcnemar", "paired_bootstrap_ci", "align", "known_unknown"]

DEFAULT_RESAMPLES = 2000


def bootstrap_ci(correct, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_bootstrap_ci(a, b, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Interval of mean(a) - mean(b) over the same questions."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return bootstrap_ci(diff, resamples, seed, level)


def mcnemar(a, b) -> dict:
    """Exact McNemar test of arms ``a`` and ``b`` (0/1 per question, same order)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p, "significant_gap": significant_gap(discordant)}


def significant_gap(discordant: int, alpha: float = 0.05) -> int | None:
    """The smallest gap |only A - only B|, in questions, at which the exact McNemar test with ``discordant``
    questions won by one arm only reaches p < ``alpha``: what the test could detect at this n and this much
    disagreement. None when no split of so few questions can (fewer than 6 at alpha 0.05)."""
    from scipy.stats import binomtest

    if discordant < 1:
        return None
    for gap in range(discordant % 2, discordant + 1, 2):
        if binomtest((discordant + gap) // 2, discordant, 0.5).pvalue < alpha:
            return gap
    return None


def align(first: dict, second: dict) -> tuple[list[float], list[float]]:
    """Correctness of two cells on the questions both scored (``{"doc_id": [...], "correct": [...]}``), paired by
    the questions' own ids (``question_id``) when both cells have them: ``doc_id`` is a position in the task's
    dataset, and a held-out part numbers its questions from 0 again."""
    key = "question_id" if "question_id" in first and "question_id" in second else "doc_id"
    b = dict(zip(second[key], second["correct"]))
    pairs = [(c, b[d]) for d, c in zip(first[key], first["correct"]) if d in b]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def known_unknown(arm: dict, base: dict) -> dict:
    """``{"known": {"n", "acc"}, "unknown": {"n", "acc"}}`` of ``arm``'s questions, split by ``base``'s
    correctness on the same question (both ``{"doc_id": [...], "correct": [...]}``; questions only
    ``arm`` scored are left out). ``acc`` is None for an empty part."""
    ours, theirs = align(arm, base)
    parts = {"known": [a for a, b in zip(ours, theirs) if b >= 0.5],
             "unknown": [a for a, b in zip(ours, theirs) if b < 0.5]}
    return {name: {"n": len(values), "acc": sum(values) / len(values) if values else None}
            for name, values in parts.items()}
