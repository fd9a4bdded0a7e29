"""Model presets and the embedded model's plain checkpoint."""
from __future__ import annotations

import json

import pytest

from lm_eval_kinject.errors import ModelLoadError
from lm_eval_kinject.presets import list_presets, resolve_pretrained


def test_shipped_presets_load():
    presets = list_presets()
    assert set(presets) == {"smollm2-135m", "llama2-7b", "mistral-7b", "orca2-7b"}
    assert presets["mistral-7b"].hflm_kwargs() == {"pretrained": "mistralai/Mistral-7B-v0.1",
                                                   "dtype": "bfloat16", "max_length": 4096}


def test_embedded_model_is_a_plain_loadable_folder(embedded_dir):
    config = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (embedded_dir / "model.safetensors").is_file()
    provenance = json.loads((embedded_dir / "kinject_checkpoint.json").read_text())
    assert provenance["gguf_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert len(provenance["gguf_sha256"]) == 64


def test_local_folder_passes_through(embedded_dir):
    assert resolve_pretrained(str(embedded_dir)) == {"pretrained": str(embedded_dir)}


@pytest.mark.parametrize("name,expected", [
    ("./no/such/folder", r"no such model folder \(expected a preset \[.*'smollm2-135m'"),
    ("smollm2-13m", r"not in the local Hugging Face cache while offline.*did you mean 'smollm2-135m'"),
    ("someone/not-a-model", r"not in the local Hugging Face cache while offline"),
    ("bad id with spaces", r"nor a valid Hugging Face Hub id"),
])
def test_unresolvable_pretrained_is_a_clear_error(name, expected):
    with pytest.raises(ModelLoadError, match=expected):
        resolve_pretrained(name)
