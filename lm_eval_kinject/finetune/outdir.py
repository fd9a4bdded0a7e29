"""The output folder of a fine-tuning run: fresh, resumable, finished, or someone else's.

While training, ``out/`` holds ``kinject_run.json`` (the run's identity) and ``checkpoints/``. At the
end it is replaced, atomically, by the model folder with ``kinject_finetune.json`` inside. A folder
is only ever reused by the same run (same settings and data); anything else needs ``--overwrite``.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject.artifacts import write_json_atomic
from lm_eval_kinject.errors import ConfigError
from lm_eval_kinject.finetune.trainer import last_checkpoint

__all__ = ["RUN_FILE", "RESULT_FILE", "OutState", "prepare_out", "read_json"]

RUN_FILE = "kinject_run.json"
RESULT_FILE = "kinject_finetune.json"


@dataclass(frozen=True)
class OutState:
    """``kind``: "fresh", "resume" (from ``checkpoint``, None if none was written yet) or "done"."""

    kind: str
    checkpoint: Path | None = None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); pass --overwrite to start the run again") from None


def _differences(stored: dict, config: dict) -> str:
    keys = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k) and k != "out")
    if not keys:
        return "the training data changed"
    return "settings differ: " + ", ".join(f"{k}={stored.get(k)!r} there vs {config.get(k)!r} now" for k in keys[:6])


def prepare_out(out: Path, run_hash: str, config: dict, resume: bool, overwrite: bool,
                also_accept: frozenset[str] = frozenset()) -> OutState:
    """Decide what to do with ``out`` and make it ready. ``also_accept``: other hashes of the same run (the identity
    an older version recorded).

    Raises:
        ConfigError: ``out`` holds something else (a file, a foreign folder, another run) and
            ``overwrite`` is False; or an unfinished run of these settings without ``resume``.
    """
    out = Path(out)
    if out.exists() and overwrite:
        if not out.is_dir():
            out.unlink()
        else:
            shutil.rmtree(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        state = _existing(out, {run_hash, *also_accept}, config, resume)
        if state is not None:
            return state
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_FILE, {"run_hash": run_hash, "config": config, "status": "training",
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return OutState("fresh")


def _existing(out: Path, run_hashes: set[str], config: dict, resume: bool) -> OutState | None:
    if (out / RESULT_FILE).is_file():
        stored = read_json(out / RESULT_FILE)
        if stored.get("run_hash") in run_hashes:
            return OutState("done")
        raise ConfigError(f"--out {out} holds a finished fine-tuning run with other settings "
                          f"({_differences(stored.get('config', {}), config)}); choose another --out or pass "
                          "--overwrite to replace it")
    if (out / RUN_FILE).is_file():
        stored = read_json(out / RUN_FILE)
        if stored.get("run_hash") not in run_hashes:
            raise ConfigError(f"--out {out} holds an unfinished run with other settings "
                              f"({_differences(stored.get('config', {}), config)}); pass --overwrite to discard it")
        checkpoint = last_checkpoint(out / "checkpoints")
        if checkpoint is None:
            return None  # stopped before its first checkpoint: nothing to keep, start afresh
        if not resume:
            raise ConfigError(f"--out {out} holds an unfinished run of these settings (last checkpoint: "
                              f"{checkpoint.name}); pass --resume to continue it or --overwrite to start again")
        return OutState("resume", checkpoint)
    raise ConfigError(f"--out {out} exists and is not a kinject fine-tuning run; choose another folder or pass "
                      "--overwrite to replace it")
