"""``kinject paraphrase``, ``kinject questions [review]``, ``kinject current-events build``: arguments in, calls out."""
from __future__ import annotations

from pathlib import Path

import click

from lm_eval_kinject.generate.paraphrase import ParaphraseConfig
from lm_eval_kinject.generate.questions import QuestionConfig

__all__ = ["register"]

_LLM_HELP = ("The LLM: openai:MODEL (key in $OPENAI_API_KEY), openai-compatible:URL,model=NAME[,key_env=VAR] "
             "(vLLM, llama.cpp server, ...), or hf:MODEL[,batch_size=8] (a local preset/folder/Hub id, e.g. "
             "hf:smollm2-135m).")


def _llm_options(command=None, limit: bool = True):
    if command is None:
        return lambda command: _llm_options(command, limit)
    for decorator in reversed([
        click.option("--llm", "llm_spec", required=True, help=_LLM_HELP),
        click.option("--concurrency", default=4, show_default=True, help="Requests in flight (HTTP backends)."),
        click.option("--max-retries", default=5, show_default=True,
                     help="Retries with back-off on connection errors, 429 and 5xx (HTTP backends)."),
        click.option("--timeout", "timeout_s", default=120.0, show_default=True, help="Seconds per request."),
        click.option("--cache", type=click.Path(path_type=Path),
                     help="Response cache (SQLite) [default: the kinject cache folder]."),
        click.option("--no-cache", is_flag=True, help="Do not read or write the response cache."),
        click.option("--seed", default=0, show_default=True, help="Seed of every request's sampling seed."),
        *([click.option("--limit", type=int, help="Only the first N chunks.")] if limit else []),
    ]):
        command = decorator(command)
    return command


def _options(llm_spec, concurrency, max_retries, timeout_s, cache, no_cache):
    from lm_eval_kinject.generate.run import LLMOptions

    return LLMOptions(llm_spec, concurrency, max_retries, timeout_s, cache, not no_cache)


def _question_options(command):
    for decorator in reversed([
        click.option("--per-chunk", default=4, show_default=True, help="Candidate questions asked per chunk."),
        click.option("--keep", default=2, show_default=True, help="Most specific candidates kept per chunk."),
        click.option("--retries", "q_retries", default=2, show_default=True,
                     help="Extra requests for a chunk whose answer is malformed or has too few valid candidates."),
        click.option("--dedup", default=0.8, show_default=True,
                     help="Word-set Jaccard at which a question counts as a near-duplicate of an earlier one."),
        click.option("--check-answerable", "check_model",
                     help="Score each question with this LM (preset/folder/Hub id, e.g. smollm2-135m) with and "
                          "without its chunk, and report it."),
        click.option("--filter-answerable", is_flag=True,
                     help="With --check-answerable: drop questions not answered with the chunk or answered without it."),
        click.option("--id-prefix", default="q", show_default=True, help="Question ids are PREFIX-0001, ..."),
        click.option("--max-tokens", "q_max_tokens", default=1024, show_default=True,
                     help="Answer length cap of a candidate request."),
    ]):
        command = decorator(command)
    return command


def _echo_questions(manifest: dict, out: Path) -> None:
    c = manifest["candidates"]
    click.echo(f"{out}/questions.jsonl: {manifest['questions']} questions from {manifest['chunks']} chunks "
               f"({sum(c.values())} candidates: {', '.join(f'{v} {k}' for k, v in sorted(c.items()))}; "
               f"{manifest['selection_fallbacks']} selection fallbacks)")
    if manifest["rejection_reasons"]:
        top = sorted(manifest["rejection_reasons"].items(), key=lambda kv: -kv[1])[:5]
        click.echo("  rejected for: " + "; ".join(f"{k} ({v})" for k, v in top))
    if manifest.get("answerability"):
        a = manifest["answerability"]
        click.echo(f"  answerability ({manifest['answerability_model']}): {a['answerable_with_chunk']}/{a['questions']} "
                   f"answered with the chunk, {a['correct_without_chunk']} without; {a['kept']} kept")
    click.echo(f"  LLM: {manifest['calls']}")


def _echo_paraphrases(manifest: dict, out: Path) -> None:
    click.echo(f"{out}: {manifest['accepted']} of {manifest['requested']} paraphrases accepted "
               f"({manifest['rejected']} rejected, {len(manifest['incomplete_chunks'])} chunks short)")
    if manifest["rejection_reasons"]:
        top = sorted(manifest["rejection_reasons"].items(), key=lambda kv: -kv[1])[:5]
        click.echo("  rejected for: " + "; ".join(f"{k} ({v})" for k, v in top))
    click.echo(f"  LLM: {manifest['calls']}")


class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to the default one."""

    default_command = "generate"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def register(main: click.Group) -> None:
    """Add the generation commands to the ``kinject`` group."""

    @main.command("paraphrase")
    @click.argument("source", type=click.Path(path_type=Path))
    @click.option("--n", default=10, show_default=True, help="Paraphrases per chunk.")
    @click.option("--out", type=click.Path(path_type=Path), required=True,
                  help="Paraphrases JSONL ({chunk_id, paraphrases}); .rejected.jsonl and .manifest.json go beside it.")
    @click.option("--retries", default=2, show_default=True, help="Extra requests per missing paraphrase.")
    @click.option("--temperature", default=0.8, show_default=True)
    @click.option("--max-tokens", type=int, help="Answer length cap [default: 2 tokens per word of the chunk, >= 256].")
    @click.option("--max-overlap", default=0.8, show_default=True,
                  help="Word-trigram overlap with the chunk above which an answer is a copy.")
    @_llm_options
    def paraphrase_(source, n, out, retries, temperature, max_tokens, max_overlap, llm_spec, concurrency, max_retries,
                    timeout_s, cache, no_cache, seed, limit):
        """Paraphrase every chunk of SOURCE (a KB folder or chunks JSONL) N times, keeping every fact."""
        from lm_eval_kinject.generate.run import paraphrase_run

        config = ParaphraseConfig(n=n, retries=retries, temperature=temperature, max_tokens=max_tokens,
                                  max_overlap=max_overlap, seed=seed)
        manifest = paraphrase_run(source, out, _options(llm_spec, concurrency, max_retries, timeout_s, cache, no_cache),
                                  config, limit)
        _echo_paraphrases(manifest, out)

    @main.group("questions", cls=_DefaultGroup)
    def questions_() -> None:
        """Generate questions from a KB (`kinject questions SOURCE ...`), or review them."""

    @questions_.command("generate")
    @click.argument("source", type=click.Path(path_type=Path))
    @click.option("--out", type=click.Path(path_type=Path), required=True,
                  help="Folder for questions.jsonl, candidates.jsonl, chunks.jsonl, manifest.json.")
    @_question_options
    @_llm_options
    def questions_generate(source, out, per_chunk, keep, q_retries, dedup, check_model, filter_answerable, id_prefix,
                           q_max_tokens, llm_spec, concurrency, max_retries, timeout_s, cache, no_cache, seed, limit):
        """Multiple-choice questions from every chunk of SOURCE (a KB folder or chunks JSONL)."""
        from lm_eval_kinject.errors import ConfigError
        from lm_eval_kinject.generate.run import questions_run

        if filter_answerable and not check_model:
            raise ConfigError("--filter-answerable needs --check-answerable MODEL")
        config = QuestionConfig(per_chunk=per_chunk, keep=keep, retries=q_retries, dedup=dedup, seed=seed,
                                id_prefix=id_prefix, max_tokens=q_max_tokens)
        manifest = questions_run(source, out, _options(llm_spec, concurrency, max_retries, timeout_s, cache, no_cache),
                                 config, limit, check_model, filter_answerable)
        _echo_questions(manifest, out)

    @questions_.command("review")
    @click.argument("folder", type=click.Path(path_type=Path))
    @click.option("--export", "export_to", type=click.Path(path_type=Path),
                  help="Write the questions for review: .csv (editable) or .md (for reading).")
    @click.option("--apply", "apply_from", type=click.Path(path_type=Path, exists=True),
                  help="Apply a reviewed CSV: keep=no drops, edits are re-checked, questions.jsonl rewritten.")
    def questions_review(folder, export_to, apply_from):
        """The manual check: export FOLDER's questions, or apply a reviewed CSV to them."""
        from lm_eval_kinject.errors import ConfigError
        from lm_eval_kinject.generate.review import apply_review, export_review

        if bool(export_to) == bool(apply_from):
            raise ConfigError("give exactly one of --export FILE or --apply FILE")
        if export_to:
            count = export_review(folder, export_to)
            click.echo(f"{export_to}: {count} questions; set keep=no to drop one, edit text/options/answer to fix one, "
                       f"then: kinject questions review {folder} --apply {export_to}")
        else:
            summary = apply_review(folder, apply_from)
            click.echo(f"{folder}/questions.jsonl: {summary['kept']} kept, {summary['dropped']} dropped, "
                       f"{summary['edited']} edited")

    @main.group("current-events")
    def current_events() -> None:
        """The paper's current-events dataset, rebuilt from Wikipedia with any LLM."""

    @current_events.command("build")
    @click.option("--from", "start", help="First month, YYYY-MM (the paper: 2023-08).")
    @click.option("--to", "end", help="Last month, YYYY-MM (the paper: 2023-11).")
    @click.option("--category", "categories", multiple=True, help="A category to add (repeatable).")
    @click.option("--titles", "titles_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
                  help="A file of page titles, one per line, to add.")
    @click.option("--api", default="https://en.wikipedia.org/w/api.php", show_default=True,
                  help="The MediaWiki api.php URL.")
    @click.option("--as-of", help="Use the revisions current at this ISO time (e.g. 2023-12-31T00:00:00Z).")
    @click.option("--limit-pages", type=int, help="Only the first N pages.")
    @click.option("--out", type=click.Path(path_type=Path), required=True)
    @click.option("--paraphrases", "n_paraphrases", default=10, show_default=True, help="Paraphrases per chunk.")
    @click.option("--chunk-tokens", type=int, help="Chunk size in tokens [default: the KB builder's].")
    @_question_options
    @_llm_options(limit=False)
    def current_events_build(start, end, categories, titles_file, api, as_of, limit_pages, out, n_paraphrases,
                             chunk_tokens, per_chunk, keep, q_retries, dedup, check_model, filter_answerable, id_prefix,
                             q_max_tokens, llm_spec, concurrency, max_retries, timeout_s, cache, no_cache, seed):
        """MediaWiki pages -> chunks -> questions -> paraphrases, in the current_events task's format."""
        from lm_eval_kinject.errors import ConfigError
        from lm_eval_kinject.generate.current_events import WikiSource, build_current_events
        from lm_eval_kinject.kb import KBConfig

        titles = tuple(t.strip() for t in titles_file.read_text(encoding="utf-8").splitlines() if t.strip()) \
            if titles_file else ()
        if not (start or end or categories or titles):
            raise ConfigError("name the pages: --from/--to (a month range), --category, or --titles")
        manifest = build_current_events(
            out, WikiSource(start, end, tuple(categories), titles, api, as_of),
            _options(llm_spec, concurrency, max_retries, timeout_s, cache, no_cache),
            QuestionConfig(per_chunk=per_chunk, keep=keep, retries=q_retries, dedup=dedup, seed=seed,
                           id_prefix=id_prefix, max_tokens=q_max_tokens),
            ParaphraseConfig(n=n_paraphrases, seed=seed), KBConfig.from_options(chunk_tokens=chunk_tokens),
            check_model, filter_answerable, limit_pages)
        counts = manifest["counts"]
        click.echo(f"{out}: {counts['pages']} pages, {counts['chunks']} chunks, {counts['questions']} questions, "
                   f"{counts['paraphrases']} paraphrases ({counts['paraphrased_chunks']} chunks fully paraphrased)")
        _echo_questions(manifest["questions"], out)
        _echo_paraphrases(manifest["paraphrases"], out / "paraphrases.jsonl")
        click.echo(f"evaluate: lm_eval --model kinject-rag --tasks current_events_cloze "
                   f"--metadata '{{\"current_events_dir\": \"{out}\"}}'")
