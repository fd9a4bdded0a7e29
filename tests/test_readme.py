"""Every command the README shows parses as written: each ``kinject`` line through its click command (options,
arguments, choices), each ``lm_eval`` line through lm-eval's own argument parser, with the models and tasks it names
known. Paths a reader creates first (``kb/ce``, ``runs/...``) are the only thing not checked."""
from __future__ import annotations

import re
import shlex

import click
import pytest
from kinject_testing import REPO


def _commands(prefix: str) -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(prefix + " "):
                out.append([t for t in shlex.split(line) if t != "..."])
    return out


KINJECT = _commands("kinject")
LM_EVAL = _commands("lm_eval")


def test_the_readme_shows_the_everyday_commands():
    shown = {c[1] for c in KINJECT}
    assert {"kb", "finetune", "demo", "grid", "report", "compare", "export", "contrib"} <= shown
    assert len(LM_EVAL) >= 3


@pytest.mark.parametrize("argv", KINJECT, ids=[" ".join(c[1:3]) for c in KINJECT])
def test_kinject_lines_parse(argv):
    from lm_eval_kinject.cli import main

    ctx = main.make_context("kinject", [], resilient_parsing=True)
    command, args = main, argv[1:]
    while isinstance(command, click.Group):
        name, command, args = command.resolve_command(ctx, args)
        assert command is not None, f"no command {name!r} in {argv}"
    try:
        command.make_context(name, list(args), parent=ctx)
    except click.BadParameter as error:  # a path the reader makes first (exists=True) is fine; nothing else
        assert "does not exist" in str(error), f"{argv}: {error}"


@pytest.mark.parametrize("argv", LM_EVAL, ids=[c[c.index("--model") + 1] for c in LM_EVAL])
def test_lm_eval_lines_parse_with_known_models_and_tasks(argv):
    from lm_eval._cli.harness import HarnessCLI

    from lm_eval_kinject.registration import ensure_registered, task_manager

    ensure_registered()
    parsed = HarnessCLI()._parser.parse_args(["run", *argv[1:]])  # argparse exits on an unknown option
    import lm_eval.models  # noqa: F401 - fills the registry (lazily: vLLM need not be installed to be named)
    from lm_eval.api.registry import model_registry

    assert parsed.model in model_registry, f"{argv}: unknown model {parsed.model!r}"
    asked = {name for item in parsed.tasks for name in item.split(",")}
    unknown = asked - set(task_manager({}).all_tasks)
    assert not unknown, f"{argv}: unknown task(s) {sorted(unknown)}"
