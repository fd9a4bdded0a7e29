"""The ``kinject`` command: everything around the harness. Parses arguments and calls; no logic."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from lm_eval_kinject import __version__
from lm_eval_kinject.errors import KinjectError


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


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="kinject")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Fine-tune, retrieve, or both? Knowledge-injection experiments inside lm-eval."""
    ctx.obj = {"debug": debug}
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
@click.option("--seed", default=0, show_default=True, help="Seed of the HNSW graph construction.")
@click.option("--overwrite", is_flag=True, help="Replace an existing KB at --out.")
def kb_build(sources, out, chunk_tokens, overlap, tokenizer, embedder, id_field, title_field, text_field,
             wikipedia_dump, titles, category, hf_dataset, hf_split, mediawiki, exact_below, seed, overwrite) -> None:
    """Build a knowledge base from JSONL files, folders, a Wikipedia dump, a HF dataset or MediaWiki."""
    from itertools import chain

    from lm_eval_kinject import corpus
    from lm_eval_kinject.chunking import ChunkConfig
    from lm_eval_kinject.errors import ConfigError
    from lm_eval_kinject.index.dense import DenseConfig
    from lm_eval_kinject.kb import KBConfig, build_kb

    fields = corpus.JsonlFields(id=id_field, title=title_field, text=text_field)
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
    config = KBConfig(chunk=ChunkConfig(chunk_tokens=chunk_tokens, overlap_tokens=overlap, tokenizer=tokenizer),
                      dense=DenseConfig(embedder=embedder, exact_below=exact_below, seed=seed))
    built = build_kb(chain(*streams), out, config, sources=names, overwrite=overwrite)
    counts = built.manifest["counts"]
    click.echo(f"{out}: {counts['chunks']} chunks from {counts['documents']} documents "
               f"({counts['empty_skipped']} empty skipped, {counts['duplicate_documents']} duplicate documents, "
               f"{counts['duplicate_chunks']} duplicate chunks dropped) in {built.manifest['build_seconds']} s")


@kb.command("search")
@click.argument("kb_path", type=click.Path(path_type=Path))
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="Number of chunks.")
@click.option("--retriever", default="hybrid", show_default=True, type=click.Choice(["bm25", "dense", "hybrid"]))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
def kb_search(kb_path, query, k, retriever, as_json) -> None:
    """Print the top-k chunks for QUERY."""
    import json

    from lm_eval_kinject.kb import KnowledgeBase

    base = KnowledgeBase.load(kb_path)
    hits = base.search(query, k=k, retriever=retriever)
    for rank, (chunk_id, score) in enumerate(zip(hits.ids[0], hits.scores[0]), start=1):
        chunk = base.chunk(chunk_id)
        if as_json:
            click.echo(json.dumps({"rank": rank, "chunk_id": chunk_id, "score": float(score), "article": chunk.article,
                                   "text": chunk.text}, ensure_ascii=False))
        else:
            click.echo(f"{rank}. [{chunk_id}] {score:.4f}  {chunk.article}\n   {chunk.text[:300]}\n")


@kb.command("eval")
@click.argument("kb_path", type=click.Path(path_type=Path))
@click.argument("questions", type=click.Path(exists=True, path_type=Path))
@click.option("-k", "ks", default="1,4,10", show_default=True, callback=_int_list, help="Cut-offs, comma-separated.")
@click.option("--retriever", "retrievers", default="bm25,dense,hybrid", show_default=True,
              help="Comma-separated retrievers to compare.")
@click.option("--with-options", is_flag=True, help="Append the answer options to each query.")
def kb_eval(kb_path, questions, ks, retrievers, with_options) -> None:
    """Recall@k and MRR of the gold chunk_id of each question in QUESTIONS (questions.jsonl)."""
    from lm_eval_kinject.kb import KnowledgeBase
    from lm_eval_kinject.retrieval_eval import evaluate_retrieval, format_table

    base = KnowledgeBase.load(kb_path)
    rows = evaluate_retrieval(base, questions, ks, [r.strip() for r in retrievers.split(",")], with_options)
    click.echo(format_table(rows, ks))


@kb.command("info")
@click.argument("kb_path", type=click.Path(path_type=Path))
def kb_info(kb_path) -> None:
    """Print a KB's manifest (sizes, embedder, settings, fingerprint)."""
    import json

    from lm_eval_kinject.kb import read_manifest

    click.echo(json.dumps(read_manifest(Path(kb_path)), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
