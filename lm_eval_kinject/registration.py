"""How lm-eval finds ``kinject-rag`` and the kinject tasks.

Three routes lead here, all to the same two objects (the model placeholder and the task folder):

1. the proposed upstream entry points (setup.cfg: ``lm_eval.models``, ``lm_eval.tasks``);
2. the start-up hook (:mod:`lm_eval_kinject._startup`) for lm-eval 0.4.x, which has none;
3. :func:`ensure_registered`, called by ``python -m lm_eval_kinject`` and ``kinject eval``, which
   work with the hook turned off.
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
from importlib import resources
from pathlib import Path

from lm_eval_kinject.backends import BACKENDS

MODEL_NAME = BACKENDS["hf"].model
# every kinject lm-eval model: kinject-rag (hf), kinject-rag-vllm, kinject-rag-api
MODELS = {backend.model: backend.target for backend in BACKENDS.values()}

__all__ = ["MODEL_NAME", "MODELS", "task_dirs", "register_model", "add_task_dirs_to", "ensure_registered", "task_manager"]


def task_dirs() -> list[Path]:
    """The folders holding this package's lm-eval task YAMLs (``tasks/`` in the source tree)."""
    return [Path(str(resources.files("lm_eval_kinject.tasks")))]


def source_reads_entry_points(source: str, group: str) -> bool:
    """True when ``source`` looks up the entry-point ``group`` (how upstream discovery would read)."""
    return "entry_points" in source and (f'"{group}"' in source or f"'{group}'" in source)


def _reads_entry_points(module, group: str) -> bool:
    """True when lm_eval's own code discovers plugins of ``group`` (future lm-eval releases)."""
    try:
        return source_reads_entry_points(inspect.getsource(module), group)
    except (OSError, TypeError):
        return False


def register_model() -> bool:
    """Register the kinject models as lazy placeholders; return False when nothing was needed.

    Imports ``lm_eval.models`` first so that lm_eval's built-in models are registered before ours
    (the registry skips its own lazy import once it is non-empty). A placeholder imports its module
    only when lm-eval builds that model, so a missing vLLM matters only to ``kinject-rag-vllm``.
    """
    import lm_eval.models  # noqa: F401  (registers hf, vllm, ...)
    from lm_eval.api import registry

    if _reads_entry_points(registry, "lm_eval.models"):
        return False
    added = False
    for name, target in MODELS.items():
        if name not in registry.model_registry:
            registry.model_registry.register(name, target=target)
            added = True
    return added


def _as_list(include_path) -> list:
    if include_path is None:
        return []
    if isinstance(include_path, (list, tuple)):
        return list(include_path)
    return [include_path]


def add_task_dirs_to(task_manager_cls) -> bool:
    """Make ``task_manager_cls`` index the kinject task folders; False when nothing was needed.

    Our folders go *before* a user's ``include_path`` so a user's own YAML still overrides ours.
    """
    if getattr(task_manager_cls, "_kinject_task_dirs", False):
        return False
    import lm_eval.tasks._index as index_module
    import lm_eval.tasks.manager as manager_module

    from lm_eval_kinject.task_index import install as cache_task_index

    try:  # lm-eval's own ~14,000 task YAMLs, parsed once per lm-eval version; a speed-up only, never a failure
        cache_task_index(index_module.TaskIndex)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).debug("lm-eval task index cache not installed (%s)", exc)
    if any(_reads_entry_points(m, "lm_eval.tasks") for m in (manager_module, index_module)):
        return False
    original_init = task_manager_cls.__init__
    ours = [str(p) for p in task_dirs()]

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        params = inspect.signature(original_init).bind(self, *args, **kwargs)
        given = _as_list(params.arguments.get("include_path"))
        given_str = {str(Path(p)) for p in given}
        params.arguments["include_path"] = [p for p in ours if p not in given_str] + given
        original_init(*params.args, **params.kwargs)

    task_manager_cls.__init__ = __init__
    task_manager_cls._kinject_task_dirs = True
    return True


def ensure_registered() -> None:
    """Register the model and the tasks now, whatever the start-up hook did (idempotent)."""
    from lm_eval.tasks.manager import TaskManager

    register_model()
    add_task_dirs_to(TaskManager)


@functools.lru_cache(maxsize=None)
def _task_manager(metadata_json: str):
    from lm_eval.tasks import TaskManager

    return TaskManager(metadata=json.loads(metadata_json))


def task_manager(metadata: dict | None = None):
    """lm-eval's ``TaskManager`` for ``metadata``, one per process: building one indexes every task YAML
    of lm-eval (5-10 s), and it is only read afterwards, so grids and demos that evaluate many cells share it."""
    return _task_manager(json.dumps(metadata or {}, sort_keys=True, default=str))
