"""Score log-likelihood requests reusing the key/value cache of shared prompt prefixes.

lm-eval scores each (context, continuation) pair as one full sequence: a 5-shot MMLU task
recomputes the same five examples for every option of every question, and a cloze question
recomputes its (retrieval-augmented) context for every option. This module plans the work on
token ids instead:

1. Each request's model input (``context + continuation[:-1]``, left-truncated exactly as
   ``HFLM`` does) is split into a *middle*, whose logits are not needed, and a *rest* (the last
   ``len(continuation)`` tokens), whose logits score the continuation.
2. Requests with the same middle form a *question*; identical (middle, rest) pairs are computed
   once (lettered options: one row per question).
3. Questions are sorted by their middle's tokens and grouped greedily while the group's common
   token prefix stays long (``min_shared`` tokens) and the tokens saved do not shrink; the
   group prefix is computed once (batch 1), each question's remaining middle once on top of it
   (batched, right-padded), and every row's rest on top of its question's cache. Questions that
   share no prefix form one group with an empty prefix (middles still computed once, batched).

Because sharing is decided on token ids, a tokenizer that merges text across the boundary of a
few-shot block simply shares a shorter prefix: results cannot change. Padding inside a cache is
masked and positions are passed explicitly, so log-likelihoods equal the plain path's up to
floating-point summation order (tested: within 1e-4 in fp32, same argmax).
"""
from __future__ import annotations

import copy
import inspect
import logging
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["Row", "Question", "Group", "plan", "unsupported_reason", "score_requests"]


@dataclass
class Row:
    """One forward row: the tokens after its question's middle; members are (request index, ...)."""

    rest: tuple[int, ...]
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, continuation tokens)


@dataclass
class Question:
    middle: tuple[int, ...]  # the whole cacheable part (group prefix included)
    rows: dict[tuple[int, ...], Row] = field(default_factory=dict)


@dataclass
class Group:
    prefix_len: int
    questions: list[Question]


def _lcp(a: tuple, b: tuple) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan(requests, max_length: int, min_shared: int = 16) -> list[Group]:
    """Groups of questions sharing a token prefix, for ``HFLM._loglikelihood_tokens``-style requests."""
    questions: dict[tuple, Question] = {}
    for index, (_, context, continuation) in enumerate(requests):
        seq = (context + continuation)[-(max_length + 1):][:-1]
        cut = len(seq) - len(continuation)
        middle, rest = tuple(seq[:cut]), tuple(seq[cut:])
        question = questions.setdefault(middle, Question(middle))
        question.rows.setdefault(rest, Row(rest)).members.append((index, continuation))
    groups: list[Group] = []
    alone: list[Question] = []  # questions sharing nothing: one group without prefix, batched together

    def close(prefix: tuple, members: list[Question]) -> None:
        if len(members) > 1:
            groups.append(Group(len(prefix), members))
        else:
            alone.extend(members)

    current: list[Question] = []
    prefix: tuple = ()
    for middle in sorted(questions):  # lexicographic: middles sharing a prefix are neighbours
        if current:
            shared, n = _lcp(prefix, middle), len(current)
            if shared >= min_shared and n * shared >= (n - 1) * len(prefix):
                prefix = prefix[:shared]
                current.append(questions[middle])
                continue
            close(prefix, current)
        prefix, current = middle, [questions[middle]]
    close(prefix, current)
    if alone:
        groups.append(Group(0, alone))
    return groups


def unsupported_reason(model, longest: int) -> str | None:
    """Why this model's cache cannot be reused this way (None: it can)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    try:
        layers = DynamicCache(config=config).layers
    except Exception as error:  # noqa: BLE001 - any failure means: not a standard cache
        return f"no standard key/value cache for {type(model).__name__} ({error})"
    for layer in layers:
        if type(layer) is DynamicSlidingWindowLayer and longest < layer.sliding_window:
            continue  # a window longer than every sequence is plain causal attention
        if type(layer) is not DynamicLayer:
            return f"cache layers of type {type(layer).__name__}"
    return None


class _Runner:
    """Forward passes with an optional cache, in the model's dtype and autocast settings."""

    def __init__(self, lm) -> None:
        self.lm, self.model, self.device = lm, lm.model, lm.device
        forward = getattr(lm.model, "get_base_model", lambda: lm.model)().forward
        params = inspect.signature(forward).parameters
        self.keep_last = "logits_to_keep" in params
        # transformers 5 renamed past_key_values to cache; older models and versions take the old name
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def __call__(self, ids, mask, positions, cache, want_logits: bool):
        extra = {} if want_logits or not self.keep_last else {"logits_to_keep": 1}
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.lm.mixed_precision_dtype,
                                             enabled=self.lm.mixed_precision_dtype is not None):
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{self.cache_arg: cache}, **extra)
        cache = out.get("cache", None) if "cache" in out else out.get("past_key_values", None)
        return out.logits, cache


def _padded(seqs, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long, device=device)
        mask[i, :len(s)] = 1
    return ids, mask


def _expand(cache, indices: list[int]):
    """A new cache holding rows ``indices`` of ``cache`` (None stays None)."""
    if cache is None:
        return None
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    out.batch_select_indices(torch.tensor(indices, device=cache.layers[0].keys.device))
    return out


def score_requests(lm, requests, batch_size: int, stats: Counter, min_shared: int = 16, progress=None):
    """(log-likelihood, is_greedy) per request, in order; ``lm`` is a causal ``HFLM``."""
    run = _Runner(lm)
    device = lm.device
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    groups = plan(requests, lm.max_length, min_shared)
    stats["requests"] += len(requests)
    stats["request_tokens"] += sum(min(len(c) + len(x), lm.max_length + 1) - 1 for _, c, x in requests)
    for group in groups:
        stats["questions"] += len(group.questions)
        if group.prefix_len:
            stats["groups"] += 1
            stats["questions_sharing"] += len(group.questions)
            stats["tokens_reused"] += group.prefix_len * (len(group.questions) - 1)
        prefix = group.questions[0].middle[:group.prefix_len]
        prefix_cache = None
        if prefix:
            ids = torch.tensor([prefix], dtype=torch.long, device=device)
            _, prefix_cache = run(ids, torch.ones_like(ids), None, None, want_logits=False)
            stats["tokens_computed"] += len(prefix)
        P = len(prefix)
        questions = sorted(group.questions, key=lambda q: -len(q.middle))
        # Without a prefix, a question with an empty middle would be a row of padding only: a fully
        # masked attention row, whose NaNs would reach the cache. Such questions get batches of their own.
        split = len(questions) if P else sum(1 for q in questions if q.middle)
        batches = [part[i:i + batch_size] for part in (questions[:split], questions[split:])
                   for i in range(0, len(part), batch_size)]
        for batch in batches:
            mids = [q.middle[P:] for q in batch]
            width = max(len(m) for m in mids)
            cache = _expand(prefix_cache, [0] * len(batch))
            mid_mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
            if width:
                ids, mid_mask = _padded(mids, device)
                positions = P + torch.arange(width, device=device).expand(len(batch), -1)
                mask = torch.cat([torch.ones((len(batch), P), dtype=torch.long, device=device), mid_mask], dim=1)
                _, cache = run(ids, mask, positions, cache, want_logits=False)
                stats["tokens_computed"] += sum(len(m) for m in mids)
            rows = [(qi, row) for qi, q in enumerate(batch) for row in q.rows.values()]
            for row_start in range(0, len(rows), batch_size):
                chunk = rows[row_start:row_start + batch_size]
                owners = [qi for qi, _ in chunk]
                ids, rest_mask = _padded([row.rest for _, row in chunk], device)
                mask = torch.cat([torch.ones((len(chunk), P), dtype=torch.long, device=device), mid_mask[owners],
                                  rest_mask], dim=1)
                offsets = torch.tensor([P + len(mids[qi]) for qi in owners], device=device)
                positions = offsets[:, None] + torch.arange(ids.shape[1], device=device)
                logits, _ = run(ids, mask, positions, _expand(cache, owners), want_logits=True)
                stats["rows"] += len(chunk)
                stats["tokens_computed"] += sum(len(row.rest) for _, row in chunk)
                logprobs = F.log_softmax(logits, dim=-1, dtype=lm.softmax_dtype)
                for (_, row), row_logprobs in zip(chunk, logprobs):
                    for index, continuation in row.members:
                        n = len(continuation)
                        lp = row_logprobs[len(row.rest) - n:len(row.rest)]
                        target = torch.tensor(continuation, dtype=torch.long, device=device)
                        greedy = bool((lp.argmax(dim=-1) == target).all())
                        answer = (float(lp.gather(1, target[:, None]).sum()), greedy)
                        results[index] = answer
                        request_str = requests[index][0]
                        if request_str is not None:
                            lm.cache_hook.add_partial("loglikelihood", request_str, answer)
                        if progress is not None:
                            progress.update(1)
    return results
