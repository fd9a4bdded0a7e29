"""Question and paraphrase generation, against real servers on loopback and the embedded model.

The LLM endpoint and the MediaWiki API are the true system edges: tests start an OpenAI-compatible
server and a MediaWiki-API-shaped server on 127.0.0.1 (``kinject_testing.LoopbackServer``) whose
answers are fixed completions — real questions and paraphrases of the shared current-events sample
(written by a strong LLM) and deliberately broken ones — so every check, retry and rejection path is
exercised through the official ``openai`` client and HTTP. The ``hf:`` backend and the
answerability check run the embedded SmolLM2-135M-Instruct.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from kinject_testing import CURRENT_EVENTS_DIR, LoopbackServer, chat_completion, mediawiki_api, run_cli

from lm_eval_kinject.errors import ConfigError, DataError
from lm_eval_kinject.generate.checks import check_question, extract_json, missing_facts
from lm_eval_kinject.generate.llm import LLMError, make_llm
from lm_eval_kinject.generate.paraphrase import ParaphraseConfig
from lm_eval_kinject.generate.questions import QuestionConfig
from lm_eval_kinject.generate.run import LLMOptions, paraphrase_run, questions_run

CHUNKS = {json.loads(line)["chunk_id"]: json.loads(line)
          for line in (CURRENT_EVENTS_DIR / "chunks.jsonl").read_text().splitlines()}
PARAPHRASES = {json.loads(line)["chunk_id"]: json.loads(line)["paraphrases"]
               for line in (CURRENT_EVENTS_DIR / "paraphrases.jsonl").read_text().splitlines()}
QUESTIONS = [json.loads(line) for line in (CURRENT_EVENTS_DIR / "questions.jsonl").read_text().splitlines()]


def _questions_of(chunk_id: str) -> list[dict]:
    return [{"question": q["question"], "options": q["choices"], "answer": q["answer"]}
            for q in QUESTIONS if q["chunk_id"] == chunk_id][:2]


def _usable(chunk_id: str) -> bool:
    text = CHUNKS[chunk_id]["text"]
    return (len(_questions_of(chunk_id)) == 2 and all(check_question(q, text)[0] for q in _questions_of(chunk_id))
            and all(not missing_facts(text, p) for p in PARAPHRASES[chunk_id][:3]))


# three chunks whose two real questions and first three real paraphrases pass the checks
PICKED = [cid for cid in PARAPHRASES if _usable(cid)][:3]


def _chunk_in(prompt: str) -> str:
    return next(cid for cid in PICKED if CHUNKS[cid]["text"][:80] in prompt)


class ScriptedLLM:
    """The server's brain: fixed completions keyed on what the prompt asks, with scripted faults."""

    def __init__(self, faults: list[tuple[int, dict]] | None = None) -> None:
        self.faults = list(faults or [])  # (status, headers) answered before any real answer
        self.calls: dict[str, int] = {}

    def __call__(self, method, path, query, body):
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}, {}
        if self.faults:
            status, headers = self.faults.pop(0)
            return status, {"error": {"message": f"scripted {status}", "type": "test"}}, headers
        prompt = body["messages"][-1]["content"]
        if prompt.startswith("Here are multiple-choice questions"):
            return 200, chat_completion("I pick: [2, 1]"), {}
        cid = _chunk_in(prompt)
        kind = "questions" if "multiple-choice questions" in prompt else "paraphrase"
        n = self.calls[f"{kind}:{cid}"] = self.calls.get(f"{kind}:{cid}", 0) + 1
        if kind == "questions":
            if cid == PICKED[0] and n == 1:
                return 200, chat_completion("Sure! Here are some questions about the passage."), {}
            real = _questions_of(cid)
            broken = [{"question": real[0]["question"], "options": real[0]["options"][:3], "answer": 0},
                      {"question": "According to the passage, what happened in the text?",
                       "options": ["a", "b", "c", "d"], "answer": 1},
                      {**real[1], "answer": 7}]
            third = {**real[0], "question": "Name the right answer: " + real[0]["question"]}  # valid, not picked
            text = "```json\n" + json.dumps([broken[0], real[0], broken[1], real[1], third, broken[2]]) + "\n```"
            return 200, chat_completion(text, tokens=300), {}
        good = PARAPHRASES[cid]
        if cid == PICKED[1] and n == 1:  # a lossy answer first: a number changed
            return 200, chat_completion(good[0].replace("2023", "2022")), {}
        if cid == PICKED[2] and n == 1:  # a copy of the chunk is not a paraphrase
            return 200, chat_completion("Here is the paraphrase: " + CHUNKS[cid]["text"]), {}
        return 200, chat_completion(good[(n - 1) % len(good)], tokens=120), {}


@pytest.fixture()
def chunks_file(tmp_path) -> Path:
    path = tmp_path / "chunks.jsonl"
    path.write_text("".join(json.dumps(CHUNKS[cid]) + "\n" for cid in PICKED))
    return path


def test_llm_specs_and_configs_fail_clearly(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="KIND:TARGET"):
        make_llm("gpt-4o")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        make_llm("openai:gpt-4o")
    with pytest.raises(ConfigError, match="name the served model"):
        make_llm("openai-compatible:http://127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="MY_KEY.*not set"):
        make_llm("openai-compatible:http://127.0.0.1:8000/v1,model=x,key_env=MY_KEY")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['modle'\]"):
        make_llm("openai-compatible:http://127.0.0.1:8000/v1,modle=x")
    with pytest.raises(ConfigError, match="unknown kind 'anthropic'"):
        make_llm("anthropic:claude")
    with pytest.raises(ConfigError, match="--keep 3 is larger than --per-chunk 2"):
        QuestionConfig(per_chunk=2, keep=3)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    llm = make_llm("openai:gpt-4o")
    assert llm.name == "openai:gpt-4o" and "sk-secret" not in json.dumps(llm.describe())


def test_checks_on_real_paraphrases_and_broken_questions():
    chunk = CHUNKS[PICKED[0]]["text"]
    good = PARAPHRASES[PICKED[0]][0]
    assert missing_facts(chunk, good) == []
    assert "2023" in missing_facts(chunk, good.replace("2023", "2022"))
    # across the sample, the strong LLM's paraphrases mostly keep every fact by our check
    kept = [not missing_facts(CHUNKS[cid]["text"], p) for cid, ps in PARAPHRASES.items() for p in ps]
    assert sum(kept) / len(kept) > 0.8
    from lm_eval_kinject.generate.paraphrase import check_paraphrase

    config = ParaphraseConfig()
    assert check_paraphrase(chunk, good, [], config) == []
    sentences = chunk.split(". ")
    cut = ". ".join(sentences[: max(2, int(len(sentences) * 0.7))])  # extractive: cut from the chunk
    assert any("not reworded" in r for r in check_paraphrase(chunk, cut, [], config))
    looped = f"{good} {' '.join(good.split()[:15])}"  # a small model restating its start
    assert any("repeats itself" in r for r in check_paraphrase(chunk, looped, [], config))
    assert any("near-duplicate" in r for r in check_paraphrase(chunk, good, [good], config))
    # ... and its questions pass the question checks (measured: 83 of 84; the chunk spells "USSCarney")
    passing = [check_question({"question": q["question"], "options": q["choices"], "answer": q["answer"]},
                              CHUNKS[q["chunk_id"]]["text"], CHUNKS[q["chunk_id"]]["article"])[0] for q in QUESTIONS]
    assert sum(p is not None for p in passing) >= 80
    real = _questions_of(PICKED[0])[0]
    assert check_question(real, chunk)[0]["answer"] == real["answer"]
    cases = {"needs exactly 4 options, got 3": {**real, "options": real["options"][:3]},
             "is not an index 0-3": {**real, "answer": 4},
             "not 4 distinct": {**real, "options": [real["options"][0]] * 4},
             "refers to the passage": {**real, "question": "According to the passage, " + real["question"]},
             "not supported by the chunk": {**real, "options": ["Zorblax", "Quintar", "Vellamy", "Oskarin"]}}
    for reason, item in cases.items():
        question, reasons = check_question(item, chunk)
        assert question is None and any(reason in r for r in reasons), (reason, reasons)
    assert extract_json('Sure!\n```json\n[{"a": 1}]\n```') == [{"a": 1}]
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_questions_and_paraphrases_through_an_openai_compatible_server(chunks_file, tmp_path, monkeypatch):
    from lm_eval_kinject.questions import load_current_events

    monkeypatch.setenv("TEST_LLM_KEY", "sk-do-not-leak")
    brain = ScriptedLLM(faults=[(429, {"retry-after-ms": "10"}), (503, {"retry-after-ms": "10"})])
    with LoopbackServer(brain) as server:
        options = LLMOptions(f"openai-compatible:{server.url}/v1,model=test-model,key_env=TEST_LLM_KEY",
                             concurrency=2, max_retries=3, timeout_s=10, cache=tmp_path / "cache.sqlite")
        out = tmp_path / "ce"
        manifest = questions_run(chunks_file, out, options, QuestionConfig(per_chunk=4, keep=2, retries=1),
                                 show_progress=False)
        first_calls = len(server.requests)
        assert all(r["headers"]["authorization"] == "Bearer sk-do-not-leak" for r in server.requests)
        # 429 and 503 were retried by the client, not reported
        assert manifest["calls"]["failed"] == 0
        questions = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
        assert len(questions) == 6 and {q["chunk_id"] for q in questions} == set(PICKED)
        by_text = {q["question"]: q for q in QUESTIONS}
        for q in questions:  # the real questions survived, re-balanced, answers still right
            original = by_text[q["question"]]
            assert q["choices"][q["answer"]] == original["choices"][original["answer"]]
            assert sorted(q["choices"]) == sorted(original["choices"])
        positions = manifest["answer_positions"]
        assert max(positions.values()) - min(positions.values()) <= 1
        assert [q["id"] for q in questions] == [f"q-{i:04d}" for i in range(1, 7)]
        # the malformed first answer was retried; each broken candidate is recorded with its reason
        candidates = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
        reasons = [r for c in candidates for r in c["reasons"]]
        assert any(r.startswith("not JSON") for r in reasons)
        for expected in ("needs exactly 4 options, got 3", "refers to the passage/article/text",
                         "answer 7 is not an index 0-3, a letter A-D or one of the options"):
            assert expected in reasons
        assert manifest["requests"] == 4 and manifest["selection_fallbacks"] == 0
        assert manifest["llm"]["name"] == f"openai-compatible:{server.url}/v1,model=test-model"
        ds = load_current_events(current_events_dir=str(out))["test"]
        assert len(ds) == 6

        par = paraphrase_run(chunks_file, tmp_path / "par.jsonl", options, ParaphraseConfig(n=2, retries=1),
                             show_progress=False)
        rows = [json.loads(line) for line in (tmp_path / "par.jsonl").read_text().splitlines()]
        assert [r["chunk_id"] for r in rows] == PICKED and all(len(r["paraphrases"]) == 2 for r in rows)
        assert all(p in PARAPHRASES[r["chunk_id"]] for r in rows for p in r["paraphrases"])
        rejected = [json.loads(line) for line in (tmp_path / "par.rejected.jsonl").read_text().splitlines()]
        assert {r["chunk_id"] for r in rejected} == {PICKED[1], PICKED[2]}
        assert any("'2023'" in reason for r in rejected for reason in r["reasons"])
        assert any("not reworded" in reason for r in rejected for reason in r["reasons"])
        assert par["accepted"] == 6 and par["rejected"] == 2 and par["incomplete_chunks"] == {}
        from lm_eval_kinject.finetune.data import read_paraphrases

        assert len(read_paraphrases(tmp_path / "par.jsonl")) == 3

        # a re-run is answered from the cache: no new request reaches the server
        before = len(server.requests)
        again = questions_run(chunks_file, tmp_path / "ce2", options, QuestionConfig(per_chunk=4, keep=2, retries=1),
                              show_progress=False)
        assert len(server.requests) == before and again["calls"]["cached"] == first_calls - 2  # minus the 2 faults
        assert (tmp_path / "ce2" / "questions.jsonl").read_text() == (out / "questions.jsonl").read_text()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".sqlite"):
            assert b"sk-do-not-leak" not in path.read_bytes(), path


def test_endpoint_errors_are_clear(chunks_file, tmp_path):
    config = QuestionConfig(per_chunk=4, keep=2)
    with LoopbackServer(lambda *a: (401, {"error": {"message": "Incorrect API key provided"}}, {})) as server:
        options = LLMOptions(f"openai-compatible:{server.url}/v1,model=m", max_retries=0, use_cache=False)
        with pytest.raises(LLMError, match=r"HTTP 401, the API key was refused \(no key_env given\): Incorrect API"):
            questions_run(chunks_file, tmp_path / "a", options, config, show_progress=False)
    with LoopbackServer(lambda *a: (429, {"error": {"message": "slow down"}}, {"retry-after-ms": "5"})) as server:
        options = LLMOptions(f"openai-compatible:{server.url}/v1,model=m", max_retries=2, use_cache=False)
        with pytest.raises(LLMError, match=r"still rate-limited \(HTTP 429\) after 2 retries"):
            questions_run(chunks_file, tmp_path / "b", options, config, show_progress=False)
        assert len(server.requests) == 3 * 3  # 3 chunks in flight, each tried once and retried twice
    closed = LoopbackServer(lambda *a: (200, {}, {}))
    port_url = closed.url
    closed._server.server_close()
    options = LLMOptions(f"openai-compatible:{port_url}/v1,model=m", max_retries=0, timeout_s=5, use_cache=False)
    with pytest.raises(LLMError, match="cannot reach .* is the server running"):
        questions_run(chunks_file, tmp_path / "c", options, config, show_progress=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no chunks with text"):
        questions_run(empty, tmp_path / "d", options, config, show_progress=False)
    result = run_cli(["kinject", "questions", str(chunks_file), "--per-chunk", "2", "--keep", "3", "--llm",
                      "hf:smollm2-135m", "--out", str(tmp_path / "e")])
    assert result.returncode == 1 and "--keep 3 is larger than --per-chunk 2" in result.stderr


def test_review_round_trip(chunks_file, tmp_path):
    out = tmp_path / "ce"
    with LoopbackServer(ScriptedLLM()) as server:
        options = LLMOptions(f"openai-compatible:{server.url}/v1,model=m", use_cache=False)
        questions_run(chunks_file, out, options, QuestionConfig(), show_progress=False)
    review = tmp_path / "review.csv"
    result = run_cli(["kinject", "questions", "review", str(out), "--export", str(review)])
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(review.open(encoding="utf-8")))
    assert len(rows) == 6 and rows[0]["chunk"] == CHUNKS[rows[0]["chunk_id"]]["text"]
    rows[0]["keep"] = "no"
    rows[1]["answer"] = "ABCD"[(("ABCD".index(rows[1]["answer"])) + 1) % 4]  # a reviewer's correction
    wrong = next(letter for letter in "ABCD" if letter != rows[2]["answer"])
    other = next(letter for letter in "ABCD" if letter not in (wrong, rows[2]["answer"]))
    rows[2][wrong] = rows[2][other]  # a broken edit: two equal options
    rows[3]["keep"] = "maybe"

    def write(rows):
        with review.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write(rows)
    before = (out / "questions.jsonl").read_text()
    result = run_cli(["kinject", "questions", "review", str(out), "--apply", str(review)])
    assert result.returncode == 1 and "2 problem(s) in the review, nothing applied" in result.stderr
    assert re.search(rf"{re.escape(str(review))}:\d+: question {rows[2]['id']} fails the checks: options are not 4 "
                     "distinct", result.stderr)
    assert re.search(rf"{re.escape(str(review))}:\d+: keep='maybe'; expected yes or no", result.stderr)
    assert (out / "questions.jsonl").read_text() == before  # nothing applied
    rows[2][wrong], rows[3]["keep"] = "Something else entirely", "yes"
    write(rows)
    result = run_cli(["kinject", "questions", "review", str(out), "--apply", str(review)])
    assert result.returncode == 0, result.stderr
    assert "5 kept, 1 dropped, 2 edited" in result.stdout
    after = {json.loads(line)["id"]: json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()}
    assert rows[0]["id"] not in after and after[rows[1]["id"]]["answer"] == "ABCD".index(rows[1]["answer"])
    assert json.loads((out / "manifest.json").read_text())["reviews"][0]["dropped"] == 1
    md = tmp_path / "review.md"
    assert run_cli(["kinject", "questions", "review", str(out), "--export", str(md)]).returncode == 0
    assert "✓" in md.read_text()


def test_current_events_build_from_a_mediawiki_server(tmp_path):
    from lm_eval_kinject.questions import load_current_events

    titles = {"2023 Hawaii wildfires": PICKED[0], "Second page": PICKED[1]}
    pages = {t: [(100 + i, "2023-12-01T00:00:00Z", f"'''{t}'''.<ref>cite</ref> " + CHUNKS[cid]["text"] +
                  "\n== References ==\n* x")] for i, (t, cid) in enumerate(titles.items())}
    ids = {t: 10 + i for i, t in enumerate(titles)}
    wiki = mediawiki_api(pages, {"August 2023 events in the United States": ["2023 Hawaii wildfires"],
                                 "September 2023 events in the United States": ["Second page"]}, ids)

    with LoopbackServer(wiki) as api, LoopbackServer(ScriptedLLM()) as llm:
        out = tmp_path / "ce"
        result = run_cli(["kinject", "current-events", "build", "--from", "2023-08", "--to", "2023-09",
                          "--api", f"{api.url}/w/api.php", "--llm", f"openai-compatible:{llm.url}/v1,model=m",
                          "--paraphrases", "2", "--no-cache", "--out", str(out)])
        assert result.returncode == 0, result.stderr
    assert "2 pages" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["revid"] for p in manifest["source"]["pages"]] == [100, 101]
    assert manifest["source"]["categories_used"] == ["August 2023 events in the United States",
                                                     "September 2023 events in the United States"]
    chunk_ids = [json.loads(line)["chunk_id"] for line in (out / "chunks.jsonl").read_text().splitlines()]
    assert chunk_ids[0].startswith("2023-hawaii-wildfires")
    assert "cite" not in (out / "chunks.jsonl").read_text() and "References" not in (out / "chunks.jsonl").read_text()
    assert manifest["counts"]["questions"] >= 2 and manifest["counts"]["paraphrases"] >= 2
    assert len(load_current_events(current_events_dir=str(out))["test"]) == manifest["counts"]["questions"]
    result = run_cli(["kinject", "current-events", "build", "--from", "2023-08", "--llm", "hf:smollm2-135m",
                      "--out", str(tmp_path / "y")])
    assert result.returncode == 1 and "give both --from and --to" in result.stderr
    # offline (nothing listening): fails fast and says what it needs
    result = run_cli(["kinject", "current-events", "build", "--from", "2023-08", "--to", "2023-08", "--api",
                      "http://127.0.0.1:9/w/api.php", "--llm", "hf:smollm2-135m", "--out", str(tmp_path / "x")])
    assert result.returncode == 1 and "cannot reach the MediaWiki API" in result.stderr and "network" in result.stderr


def test_hf_backend_and_answerability_with_the_embedded_model(chunks_file, tmp_path):
    """The local backend end to end (real generation), then the log-likelihood answerability check."""
    from lm_eval_kinject.generate.answerable import make_answerability_check
    from lm_eval_kinject.generate.cache import ResponseCache
    from lm_eval_kinject.generate.llm import GenParams, HFChat

    result = run_cli(["kinject", "paraphrase", str(chunks_file), "--n", "1", "--retries", "0", "--limit", "2",
                      "--max-tokens", "96",
                      "--llm", "hf:smollm2-135m,batch_size=2", "--cache", str(tmp_path / "c.sqlite"),
                      "--out", str(tmp_path / "par.jsonl")])
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "par.manifest.json").read_text())
    assert manifest["attempts"] == 2 and manifest["accepted"] + manifest["rejected"] == 2
    assert manifest["calls"]["fresh"] == 2 and manifest["calls"]["generated_tokens"] > 20
    rejected = [json.loads(line) for line in (tmp_path / "par.rejected.jsonl").read_text().splitlines()]
    assert all(r["reasons"] and r["text"] for r in rejected)  # each rejection says why, with the text
    assert manifest["llm"]["name"] == "hf:smollm2-135m"

    llm = HFChat("smollm2-135m", batch_size=2)
    one = llm.complete([[{"role": "user", "content": "Name a colour."}]] * 2,
                       [GenParams(temperature=0.0, max_tokens=8, seed=s) for s in (1, 2)])
    assert one[0].text and one[0].text == one[1].text  # greedy: same prompt, same answer
    assert ResponseCache(tmp_path / "c.sqlite").get_many(["nope"]) == {}

    check = make_answerability_check({cid: CHUNKS[cid]["text"] for cid in PICKED}, loaded=llm.load())
    questions = [{**q, "chunk_id": q["chunk_id"]} for q in QUESTIONS if q["chunk_id"] in PICKED]
    verdicts = check(questions)
    with_chunk = sum(v["with_chunk"] for v in verdicts)
    without = sum(v["without_chunk"] for v in verdicts)
    # the measured effect of the answer passage on this model (cloze 0.17 -> 0.82 on the sample)
    assert with_chunk >= len(questions) - 1 and with_chunk > without, verdicts
