"""Start-up hook that plugs lm-eval-kinject into the unmodified ``lm_eval`` CLI (lm-eval 0.4.x).

lm-eval 0.4.13 has no plugin discovery (upstream issue #1457; PRs #4013/#4015 propose the
entry-point groups ``lm_eval.models`` and ``lm_eval.tasks``, which setup.cfg already declares).
Until then, ``lm_eval_kinject.pth`` calls :func:`install` at interpreter start. It imports nothing
from lm_eval: it puts a finder on ``sys.meta_path`` that waits for two lm_eval modules and runs a
callback right after each has executed:

* ``lm_eval.models`` -> register ``kinject-rag`` as a lazy ``"module:Class"`` placeholder.
  Registering earlier would make the registry non-empty before lm_eval's own lazy import of
  ``lm_eval.models`` and hide the built-in models (``hf``, ``vllm``, ...).
* ``lm_eval.tasks.manager`` -> make every ``TaskManager`` also index this package's task folder.

Each callback does nothing when lm_eval already discovered the plugin by itself, and
``LM_EVAL_KINJECT_NO_HOOK=1`` turns the whole hook off (then use ``--include_path`` and
``python -m lm_eval_kinject``; see docs/lm-eval.md).
"""

import os
import sys

OPT_OUT_ENV = "LM_EVAL_KINJECT_NO_HOOK"

_installed = False


class _CallbackLoader:
    """Wraps a module's real loader; runs ``callback(module)`` once the module has executed."""

    def __init__(self, loader, callback) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # later readers (inspect, resources) see the real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        try:
            self._callback(module)
        except Exception as exc:  # a broken plugin must never break lm_eval itself
            sys.stderr.write(f"lm-eval-kinject: start-up hook skipped ({exc!r})\n")

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder:
    """A ``sys.meta_path`` finder that only decorates the specs of the watched modules."""

    def __init__(self, callbacks: dict) -> None:
        self._callbacks = callbacks

    def find_spec(self, fullname, path=None, target=None):
        callback = self._callbacks.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CallbackLoader(spec.loader, callback)
                return spec
        return None


DEBUG_ENV = "KINJECT_DEBUG"


def _kinject_error(error: BaseException | None):
    """The KinjectError that ``error`` is or was raised from (lm-eval and datasets re-raise), or None."""
    from lm_eval_kinject.errors import KinjectError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KinjectError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_excepthook() -> None:
    """Under the stock ``lm_eval`` CLI, print this package's errors as one line, not a traceback.

    A :class:`~lm_eval_kinject.errors.KinjectError` (bad model_args, a broken KB or data folder, ...)
    becomes ``lm_eval: error: <message>`` on stderr, exit status 1; ``KINJECT_DEBUG=1`` keeps the
    traceback. Every other exception goes to the previous hook untouched.
    """
    previous = sys.excepthook
    if getattr(previous, "_kinject", False):
        return

    def hook(kind, value, traceback):
        error = _kinject_error(value)
        if error is None or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            return previous(kind, value, traceback)
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        sys.stderr.write(f"{program}: error: {error} ({DEBUG_ENV}=1 shows the traceback)\n")

    hook._kinject = True
    sys.excepthook = hook


def _on_models_loaded(module) -> None:
    from lm_eval_kinject.registration import register_model

    register_model()
    install_excepthook()  # lm_eval.models is imported by every lm_eval run: its errors become one line


def _on_task_manager_loaded(module) -> None:
    from lm_eval_kinject.registration import add_task_dirs_to

    add_task_dirs_to(module.TaskManager)


def install() -> bool:
    """Install the post-import hook once; return whether it is active. Never raises."""
    global _installed
    if _installed or os.environ.get(OPT_OUT_ENV, "").strip() not in ("", "0"):
        return _installed
    callbacks = {
        "lm_eval.models": _on_models_loaded,
        "lm_eval.tasks.manager": _on_task_manager_loaded,
    }
    already = [name for name in callbacks if name in sys.modules]
    for name in already:  # imported before us (e.g. by a custom sitecustomize): run now
        callbacks.pop(name)(sys.modules[name])
    if callbacks:
        sys.meta_path.insert(0, _PostImportFinder(callbacks))
    _installed = True
    return True
