"""Scoring through the shared-prefix key/value cache: same numbers as the plain path, less compute."""
from __future__ import annotations

import copy
from collections import Counter

import pytest
from kinject_testing import CURRENT_EVENTS_DIR, prefix_cache_off

from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.prefix_cache import plan, unsupported_reason


def _instances(pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def _both(lm, pairs):
    """(cached, plain) results of the same requests on the same model."""
    cached = lm.loglikelihood(_instances(pairs))
    with prefix_cache_off(lm):
        plain = lm.loglikelihood(_instances(pairs))
    return cached, plain


def _assert_close(cached, plain):
    assert len(cached) == len(plain)
    for (a, greedy_a), (b, greedy_b) in zip(cached, plain):
        assert abs(a - b) < 1e-4 and greedy_a == greedy_b, (a, b)


def test_plan_shares_the_common_prefix_and_computes_identical_rows_once():
    few_shot = list(range(100, 140))  # 40 tokens every question starts with
    requests = []
    for q in range(3):  # lettered: 4 one-token options after the same context
        context = few_shot + [200 + q, 201 + q, 9]
        requests += [(None, context, [50 + option]) for option in range(4)]
    requests.append((None, [7, 8, 9], [1, 2]))  # shares nothing
    groups = plan(requests, max_length=8192, min_shared=16)
    shared = [g for g in groups if g.prefix_len]
    assert len(shared) == 1 and shared[0].prefix_len == 40 and len(shared[0].questions) == 3
    for question in shared[0].questions:
        assert len(question.rows) == 1  # the 4 options need the logits of one and the same input
        (row,) = question.rows.values()
        assert row.rest == (9,) and sorted(c[0] for _, c in row.members) == [50, 51, 52, 53]
    (alone,) = [g for g in groups if not g.prefix_len]
    assert [q.middle for q in alone.questions] == [(7, 8)]  # middle + rest == context + continuation[:-1]
    assert next(iter(alone.questions[0].rows)) == (9, 1)
    # a short common prefix is not worth a group; left truncation follows HFLM's
    assert all(not g.prefix_len for g in plan(requests, max_length=8192, min_shared=41))
    (group,) = plan([(None, list(range(10)), [20, 21])], max_length=6, min_shared=1)
    (question,) = group.questions
    assert question.middle + next(iter(question.rows)) == (5, 6, 7, 8, 9, 20)


def test_token_boundary_merges_and_batch_size_one_give_the_plain_numbers(kinject_lm):
    """The shared text ends mid-word in half the prompts: the token prefix shrinks, the numbers stay."""
    shots = "".join(f"Question: What is {a} plus {b}?\nAnswer: {a + b}\n\n" for a, b in [(2, 3), (4, 4), (7, 1)])
    stems = ["Question: What is 5 plus 5?\nAnswer:", "s Question: Which is larger, 3 or 9?\nAnswer:",
             "ide Question: What colour is the sky?\nAnswer:"]
    pairs = [(shots + "Tr" + stem, option) for stem in stems for option in [" 10", " nine", " blue sky"]]
    encodings = [kinject_lm.tok_encode(context) for context, _ in pairs]
    common = kinject_lm.tok_encode(shots + "Tr")
    assert any(enc[:len(common)] != common for enc in encodings)  # the boundary token merged somewhere
    stats_before = Counter(kinject_lm.prefix_cache_stats)
    cached, plain = _both(kinject_lm, pairs)
    _assert_close(cached, plain)
    used = kinject_lm.prefix_cache_stats - stats_before
    assert used["requests"] == len(pairs) and used["questions"] == 3 and used["tokens_reused"] > 0
    one = copy.copy(kinject_lm)
    one.batch_size_per_gpu = 1
    _assert_close(one.loglikelihood(_instances(pairs)), plain)


def test_peft_adapter_scores_through_the_cache(kinject_lm):
    from peft import LoraConfig, get_peft_model

    adapted = copy.copy(kinject_lm)
    adapted._model = get_peft_model(copy.deepcopy(kinject_lm.model),
                                    LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    pairs = [("The following are facts.\n\nQuestion: Where is Paris?\nAnswer:", option)
             for option in [" France", " in Spain", " the moon"]]
    cached, plain = _both(adapted, pairs)
    _assert_close(cached, plain)
    base = kinject_lm.loglikelihood(_instances(pairs))
    assert max(abs(a[0] - b[0]) for a, b in zip(cached, base)) > 1e-3  # the adapter is really applied


def test_rag_prompts_score_the_same_through_the_cache(rag_lm):
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager

    def run():
        out = simple_evaluate(model=rag_lm, tasks=["current_events_cloze"], limit=6, log_samples=True, bootstrap_iters=0,
                              task_manager=task_manager({"current_events_dir": str(CURRENT_EVENTS_DIR)}))
        return [[r[0][0] for r in s["resps"]] for s in out["samples"]["current_events_cloze"]]

    cached = run()
    with prefix_cache_off(rag_lm):
        plain = run()
    for ours, theirs in zip(cached, plain, strict=True):
        assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-4
        assert ours.index(max(ours)) == theirs.index(max(theirs))


def test_sliding_window_caches_fall_back_unless_the_window_covers_everything():
    from transformers import MistralConfig

    class Model:
        config = MistralConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, num_key_value_heads=2,
                               intermediate_size=64, sliding_window=128)

    assert unsupported_reason(Model(), longest=100) is None
    assert "DynamicSlidingWindowLayer" in unsupported_reason(Model(), longest=500)


def test_prefix_cache_argument_is_checked_before_loading():
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    with pytest.raises(ConfigError, match=r"prefix_cache='yes': expected True or False"):
        KinjectRAGLM(prefix_cache="yes")


def test_rolling_windows_with_empty_middles_score_the_same(kinject_lm):
    """loglikelihood_rolling: first windows have no context but the start token, later ones do."""
    from lm_eval.api.instance import Instance

    short = copy.copy(kinject_lm)
    short._max_length = 24  # several windows per text
    texts = ["The heart pumps blood through the body. " * 4, "Mars is the fourth planet from the Sun, red and cold. " * 3]
    requests = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    cached = short.loglikelihood_rolling(requests)
    with prefix_cache_off(short):
        plain = short.loglikelihood_rolling(requests)
    assert all(abs(a - b) < 1e-3 for a, b in zip(cached, plain)), (cached, plain)
    assert all(value == value for value in cached)  # no NaN from fully padded rows
