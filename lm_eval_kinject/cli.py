"""The ``kinject`` command: everything around the harness. Parses arguments and calls; no logic."""
from __future__ import annotations

import logging
import sys

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


if __name__ == "__main__":
    main()
