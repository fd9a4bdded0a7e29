"""The RAG arm: retrieval inside lm-eval's log-likelihood scoring, on the real model and KB."""
from __future__ import annotations

import json
import shutil

import pytest
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, prefix_cache_off, read_results, run_cli

from lm_eval_kinject.errors import ConfigError, KinjectError, ModelLoadError
from lm_eval_kinject.prompting import TEMPLATES, fit_passages, render_passages, split_context

METADATA = {"mmlu_dir": str(MMLU_DIR), "current_events_dir": str(CURRENT_EVENTS_DIR)}
LIMIT = 10


def _evaluate(lm, task="current_events_cloze", limit=LIMIT, **kwargs):
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager

    return simple_evaluate(model=lm, tasks=[task], limit=limit, task_manager=task_manager(METADATA),
                           bootstrap_iters=0, **kwargs)


def _contexts(sample) -> set[str]:
    """The distinct contexts of one logged sample (a list of argument tuples in memory)."""
    return {args[0] for args in sample["arguments"]}


def test_split_context_finds_the_test_question():
    lettered = "About x.\n\nQ1?\nA. a\nAnswer: A\n\nWhat is Q2?\nA. b\nAnswer:"
    assert split_context(lettered, "What is Q2?") == ("About x.\n\nQ1?\nA. a\nAnswer: A\n\n", "What is Q2?\nA. b\nAnswer:")
    cloze = "About x.\n\nQuestion: What is Q2?\nAnswer:"
    assert split_context(cloze, " What is Q2? ") == ("About x.\n\n", "Question: What is Q2?\nAnswer:")
    assert split_context(cloze, "Something else") is None


def test_fit_passages_cuts_the_last_that_does_not_fit():
    passages = [{"text": "one two three four", "article": "A", "chunk_id": "a"},
                {"text": " ".join(f"w{i}" for i in range(100)), "article": "B", "chunk_id": "b"},
                {"text": "never", "article": "C", "chunk_id": "c"}]

    def count(text):
        return len(text.split())

    def truncate(text, n):
        return " ".join(text.split()[:n])

    kept, cut = fit_passages(passages, TEMPLATES["plain"], 40, count, truncate)
    assert [p["chunk_id"] for p in kept] == ["a", "b"] and cut == 2
    assert count(render_passages(kept, TEMPLATES["plain"])) <= 40 and kept[1]["text"].startswith("w0 w1")
    assert fit_passages(passages, TEMPLATES["plain"], 5, count, truncate) == ([passages[0]], 2)
    assert fit_passages(passages, TEMPLATES["plain"], 0, count, truncate) == ([], 3)


def test_rag_lifts_current_events_and_oracle_is_the_ceiling(rag_lm, kinject_lm):
    """Measured on the first 10 cloze questions: base 0.1, BM25 top-2 0.8, oracle 0.9.

    The margins asserted (RAG >= base + 0.4, oracle >= 0.7) are half the measured gains: a broken
    placement or retrieval drops RAG to the base rate, a fluke of 10 questions does not.
    """
    base = _evaluate(kinject_lm)["results"]["current_events_cloze"]["acc,none"]
    rag = _evaluate(rag_lm)["results"]["current_events_cloze"]["acc,none"]
    assert rag >= base + 0.4, (base, rag)
    assert len(rag_lm.retrieval_records) == LIMIT
    assert all(r["gold_retrieved"] is not None and len(r["chunk_ids"]) == 2 for r in rag_lm.retrieval_records)
    rag_lm.set_retrieval(rag_lm.kb, k=2, retriever="oracle")
    oracle = _evaluate(rag_lm)["results"]["current_events_cloze"]["acc,none"]
    assert oracle >= 0.7
    assert len(rag_lm.retrieval_records) == LIMIT and all(r["gold_retrieved"] for r in rag_lm.retrieval_records)


def test_prompt_layout_and_one_retrieval_per_document(rag_lm):
    out = _evaluate(rag_lm, task="current_events", limit=3, log_samples=True)
    samples = out["samples"]["current_events"]
    for sample in samples:
        contexts = _contexts(sample)
        assert len(contexts) == 1  # every option sees the identical augmented context
        context = contexts.pop()
        question = sample["doc"]["question"].strip()
        assert context.startswith("The following are multiple choice questions (with answers) about current events.\n\n")
        head, tail = context.rsplit(question, 1)
        assert tail.startswith("\nA. ") and tail.endswith("Answer:")
        record = next(r for r in rag_lm.retrieval_records if r["doc_id"] == sample["doc_id"])
        for chunk_id in record["chunk_ids"]:
            assert rag_lm.kb.chunk(chunk_id).text.strip()[:200] in head
    assert len(rag_lm.retrieval_records) == 3  # once per document, not once per option


def test_one_forward_row_per_question_with_rag(rag_lm):
    """Single-token letter continuations: the 4 options share one forward row, with the prefix cache and without."""
    from collections import Counter

    before = Counter(rag_lm.prefix_cache_stats)
    _evaluate(rag_lm, task="current_events", limit=6)
    assert (rag_lm.prefix_cache_stats - before)["rows"] == 6
    rows = []
    original = rag_lm._model_call

    def counting(inps, *args, **kwargs):
        rows.append(inps.shape[0])
        return original(inps, *args, **kwargs)

    rag_lm._model_call = counting
    with prefix_cache_off(rag_lm):
        _evaluate(rag_lm, task="current_events", limit=6)
    assert sum(rows) == 6


def test_passages_are_cut_to_max_length_and_the_question_survives(rag_lm):
    rag_lm._max_length = 300
    out = _evaluate(rag_lm, task="current_events_cloze", limit=4, log_samples=True)
    assert rag_lm.rag_stats["passages_cut"] > 0
    for sample in out["samples"]["current_events_cloze"]:
        context, = _contexts(sample)
        assert len(rag_lm.tok_encode(context)) + max(len(rag_lm.tok_encode(" " + c)) for c in sample["doc"]["choices"]) <= 300
        assert context.endswith("Question: " + sample["doc"]["question"].strip() + "\nAnswer:")


def test_k_zero_is_exactly_the_base_model(rag_lm, kinject_lm):
    rag_lm.set_retrieval(rag_lm.kb, k=0)  # k=0 is the base arm
    ours = _evaluate(rag_lm, limit=4, log_samples=True)["samples"]["current_events_cloze"]
    base = _evaluate(kinject_lm, limit=4, log_samples=True)["samples"]["current_events_cloze"]
    assert [s["resps"] for s in ours] == [s["resps"] for s in base]


def test_generate_until_is_augmented_too(rag_lm):
    from lm_eval.api.instance import Instance

    doc = {"question": "Which hurricane hit Acapulco in October 2023?"}
    request = Instance("generate_until", doc, ("Question: " + doc["question"] + "\nAnswer:",
                                               {"until": ["\n"], "max_gen_toks": 4, "do_sample": False}), 0,
                       metadata=("gen_task", 0, 1))
    out = rag_lm.generate_until([request])
    assert isinstance(out[0], str)
    assert request.arguments[0].endswith("Question: " + doc["question"] + "\nAnswer:")
    assert "Otis" in request.arguments[0].split("Question:")[0]


def test_provenance_in_model_info_and_retrieval_log(rag_lm, tmp_path, ce_kb):
    rag_lm.set_retrieval(rag_lm.kb, k=2, retriever="bm25", retrieval_log=tmp_path / "retrieval.jsonl")
    _evaluate(rag_lm, limit=2)
    records = [json.loads(line) for line in (tmp_path / "retrieval.jsonl").read_text().splitlines()]
    assert [r["doc_id"] for r in records] == [0, 1] and records[0]["task"] == "current_events_cloze"
    info = rag_lm.get_model_info()["kinject"]
    assert info["kb"]["fingerprint"] == ce_kb.manifest["fingerprint"]
    assert (info["retriever"], info["k"], info["template"]) == ("bm25", 2, "plain")


def test_oracle_on_a_task_without_gold_ids_is_refused(rag_lm):
    rag_lm.set_retrieval(rag_lm.kb, k=1, retriever="oracle")
    with pytest.raises(KinjectError, match=r"retriever=oracle needs documents with a gold 'chunk_id'; "
                                           r"task 'kinject_mmlu_cloze_anatomy_0shot' has none"):
        _evaluate(rag_lm, task="kinject_mmlu_cloze_anatomy_0shot", limit=1)


@pytest.mark.parametrize("args,error,expected", [
    ({"kb": "/nonexistent/kb"}, ConfigError, r"no such knowledge-base folder"),
    ({"kb": str(CURRENT_EVENTS_DIR)}, ConfigError, r"is not a knowledge base: no manifest\.json"),
    ({"kb": "x", "retriever": "splade"}, ConfigError,
     r"kinject-rag: retriever='splade': unknown retriever; valid: bm25, dense, hybrid, oracle"),
    ({"kb": "x", "retriever": "bm26"}, ConfigError,
     r"kinject-rag: retriever='bm26': unknown retriever \(did you mean 'bm25'\?\)"),
    ({"kb": "x", "retriever": "hybrid", "rrf_k": 0}, ConfigError, r"kinject-rag: rrf_k=0: expected a positive integer"),
    ({"kb": "x", "k": -1}, ConfigError, r"k=-1: expected a non-negative integer"),
    ({"kb": "x", "k": "abc"}, ConfigError, r"k='abc': expected a non-negative integer"),
    ({"kb": "x", "k": 1.5}, ConfigError, r"k=1.5: expected a non-negative integer"),
    ({"kb": "x", "foo": 1}, ConfigError, r"kinject-rag: unknown model_args key\(s\) \['foo'\]"),
    ({"kb": "x", "template": "fancy"}, ConfigError, r"unknown passage template 'fancy'; valid: plain, titled, context"),
])
def test_bad_rag_arguments_fail_before_the_model_loads(args, error, expected):
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    with pytest.raises(error, match=expected):
        KinjectRAGLM(pretrained="/definitely/not/loaded", **args)


def test_kb_whose_embedder_cannot_be_loaded_offline(ce_kb, tmp_path):
    from lm_eval_kinject.rag_lm import KinjectRAGLM

    copy = tmp_path / "kb"
    shutil.copytree(ce_kb.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["embedder"]["name"] = "someone/not-cached-embedder"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=r"cannot load embedder 'someone/not-cached-embedder'"):
        KinjectRAGLM(pretrained="/definitely/not/loaded", kb=str(copy), retriever="dense")


def test_lm_eval_cli_with_kb_and_finetuned_style_folder(tmp_path, ce_kb, embedded_dir):
    out = run_cli(["lm_eval", "--model", "kinject-rag", "--model_args",
                   f"pretrained={embedded_dir},kb={ce_kb.path},k=1,retriever=hybrid,retrieval_log={tmp_path / 'r.jsonl'}",
                   "--tasks", "current_events_cloze", "--limit", "4", "--output_path", str(tmp_path / "out"),
                   "--metadata", json.dumps({"current_events_dir": str(CURRENT_EVENTS_DIR)})])
    assert out.returncode == 0, out.stderr[-3000:]
    results = read_results(tmp_path / "out")
    assert results["results"]["current_events_cloze"]["acc,none"] >= 0.5
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 4
