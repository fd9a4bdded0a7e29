"""Writing artefacts atomically: JSON, JSONL, and model folders any transformers/lm-eval user can load.

A model loaded from GGUF cannot be saved as it is (transformers raises "quantized with gguf and is
not serializable"), and a config that still carries the GGUF ``quantization_config`` makes
lm-eval refuse the folder later. :func:`save_plain_checkpoint` rebuilds a plain model from the
config without that key, loads the weights and writes safetensors + tokenizer under a temporary
name, then renames it into place.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["atomic_dir", "remove_stale_staging", "library_versions", "sha256_file", "plain_model", "save_plain_checkpoint", "write_json_atomic",
           "write_jsonl_atomic", "write_text_atomic"]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``; returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """Write ``records`` as JSONL to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(names=("torch", "transformers", "peft", "accelerate", "lm-eval", "bm25s", "hnswlib",
                                  "sentence-transformers", "numpy")) -> dict:
    """Installed versions of ``names`` (None where not installed), for provenance records."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging folders (``.NAME.tmp-PID``, ``.NAME.old-PID``) that killed writers of ``out_dir`` left.

    A folder whose process is still running is kept (it may be writing now). Returns what was removed.
    """
    removed = []
    for stale in Path(out_dir).parent.glob(f".{Path(out_dir).name}.*-*"):
        kind, _, pid = stale.name.rpartition("-")
        if not kind.endswith((".tmp", ".old")) or not pid.isdigit() or not stale.is_dir():
            continue
        if int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed

@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out_dir``; on success it replaces ``out_dir``.

    On an exception the temporary folder is removed and ``out_dir`` is left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def plain_model(model):
    """``model`` itself, or for a GGUF-loaded model a plain copy without the GGUF ``quantization_config``.

    transformers cannot save a model loaded from GGUF ("quantized with gguf and is not
    serializable"), and lm-eval refuses a folder whose config still names the GGUF file.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if getattr(config, "quantization_config", None) is None:
        return model
    config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    with torch.no_grad():
        missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"weights do not match the rebuilt model: missing={missing}, unexpected={unexpected}")
    return plain


def save_plain_checkpoint(model, tokenizer, out_dir: Path, extra: dict | None = None) -> Path:
    """Save ``model`` and ``tokenizer`` as a plain safetensors folder at ``out_dir``, atomically.

    Args:
        model: a transformers causal LM (GGUF-loaded models included).
        tokenizer: its tokenizer.
        out_dir: destination; an existing folder there is replaced only once the new one is whole.
        extra: JSON-serialisable provenance written to ``kinject_checkpoint.json`` inside.

    Returns:
        ``out_dir``.
    """
    with atomic_dir(out_dir) as tmp:
        plain_model(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            write_json_atomic(tmp / "kinject_checkpoint.json", extra)
    logger.info("saved plain checkpoint to %s", out_dir)
    return Path(out_dir)
