"""Where retrieved passages go in an lm-eval prompt, and how much of them fits.

An lm-eval context is ``description + few-shot examples + the test document's text``. Passages go
right before the test document's text, so the description and few-shot block stay a prefix shared
by every question of a task. The test text is located from the request's own document: it starts
at the line holding the last occurrence of the document's question (after any label such as
``Question:`` on that line). Passages are cut to a token budget so that the prefix, the question
and every continuation always fit in ``max_length``; nothing else is ever truncated.
"""
from __future__ import annotations

from dataclasses import dataclass

from lm_eval_kinject.errors import ConfigError

__all__ = ["TEMPLATES", "PassageTemplate", "split_context", "render_passages", "fit_passages"]


@dataclass(frozen=True)
class PassageTemplate:
    """How passages are written: ``header`` + each passage as ``item`` + ``footer``."""

    header: str
    item: str  # may use {text}, {article}, {chunk_id}, {rank}
    footer: str = "\n"


TEMPLATES = {
    # the passages as plain paragraphs
    "plain": PassageTemplate(header="", item="{text}\n\n", footer=""),
    # each passage under its article's title
    "titled": PassageTemplate(header="", item="{article}\n{text}\n\n", footer=""),
    # an explicit label, for instruction-tuned models
    "context": PassageTemplate(header="Context:\n", item="{text}\n\n", footer=""),
}


def split_context(context: str, question: str) -> tuple[str, str] | None:
    """Split ``context`` into (shared prefix, test text) at the line holding the last ``question``.

    Returns None when the question does not occur in the context.
    """
    question = question.strip()
    if not question:
        return None
    at = context.rfind(question)
    if at < 0:
        return None
    line_start = context.rfind("\n", 0, at) + 1
    return context[:line_start], context[line_start:]


def render_passages(passages: list[dict], template: PassageTemplate) -> str:
    """The passage block for ``passages`` (dicts with text, article, chunk_id), best first."""
    if not passages:
        return ""
    body = "".join(template.item.format(rank=i + 1, **p) for i, p in enumerate(passages))
    return template.header + body + template.footer


def fit_passages(passages: list[dict], template: PassageTemplate, budget_tokens: int, count_tokens,
                 truncate_tokens) -> tuple[list[dict], int]:
    """Keep passages, best first, until the rendered block fits ``budget_tokens``.

    The first passage that does not fit whole is cut (token-exact, from its end) when a useful part
    of it fits; every later one is dropped. Returns the kept passages and how many were not kept whole.

    Args:
        count_tokens: str -> number of tokens.
        truncate_tokens: (str, n) -> the first n tokens of the string, decoded.
    """
    if budget_tokens <= 0:
        return [], len(passages)
    kept: list[dict] = []
    for i, passage in enumerate(passages):
        if count_tokens(render_passages(kept + [passage], template)) <= budget_tokens:
            kept.append(passage)
            continue
        room = budget_tokens - count_tokens(render_passages(kept + [{**passage, "text": ""}], template))
        if room >= 16:  # a shorter stub would be noise
            text = truncate_tokens(passage["text"], room)
            while text and count_tokens(render_passages(kept + [{**passage, "text": text}], template)) > budget_tokens:
                text = truncate_tokens(text, max(count_tokens(text) - 4, 0))
            if text:
                kept.append({**passage, "text": text})
        return kept, len(passages) - i  # passage i was cut or dropped, and every later one dropped
    return kept, 0


def check_template(name: str) -> PassageTemplate:
    if name not in TEMPLATES:
        raise ConfigError(f"unknown passage template {name!r}; valid: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]
