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
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["save_plain_checkpoint", "write_json_atomic", "write_jsonl_atomic"]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """Write ``records`` as JSONL to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


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
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    if getattr(config, "quantization_config", None) is not None:
        config = type(config).from_dict({k: v for k, v in config.to_dict().items()
                                         if k != "quantization_config"})
        plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
        with torch.no_grad():
            missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
        tied = set(getattr(plain, "_tied_weights_keys", None) or [])
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"weights do not match the rebuilt model: missing={missing}, "
                               f"unexpected={unexpected}")
        model = plain
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if extra is not None:
        write_json_atomic(tmp / "kinject_checkpoint.json", extra)
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    logger.info("saved plain checkpoint to %s", out_dir)
    return out_dir
