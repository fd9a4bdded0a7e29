"""Is a generated question answerable with its chunk, and not trivially without it? Log-likelihood check.

Each question is scored as the ``current_events_cloze`` task scores it (option text after
``Question: ...\\nAnswer:``, lm-eval's ``HFLM.loglikelihood``, unnormalised argmax), once with its
chunk placed before the question (as ``kinject-rag``'s plain template places passages) and once
without. The scoring LM is any model ``kinject`` can load (a preset, a folder, a Hub id); the
embedded 135M model is a weak judge — the counts are reported, and filtering is opt-in.
"""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["make_answerability_check", "cloze_requests"]

DESCRIPTION = "The following are questions (with answers) about current events.\n\n"


def cloze_requests(question: dict, passage: str | None) -> list[tuple[str, str]]:
    """(context, continuation) for each option, with ``passage`` before the question when given."""
    context = DESCRIPTION + (f"{passage.strip()}\n\n" if passage else "") + f"Question: {question['question'].strip()}\nAnswer:"
    return [(context, f" {choice}") for choice in question["choices"]]


def make_answerability_check(chunk_text: dict[str, str], model: str = "smollm2-135m", loaded=None,
                             batch_size: int = 8, device: str = "cpu") -> Callable[[list[dict]], list[dict]]:
    """A function questions -> ``[{"with_chunk": bool, "without_chunk": bool}]``.

    Args:
        chunk_text: chunk_id -> text of every chunk a question may come from.
        model: what to score with; ``loaded`` = (model, tokenizer) already in memory reuses them.
    """
    def check(questions: list[dict]) -> list[dict]:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM

        if loaded is not None:
            lm = HFLM(pretrained=loaded[0], tokenizer=loaded[1], batch_size=batch_size, device=device)
        else:
            from lm_eval_kinject.presets import resolve_pretrained

            lm = HFLM(**resolve_pretrained(model), batch_size=batch_size, device=device)
        requests, spans = [], []
        for question in questions:
            for passage in (chunk_text[question["chunk_id"]], None):
                pairs = cloze_requests(question, passage)
                spans.append((len(requests), len(pairs)))
                requests += [Instance("loglikelihood", {}, pair, len(requests) + i) for i, pair in enumerate(pairs)]
        scores = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        verdicts = []
        for number, question in enumerate(questions):
            correct = []
            for start, count in spans[2 * number: 2 * number + 2]:
                options = scores[start:start + count]
                correct.append(max(range(count), key=options.__getitem__) == question["answer"])
            verdicts.append({"with_chunk": correct[0], "without_chunk": correct[1]})
        return verdicts

    return check
