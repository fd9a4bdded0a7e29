"""``finetune(config)``: set up -> train -> save, read top to bottom.

The result is what lm-eval loads unchanged: a plain safetensors model folder (full fine-tuning,
or LoRA with ``merge``) for ``--model hf --model_args pretrained=OUT``, or a PEFT adapter for
``pretrained=BASE,peft=OUT``. Provenance (settings, seed, data fingerprint, library versions,
losses, throughput) is written beside it as ``kinject_finetune.json``.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject import __version__
from lm_eval_kinject.artifacts import atomic_dir, library_versions, plain_model, sha256_file, write_json_atomic
from lm_eval_kinject.errors import ConfigError, ModelLoadError
from lm_eval_kinject.finetune.config import FinetuneConfig
from lm_eval_kinject.finetune.data import pack, practice_texts, qa_pairs, read_paraphrases, training_texts
from lm_eval_kinject.finetune.memory import available_memory, check_memory, count_parameters, estimate_memory
from lm_eval_kinject.finetune.outdir import RESULT_FILE, prepare_out, read_json
from lm_eval_kinject.finetune.trainer import AtomicCheckpointTrainer, FinalStepCallback, ThroughputCallback
from lm_eval_kinject.splits import QuestionSplit

logger = logging.getLogger(__name__)

__all__ = ["FinetuneResult", "finetune"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    metadata: dict
    skipped: bool  # True when ``out`` already held this finished run


def finetune(config: FinetuneConfig, resume: bool = False, overwrite: bool = False,
             callbacks: list | None = None, wait: bool = False, lock: bool = True) -> FinetuneResult:
    """Run (or resume, or skip if finished) the fine-tuning ``config`` describes.

    Args:
        resume: continue an interrupted run of the same settings from its last checkpoint.
        overwrite: discard whatever ``config.out`` holds.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        wait: when another process is training into ``config.out``, wait for it instead of refusing.
        lock: hold ``config.out``'s lock (``faults.folder_lock``); off for a caller that holds a lock covering it.

    Raises:
        KinjectError: bad KB, paraphrases, model, output folder, or a model that does not fit.
    """
    from lm_eval_kinject.faults import folder_lock

    if not lock:
        return _finetune(config, resume, overwrite, callbacks)
    with folder_lock(Path(config.out), "kinject finetune", wait=wait):
        return _finetune(config, resume, overwrite, callbacks)


def _finetune(config: FinetuneConfig, resume: bool, overwrite: bool, callbacks: list | None) -> FinetuneResult:
    from lm_eval_kinject.faults import disk_full, disk_full_error
    from lm_eval_kinject.kb import KnowledgeBase

    kb = KnowledgeBase.load(Path(config.kb))
    paraphrases = read_paraphrases(Path(config.paraphrases)) if config.paraphrases else None
    chunks = {c.chunk_id: {"text": c.text, "article": c.article, "chunk_id": c.chunk_id} for c in kb.chunks}
    split = QuestionSplit(config.qa_train_fraction, config.qa_split_seed, config.qa_split_swap)
    qa, qa_stats = (qa_pairs(Path(config.qa), split, chunks, config.qa_passages, config.seed, config.qa_layout,
                             config.qa_pairs) if config.qa else ([], {}))
    if config.qa_practice:
        practice, practice_stats = practice_texts(Path(config.qa_practice), Path(config.qa_practice_chunks),
                                                  {c.text.strip() for c in kb.chunks}, config.qa_passages,
                                                  config.seed, config.qa_layout, config.title_prefix,
                                                  config.qa_pairs)
        qa += practice
        qa_stats.update(practice_stats)
    qa = qa * config.qa_repeats
    texts = training_texts(kb, paraphrases, config.n_paraphrases, config.val_paraphrases, config.title_prefix,
                           config.allow_unknown_paraphrases, source=str(config.paraphrases), qa=qa)
    texts.stats.update(qa_stats)
    for warning in texts.warnings:
        logger.warning(warning)
    run_hash = config.run_hash(texts.fingerprint)
    out = Path(config.out)
    state = prepare_out(out, run_hash, config.to_dict(), resume, overwrite,
                        also_accept=frozenset({config.run_hash(texts.fingerprint, with_paths=True)}))
    if state.kind == "done":
        logger.info("%s already holds this finished run (run %s); nothing to do (--overwrite retrains)", out, run_hash)
        return FinetuneResult(out, read_json(out / RESULT_FILE), skipped=True)
    if resume and state.checkpoint is None:
        logger.warning("--resume: %s holds no checkpoint of this run to resume from; starting from the beginning",
                       out)

    precision, on_gpu = _precision(config)
    model_config, source = _base_config(config)
    _preflight(config, model_config, precision, on_gpu)
    model, tokenizer = _load_base(config, source, precision)
    train = pack(texts.train, tokenizer, config.block_size, seed=config.seed)
    validation = pack(texts.validation, tokenizer, config.block_size, seed=None) if texts.validation else None
    if config.method == "lora":
        model = _apply_lora(model, config)
    args = _training_args(config, out, len(train), validation is not None, precision)
    logger.info("training %s on %d texts = %d tokens in %d blocks of %d; %s; validation: %s", config.method,
                len(texts.train), train.tokens, len(train), config.block_size, _schedule(args, len(train)),
                f"{len(texts.validation)} held-out paraphrases" if validation else "none (no paraphrase file)")
    throughput = ThroughputCallback()
    trainer = AtomicCheckpointTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                                      data_collator=_collate,
                                      callbacks=[FinalStepCallback(), *(callbacks or [])])
    trainer.callback_handler.callbacks.insert(0, throughput)  # before the printer, so it shows tokens/s
    tokens_before = _tokens_at(state.checkpoint)
    if state.checkpoint is not None:
        logger.info("resuming from %s", state.checkpoint)
    started = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=str(state.checkpoint) if state.checkpoint else None)
        if validation is not None and not any("eval_loss" in h and h.get("step") == trainer.state.global_step
                                              for h in trainer.state.log_history):
            trainer.evaluate()  # the loss at the run's end, also when max_steps stops it mid-epoch
        seconds = time.perf_counter() - started
        metadata = _metadata(config, run_hash, kb, texts, train, validation, source, precision, trainer, output,
                             seconds, trainer.state.num_input_tokens_seen - tokens_before, state.checkpoint)
        _save(trainer.model, tokenizer, config, out, metadata, precision)
    except Exception as error:
        if disk_full(error):
            raise disk_full_error(out, "a checkpoint", _checkpoint_bytes(trainer.model)) from None
        raise
    logger.info("wrote %s (final loss %.4f, %.0f tokens/s)", out, metadata["training"]["final_loss"],
                metadata["training"]["tokens_per_second"])
    return FinetuneResult(out, metadata, skipped=False)


def _checkpoint_bytes(model) -> int:
    """About what a training checkpoint takes: the weights plus AdamW's two moments of the trained parameters."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return weights + 2 * trained


def _collate(items: list[dict]) -> dict:
    import torch

    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def _precision(config: FinetuneConfig) -> tuple[str, bool]:
    import torch

    on_gpu = torch.cuda.is_available() and not config.cpu
    if config.precision == "auto":
        return ("bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"), on_gpu
    if config.precision == "fp16" and not on_gpu:
        raise ConfigError("precision=fp16 needs a CUDA GPU; use fp32 (or bf16) on the CPU")
    return config.precision, on_gpu


def _base_config(config: FinetuneConfig):
    """The base model's config (read without loading weights) and where the weights are."""
    from transformers import AutoConfig

    from lm_eval_kinject.presets import resolve_pretrained

    if config.gguf_file:
        folder = Path(config.model)
        if not (folder / config.gguf_file).is_file():
            raise ModelLoadError(f"--gguf-file {config.gguf_file}: not found in the model folder {folder}")
        source = {"name": config.model, "pretrained": str(folder), "gguf_file": config.gguf_file}
        return AutoConfig.from_pretrained(folder, gguf_file=config.gguf_file), source
    pretrained = resolve_pretrained(config.model)["pretrained"]
    try:
        model_config = AutoConfig.from_pretrained(pretrained)
    except OSError as exc:
        raise ModelLoadError(f"--model {config.model}: cannot read its config ({exc})") from None
    return model_config, {"name": config.model, "pretrained": pretrained, "gguf_file": None}


def _preflight(config: FinetuneConfig, model_config, precision: str, on_gpu: bool) -> None:
    weight_bytes = 2 if (config.method == "lora" and precision in ("bf16", "fp16")) else 4
    estimate = estimate_memory(model_config, count_parameters(model_config), config.method, weight_bytes,
                               config.batch_size, config.block_size, config.lora_r)
    if config.max_memory_gb is not None:
        budget, where = int(config.max_memory_gb * 1024 ** 3), "--max-memory-gb"
    else:
        budget, where = available_memory(on_gpu), ("the GPU" if on_gpu else "this machine (free RAM)")
    check_memory(estimate, budget, where, config.method)
    logger.info("memory estimate: %s", estimate.describe())


def _load_base(config: FinetuneConfig, source: dict, precision: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Full fine-tuning keeps fp32 master weights (mixed precision autocasts); LoRA freezes the base,
    # which can then sit in bf16/fp16 and halve its memory.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    dtype = dtype if config.method == "lora" else torch.float32
    kwargs = {"gguf_file": source["gguf_file"]} if source["gguf_file"] else {}
    tokenizer = AutoTokenizer.from_pretrained(source["pretrained"], **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source["pretrained"], dtype=dtype, **kwargs)
    return plain_model(model), tokenizer


def _apply_lora(model, config: FinetuneConfig):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    targets = "all-linear" if config.lora_target == "all-linear" else \
        [t.strip() for t in config.lora_target.split(",") if t.strip()]
    lora = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets)
    set_seed(config.seed)  # the adapters' initialisation
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"--lora-target {config.lora_target}: {exc}; this model's linear modules: "
                          f"{', '.join(linear)}") from None
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA r=%d alpha=%d on %s: %.2fM of %.0fM parameters trained", config.lora_r, config.lora_alpha,
                config.lora_target, trainable / 1e6, total / 1e6)
    return model


def _training_args(config: FinetuneConfig, out: Path, n_blocks: int, has_validation: bool, precision: str):
    import torch
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.train_epochs, max_steps=config.max_steps, learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler, weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, eval_strategy="epoch" if has_validation else "no",
        seed=config.seed, data_seed=config.seed, bf16=precision == "bf16", fp16=precision == "fp16",
        use_cpu=config.cpu, report_to="none", disable_tqdm=not config.show_progress,
        include_num_input_tokens_seen="non_padding", remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available() and not config.cpu)
    args.warmup_steps = math.ceil(config.warmup_ratio * _total_steps(args, n_blocks))
    return args


def _total_steps(args, n_blocks: int) -> int:
    if args.max_steps > 0:
        return args.max_steps
    per_epoch = max(1, math.ceil(n_blocks / (args.per_device_train_batch_size * args.world_size))
                    // args.gradient_accumulation_steps)
    return math.ceil(per_epoch * args.num_train_epochs)


def _schedule(args, n_blocks: int) -> str:
    scheduler = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    return (f"{_total_steps(args, n_blocks)} steps of {args.per_device_train_batch_size * args.world_size} x "
            f"{args.gradient_accumulation_steps} blocks, lr {args.learning_rate:g} {scheduler} with "
            f"{args.warmup_steps} warm-up steps")


def _tokens_at(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    from transformers import TrainerState

    return TrainerState.load_from_json(str(checkpoint / "trainer_state.json")).num_input_tokens_seen


def _metadata(config, run_hash, kb, texts, train, validation, source, precision, trainer, output, seconds,
              tokens, resumed_from) -> dict:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [{"epoch": h["epoch"], "eval_loss": h["eval_loss"], "perplexity": math.exp(min(h["eval_loss"], 50))}
             for h in history if "eval_loss" in h]
    paraphrase_sha = sha256_file(Path(config.paraphrases)) if config.paraphrases else None
    return {
        "format_version": FORMAT_VERSION, "kinject_version": __version__, "run_hash": run_hash,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.to_dict(), "learning_rate": config.lr, "epochs": config.train_epochs, "seed": config.seed,
        "base_model": source,
        "data": {"kb": str(kb.path), "kb_fingerprint": kb.manifest["fingerprint"], "paraphrases": config.paraphrases,
                 "paraphrases_sha256": paraphrase_sha, "qa": config.qa,
                 "qa_sha256": sha256_file(Path(config.qa)) if config.qa else None,
                 **({"qa_practice": config.qa_practice, "qa_practice_sha256": sha256_file(Path(config.qa_practice)),
                     "qa_practice_chunks": config.qa_practice_chunks} if config.qa_practice else {}),
                 "texts_fingerprint": texts.fingerprint, **texts.stats,
                 "train_texts": len(texts.train), "train_tokens_per_epoch": train.tokens, "train_blocks": len(train),
                 "validation_texts": len(texts.validation),
                 "validation_tokens": validation.tokens if validation else 0, "warnings": texts.warnings},
        "training": {"method": config.method, "precision": precision, "device": str(trainer.args.device),
                     "steps": trainer.state.global_step, "epochs": trainer.state.epoch,
                     "final_loss": losses[-1] if losses else None, "mean_loss_this_session": output.training_loss,
                     "validation": evals, "seconds_this_session": round(seconds, 2), "tokens_this_session": tokens,
                     "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
                     "resumed_from": resumed_from.name if resumed_from else None, "history": history},
        "libraries": library_versions(),
    }


def _save(model, tokenizer, config: FinetuneConfig, out: Path, metadata: dict, precision: str) -> None:
    """Replace ``out`` (checkpoints and all) by the finished model folder, atomically."""
    import torch

    with atomic_dir(out) as tmp:
        if config.method == "lora":
            if config.merge:
                model.save_pretrained(tmp / "adapter", safe_serialization=True)
                tokenizer.save_pretrained(tmp / "adapter")
                model = model.merge_and_unload()
            else:
                model.save_pretrained(tmp, safe_serialization=True)
        if config.method == "full" or config.merge:
            if precision in ("bf16", "fp16"):  # trained in mixed precision: ship the half-size weights
                model = model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if config.keep_checkpoints and (out / "checkpoints").is_dir():
            shutil.move(str(out / "checkpoints"), str(tmp / "checkpoints"))
        write_json_atomic(tmp / RESULT_FILE, metadata)
