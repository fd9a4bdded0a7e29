"""Knowledge bases: real corpora, every retriever, safe files, and each bad input's message."""
from __future__ import annotations

import bz2
import csv
import json
import os
from xml.sax.saxutils import escape

import numpy as np
import pytest
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, SHARED_DATA, LoopbackServer, mediawiki_api, run_cli

from lm_eval_kinject.chunking import ChunkConfig, chunk_documents, split_sentences
from lm_eval_kinject.corpus import Document, read_mediawiki, read_source, read_wikipedia_dump
from lm_eval_kinject.errors import ConfigError, DataError, KinjectError
from lm_eval_kinject.index.bm25 import BM25Config, BM25Index, bm25_tokenize, reference_bm25
from lm_eval_kinject.index.dense import DenseConfig, DenseIndex
from lm_eval_kinject.kb import KBConfig, KnowledgeBase, build_kb
from lm_eval_kinject.retrieval import RetrieverConfig, build_retriever
from lm_eval_kinject.retrieval_eval import evaluate_retrieval

QUESTIONS = CURRENT_EVENTS_DIR / "questions.jsonl"


def test_current_events_kb_keeps_gold_chunk_ids(ce_kb):
    assert len(ce_kb) == 388
    gold = {json.loads(line)["chunk_id"] for line in QUESTIONS.read_text().splitlines()}
    assert all(ce_kb.has_chunk(g) for g in gold)
    chunk = ce_kb.chunk("hurricane-otis#5")
    assert chunk.article == "Hurricane Otis" and chunk.doc_id == "hurricane-otis#5"
    manifest = ce_kb.manifest
    assert manifest["embedder"] == {"name": "all-MiniLM-L6-v2", "dimension": 384, "normalized": True,
                                    "max_seq_length": 256}
    assert manifest["tokenizer"] == "embedder:all-MiniLM-L6-v2" and manifest["format_version"] == 1
    assert set(manifest["files"]) >= {"chunks.jsonl", "embeddings.npy", "bm25/params.index.json"}
    assert len(manifest["fingerprint"]) == 64 and manifest["libraries"]["bm25s"]


@pytest.mark.parametrize("retriever,recall_at_4", [("bm25", 0.95), ("dense", 0.85), ("hybrid", 0.95)])
def test_each_retriever_finds_gold_chunks(ce_kb, retriever, recall_at_4):
    row, = evaluate_retrieval(ce_kb, QUESTIONS, [1, 4, 10], [retriever])
    assert row["questions"] == 84 and row["missing_gold"] == 0
    assert row["recall@4"] >= recall_at_4 and row["recall@10"] >= 0.95
    assert row["recall@1"] <= row["recall@4"] <= row["recall@10"] and 0 < row["mrr"] <= 1


def test_search_api_batches_and_shapes(ce_kb):
    reloaded = KnowledgeBase.load(ce_kb.path)
    bm25 = build_retriever(reloaded, RetrieverConfig("bm25"))
    hits = bm25.retrieve(["When did Hurricane Otis make landfall?", "Lahaina wildfire deaths"], 3)
    assert hits.ids.shape == hits.scores.shape == (2, 3)
    assert np.all(np.diff(hits.scores, axis=1) <= 0)
    assert reloaded.chunk(hits.ids[0][0]).article == "Hurricane Otis"
    single = bm25.retrieve(["When did Hurricane Otis make landfall?"], 3)
    assert list(single.ids[0]) == list(hits.ids[0])


def test_k_larger_than_corpus_returns_everything(ce_kb):
    for retriever in ("bm25", "dense", "hybrid"):
        hits = build_retriever(ce_kb, retriever).retrieve(["earthquake in Herat"], 10_000)
        assert hits.ids.shape == (1, 388) and len(set(hits.ids[0])) == 388


@pytest.mark.parametrize("query,k,expected", [("   ", 3, r"query 0: empty query"), ("fire", 0, r"k=0: expected a positive"),
                                              ("fire", "3", r"k='3': expected a positive")])
def test_bad_queries(ce_kb, query, k, expected):
    with pytest.raises(ConfigError, match=expected):
        build_retriever(ce_kb, "dense").retrieve([query], k)


def test_unknown_retriever_lists_valid_ones(ce_kb):
    with pytest.raises(ConfigError, match=r"retriever='splade': unknown retriever; valid: bm25, dense, hybrid, oracle"):
        build_retriever(ce_kb, "splade")
    with pytest.raises(ConfigError, match=r"retriever='hybird': unknown retriever \(did you mean 'hybrid'\?\)"):
        RetrieverConfig("hybird")
    with pytest.raises(ConfigError, match=r"retrieval: fusion_depth=0: expected a positive integer"):
        RetrieverConfig.from_mapping({"retriever": "hybrid", "fusion_depth": 0})


def test_hybrid_settings_and_the_oracle_are_retrievers(ce_kb):
    query = ["Which country did the earthquake in Herat strike?"]
    shallow = build_retriever(ce_kb, RetrieverConfig("hybrid", fusion_depth=5)).retrieve(query, 5)
    deep = build_retriever(ce_kb, RetrieverConfig("hybrid", fusion_depth=100)).retrieve(query, 5)
    parts = {i for name in ("bm25", "dense") for i in build_retriever(ce_kb, name).retrieve(query, 5).ids[0]}
    assert set(shallow.ids[0]) <= parts  # depth 5: only chunks from either ranking's top 5 enter the fusion
    assert not np.allclose(shallow.scores, deep.scores)  # deeper rankings add evidence to the fused scores
    other_k = build_retriever(ce_kb, RetrieverConfig("hybrid", rrf_k=1)).retrieve(query, 5)
    assert not np.allclose(other_k.scores, deep.scores)
    gold = [ce_kb.chunks[7].chunk_id]
    hits = build_retriever(ce_kb, "oracle").retrieve(query, 3, gold=gold)
    assert list(hits.ids[0]) == gold and hits.scores[0][0] == 1.0
    with pytest.raises(ConfigError, match="gold chunk 'nope' is not in"):
        build_retriever(ce_kb, "oracle").retrieve(query, 3, gold=["nope"])


def test_bm25s_matches_rank_bm25_on_a_real_corpus():
    """Same top-10 as the reference on the shared anatomy textbook for every MMLU anatomy question.

    Scores agree up to bm25s' omitted constant (k1 + 1), rank by rank; where chunks tie, their order
    (and which one makes the cut-off) may differ, so ids are compared as sets above the 10th score.
    """
    texts = [json.loads(line)["text"] for line in (SHARED_DATA / "kb" / "anatomy.jsonl").read_text().splitlines()]
    queries = [row[0] for row in csv.reader(open(MMLU_DIR / "test" / "anatomy_test.csv", encoding="utf-8"))]
    config = BM25Config()
    positions, scores = BM25Index.build(texts, config).search(queries, 10)
    reference = reference_bm25(texts, config)
    for q, query in enumerate(queries):
        ref_scores = reference.get_scores(bm25_tokenize(query)) / (config.k1 + 1)
        top = np.argsort(-ref_scores, kind="stable")[:10]
        np.testing.assert_allclose(scores[q], ref_scores[top], rtol=1e-4, atol=1e-5)
        above_cutoff = ref_scores[top] > ref_scores[top[-1]] + 1e-4
        assert set(positions[q][above_cutoff]) == set(top[above_cutoff])  # ties may swap places


def test_hnsw_agrees_with_exact_search(ce_kb):
    vectors = ce_kb.dense.vectors
    queries = ce_kb.embed_queries([json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()])
    exact = DenseIndex.build(vectors, DenseConfig())  # fewer chunks than exact_below: exact search
    assert exact.hnsw is None
    approx = DenseIndex.build(vectors, DenseConfig(exact_below=0))
    exact, exact_scores = exact.search(queries, 10)
    approx, approx_scores = approx.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.98
    np.testing.assert_allclose(approx_scores[:, 0], exact_scores[:, 0], atol=1e-4)


def test_hnsw_index_is_the_same_on_every_build(ce_kb, tmp_path):
    """Seeded and inserted by one thread: hnswlib's parallel insertion gives another graph each time."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        DenseIndex.build(ce_kb.dense.vectors, DenseConfig(exact_below=0)).save(tmp_path / name)
    assert (tmp_path / "a" / DenseIndex.HNSW).read_bytes() == (tmp_path / "b" / DenseIndex.HNSW).read_bytes()
    loaded = DenseIndex.load(tmp_path / "a", DenseConfig(), with_hnsw=True)
    queries = ce_kb.dense.vectors[:5]
    np.testing.assert_array_equal(loaded.search(queries, 1)[0][:, 0], np.arange(5))  # each chunk finds itself


def _docs_folder(root):
    root.mkdir()
    (root / "otters.txt").write_text("Sea otters use stones to crack shellfish. They live in kelp forests.\n")
    (root / "volcano.md").write_text("# Mount Kelvar\n\nMount Kelvar erupted in 1821. Its ash reached the coast.\n")
    (root / "page.html").write_text("<html><head><title>Glass Harbor</title><style>p{}</style></head><body>"
                                    "<p>Glass Harbor was founded by fishers.</p><script>x()</script></body></html>")
    (root / "empty.txt").write_text("   \n")
    return root


def test_folder_kb_with_hnsw_saved_and_loaded(tmp_path):
    source = _docs_folder(tmp_path / "docs")
    config = KBConfig(dense=DenseConfig(exact_below=1))
    kb = build_kb(read_source(source), tmp_path / "kb", config, show_progress=False)
    assert (tmp_path / "kb" / "hnsw.bin").is_file() and kb.manifest["hnsw"]
    assert kb.manifest["counts"]["empty_skipped"] == 1 and len(kb) == 3
    assert {c.article for c in kb.chunks} == {"otters", "Mount Kelvar", "Glass Harbor"}
    assert "x()" not in kb.chunk("page.html").text and "p{}" not in kb.chunk("page.html").text
    hits = build_retriever(KnowledgeBase.load(tmp_path / "kb"), "dense").retrieve(["Which volcano erupted in 1821?"], 1)
    assert hits.ids[0][0] == "volcano.md"
    wider = KnowledgeBase.load(tmp_path / "kb", ef_search=256)  # a session's search beam; the index is unchanged
    assert wider.dense_config.hnsw_ef_search == 256 and wider.manifest["dense"]["hnsw_ef_search"] == 64
    assert build_retriever(wider, "dense").retrieve(["Which volcano erupted in 1821?"], 1).ids[0][0] == "volcano.md"
    with pytest.raises(ConfigError, match="hnsw_ef_search=0: expected a positive integer"):
        KnowledgeBase.load(tmp_path / "kb", ef_search=0)


def _embedder_tokenizer():
    from transformers import AutoTokenizer

    from lm_eval_kinject.index.dense import resolve_embedder

    return AutoTokenizer.from_pretrained(resolve_embedder("all-MiniLM-L6-v2"))


def test_chunking_respects_tokens_sentences_and_overlap():
    tokenizer = _embedder_tokenizer()
    text = " ".join(f"Sentence number {i} tells that the harbour of Vell holds {i * 7} boats." for i in range(60))
    config = ChunkConfig(chunk_tokens=64, overlap_tokens=16)
    chunks, stats = chunk_documents([Document("doc", "Vell", text, "test")], config, tokenizer)
    assert len(chunks) > 5 and [c.chunk_id for c in chunks] == [f"doc#{n}" for n in range(len(chunks))]
    for chunk in chunks:
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 64 + 2
        assert chunk.text.startswith("Sentence number") and chunk.text.endswith("boats.")
    first_last = split_sentences(chunks[0].text)[-1].strip()
    assert chunks[1].text.startswith(first_last)  # the overlap repeats whole sentences
    again, _ = chunk_documents([Document("doc", "Vell", text, "test")], config, tokenizer)
    assert again == chunks


def test_duplicates_are_dropped_and_conflicts_refused():
    tokenizer = _embedder_tokenizer()
    docs = [Document("a", "A", "Same text here.", "f:1"), Document("a", "A", "Same  text here.", "f:2"),
            Document("b", "B", "Same text here.", "f:3")]
    chunks, stats = chunk_documents(docs, ChunkConfig(), tokenizer)
    assert len(chunks) == 1 and stats.duplicate_documents == 1 and stats.duplicate_chunks == 1
    with pytest.raises(DataError, match=r"duplicate id 'a' with different text: f:1 and f:2"):
        chunk_documents([Document("a", "A", "One.", "f:1"), Document("a", "A", "Two.", "f:2")], ChunkConfig(), tokenizer)
    with pytest.raises(DataError, match=r"no text to index: 2 document\(s\), all empty"):
        chunk_documents([Document("a", "A", " ", "f:1"), Document("b", "B", "", "f:2")], ChunkConfig(), tokenizer)


@pytest.mark.parametrize("content,expected", [
    (b'{"id": "a", "text": "fine"}\n{"id": "b", "text": \n', r"corpus\.jsonl:2: not valid JSON"),
    (b'{"id": "a", "text": "fine"}\n{"id": "b", "body": "x"}\n', r"corpus\.jsonl:2: missing field 'text'"),
    (b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n', r"corpus\.jsonl:2: not UTF-8 \(byte offset 52\)"),
])
def test_bad_jsonl_corpus(tmp_path, content, expected):
    (tmp_path / "corpus.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=expected):
        list(read_source(tmp_path / "corpus.jsonl"))


def test_wikipedia_dump_is_cleaned_and_filtered(tmp_path):
    ns = "http://www.mediawiki.org/xml/export-0.10/"
    pages = [("1", "Kelvar Island", "'''Kelvar''' is an [[island]] {{Infobox|x=1}} with 12 lakes.<ref>A book</ref>\n"
              "[[Category:Fictional islands]]"),
             ("2", "Vell", "#REDIRECT [[Kelvar Island]]"),
             ("3", "Otter", "The '''otter''' eats [[shellfish|shell fish]].")]
    body = "".join(f"<page><title>{t}</title><ns>0</ns><id>{i}</id><revision><text>{escape(x)}</text></revision>"
                   "</page>" for i, t, x in pages)
    dump = tmp_path / "dump.xml.bz2"
    dump.write_bytes(bz2.compress(f'<mediawiki xmlns="{ns}">{body}</mediawiki>'.encode()))
    docs = list(read_wikipedia_dump(dump))
    assert [d.title for d in docs] == ["Kelvar Island", "Otter"]
    assert docs[0].text.startswith("Kelvar is an island with 12 lakes.") and "A book" not in docs[0].text
    assert docs[1].text == "The otter eats shell fish."
    assert [d.title for d in read_wikipedia_dump(dump, titles={"Otter"})] == ["Otter"]
    assert [d.title for d in read_wikipedia_dump(dump, category="Fictional islands")] == ["Kelvar Island"]


def test_mediawiki_unreachable_fails_fast_and_clearly():
    with pytest.raises(DataError, match=r"cannot reach the MediaWiki API at http://127\.0\.0\.1:9/.*needs network"):
        list(read_mediawiki(["Hurricane Otis"], api="http://127.0.0.1:9/w/api.php", timeout_s=2))


def test_not_a_kb_half_written_and_newer_format(tmp_path, ce_kb):
    with pytest.raises(ConfigError, match=r"no such knowledge-base folder"):
        KnowledgeBase.load(tmp_path / "missing")
    half = tmp_path / "half"
    half.mkdir()
    (half / "chunks.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"is not a knowledge base: no manifest\.json \(files without a manifest"):
        KnowledgeBase.load(half)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ce_kb.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(KinjectError, match=r"KB format version 99 is newer than .* reads \(1\); upgrade"):
        KnowledgeBase.load(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with open(copy / "embeddings.npy", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(KinjectError, match=r"embeddings\.npy is missing or has the wrong size"):
        KnowledgeBase.load(copy)


def test_loading_with_another_embedder_is_refused(ce_kb):
    with pytest.raises(ConfigError, match=r"built with embedder 'all-MiniLM-L6-v2', not 'bge-small'"):
        KnowledgeBase.load(ce_kb.path, embedder_name="bge-small")


def test_failed_rebuild_leaves_the_old_kb_intact(tmp_path):
    source = _docs_folder(tmp_path / "docs")
    kb = build_kb(read_source(source), tmp_path / "kb", show_progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": "ok"}\nnot json\n')
    with pytest.raises(ConfigError, match="already holds a knowledge base; pass --overwrite"):
        build_kb(read_source(bad), tmp_path / "kb", show_progress=False)
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        build_kb(read_source(bad), tmp_path / "kb", overwrite=True, show_progress=False)
    assert KnowledgeBase.load(tmp_path / "kb").manifest["fingerprint"] == kb.manifest["fingerprint"]
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "docs", "kb"]


def test_kb_cli_build_search_eval_info(tmp_path, ce_kb):
    source = _docs_folder(tmp_path / "docs")
    out = run_cli(["kinject", "kb", "build", str(source), "--out", str(tmp_path / "kb"), "--chunk-tokens", "128",
                   "--overlap", "16", "--exact-below", "1", "--hnsw-m", "8", "--hnsw-ef-search", "40"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 chunks from 4 documents (1 empty skipped" in out.stdout
    dense = json.loads((tmp_path / "kb" / "manifest.json").read_text())["dense"]
    assert (dense["hnsw_m"], dense["hnsw_ef_construction"], dense["hnsw_ef_search"]) == (8, 200, 40)
    out = run_cli(["kinject", "kb", "search", str(tmp_path / "kb"), "Which volcano erupted in 1821?", "-k", "1",
                   "--retriever", "dense", "--ef-search", "100", "--json"])
    assert out.returncode == 0 and json.loads(out.stdout)["chunk_id"] == "volcano.md", out.stderr[-2000:]
    out = run_cli(["kinject", "kb", "search", str(tmp_path / "kb"), "volcano", "--ef-search", "0"])
    assert out.returncode == 2 and "--ef-search" in out.stderr
    out = run_cli(["kinject", "kb", "search", str(ce_kb.path), "Which hurricane hit Acapulco?", "-k", "2",
                   "--retriever", "hybrid", "--json"])
    assert out.returncode == 0, out.stderr[-2000:]
    hits = [json.loads(line) for line in out.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["article"] == "Hurricane Otis"
    out = run_cli(["kinject", "kb", "eval", str(ce_kb.path), str(QUESTIONS), "-k", "1,4,10"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == ("| retriever | rerank | query | recall@1 | recall@4 | recall@10 | MRR@10 "
                                          "| queries/s | questions |")
    assert len(out.stdout.splitlines()) == 8  # 3 retrievers x (the question, the question with its options)
    out = run_cli(["kinject", "kb", "info", str(ce_kb.path)])
    assert out.returncode == 0 and json.loads(out.stdout)["counts"]["chunks"] == 388
    out = run_cli(["kinject", "kb", "search", str(tmp_path / "docs"), "x"])
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "is not a knowledge base" in out.stderr


def test_mediawiki_category_and_titles_through_a_local_api_server():
    """A MediaWiki-API-shaped server on loopback (the true system edge) serving fixture pages."""
    pages = {"Kelvar Island": [(7, "2023-09-01T00:00:00Z", "'''Kelvar Island''' has 12 lakes.<ref>x</ref>\n"
                                                              "== References ==\n* a source")],
             "Vell": [(8, "2023-08-01T00:00:00Z", "Vell was a village."),
                      (9, "2023-12-01T00:00:00Z", "Vell is a [[harbour|harbour town]].")]}
    ids = {"Kelvar Island": 11, "Vell": 12}
    with LoopbackServer(mediawiki_api(pages, {"Fictional places": ["Kelvar Island", "Vell"]}, ids)) as server:
        api = f"{server.url}/w/api.php"
        docs = list(read_mediawiki(category="Fictional places", api=api, timeout_s=5))
        assert [(d.doc_id, d.title, d.text) for d in docs] == [
            ("wiki:11", "Kelvar Island", "Kelvar Island has 12 lakes."), ("wiki:12", "Vell", "Vell is a harbour town.")]
        assert docs[0].source.endswith("curid=11&oldid=7")
        assert [d.title for d in read_mediawiki(["Vell", "Nowhere"], api=api, timeout_s=5)] == ["Vell"]
        # pinned to a date: the revision current then
        assert [d.text for d in read_mediawiki(["Vell"], api=api, as_of="2023-10-01T00:00:00Z")] == ["Vell was a village."]
        category_calls = [r for r in server.requests if r["query"].get("list") == "categorymembers"]
        assert len(category_calls) == 2 and category_calls[1]["query"]["cmcontinue"] == "1"


def test_hugging_face_dataset_source_from_a_local_folder(tmp_path):
    from lm_eval_kinject.corpus import read_hf_dataset

    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"id": "d1", "title": "T", "text": "Some text."}) + "\n")
    docs = list(read_hf_dataset(str(folder), split="train"))
    assert [(d.doc_id, d.title, d.text) for d in docs] == [("d1", "T", "Some text.")]
    with pytest.raises(DataError, match=r"could not load Hugging Face dataset 'no-such/dataset-xyz'"):
        list(read_hf_dataset("no-such/dataset-xyz"))
