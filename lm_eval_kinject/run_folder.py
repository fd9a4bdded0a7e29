"""Reading a grid's run folder (``grid.json``, ``cells/HASH/{cell.json,result.json}``) defensively.

A run folder may be damaged by a crash outside our atomic writes, a full disk or a hand edit. Every
reader goes through here: an unreadable file is named, and a cell whose files cannot be read is
*not done*, so ``kinject grid`` evaluates it again and ``kinject report`` leaves it out.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject.errors import DataError

__all__ = ["CellState", "read_cell", "read_grid_json"]

RESULT_KEYS = ("acc", "n", "alias", "num_fewshot", "per_question")


def _read_json(path: Path) -> dict:
    """The JSON object in ``path``; DataError naming the file and what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({error})") from None
    if not text.strip():
        raise DataError(f"{path}: empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON, truncated or edited ({error.msg} at line {error.lineno})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class CellState:
    status: str | None  # "done", "failed", "damaged", or None (never started)
    meta: dict | None = None
    result: dict | None = None
    problem: str | None = None  # for "damaged": which file and why


def read_cell(folder: Path, with_result: bool = False) -> CellState:
    """The state of one cell folder; ``with_result`` also reads (and checks) ``result.json`` of a done cell."""
    folder = Path(folder)
    if not folder.exists():
        return CellState(None)
    try:
        meta = _read_json(folder / "cell.json")
        status = meta.get("status")
        if status not in ("done", "failed"):
            raise DataError(f"{folder / 'cell.json'}: status {status!r}, expected 'done' or 'failed'")
        result = None
        if status == "done":
            result = _read_json(folder / "result.json")
            missing = [key for key in RESULT_KEYS if key not in result]
            if missing:
                raise DataError(f"{folder / 'result.json'}: missing key(s) {missing}")
        return CellState(status, meta, result if with_result else None)
    except DataError as error:
        return CellState("damaged", problem=str(error))


def read_grid_json(run: Path) -> dict:
    """``grid.json`` of the run folder ``run``."""
    run = Path(run)
    grid_file = run / "grid.json"
    if not grid_file.is_file():
        raise DataError(f"{run}: not a grid run folder (no grid.json; make one with `kinject grid CONFIG --out {run}`)")
    grid = _read_json(grid_file)
    if not isinstance(grid.get("cells"), list):
        raise DataError(f"{grid_file}: no 'cells' list; re-run `kinject grid CONFIG --out {run}` to rewrite it")
    return grid
