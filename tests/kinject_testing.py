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
