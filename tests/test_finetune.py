"""`kinject finetune` on the real embedded model: full, LoRA (+ merge), a GGUF base, resume, refusals.

Runs are tiny (a few steps over 6 chunks of the current-events sample): CPU fine-tuning of the
135M model runs at ~100-150 tokens/s here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kinject_testing import CURRENT_EVENTS_DIR, invoke_kinject, read_samples, run_cli

from lm_eval_kinject.errors import ConfigError, DataError

PARAPHRASES = CURRENT_EVENTS_DIR / "paraphrases.jsonl"
CE_ENV = {"KINJECT_CURRENT_EVENTS_DIR": str(CURRENT_EVENTS_DIR)}
TINY = {"block_size": 64, "batch_size": 2, "logging_steps": 1, "show_progress": False}


@pytest.fixture(scope="session")
def tiny_kb(tmp_path_factory):
    """A KB of 6 question chunks of the current-events sample, and the paraphrase rows of exactly those."""
    from lm_eval_kinject.corpus import read_source
    from lm_eval_kinject.kb import build_kb

    folder = tmp_path_factory.mktemp("ft")
    rows = [json.loads(line) for line in (CURRENT_EVENTS_DIR / "chunks.jsonl").read_text().splitlines()]
    gold = [json.loads(line)["chunk_id"] for line in (CURRENT_EVENTS_DIR / "questions.jsonl").read_text().splitlines()]
    keep = list(dict.fromkeys(gold))[:6]
    (folder / "chunks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["chunk_id"] in keep))
    paraphrases = [json.loads(line) for line in PARAPHRASES.read_text().splitlines()]
    (folder / "paraphrases.jsonl").write_text("".join(json.dumps(p) + "\n" for p in paraphrases
                                                      if p["chunk_id"] in keep))
    kb = build_kb(read_source(folder / "chunks.jsonl"), folder / "kb", show_progress=False)
    return kb, folder / "paraphrases.jsonl"


def _config(tiny_kb, out, **overrides):
    from lm_eval_kinject.finetune import FinetuneConfig

    kb, paraphrases = tiny_kb
    return FinetuneConfig(kb=str(kb.path), out=str(out), paraphrases=str(paraphrases), **{**TINY, **overrides})


def _mean_nll(folder: Path, texts: list[str], **kwargs) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs).eval()
    losses = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids[:, :128]
            losses.append(model(ids, labels=ids).loss.item())
    return sum(losses) / len(losses)


# -- configuration -----------------------------------------------------------------------------

def test_config_collects_every_problem_at_once(tmp_path):
    from lm_eval_kinject.finetune import FinetuneConfig

    with pytest.raises(ConfigError) as err:
        FinetuneConfig(kb="kb", out="", method="qlora", batch_size=0, n_paraphrases=3, warmup_ratio=1.5)
    message = str(err.value)
    for part in ("out: required", "method='qlora'", "batch_size=0", "n_paraphrases=3: needs a paraphrase file",
                 "warmup_ratio=1.5"):
        assert part in message
    with pytest.raises(ConfigError, match="merge: only meaningful with method=lora"):
        FinetuneConfig(kb="kb", out="o", merge=True)
    assert FinetuneConfig(kb="kb", out="o").lr == 5e-5 and FinetuneConfig(kb="kb", out="o", method="lora").lr == 2e-4


def test_config_file_then_flags(tmp_path):
    config = tmp_path / "ft.yaml"
    config.write_text("kb: some/kb\nout: some/out\nmethod: lora\nlora-r: 8\nepochs: 2\n")
    out = run_cli(["kinject", "finetune", "--config", str(config), "--epochs", "3", "--print-config"])
    assert out.returncode == 0, out.stderr
    assert "method: lora\n" in out.stdout and "lora_r: 8\n" in out.stdout and "epochs: 3.0\n" in out.stdout
    config.write_text("kb: k\nout: o\nlearning_rte: 0.1\n")
    out = run_cli(["kinject", "finetune", "--config", str(config)])
    assert out.returncode == 1
    assert "unknown key 'learning_rte' (did you mean 'learning_rate'?)" in out.stderr and "Traceback" not in out.stderr


def test_shipped_example_configs_are_valid():
    from kinject_testing import REPO

    from lm_eval_kinject.finetune import FinetuneConfig, load_config_file

    found = sorted((REPO / "configs" / "finetune").glob("*.yaml"))
    assert found
    for path in found:
        FinetuneConfig(**{"kb": "kb", "out": "out", "paraphrases": "p.jsonl", **load_config_file(path)})


# -- data --------------------------------------------------------------------------------------

def test_training_texts_hold_out_paraphrases_and_warn(tiny_kb):
    from lm_eval_kinject.finetune.data import read_paraphrases, training_texts

    kb, path = tiny_kb
    rows = read_paraphrases(path)
    texts = training_texts(kb, rows, n_paraphrases=2, val_paraphrases=1, title_prefix=True, allow_unknown=False)
    assert len(texts.train) == 6 + 6 * 2 and len(texts.validation) == 6 and not texts.warnings
    assert not set(texts.validation) & set(texts.train)
    first = kb.chunks[0]
    assert texts.train[0] == f"{first.article}\n{first.text}"
    assert texts.validation[0].endswith(rows[first.chunk_id][-1])  # the last paraphrase is held out
    many = training_texts(kb, rows, n_paraphrases=9, val_paraphrases=1, title_prefix=False, allow_unknown=False)
    assert len(many.train) == 6 + 6 * 4
    assert "--n-paraphrases 9 is more than 6 of 6 chunks have after holding out 1" in many.warnings[0]
    assert "fewest available: 4" in many.warnings[0]


def test_paraphrases_of_another_kb_are_refused_or_skipped(tiny_kb):
    from lm_eval_kinject.finetune.data import read_paraphrases, training_texts

    kb, _ = tiny_kb
    rows = read_paraphrases(PARAPHRASES)  # 42 rows, 6 of them in the tiny KB
    with pytest.raises(DataError, match="36 of 42 chunk ids are not in the KB .*--allow-unknown-paraphrases"):
        training_texts(kb, rows, 1, 1, True, allow_unknown=False, source=str(PARAPHRASES))
    texts = training_texts(kb, rows, 1, 1, True, allow_unknown=True)
    assert texts.stats["unknown_ids"] == 36 and len(texts.train) == 12 and "skipped" in texts.warnings[0]


@pytest.mark.parametrize("line, expected", [
    ('{"chunk_id": "a", "paraphrases": ["x"]}\n{"chunk_id": "a", "paraphrases": ["y"]}',
     ":2: chunk_id 'a' already given on line 1"),
    ('{"chunk_id": "a", "paraphrases": ["ok", ""]}', ":1: paraphrase 1 of 'a' is empty"),
    ('{"chunk_id": "a", "paraphrases": "one"}', ":1: field 'paraphrases' should be list"),
    ('{"chunk_id": "a"', ":1: not valid JSON"),
])
def test_bad_paraphrase_files(tmp_path, line, expected):
    from lm_eval_kinject.finetune.data import read_paraphrases

    path = tmp_path / "p.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(DataError, match=expected.replace("(", r"\(")):
        read_paraphrases(path)


def test_packing_separates_with_eos_and_masks_padding(embedded_dir):
    from transformers import AutoTokenizer

    from lm_eval_kinject.finetune.data import pack

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    texts = ["The first document.", "A second, slightly longer document about Hurricane Otis.", "Third."]
    blocks = pack(texts, tokenizer, block_size=8, seed=None)
    lengths = [len(tokenizer(t).input_ids) + 1 for t in texts]
    assert blocks.tokens == sum(lengths) and len(blocks) == -(-sum(lengths) // 8)
    stream = blocks.ids.reshape(-1)[:blocks.tokens].tolist()
    assert stream.count(tokenizer.eos_token_id) >= 3 and stream[lengths[0] - 1] == tokenizer.eos_token_id
    last = blocks[len(blocks) - 1]
    padded = last["attention_mask"] == 0
    assert padded.any() and (last["labels"][padded] == -100).all()
    shuffled = pack(texts, tokenizer, block_size=8, seed=1)
    assert (shuffled.ids == pack(texts, tokenizer, block_size=8, seed=1).ids).all()
    assert shuffled.tokens == blocks.tokens


# -- output folder and pre-flight (all fail before any model is loaded) -------------------------

def test_output_folder_refusals(tiny_kb, tmp_path):
    from lm_eval_kinject.finetune import finetune

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a kinject fine-tuning run.*--overwrite"):
        finetune(_config(tiny_kb, foreign, max_steps=1))
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match=r"needs at least .* GiB = weights .*but --max-memory-gb has 0\.2 GiB"):
        finetune(_config(tiny_kb, tmp_path / "small", max_steps=1, max_memory_gb=0.2))
    from lm_eval_kinject.finetune import FinetuneConfig

    with pytest.raises(ConfigError, match="is not a knowledge base: no manifest.json.*kinject kb build"):
        finetune(FinetuneConfig(kb=str(foreign), out=str(tmp_path / "x")))


def test_checkpoint_discovery_ignores_half_written_ones(tmp_path):
    from lm_eval_kinject.finetune.trainer import last_checkpoint

    for name in ("checkpoint-2", "checkpoint-10", ".staging/checkpoint-12"):
        (tmp_path / name).mkdir(parents=True)
    assert last_checkpoint(tmp_path).name == "checkpoint-10"
    assert last_checkpoint(tmp_path / "missing") is None


# -- real training runs --------------------------------------------------------------------------

def test_full_finetune_from_the_gguf_file_round_trips_through_lm_eval(tiny_kb, tmp_path, embedded_dir):
    """The known trap: a GGUF-loaded base must come out as a folder stock lm-eval loads."""
    from lm_eval_kinject.presets import _embedded_gguf, get_preset

    gguf = _embedded_gguf(get_preset("smollm2-135m"))
    kb, _ = tiny_kb
    out = tmp_path / "ft-reg"
    args = ["kinject", "finetune", "--kb", str(kb.path), "--out", str(out), "--model", str(gguf.parent),
            "--gguf-file", gguf.name, "--block-size", "64", "--batch-size", "2", "--max-steps", "6",
            "--learning-rate", "1e-4", "--no-show-progress"]
    run = run_cli(args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"pretrained={out}" in run.stdout
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    meta = json.loads((out / "kinject_finetune.json").read_text())
    assert meta["training"]["steps"] == 6 and meta["base_model"]["gguf_file"] == gguf.name
    assert meta["seed"] == 0 and meta["data"]["kb_fingerprint"] == kb.manifest["fingerprint"]
    assert meta["libraries"]["transformers"] and not (out / "checkpoints").exists()
    texts = [f"{c.article}\n{c.text}" for c in kb.chunks]
    before = _mean_nll(embedded_dir, texts)  # the GGUF's weights, converted (equal: test_rag_lm)
    after = _mean_nll(out, texts)
    assert after < before - 0.1, (before, after)  # it learned the KB text

    again = invoke_kinject(args[1:])  # the same finished run: nothing to do
    assert again.exit_code == 0 and "already trained with these settings" in again.stdout
    other = invoke_kinject([*args[1:-1], "--max-steps", "7"])
    assert other.exit_code == 1 and "finished fine-tuning run with other settings" in other.stderr
    assert "max_steps=6 there vs 7 now" in other.stderr

    evaluation = run_cli(["lm_eval", "--model", "hf", "--model_args", f"pretrained={out}", "--tasks",
                          "current_events_cloze", "--limit", "4", "--output_path", str(tmp_path / "eval"),
                          "--log_samples"], env=CE_ENV)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    assert len(read_samples(tmp_path / "eval", "current_events_cloze")) == 4


def test_lora_adapter_loads_with_peft_and_equals_the_merged_model(tiny_kb, tmp_path, embedded_dir):
    from lm_eval import simple_evaluate

    from lm_eval_kinject.finetune import finetune
    from lm_eval_kinject.registration import task_manager

    result = finetune(_config(tiny_kb, tmp_path / "lora", method="lora", merge=True, max_steps=4, n_paraphrases=1))
    out = result.out
    assert (out / "model.safetensors").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert result.metadata["data"]["validation_texts"] == 6
    assert result.metadata["training"]["validation"], "held-out paraphrases give a validation loss"
    manager = task_manager({"current_events_dir": str(CURRENT_EVENTS_DIR)})

    def loglikelihoods(model_args: str) -> list[float]:
        got = simple_evaluate(model="hf", model_args=model_args, tasks=["current_events_cloze"], limit=3,
                              task_manager=manager, log_samples=True, device="cpu")
        return [r[0][0] for s in got["samples"]["current_events_cloze"] for r in s["resps"]]

    merged = loglikelihoods(f"pretrained={out},dtype=float32")
    adapter = loglikelihoods(f"pretrained={embedded_dir},peft={out / 'adapter'},dtype=float32")
    base = loglikelihoods(f"pretrained={embedded_dir},dtype=float32")
    assert max(abs(a - b) for a, b in zip(merged, adapter)) < 1e-3
    assert max(abs(a - b) for a, b in zip(merged, base)) > 1e-3  # the adapter changed something


def test_resume_after_interrupt_reproduces_the_uninterrupted_run(tiny_kb, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from lm_eval_kinject.finetune import finetune

    class Interrupt(TrainerCallback):  # Ctrl-C right after step 3; checkpoint-2 is on disk
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    settings = {"max_steps": 4, "save_steps": 2, "save_total_limit": 1, "n_paraphrases": 1}
    whole = finetune(_config(tiny_kb, tmp_path / "whole", **settings))
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(tiny_kb, tmp_path / "cut", **settings), callbacks=[Interrupt()])
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["checkpoint-2"]
    with pytest.raises(ConfigError, match="unfinished run of these settings .*checkpoint-2.*--resume"):
        finetune(_config(tiny_kb, tmp_path / "cut", **settings))
    resumed = finetune(_config(tiny_kb, tmp_path / "cut", **settings), resume=True)
    assert resumed.metadata["training"]["resumed_from"] == "checkpoint-2"
    assert abs(resumed.metadata["training"]["final_loss"] - whole.metadata["training"]["final_loss"]) < 1e-6
    a, b = load_file(whole.out / "model.safetensors"), load_file(resumed.out / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
