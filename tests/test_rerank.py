"""Rerankers and the retrieval query: order on a hand-made case, parity between `kb eval` and the models, the cache
key, and each bad setting's one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from kinject_testing import CURRENT_EVENTS_DIR, read_results, run_cli

from lm_eval_kinject.corpus import Document
from lm_eval_kinject.errors import ConfigError, ModelLoadError
from lm_eval_kinject.kb import build_kb
from lm_eval_kinject.rag import Augmenter, RAGConfig
from lm_eval_kinject.retrieval import RetrieverConfig, build_retriever
from lm_eval_kinject.retrieval_eval import evaluate_retrieval, question_query

QUESTIONS = CURRENT_EVENTS_DIR / "questions.jsonl"
QUESTION = "How many people died when two dams collapsed near Derna in Libya?"
# A passage stuffed with the question's words but without its fact, which BM25 ranks first, the passage that answers
# it, and one about something else.
BAIT = "Libya dams: how many dams are near Derna? Many people ask how many dams Libya has and how the dams died down."
GOLD = ("Storm Daniel brought torrential rain to eastern Libya in September 2023. Two dams above the city of Derna "
        "collapsed, and the flood that followed killed more than 4,000 people in the city.")
OTHER = "The orchestra played Beethoven's ninth symphony to a full hall in Vienna on a winter evening."


@pytest.fixture(scope="module")
def derna_kb(tmp_path_factory):
    docs = [Document("bait", "Dams of Libya", BAIT, "test", True), Document("gold", "Storm Daniel", GOLD, "test", True),
            Document("other", "Vienna concert", OTHER, "test", True)]
    return build_kb(docs, tmp_path_factory.mktemp("kb") / "derna", show_progress=False)


@pytest.fixture(scope="module")
def lm_reranker(tmp_path_factory):
    """The embedded LM as a UPR reranker, its score cache in a temporary folder (not the user's cache)."""
    from lm_eval_kinject.rerank import ScoreCache, build_reranker

    reranker = build_reranker("lm")
    reranker.cache = ScoreCache(reranker.cache.identity, tmp_path_factory.mktemp("rerank-cache"))
    return reranker


def test_lm_reranker_puts_the_answering_passage_first(derna_kb, lm_reranker):
    bm25 = build_retriever(derna_kb, RetrieverConfig("bm25")).retrieve([QUESTION], 3)
    assert bm25.ids[0][0] == "bait"  # the first stage is fooled by the shared words
    reranked = build_retriever(derna_kb, RetrieverConfig("bm25", rerank="lm", rerank_depth=3),
                               reranker=lm_reranker).retrieve([QUESTION], 2)
    assert reranked.ids.shape == reranked.scores.shape == (1, 2)
    assert reranked.ids[0][0] == "gold"
    assert reranked.scores[0][0] >= reranked.scores[0][1]
    # the scores are log P(question | passage): negative, and the passage about a concert makes the question least likely
    scores = lm_reranker.score([QUESTION], [[f"Storm Daniel\n{GOLD}", f"Vienna concert\n{OTHER}"]])[0]
    assert scores[0] > scores[1] and np.all(scores < 0)


def test_scores_are_cached_on_disk_reused_by_another_process_and_a_damaged_cache_is_rebuilt(tmp_path, lm_reranker,
                                                                                             caplog):
    import logging

    from lm_eval_kinject.rerank import LMReranker, ScoreCache

    def fresh() -> LMReranker:  # what another process builds: the same model, the cache read from disk
        reranker = LMReranker(lm_reranker.model, lm_reranker.tokenizer)
        reranker.cache = ScoreCache(lm_reranker.cache.identity, tmp_path)
        return reranker

    passages = [[f"Storm Daniel\n{GOLD}", f"Vienna concert\n{OTHER}"]]
    with caplog.at_level(logging.INFO, logger="lm_eval_kinject.rerank"):
        first = fresh().score([QUESTION], passages)[0]
        assert "rerank: 2 (query, passage) pairs" in caplog.text
        caplog.clear()
        second = fresh().score([QUESTION], passages)[0]
        assert "pairs over" not in caplog.text  # nothing computed: every score came from the file
    assert np.array_equal(first, second)
    (path,) = tmp_path.glob("lm-*.json")
    assert len(json.loads(path.read_text())["scores"]) == 2
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="lm_eval_kinject.rerank"):
        again = fresh().score([QUESTION], passages)[0]
    assert "is damaged" in caplog.text and np.allclose(again, first, atol=1e-4)
    assert len(json.loads(path.read_text())["scores"]) == 2


def test_reranker_never_adds_a_chunk_beyond_its_depth(derna_kb, lm_reranker):
    config = RetrieverConfig("bm25", rerank="lm", rerank_depth=1)
    hits = build_retriever(derna_kb, config, reranker=lm_reranker).retrieve([QUESTION], 1)
    assert list(hits.ids[0]) == ["bait"]  # depth 1: only the first stage's top chunk can be returned


def test_query_with_options_is_the_same_in_kb_eval_and_the_models(ce_kb):
    """`kinject kb eval --query options` and kinject-rag's query_with_options=True ask the same query, so they
    retrieve the same chunks."""
    from lm_eval.api.instance import Instance

    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines()][:12]
    augmenter = Augmenter(RAGConfig(kb=str(ce_kb.path), k=4, query_with_options=True), kb=ce_kb)
    for i, q in enumerate(questions):
        request = Instance("loglikelihood", q, ("ctx", " x"), idx=0, metadata=("current_events_cloze", i, 1))
        assert augmenter.query(request) == question_query(q, with_options=True)
        assert all(choice in augmenter.query(request) for choice in q["choices"])
    queries = [question_query(q, with_options=True) for q in questions]
    ours = augmenter.retriever.retrieve(queries, 4)
    theirs = build_retriever(ce_kb, RetrieverConfig("bm25")).retrieve(queries, 4)
    assert (ours.ids == theirs.ids).all()
    rows = evaluate_retrieval(ce_kb, QUESTIONS, [1, 4], ["bm25"], queries=("question", "options"))
    assert [r["query"] for r in rows] == ["question", "options"]
    assert all(r["queries_per_second"] > 0 and r["questions"] == 84 for r in rows)


def test_cache_key_and_provenance_carry_the_reranker(derna_kb, lm_reranker):
    from lm_eval_kinject import rerank

    rerank._LOADED[("lm", "smollm2-135m")] = lm_reranker  # loaded once by the fixture
    plain = Augmenter(RAGConfig(kb=str(derna_kb.path), k=1), kb=derna_kb)
    deep = Augmenter(RAGConfig(kb=str(derna_kb.path), k=1, retriever=RetrieverConfig(rerank="lm", rerank_depth=3)),
                     kb=derna_kb)
    shallow = Augmenter(RAGConfig(kb=str(derna_kb.path), k=1, retriever=RetrieverConfig(rerank="lm", rerank_depth=2)),
                        kb=derna_kb)
    namespaces = {a.cache_namespace() for a in (plain, deep, shallow)}
    assert len(namespaces) == 3
    assert deep.identity()["rerank"] == "lm" and deep.identity()["rerank_depth"] == 3
    assert deep.identity()["rerank_model"] == "smollm2-135m" and "rerank" not in plain.identity()
    # the same settings give the same key in another process's augmenter
    again = Augmenter(RAGConfig(kb=str(derna_kb.path), k=1, retriever=RetrieverConfig(rerank="lm", rerank_depth=3)),
                      kb=derna_kb)
    assert again.cache_namespace() == deep.cache_namespace()


def test_model_args_read_reranker_settings():
    config, rest = RAGConfig.from_model_args({"kb": "x", "k": 2, "rerank": "lm", "rerank_depth": "5",
                                              "pretrained": "p"}, "kinject-rag")
    assert config.retriever.rerank == "lm" and config.retriever.rerank_depth == 5 and rest == {"pretrained": "p"}


@pytest.mark.parametrize("settings,message", [
    ({"rerank": "colbert"}, "rerank='colbert': unknown reranker"),
    ({"rerank": "cross-encoder"}, "name the cross-encoder model"),
    ({"rerank": "lm", "rerank_depth": 0}, "rerank_depth=0: expected a positive integer"),
    ({"retriever": "oracle", "rerank": "lm"}, "the oracle returns the gold chunk"),
])
def test_bad_reranker_settings_are_one_clear_line(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        RetrieverConfig.from_mapping(settings, "retrieval")
    assert "\n" not in str(error.value) and str(error.value).startswith("retrieval: ")


def test_depth_below_k_is_refused_everywhere():
    with pytest.raises(ConfigError, match=r"k=5: more than rerank_depth=3 .*raise rerank_depth to at least 5"):
        RAGConfig(kb="x", k=5, retriever=RetrieverConfig(rerank="lm", rerank_depth=3))
    with pytest.raises(ConfigError, match="kinject-rag: k=4: more than rerank_depth=2"):
        RAGConfig.from_model_args({"kb": "x", "k": 4, "rerank": "lm", "rerank_depth": 2}, "kinject-rag")


def test_missing_cross_encoder_path_is_one_line(tmp_path):
    from lm_eval_kinject.rerank import build_reranker

    with pytest.raises(ModelLoadError, match=r"rerank=cross-encoder:\./no-such-model: no such folder"):
        build_reranker("cross-encoder:./no-such-model")


def test_cross_encoder_reranks_with_sentence_transformers(derna_kb):
    """A CrossEncoder from a local folder (the embedded MiniLM with a fresh one-logit head, seeded): the reranked
    order is the order of its own scores."""
    import torch
    from sentence_transformers import CrossEncoder

    from lm_eval_kinject.index.dense import resolve_embedder
    from lm_eval_kinject.rerank import CrossEncoderReranker

    torch.manual_seed(0)
    model = CrossEncoder(resolve_embedder("all-MiniLM-L6-v2"), num_labels=1, device="cpu")
    reranker = CrossEncoderReranker(model)
    hits = build_retriever(derna_kb, RetrieverConfig("bm25", rerank="cross-encoder:local", rerank_depth=3),
                           reranker=reranker).retrieve([QUESTION], 3)
    texts = {c.chunk_id: f"{c.article}\n{c.text}" for c in derna_kb.chunks}
    direct = model.predict([(QUESTION, texts[i]) for i in hits.ids[0]])
    assert np.all(np.diff(np.asarray(direct).ravel()) <= 1e-6)
    assert np.allclose(hits.scores[0], np.asarray(direct).ravel(), atol=1e-5)


def test_kb_search_and_eval_cli_take_rerankers(derna_kb, tmp_path):
    bad = run_cli(["kinject", "kb", "search", str(derna_kb.path), QUESTION, "--rerank", "colbert"])
    assert bad.returncode != 0 and "unknown reranker" in bad.stderr and "Traceback" not in bad.stderr
    deep = run_cli(["kinject", "kb", "search", str(derna_kb.path), QUESTION, "-k", "3", "--rerank", "lm",
                    "--rerank-depth", "2"])
    assert deep.returncode != 0 and "-k=3: more than rerank_depth=2" in deep.stderr
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q1", "question": QUESTION, "choices": ["4,000", "40", "4", "400"],
                                     "answer": 0, "chunk_id": "gold"}) + "\n")
    out = run_cli(["kinject", "kb", "eval", str(derna_kb.path), str(questions), "-k", "1,2", "--retriever", "bm25",
                   "--rerank", "none,lm", "--rerank-depth", "3"])
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| bm25")]
    assert len(rows) == 4  # (no reranker, lm) x (question, options)
    assert any("| lm@3 | question | 1.000 |" in row for row in rows)
    assert any("| - | question | 0.000 |" in row for row in rows)


def test_stock_lm_eval_cli_reranks_and_records_it(ce_kb, tmp_path):
    """`lm_eval --model kinject-rag` with rerank= in model_args: the reranked chunks reach the prompt, the results'
    provenance names the reranker, and the retrieval log holds the reranked order."""
    log = tmp_path / "retrieval.jsonl"
    out = run_cli(["lm_eval", "--model", "kinject-rag", "--model_args",
                   f"kb={ce_kb.path},k=1,retriever=dense,rerank=lm,rerank_depth=3,retrieval_log={log}",
                   "--tasks", "current_events_cloze", "--limit", "3", "--output_path", str(tmp_path / "out"),
                   "--metadata", json.dumps({"current_events_dir": str(CURRENT_EVENTS_DIR)})])
    assert out.returncode == 0, out.stderr[-3000:]
    kinject = read_results(tmp_path / "out")["config"]["kinject"]  # lm-eval adds the model's get_model_info()
    assert kinject["retriever_settings"] == {"retriever": "dense", "rerank": "lm", "rerank_depth": 3,
                                             "rerank_model": "smollm2-135m"}
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 3 and all(len(r["chunk_ids"]) == 1 for r in records)
    # the logged chunk is the reranker's first choice among dense's top 3
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines()]
    from lm_eval_kinject.rerank import build_reranker

    retriever = build_retriever(ce_kb, RetrieverConfig("dense", rerank="lm", rerank_depth=3),
                                reranker=build_reranker("lm"))
    by_doc = {r["doc_id"]: r["chunk_ids"][0] for r in records}
    hits = retriever.retrieve([questions[i]["question"] for i in sorted(by_doc)], 1)
    assert [by_doc[i] for i in sorted(by_doc)] == list(hits.ids[:, 0])
