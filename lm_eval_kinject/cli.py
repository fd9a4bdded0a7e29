"""The ``kinject`` command: everything around the harness. Parses arguments and calls; no logic."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from lm_eval_kinject import __version__
from lm_eval_kinject.arms import ARMS
from lm_eval_kinject.errors import KinjectError
from lm_eval_kinject.finetune.config import FinetuneConfig
from lm_eval_kinject.generate import cli as _generate_cli
from lm_eval_kinject.retrieval import DEFAULT_RETRIEVER, SEARCH_RETRIEVERS, RetrieverConfig


def run_lm_eval(argv: list[str]) -> int:
    """Run the stock lm_eval CLI on ``argv`` after registering kinject (hook or not)."""
    from lm_eval.__main__ import cli_evaluate

    from lm_eval_kinject.registration import ensure_registered

    ensure_registered()
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except KinjectError as exc:
        click.echo(f"Error: {exc}", err=True)
        return 1
    except ValueError as exc:  # lm-eval's own bad-input errors ("Tasks not found: ...", bad --model_args)
        if os.environ.get("KINJECT_DEBUG"):
            raise
        click.echo(f"Error: lm_eval: {' '.join(str(exc).split())} (KINJECT_DEBUG=1 shows the traceback)", err=True)
        return 1
    return 0


class _Group(click.Group):
    """Prints a KinjectError as one line (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KinjectError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt as stop:  # commands without their own message (grid and finetune have one)
            click.echo(f"\nInterrupted{_by(stop)}; nothing half-written was kept: run the same command again.",
                       err=True)
            ctx.exit(_interrupted_code(stop))


def _by(stop: KeyboardInterrupt) -> str:
    """" by SIGTERM" when the interrupt was a SIGTERM (see faults.sigterm_as_interrupt)."""
    return f" by {stop.args[0].removeprefix('signal ')}" if stop.args and str(stop.args[0]).startswith("signal ") else ""


def _interrupted_code(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process a signal stopped: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if _by(stop) == " by SIGTERM" else 130


def _read_off(run) -> str:
    """", N of them read off ..." when a grid run derived cells from cells on all the questions."""
    return f" ({len(run.derived)} of them read off cells on all the questions)" if run.derived else ""


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="kinject")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Fine-tune, retrieve, or both? Knowledge-injection experiments inside lm-eval."""
    from lm_eval_kinject.faults import sigterm_as_interrupt

    ctx.obj = {"debug": debug}
    sigterm_as_interrupt()  # a cancelled CI job's SIGTERM unwinds like Ctrl-C: staging files removed, one line
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on itself at import


@main.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                        "help_option_names": []})
@click.argument("lm_eval_args", nargs=-1, type=click.UNPROCESSED)
def eval_(lm_eval_args: tuple[str, ...]) -> None:
    """Run lm_eval with these arguments (kinject's model and tasks registered)."""
    sys.exit(run_lm_eval(list(lm_eval_args)))


@main.group()
def model() -> None:
    """Model presets (models/*.yaml)."""


@model.command("list")
def model_list() -> None:
    """List the presets accepted wherever `pretrained` is."""
    from lm_eval_kinject.presets import list_presets

    for name, preset in list_presets().items():
        source = preset.pretrained or f"embedded: {preset.embedded['package']}/{preset.embedded['gguf_file']}"
        click.echo(f"{name:14s} {source}  ({preset.description})")


@model.command("path")
@click.argument("name")
def model_path(name: str) -> None:
    """Print the local folder (or Hub id) a preset resolves to, e.g. for `--model hf`."""
    from lm_eval_kinject.presets import resolve_pretrained

    click.echo(resolve_pretrained(name)["pretrained"])


@main.command("tasks")
def tasks() -> None:
    """List the kinject tasks and groups lm_eval can run."""
    from lm_eval.tasks.manager import TaskManager

    from lm_eval_kinject.registration import ensure_registered, task_dirs

    ensure_registered()
    manager = TaskManager()
    roots = [str(p) for p in task_dirs()]
    for name, entry in sorted(manager.task_index.items()):
        if entry.yaml_path and str(entry.yaml_path).startswith(tuple(roots)):
            click.echo(f"{entry.kind.name.lower():6s} {name}")


@main.group()
def kb() -> None:
    """Knowledge bases: build, search, evaluate retrieval, inspect."""


def _int_list(ctx, param, value: str) -> list[int]:
    try:
        ks = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers like 1,4,10") from None
    if not ks or min(ks) < 1:
        raise click.BadParameter(f"{value!r}: expected positive integers")
    return ks


@kb.command("build")
@click.argument("sources", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="KB folder to write.")
@click.option("--chunk-tokens", default=256, show_default=True, help="Maximum tokens per chunk.")
@click.option("--overlap", default=32, show_default=True, help="Tokens of sentences repeated between chunks.")
@click.option("--tokenizer", default="embedder", show_default=True, help="Token counter: 'embedder' or a HF name.")
@click.option("--embedder", default="all-MiniLM-L6-v2", show_default=True,
              help="sentence-transformers model name or folder (default: embedded, offline).")
@click.option("--id-field", default="id", show_default=True, help="JSONL field holding the document id.")
@click.option("--title-field", default="title", show_default=True, help="JSONL field holding the title.")
@click.option("--text-field", default="text", show_default=True, help="JSONL field holding the text.")
@click.option("--wikipedia-dump", type=click.Path(exists=True, path_type=Path), help="MediaWiki .xml/.xml.bz2 dump.")
@click.option("--titles", type=click.Path(exists=True, path_type=Path), help="File of titles (one a line) to keep.")
@click.option("--category", help="Keep only pages of this Wikipedia category.")
@click.option("--hf-dataset", help="A Hugging Face dataset name (name or name:config) as a source.")
@click.option("--hf-split", default="train", show_default=True)
@click.option("--mediawiki", is_flag=True, help="Fetch --titles/--category through the MediaWiki API (online).")
@click.option("--exact-below", default=20_000, show_default=True, help="Exact dense search below this many chunks.")
@click.option("--hnsw-m", default=16, show_default=True, help="HNSW graph degree.")
@click.option("--hnsw-ef-construction", default=200, show_default=True, help="HNSW build beam.")
@click.option("--hnsw-ef-search", default=64, show_default=True,
              help="HNSW search beam stored as the KB's default (recall vs speed: see docs/retrieval.md).")
@click.option("--seed", default=0, show_default=True, help="Seed of the HNSW graph construction.")
@click.option("--only-chunks-of", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A questions JSONL (with chunk_id): keep only the documents its questions are about "
                   "(e.g. a training KB for fine-tuning on a CPU budget).")
@click.option("--overwrite", is_flag=True, help="Replace an existing KB at --out.")
def kb_build(sources, out, chunk_tokens, overlap, tokenizer, embedder, id_field, title_field, text_field,
             wikipedia_dump, titles, category, hf_dataset, hf_split, mediawiki, exact_below, hnsw_m,
             hnsw_ef_construction, hnsw_ef_search, seed, only_chunks_of, overwrite) -> None:
    """Build a knowledge base from JSONL files, folders, a Wikipedia dump, a HF dataset or MediaWiki."""
    from itertools import chain

    from lm_eval_kinject import corpus
    from lm_eval_kinject.errors import ConfigError
    from lm_eval_kinject.kb import KBConfig, build_kb

    fields = corpus.JsonlFields(id=id_field, title=title_field, text=text_field)
    if (titles or category) and not (wikipedia_dump or mediawiki):
        raise ConfigError(f"{'--titles' if titles else '--category'} selects Wikipedia pages: it needs "
                          "--wikipedia-dump or --mediawiki")
    title_set = {t.strip() for t in titles.read_text(encoding="utf-8").splitlines() if t.strip()} if titles else None
    streams, names = [corpus.read_sources(sources, fields)], [str(s) for s in sources]
    if wikipedia_dump:
        streams.append(corpus.read_wikipedia_dump(wikipedia_dump, title_set, category))
        names.append(str(wikipedia_dump))
    if hf_dataset:
        streams.append(corpus.read_hf_dataset(hf_dataset, hf_split, fields))
        names.append(f"hf:{hf_dataset}/{hf_split}")
    if mediawiki:
        streams.append(corpus.read_mediawiki(sorted(title_set) if title_set else None, category))
        names.append(f"mediawiki:{category or titles}")
    if not names:
        raise ConfigError("no sources: give JSONL files or folders, --wikipedia-dump, --hf-dataset or --mediawiki")
    config = KBConfig.from_options(chunk_tokens=chunk_tokens, overlap=overlap, tokenizer=tokenizer, embedder=embedder,
                                   exact_below=exact_below, seed=seed, hnsw_m=hnsw_m,
                                   hnsw_ef_construction=hnsw_ef_construction, hnsw_ef_search=hnsw_ef_search)
    documents = chain(*streams)
    if only_chunks_of:
        documents = corpus.only_chunks_of(documents, only_chunks_of)
        names.append(f"only chunks of {only_chunks_of}")
    built = build_kb(documents, out, config, sources=names, overwrite=overwrite)
    counts = built.manifest["counts"]
    click.echo(f"{out}: {counts['chunks']} chunks from {counts['documents']} documents "
               f"({counts['empty_skipped']} empty skipped, {counts['duplicate_documents']} duplicate documents, "
               f"{counts['duplicate_chunks']} duplicate chunks dropped) in {built.manifest['build_seconds']} s")


EF_SEARCH_HELP = "HNSW search beam for this run instead of the KB's (KBs of --exact-below chunks or more)."


RERANK_HELP = ("Rerank the first stage's top --rerank-depth chunks: 'lm' (query likelihood under --rerank-model, "
               "UPR) or 'cross-encoder:<folder or Hub id>'.")


def _rerank_options(command):
    """--rerank-depth and --rerank-model, with the defaults of RetrieverConfig (written once, there)."""
    command = click.option("--rerank-model", default=RetrieverConfig.rerank_model, show_default=True,
                           help="The causal LM of --rerank lm: a preset, model folder or Hub id.")(command)
    return click.option("--rerank-depth", default=RetrieverConfig.rerank_depth, show_default=True,
                        type=click.IntRange(min=1), help="How many first-stage chunks the reranker orders.")(command)


@kb.command("search")
@click.argument("kb_path", type=click.Path(path_type=Path))
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="Number of chunks.")
@click.option("--retriever", default=DEFAULT_RETRIEVER, show_default=True, type=click.Choice(SEARCH_RETRIEVERS))
@click.option("--fusion-depth", default=RetrieverConfig.fusion_depth, show_default=True, type=click.IntRange(min=1),
              help="hybrid: how deep the BM25 and dense rankings enter the fusion.")
@click.option("--rrf-k", default=RetrieverConfig.rrf_k, show_default=True, type=click.IntRange(min=1),
              help="hybrid: the reciprocal rank fusion constant.")
@click.option("--rerank", help=RERANK_HELP)
@_rerank_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@click.option("--ef-search", type=click.IntRange(min=1), help=EF_SEARCH_HELP)
def kb_search(kb_path, query, k, retriever, fusion_depth, rrf_k, rerank, rerank_depth, rerank_model, as_json,
              ef_search) -> None:
    """Print the top-k chunks for QUERY."""
    import json

    from lm_eval_kinject.kb import KnowledgeBase
    from lm_eval_kinject.retrieval import build_retriever

    config = RetrieverConfig(retriever, fusion_depth, rrf_k, rerank, rerank_depth, rerank_model)
    config.check_k(k, where="-k")
    base = KnowledgeBase.load(kb_path, ef_search=ef_search)
    hits = build_retriever(base, config).retrieve([query], k)
    for rank, (chunk_id, score) in enumerate(zip(hits.ids[0], hits.scores[0]), start=1):
        chunk = base.chunk(chunk_id)
        if as_json:
            click.echo(json.dumps({"rank": rank, "chunk_id": chunk_id, "score": float(score), "article": chunk.article,
                                   "text": chunk.text}, ensure_ascii=False))
        else:
            click.echo(f"{rank}. [{chunk_id}] {score:.4f}  {chunk.article}\n   {chunk.text[:300]}\n")


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@kb.command("eval")
@click.argument("kb_path", type=click.Path(path_type=Path))
@click.argument("questions", type=click.Path(exists=True, path_type=Path))
@click.option("-k", "ks", default="1,4,10", show_default=True, callback=_int_list, help="Cut-offs, comma-separated.")
@click.option("--retriever", "retrievers", default="bm25,dense,hybrid", show_default=True,
              help="Comma-separated retrievers to compare.")
@click.option("--query", "queries", default="question,options", show_default=True,
              help="Comma-separated query kinds: 'question' (its text) and/or 'options' (its text and options).")
@click.option("--rerank", "rerankers", default="none", show_default=True,
              help="Comma-separated rerankers to compare ('none', 'lm', 'cross-encoder:<folder or Hub id>').")
@_rerank_options
@click.option("--fusion-depth", default=RetrieverConfig.fusion_depth, show_default=True, type=click.IntRange(min=1),
              help="hybrid: how deep the BM25 and dense rankings enter the fusion.")
@click.option("--with-options", is_flag=True, help="Same as --query options.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row instead of the table.")
@click.option("--ef-search", type=click.IntRange(min=1), help=EF_SEARCH_HELP)
def kb_eval(kb_path, questions, ks, retrievers, queries, rerankers, rerank_depth, rerank_model, fusion_depth,
            with_options, as_json, ef_search) -> None:
    """Recall@k, MRR and queries/s of every retriever x query x reranker on the gold chunk_id of each question in
    QUESTIONS (questions.jsonl)."""
    import json

    from lm_eval_kinject.kb import KnowledgeBase
    from lm_eval_kinject.retrieval_eval import evaluate_retrieval, skipped_note, table_head, table_row

    configs = [RetrieverConfig(name, fusion_depth, rerank=None if rerank == "none" else rerank,
                               rerank_depth=rerank_depth, rerank_model=rerank_model)
               for rerank in _names(rerankers) for name in _names(retrievers)]
    base = KnowledgeBase.load(kb_path, ef_search=ef_search)
    printed = []

    def show(row: dict) -> None:  # each row as soon as it is measured
        if not as_json and not printed:
            click.echo(table_head(ks))
        printed.append(row)
        click.echo(json.dumps(row) if as_json else table_row(row, ks))

    rows = evaluate_retrieval(base, questions, ks, configs, queries=("options",) if with_options
                              else tuple(_names(queries)), on_row=show)
    if as_json:
        return
    note = skipped_note(rows)
    if note:
        click.echo(note)


@kb.command("verify")
@click.argument("kb_path", type=click.Path(path_type=Path))
def kb_verify(kb_path) -> None:
    """Check a KB in full: counts, the chunks' fingerprint and every file's SHA-256 against the manifest."""
    from lm_eval_kinject.errors import DataError
    from lm_eval_kinject.kb import verify_kb

    problems = verify_kb(kb_path)
    if problems:
        raise DataError(f"{kb_path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    click.echo(f"{kb_path}: OK (counts, fingerprint and file checksums match the manifest)")


@kb.command("info")
@click.argument("kb_path", type=click.Path(path_type=Path))
def kb_info(kb_path) -> None:
    """Print a KB's manifest (sizes, embedder, settings, fingerprint)."""
    import json

    from lm_eval_kinject.kb import read_manifest

    click.echo(json.dumps(read_manifest(Path(kb_path)), indent=2, ensure_ascii=False))


def _config_options(config_class, skip=()):
    """One click option per field of a config dataclass (help from the field's metadata).

    Every option defaults to None, so the command can tell a flag given on the command line from
    a value that should come from ``--config`` or the dataclass default.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(config_class, include_extras=False)

    def decorate(command):
        for item in reversed(dataclasses.fields(config_class)):
            if item.name in skip:
                continue
            flag, kind = "--" + item.name.replace("_", "-"), hints[item.name]
            args = [t for t in typing.get_args(kind) if t is not type(None)]
            base = args[0] if typing.get_origin(kind) is typing.Union or str(typing.get_origin(kind)) == \
                "<class 'types.UnionType'>" else kind
            shown = "required" if item.default == "" else f"default: {item.default}"
            help_text = f"{item.metadata.get('help', '')} [{shown}]"
            if base is bool:
                if item.default is False:
                    command = click.option(flag, item.name, default=None, flag_value=True, help=help_text)(command)
                else:
                    command = click.option(f"{flag}/--no-{flag[2:]}", item.name, default=None,
                                           help=help_text)(command)
            elif typing.get_origin(base) is typing.Literal:
                command = click.option(flag, item.name, default=None, type=click.Choice(typing.get_args(base)),
                                       help=help_text)(command)
            else:
                command = click.option(flag, item.name, default=None, type=base, help=help_text)(command)
        return command

    return decorate


@main.command("finetune")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML file of settings (the option names below, with underscores); flags override it.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run of the same settings from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Discard whatever --out holds and train from scratch.")
@click.option("--print-config", is_flag=True, help="Print the resolved settings as YAML and exit.")
@click.option("--wait", is_flag=True, help="If another process is training into --out, wait for it (default: "
                                           "refuse).")
@_config_options(FinetuneConfig)
def finetune_(config_file, resume, overwrite, print_config, wait, **flags) -> None:
    """Fine-tune a model on a knowledge base's chunks (+ paraphrases): full or LoRA, resumable.

    \b
    kinject finetune --kb kb/ce --out ckpt/ft-reg
    kinject finetune --kb kb/ce --paraphrases paraphrases.jsonl --n-paraphrases 5 --method lora --out ckpt/ft-par
    lm_eval --model hf --model_args pretrained=ckpt/ft-reg --tasks current_events_cloze
    """
    import yaml

    from lm_eval_kinject.finetune import finetune, load_config_file

    settings = load_config_file(config_file) if config_file else {}
    settings.update({k: v for k, v in flags.items() if v is not None})
    config = FinetuneConfig(**settings)
    if print_config:
        click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False), nl=False)
        return
    try:
        result = finetune(config, resume=resume, overwrite=overwrite, wait=wait)
    except KeyboardInterrupt as stop:
        click.echo(f"\nInterrupted{_by(stop)}. The last complete checkpoint is kept in {config.out}/checkpoints; "
                   "continue with the same command and --resume.", err=True)
        sys.exit(_interrupted_code(stop))
    training = result.metadata["training"]
    if result.skipped:
        click.echo(f"{config.out}: already trained with these settings (pass --overwrite to retrain)")
    load = (f"pretrained={config.out}" if config.method == "full" or config.merge
            else f"pretrained={result.metadata['base_model']['pretrained']},peft={config.out}")
    click.echo(f"{config.out}: {training['steps']} steps, final loss {training['final_loss']:.4f}"
               + (f", validation loss {training['validation'][-1]['eval_loss']:.4f}" if training["validation"] else "")
               + f"\nEvaluate with: lm_eval --model hf --model_args {load} --tasks ...")


@main.group()
def fictional() -> None:
    """A generated fictional world: knowledge no model can have seen."""


@fictional.command("generate")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write (replaced atomically).")
@click.option("--seed", default=0, show_default=True, help="Seed: the same seed and sizes give identical files.")
@click.option("--events", default=30, show_default=True, help="Events (chunks) in the world.")
@click.option("--paraphrases", default=6, show_default=True, help="Paraphrases per chunk (FT-par data).")
@click.option("--asked", default="town,year,leader", show_default=True,
              help="Facts that become questions: comma-separated of town,year,leader,organiser,participants.")
@click.option("--practice-events", default=0, show_default=True,
              help="Events outside the world, every fact asked: QA exercises for mixed training (qa_practice), "
                   "written to practice_chunks.jsonl and practice_questions.jsonl.")
def fictional_generate(out, seed, events, paraphrases, asked, practice_events) -> None:
    """Write a world in the current-events format: chunks, questions, paraphrases, facts, manifest."""
    from lm_eval_kinject.fictional import SLOTS, FictionalConfig, write_world

    config = FictionalConfig(seed=seed, events=events, paraphrases=paraphrases,
                             asked=tuple(a.strip() for a in asked.split(",") if a.strip()),
                             practice_events=practice_events)
    write_world(config, out)
    practice = f", {practice_events * len(SLOTS)} practice questions" if practice_events else ""
    click.echo(f"{out}: {events} events, {events * len(config.asked)} questions{practice}, {paraphrases} paraphrases "
               f"per chunk (seed {seed}). Evaluate: lm_eval --model kinject-rag --tasks kinject_fictional_cloze "
               f"--metadata '{{\"fictional_dir\": \"{out}\"}}'")


@main.command("demo")
@click.option("--out", default=Path("runs/demo"), show_default=True, type=click.Path(path_type=Path),
              help="Run folder: the world, demo.yaml (its grid config), the grid's cells and the report.")
@click.option("--work", "work", type=click.Path(path_type=Path), hidden=True)  # the option's old name
@click.option("--quick", is_flag=True,
              help="A smaller version (8 events; FT-reg, FT-par N=2, FT-RAFT; no FT+RAG, no control task).")
@click.option("--world", "world_source", help="Run on this world instead of generating one: a world folder (`kinject "
              "fictional generate`), its dataset folder (`kinject export`) or a Hub dataset id.")
@click.option("--events", type=click.IntRange(4, 280), help="Events in the world (default 20; --quick: 8).")
@click.option("--practice-events", "practice_events", type=click.IntRange(0, 276),
              help="Events outside the world whose QA pairs FT-RAFT / FT-mix train on, never scored (default 30; "
                   "--quick: 12).")
@click.option("--n-paraphrases", "n_paraphrases", help="FT-par: paraphrases per chunk, comma-separated; several "
              "give the paper's Figure 4 (e.g. 1,2,5,10; 0 = FT-reg is always there). Default 3; --quick: 2.")
@click.option("--arms", help=f"Arms, comma-separated, from: {', '.join(ARMS)}. Default: base, base+rag, ft-reg, "
              "ft-par, ft-raft and the three FT arms +rag.")
@click.option("--method", type=click.Choice(["full", "lora"]), help="Fine-tuning method [default: full].")
@click.option("--learning-rate", type=float, help="Peak learning rate of every FT arm [default: 5e-4].")
@click.option("--epochs", type=float, help="Epochs of every FT arm [default: 4; --quick: 3].")
@click.option("--fact-passes", type=float, help="Instead of --epochs: how often every fact is read in training, "
              "whatever N (equal token budgets for FT-reg and FT-par).")
@click.option("--retriever", type=click.Choice(list(SEARCH_RETRIEVERS)), help=f"[default: {DEFAULT_RETRIEVER}]")
@click.option("-k", type=click.IntRange(1), help="Chunks retrieved per question [default: 1].")
@click.option("--limit", type=click.IntRange(1), help="Evaluate only the first N questions.")
@click.option("--control-task", "control_tasks", multiple=True, help="Task that measures forgetting (repeatable; "
              "default: MMLU anatomy cloze when $KINJECT_MMLU_DIR is set or the Hub is reachable).")
@click.option("--no-control", is_flag=True, help="Measure no forgetting.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="The world and every seed.")
def demo(out, work, quick, world_source, events, practice_events, n_paraphrases, arms, method, learning_rate, epochs,
         fact_passes, retriever, k, limit, control_tasks, no_control, seed) -> None:
    """The paper's comparison on a fictional world, offline, on the embedded model and embedder.

    Base, RAG, FT-reg, FT-par, FT-RAFT (the documents, plus QA pairs of practice events outside the
    world, each event's passage followed by its pairs) and the FT arms with RAG (--arms adds FT-mix:
    the QA pairs without passages), every arm scored on every question; run as a grid (OUT/demo.yaml)
    and reported like one: OUT/report.md, report.json, Figure 4, paired tests."""
    from lm_eval_kinject.demo import EXPERIMENT, DemoConfig, run_demo, with_options
    from lm_eval_kinject.report.build import experiment_summary

    out = work or out
    if epochs is not None and fact_passes is not None:
        raise click.UsageError("give --epochs or --fact-passes, not both (--fact-passes sets the epochs of each arm)")
    config = DemoConfig.quick(seed=seed) if quick else DemoConfig()
    ns = None
    if n_paraphrases:
        try:
            ns = tuple(sorted({int(n) for n in n_paraphrases.split(",") if int(n) > 0}))
        except ValueError:
            raise click.BadParameter(f"{n_paraphrases!r}: expected comma-separated integers",
                                     param_hint="--n-paraphrases") from None
    finetune = {k: v for k, v in {"method": method, "learning_rate": learning_rate, "epochs": epochs,
                                  "fact_passes": fact_passes}.items() if v is not None}
    config = with_options(config, out=out, world_source=world_source, events=events, practice_events=practice_events,
                          n_paraphrases=ns, retriever=retriever, k=k, limit=limit, seed=seed, finetune=finetune,
                          arms=tuple(a.strip() for a in arms.split(",") if a.strip()) if arms else None,
                          control_tasks=() if no_control else (tuple(control_tasks) or None))
    try:
        run, report = run_demo(config)
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted. Finished cells are kept in {out}; run the same command to continue.", err=True)
        sys.exit(130)
    if EXPERIMENT in report.sections:
        click.echo(experiment_summary(report, EXPERIMENT))
    click.echo(f"\n{out}: {len(run.done)} cells evaluated{_read_off(run)}, {len(run.skipped)} reused, "
               f"{len(run.failed)} failed in {run.seconds:.0f} s. Report: {report.out / 'report.md'}; "
               f"grid config: {out / 'demo.yaml'}")
    if run.failed:
        sys.exit(1)


@main.command("grid")
@click.argument("config_file", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder (created; reused on re-runs).")
@click.option("--check", is_flag=True, help="Validate the config, list the cells and what is finished, and exit.")
@click.option("--no-retry", is_flag=True, help="Leave cells that failed before as they are.")
@click.option("--models", default=None, help="Run only these models' cells (comma-separated): one process per GPU.")
@click.option("--experiments", default=None, help="Run only these experiments' cells (comma-separated).")
@click.option("--wait", is_flag=True, help="If another kinject grid is running in --out, wait for it to finish "
                                           "(default: refuse).")
def grid_(config_file, out, check, no_retry, models, experiments, wait) -> None:
    """Run an experiment grid (models × tasks × arms) through lm-eval; resumable.

    \b
    kinject grid configs/embedded.yaml --out runs/embedded
    kinject report runs/embedded --out runs/embedded/report
    """
    from lm_eval_kinject.grid import load_grid_config, run_grid
    from lm_eval_kinject.grid.cells import expand
    from lm_eval_kinject.grid.runner import cell_status, check_models, check_tasks

    config = load_grid_config(config_file)
    cells = expand(config)
    if check:
        check_models(config)
        check_tasks(config)
        for cell in cells:
            status = cell_status(out / "cells" / cell.hash(config)) or "pending"
            click.echo(f"{status:8} {cell.experiment:14} {cell.model:14} {cell.arm:14} {cell.task}"
                       + (" (control)" if cell.role == "control" else "")
                       + (" [" + ", ".join(f"{k}={v}" for k, v in cell.budget) + "]" if cell.budget else ""))
        click.echo(f"{len(cells)} cells; config OK")
        return
    try:
        run = run_grid(config, out, retry_failed=not no_retry,
                       models=_names(models) if models else None,
                       experiments=_names(experiments) if experiments else None, wait=wait)
    except KeyboardInterrupt as stop:
        click.echo(f"\nInterrupted{_by(stop)}. Finished cells are kept in {out}/cells; run the same command to "
                   "continue.", err=True)
        sys.exit(_interrupted_code(stop))
    click.echo(f"{out}: {len(run.done)} cells evaluated{_read_off(run)}, {len(run.skipped)} already finished, "
               f"{len(run.failed)} failed in {run.seconds:.0f} s"
               + (f"; failed cells are listed by `kinject report {out}`" if run.failed else ""))
    if run.failed:
        sys.exit(1)


@main.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Report folder [default: RUN/report].")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap resampling.")
@click.option("--expect", type=click.Path(path_type=Path), help="Expectations JSON to compare the key numbers with.")
@click.option("--tolerance", type=click.FloatRange(min=0),
              help="Absolute tolerance for --expect [default: the file's own].")
@click.option("--write-expectations", type=click.Path(path_type=Path), help="Write this run's key numbers here.")
@click.option("--experiments", default=None, help="Report only these experiments (comma-separated).")
def report_(run, out, seed, expect, tolerance, write_expectations, experiments) -> None:
    """Tables (md, CSV, LaTeX), Figures 2 and 4 (PNG, SVG) and paired tests of a grid run."""
    from lm_eval_kinject.artifacts import write_json_atomic
    from lm_eval_kinject.report import check_expectations, expectations_of, write_report

    report = write_report(run, out or run / "report", seed=seed,
                          experiments=_names(experiments) if experiments else None)
    click.echo(f"{report.out}/report.md: {len(report.cells)} cells ({report.failed} failed, {report.pending} pending), "
               f"{len(report.tests)} paired tests")
    for path in report.files:
        click.echo(f"  {path}")
    if write_expectations:
        write_json_atomic(write_expectations, expectations_of(report, tolerance or 0.0))
        click.echo(f"expectations written to {write_expectations}")
    if expect:
        problems = check_expectations(report, expect, tolerance)
        if problems:
            click.echo(f"{len(problems)} number(s) differ from {expect}:\n  " + "\n  ".join(problems), err=True)
            sys.exit(1)
        click.echo(f"key numbers match {expect}")


@main.command("export")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder to write (atomically).")
@click.option("--name", help="The dataset's pretty name [default: the folder's name].")
@click.option("--license", "licence", help="Hub licence id (e.g. cc-by-4.0) [default: what SRC states: a kinject "
                                          "world is apache-2.0, a README naming CC BY-SA is cc-by-sa-4.0].")
@click.option("--push-to-hub", "repo", help="Also upload the folder to this Hub dataset repo (owner/name).")
@click.option("--private", is_flag=True, help="With --push-to-hub: a private repo.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def export(src, out, name, licence, repo, private, overwrite) -> None:
    """A data folder (questions.jsonl, chunks.jsonl, paraphrases.jsonl, ...) as a Hugging Face dataset folder.

    \b
    Parquet, one config each (questions: split test; corpus, paraphrases, ...: split train) and a dataset card.
    kinject export runs/demo/world --out datasets/world
    python -c "import datasets; print(datasets.load_dataset('datasets/world', 'questions'))"
    lm_eval --model kinject-rag ... --tasks kinject_fictional_cloze --metadata '{"dataset_path": "datasets/world"}'
    """
    from lm_eval_kinject.hub_data import export_dataset, push_to_hub

    counts = export_dataset(src, out, name=name, licence=licence, overwrite=overwrite)
    click.echo(f"{out}: " + ", ".join(f"{config} {n}" for config, n in counts.items()) + " rows; README.md (card)")
    if repo:
        click.echo(f"uploaded: {push_to_hub(out, repo, private=private)}")


@main.command("contrib")
@click.argument("task")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write.")
@click.option("--dataset", help="The tasks' dataset_path: a Hub id or dataset folder; or a data folder, exported into "
                                "OUT/dataset [default: kinject_fictional's default world, exported].")
@click.option("--results/--no-results", default=True, show_default=True,
              help="Run the embedded public model on the tasks for the README's results table (~1 min).")
@click.option("--limit", type=click.IntRange(1), help="With --results: only the first N questions per task.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def contrib_(task, out, dataset, results, limit, overwrite) -> None:
    """The folder a pull request to lm-eval would add for TASK (kinject_fictional or current_events).

    \b
    kinject contrib kinject_fictional --out contrib/
    LM_EVAL_KINJECT_NO_HOOK=1 lm_eval validate --include_path contrib/ --tasks kinject_fictional,kinject_fictional_cloze
    """
    from lm_eval_kinject.contrib import contrib, tree

    done = contrib(task, out, dataset=dataset, results=results, limit=limit, overwrite=overwrite)
    click.echo(tree(Path(out)))
    click.echo(f"dataset_path: {done['dataset_path']}")
    for row in done["results"] or []:
        click.echo(f"  {row['task']}: acc {row['acc']:.3f} (n = {row['n']}, {row['model']})")
    if "dataset" in done["paths"]:
        click.echo(f"Upload the data with `kinject export ... --push-to-hub OWNER/NAME` (or `huggingface-cli upload "
                   f"OWNER/NAME {done['paths']['dataset']} --repo-type dataset`), then run this again with "
                   "--dataset OWNER/NAME so the YAMLs name the Hub dataset.")


@main.command("compare")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--alpha", default=0.05, show_default=True, type=float,
              help="Significance level of a drop, Holm-corrected across the cells that could reach it (unchanged "
                   "cells are left out).")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path),
              help="Also append the Markdown summary to this file (e.g. \"$GITHUB_STEP_SUMMARY\").")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every cell's comparison as JSON here.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap intervals.")
def compare(baseline, new, alpha, summary, json_out, seed) -> None:
    """CI gate: NEW vs BASELINE (grid run folders or report.json files), paired per question.

    Exit 1 when some cell dropped with Holm-corrected McNemar p < ALPHA, 2 when the input is unusable, 0 otherwise.
    """
    from lm_eval_kinject.artifacts import write_json_atomic
    from lm_eval_kinject.errors import DataError
    from lm_eval_kinject.report.compare import compare_runs, comparison_markdown

    try:
        result = compare_runs(baseline, new, alpha=alpha, seed=seed)
    except DataError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    text = comparison_markdown(result)
    click.echo(text)
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(text)
    if json_out:
        write_json_atomic(json_out, result.to_dict())
    sys.exit(1 if result.drops else 0)


_generate_cli.register(main)  # kinject paraphrase / questions / current-events

if __name__ == "__main__":
    main()
