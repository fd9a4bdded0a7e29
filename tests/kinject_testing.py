"""Constants and helpers the tests share (importable: setup.cfg puts tests/ on sys.path)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KINJECT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
MMLU_DIR = SHARED_DATA / "mmlu"
MMLU_EXPORT_DIR = SHARED_DATA / "mmlu_final_hf_export"
CURRENT_EVENTS_DIR = SHARED_DATA / "current_events_sample"
BIN = Path(sys.executable).parent


def run_cli(args: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run one of the installed console scripts (``lm_eval``, ``kinject``) for real."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO.parent)


def invoke_kinject(args: list[str]):
    """``kinject ARGS`` in this process (click's runner): for the quick re-runs and refusals that need no fresh
    interpreter — each subprocess pays ~10 s of torch/transformers imports."""
    from click.testing import CliRunner

    from lm_eval_kinject.cli import main

    return CliRunner().invoke(main, args, catch_exceptions=False)


def read_results(output_path: Path) -> dict:
    """The results JSON lm_eval wrote under ``--output_path`` (it adds model and timestamp folders)."""
    found = sorted(output_path.rglob("results_*.json"))
    assert found, f"no results file under {output_path}"
    return json.loads(found[-1].read_text())


def read_samples(output_path: Path, task: str) -> list[dict]:
    found = sorted(output_path.rglob(f"samples_{task}_*.jsonl"))
    assert found, f"no samples for {task} under {output_path}"
    return [json.loads(line) for line in found[-1].read_text().splitlines()]


def table_value(stdout: str, alias: str, metric: str) -> float:
    """A value from lm_eval's printed results table."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 7 and cells[1] == alias and cells[5] == metric:
            return float(cells[7])
    raise AssertionError(f"no row {alias!r}/{metric!r} in:\n{stdout}")


@contextlib.contextmanager
def prefix_cache_off(lm):
    """Score with ``lm`` (a kinject-rag model shared by the session) on the plain path for a while."""
    before, lm.prefix_cache = lm.prefix_cache, False
    try:
        yield lm
    finally:
        lm.prefix_cache = before


class LoopbackServer:
    """An HTTP server on 127.0.0.1 in a thread; ``respond(method, path, query, body) -> (status, json, headers)``.

    The true system edges of the generation pipeline (an LLM endpoint, the MediaWiki API) are served by
    these in the tests; every request is recorded in ``requests``.
    """

    def __init__(self, respond) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlparse

        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                server.requests.append({"method": method, "path": url.path, "query": query, "body": body,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}})
                status, payload, headers = respond(method, url.path, query, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._handle("GET")

            def do_POST(self):  # noqa: N802
                self._handle("POST")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def chat_completion(text: str, tokens: int = 7) -> dict:
    """A chat-completions response body as OpenAI-compatible servers send it."""
    return {"id": "cmpl-test", "object": "chat.completion", "created": 0, "model": "test",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}}


def mediawiki_api(pages: dict[str, list[tuple[int, str, str]]], categories: dict[str, list[str]], ids: dict[str, int]):
    """A ``respond`` function shaped like MediaWiki's api.php (formatversion 2).

    pages: title -> revisions [(revid, ISO timestamp, wikitext)], oldest first; categories: name ->
    titles (served one per response, to exercise continuation); ids: title -> pageid.
    """
    def respond(method, path, query, body):
        if query.get("list") == "categorymembers":
            members = categories.get(query["cmtitle"].removeprefix("Category:"), [])
            at = int(query.get("cmcontinue", 0))
            payload = {"batchcomplete": True, "query": {"categorymembers": [{"ns": 0, "title": t}
                                                                             for t in members[at:at + 1]]}}
            if at + 1 < len(members):
                payload["continue"] = {"cmcontinue": str(at + 1), "continue": "-||"}
            return 200, payload, {}
        out = []
        for title in query["titles"].split("|"):
            revisions = pages.get(title)
            if revisions is None:
                out.append({"ns": 0, "title": title, "missing": True})
                continue
            if "rvstart" in query:
                revisions = [r for r in revisions if r[1] <= query["rvstart"]]
            revid, stamp, text = revisions[-1]
            out.append({"pageid": ids[title], "ns": 0, "title": title, "revisions": [
                {"revid": revid, "timestamp": stamp, "slots": {"main": {"contentmodel": "wikitext", "content": text}}}]})
        return 200, {"batchcomplete": True, "query": {"pages": out}}, {}

    return respond
