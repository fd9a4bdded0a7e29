"""An experiment grid, read from YAML and checked whole before anything runs.

    seed: 0
    vars: {data: "${KINJECT_SHARED_DATA:-../../shared/data}"}   # ${name} below; ${ENV:-default} anywhere
    models:            {NAME: {pretrained: PRESET|FOLDER|HUB_ID, ...other kinject-rag model_args}}
    knowledge_bases:   {NAME: {sources: [FILE|FOLDER, ...], chunk_tokens: 256, overlap: 32, embedder: ...,
                               only_chunks_of: QUESTIONS_FILE}}
    task_metadata:     {mmlu_dir: ..., current_events_dir: ...}     # lm-eval --metadata for every task
    retrieval:         {retriever: bm25|dense|hybrid|oracle, k: 3, template: plain, fusion_depth: 100, rrf_k: 60,
                        query_with_options: false, rerank: lm|cross-encoder:PATH, rerank_depth: 10, rerank_model: ...}
    finetune:          {FinetuneConfig fields: method, epochs, max_steps, learning_rate, ...}
    lm_eval:           {backend: hf|vllm|api, batch_size: 8, limit: null, device: cpu}
    experiments:
      NAME: {title, tasks: [...], kb: KB_NAME, train_kb: KB_NAME, arms: [...], paraphrases: FILE, n_paraphrases: [N, ...],
             qa: FILE, qa_split: {train_fraction: 0.5, seed: SEED, swap: false},
             qa_practice: FILE, qa_practice_chunks: FILE|KB_FOLDER, control_tasks: [...],
             finetune: {...overrides}, sweep: {learning_rate: [5e-5, 5e-4], epochs: [2, 4]},
             retrieval: {...overrides}, limit: N}

Relative paths are relative to the YAML file. Arms are the table of ``lm_eval_kinject/arms.py``:
``base``, ``base+rag``, ``ft`` / ``ft-reg`` (fine-tuned on the KB's chunks), ``ft-par`` (one arm per
``n_paraphrases`` value), ``ft-mix`` (chunks, the largest N's paraphrases if any, and the QA pairs of
the training split of ``qa`` and/or the practice questions ``qa_practice``), ``ft-raft`` (as
``ft-mix``, the QA pairs after their chunk), each with ``+rag``. Practice questions are about other
documents (``qa_practice_chunks``) and are never scored. An experiment with ``qa`` scores *every*
arm on the held-out split of its questions only (``qa_split``, by chunk), so all comparisons stay
paired; one with practice questions only scores every arm on all of them. ``swap: true`` trains on the
part the unswapped split holds out and scores the other: two experiments that differ only in ``swap``
are cross-fitted, and ``kinject report`` pools them into one table over every question. ``train_kb``
(default: ``kb``) is the KB the fine-tuned arms train on, e.g. a KB with ``only_chunks_of:
questions.jsonl`` (the chunks the questions ask about) while +RAG arms retrieve from the whole ``kb``.
``control_tasks`` (outside the KB) are scored on the base model and on every fine-tuned one: the
difference is forgetting. ``sweep`` trains every fine-tuned arm once per combination of the listed
fine-tuning settings (its *budget*); each cell is keyed by its combination, the report draws accuracy
against training tokens and compares arms at the budget chosen on held-out paraphrase loss.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lm_eval_kinject.arms import ARMS
from lm_eval_kinject.backends import BACKENDS, DEFAULT_BACKEND
from lm_eval_kinject.errors import ConfigError, DataError, did_you_mean
from lm_eval_kinject.kb import KBConfig
from lm_eval_kinject.rag import RAG_ARGS
from lm_eval_kinject.retrieval import DEFAULT_RETRIEVER, RetrieverConfig
from lm_eval_kinject.splits import QuestionSplit

__all__ = ["GridConfig", "Experiment", "ModelSpec", "KBSpec", "load_grid_config"]

TOP_KEYS = ("seed", "vars", "models", "knowledge_bases", "task_metadata", "retrieval", "finetune", "lm_eval",
            "experiments")
EXPERIMENT_KEYS = ("title", "tasks", "kb", "train_kb", "arms", "paraphrases", "n_paraphrases", "qa", "qa_split",
                   "qa_practice", "qa_practice_chunks", "control_tasks", "finetune", "sweep", "retrieval", "limit")
QA_SPLIT_KEYS = ("train_fraction", "seed", "swap")
KB_KEYS = ("sources", "only_chunks_of", *KBConfig.OPTIONS)  # the grid's own two, then the KB's settings
# the kinject-rag* models' retrieval arguments, less those the grid sets per cell (kb) or leaves at their defaults
RETRIEVAL_KEYS = tuple(key for key in RAG_ARGS if key not in ("kb", "query_field", "retrieval_log"))
LM_EVAL_KEYS = ("backend", "batch_size", "limit", "device")
# FinetuneConfig fields the grid sets itself, per checkpoint
FT_OWN_KEYS = ("kb", "out", "model", "gguf_file", "paraphrases", "n_paraphrases", "qa", "qa_train_fraction",
               "qa_split_seed", "qa_practice", "qa_practice_chunks", "seed")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str
    model_args: dict = field(default_factory=dict)  # other kinject-rag model_args (dtype, gguf_file, ...)


@dataclass(frozen=True)
class KBSpec:
    name: str
    sources: tuple[str, ...]
    options: dict = field(default_factory=dict)  # KBConfig options
    only_chunks_of: str | None = None  # a questions file: keep only the documents its questions are about


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    tasks: tuple[str, ...]
    arms: tuple[str, ...]
    kb: str | None = None  # retrieval KB (+rag arms); also the training KB unless train_kb is set
    train_kb: str | None = None  # the KB the fine-tuned arms train on (None: kb)
    paraphrases: str | None = None
    n_paraphrases: tuple[int, ...] = ()
    control_tasks: tuple[str, ...] = ()
    finetune: dict = field(default_factory=dict)  # merged: grid-wide settings, then the experiment's
    retrieval: dict = field(default_factory=dict)
    limit: int | float | None = None
    qa: str | None = None  # questions whose training split ft-mix trains on
    qa_split: QuestionSplit | None = None  # set with qa: every arm scores the held-out part
    qa_practice: str | None = None  # practice questions (about other documents) ft-mix trains on, never scored
    qa_practice_chunks: str | None = None  # their documents: a chunks JSONL or a KB folder
    # fine-tuning settings swept for every FT arm: ((key, (value, ...)), ...), sorted by key
    sweep: tuple = ()

    def budgets(self) -> list[dict]:
        """Every combination of the swept settings ([{}] without a sweep), in a fixed order."""
        import itertools

        keys = [key for key, _ in self.sweep]
        return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.sweep))]

    def task_metadata(self, role: str) -> dict:
        """The lm-eval metadata this experiment adds to the grid's for a cell of ``role``."""
        return self.qa_split.metadata("heldout") if self.qa_split and role == "main" else {}


@dataclass(frozen=True)
class GridConfig:
    path: Path
    seed: int
    models: dict[str, ModelSpec]
    knowledge_bases: dict[str, KBSpec]
    experiments: dict[str, Experiment]
    task_metadata: dict
    lm_eval: dict

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {"path": str(self.path), "seed": self.seed,
                "models": {k: asdict(v) for k, v in self.models.items()},
                "knowledge_bases": {k: asdict(v) for k, v in self.knowledge_bases.items()},
                "experiments": {k: asdict(v) for k, v in self.experiments.items()},
                "task_metadata": self.task_metadata, "lm_eval": self.lm_eval}


class _Checker:
    """Collects every problem of one file, each with its key path, and raises them together."""

    def __init__(self, path: Path) -> None:
        self.path, self.problems = path, []

    def error(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def keys(self, where: str, mapping, valid) -> dict:
        if not isinstance(mapping, dict):
            self.error(where, f"expected a mapping, got {type(mapping).__name__}")
            return {}
        for key in mapping:
            if key not in valid:
                self.error(where, f"unknown key {key!r}{did_you_mean(str(key), valid)}; valid keys: {', '.join(valid)}")
        return mapping

    def done(self) -> None:
        if self.problems:
            raise ConfigError(f"{self.path}: {len(self.problems)} problem(s):\n  " + "\n  ".join(self.problems))


def _substitute(value, variables: dict):
    """``${name}`` / ``${name:-default}`` from ``variables`` then the environment, in every string."""
    if isinstance(value, str):
        def replace(match):
            name, default = match.group(1), match.group(2)
            if name in variables:
                return str(variables[name])
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"${{{name}}} is neither a vars: entry nor an environment variable (give a default: "
                              f"${{{name}:-VALUE}})")
        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    return value


def _path(base: Path, value: str) -> str:
    path = Path(os.path.expanduser(value))
    return str(path if path.is_absolute() else (base / path).resolve())


def _data(check: _Checker, where: str, base: Path, value, config: str):
    """A data file value: the file, or that config of a dataset folder / Hub id of ``kinject export`` (read once as
    a JSONL file in kinject's cache, so cells key on its content)."""
    from lm_eval_kinject.hub_data import data_file, is_dataset

    if not value:
        return value
    path = _path(base, str(value))
    source = path if Path(path).exists() else str(value)  # a Hub id is no local path
    if not is_dataset(source):
        return path
    try:
        return str(data_file(source, config))
    except DataError as error:
        check.error(where, str(error))
        return path


def _local(base: Path, value: str) -> str:
    """A model reference: relative folders resolve against the file; presets and Hub ids stay."""
    return _path(base, value) if value.startswith((".", "/", "~")) else value


def load_grid_config(path: str | Path) -> GridConfig:
    """Read and check a grid YAML; every problem is reported at once, with its key path."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if raw is None:
        raise ConfigError(f"{path}: the grid config is empty; expected models:, experiments: (see configs/)")
    check = _Checker(path)
    raw = check.keys("top level", raw, TOP_KEYS)
    check.done()
    variables = _substitute(raw.get("vars") or {}, {})
    raw = _substitute({k: v for k, v in raw.items() if k != "vars"}, variables)
    base = path.resolve().parent
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        check.error("seed", f"expected an integer, got {seed!r}")

    models = {}
    raw_models = raw.get("models") or {}
    if not isinstance(raw_models, dict):
        check.error("models", "expected a mapping of NAME: {pretrained: ...}")
        raw_models = {}
    for name, spec in raw_models.items():
        if isinstance(spec, str):
            spec = {"pretrained": spec}
        if not isinstance(spec, dict) or not spec.get("pretrained"):
            check.error(f"models.{name}", "expected {pretrained: PRESET|FOLDER|HUB_ID, ...}")
            continue
        extra = {k: v for k, v in spec.items() if k != "pretrained"}
        rag_keys = sorted(set(extra) & set(RAG_ARGS))
        if rag_keys:
            check.error(f"models.{name}", f"{rag_keys} are retrieval settings: put them in retrieval:")
        # the backend's own arguments are checked by check_models (it imports the backend)
        models[name] = ModelSpec(name, _local(base, str(spec["pretrained"])), extra)
    if not models:
        check.error("models", "at least one model is needed")

    kbs = {}
    for name, spec in (raw.get("knowledge_bases") or {}).items():
        spec = check.keys(f"knowledge_bases.{name}", spec, KB_KEYS)
        sources = spec.get("sources")
        if isinstance(sources, str):
            sources = [sources]
        if not sources:
            check.error(f"knowledge_bases.{name}.sources", "expected a list of files or folders")
            continue
        resolved = tuple(_data(check, f"knowledge_bases.{name}.sources", base, s, "corpus") for s in sources)
        for source in resolved:
            if not Path(source).exists():
                check.error(f"knowledge_bases.{name}.sources", f"{source}: no such file or folder")
        only = spec.get("only_chunks_of")
        if only is not None:
            only = _data(check, f"knowledge_bases.{name}.only_chunks_of", base, only, "questions")
            if not Path(only).is_file():
                check.error(f"knowledge_bases.{name}.only_chunks_of", f"{only}: no such questions file")
        settings = {k: v for k, v in spec.items() if k not in ("sources", "only_chunks_of")}
        try:
            KBConfig.from_options(**settings)
        except ConfigError as error:
            check.error(f"knowledge_bases.{name}", str(error))
        kbs[name] = KBSpec(name, resolved, {k: v for k, v in spec.items() if k not in ("sources", "only_chunks_of")},
                           only)

    metadata = {k: _path(base, v) if isinstance(v, str) and k.endswith(("_dir", "_path", "_file")) else v
                for k, v in (raw.get("task_metadata") or {}).items()}
    retrieval = {"retriever": DEFAULT_RETRIEVER, "k": 3, "template": "plain",
                 **check.keys("retrieval", raw.get("retrieval") or {}, RETRIEVAL_KEYS)}
    lm_eval = {"backend": DEFAULT_BACKEND, "batch_size": 8, "limit": None, "device": "cpu",
               **check.keys("lm_eval", raw.get("lm_eval") or {}, LM_EVAL_KEYS)}
    _check_lm_eval(check, "lm_eval", lm_eval)
    finetune = raw.get("finetune") or {}

    _check_finetune(check, "finetune", finetune)
    experiments = {}
    raw_experiments = raw.get("experiments") or {}
    if not raw_experiments:
        check.error("experiments", "at least one experiment is needed")
    if not isinstance(raw_experiments, dict):
        check.error("experiments", "expected a mapping of NAME: {tasks, arms, ...}")
        raw_experiments = {}
    for name, spec in raw_experiments.items():
        experiment = _experiment(check, f"experiments.{name}", name, spec, base, kbs, finetune, retrieval,
                                 lm_eval["limit"], seed)
        if experiment is not None:
            experiments[name] = experiment
    check.done()
    return GridConfig(path=path.resolve(), seed=seed, models=models, knowledge_bases=kbs, experiments=experiments,
                      task_metadata=metadata, lm_eval=lm_eval)


def _list(check: _Checker, where: str, value, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        check.error(where, f"expected a list of {what}, got {type(value).__name__} {value!r}")
        return []
    return value


def _experiment(check: _Checker, where: str, name: str, spec, base: Path, kbs: dict, finetune: dict,
                retrieval: dict, limit, seed) -> Experiment | None:
    spec = check.keys(where, spec, EXPERIMENT_KEYS)
    tasks = _list(check, f"{where}.tasks", spec.get("tasks"), "lm-eval task names")
    arms = _list(check, f"{where}.arms", spec.get("arms"), "arms")
    # a value that is not a list was reported by _list; these catch an empty list or non-string items
    if isinstance(spec.get("tasks"), list) or spec.get("tasks") is None:
        if not tasks or not all(isinstance(t, str) for t in tasks):
            check.error(f"{where}.tasks", "expected a list of lm-eval task names")
    if not arms and (isinstance(spec.get("arms"), list) or spec.get("arms") is None):
        check.error(f"{where}.arms", f"expected a list of arms from: {', '.join(ARMS)}")
    known = []
    for i, arm in enumerate(arms):
        if arm not in ARMS:
            check.error(f"{where}.arms[{i}]", f"unknown arm {arm!r}{did_you_mean(str(arm), ARMS)}; "
                                              f"valid: {', '.join(ARMS)}")
        else:
            known.append(ARMS[arm])
    kb = spec.get("kb")
    needs_kb = [a.name for a in known if a.name != "base"]
    if needs_kb and not kb:
        check.error(f"{where}.kb", f"arms {needs_kb} need a knowledge base (kb: NAME from knowledge_bases)")
    elif kb and kb not in kbs:
        check.error(f"{where}.kb", f"{kb!r} is not in knowledge_bases{did_you_mean(str(kb), list(kbs))} "
                                   f"(defined: {', '.join(kbs) or 'none'})")
    train_kb = spec.get("train_kb")
    if train_kb is not None and train_kb not in kbs:
        check.error(f"{where}.train_kb", f"{train_kb!r} is not in knowledge_bases"
                                         f"{did_you_mean(str(train_kb), list(kbs))} (defined: {', '.join(kbs) or 'none'})")
    elif train_kb is not None and not any(a.fine_tuned for a in known):
        check.error(f"{where}.train_kb", "train_kb is for fine-tuned arms; this experiment has none")
    n_par = spec.get("n_paraphrases") or []
    n_par = [n_par] if isinstance(n_par, int) else _list(check, f"{where}.n_paraphrases", n_par, "paraphrase counts")
    paraphrases = _data(check, f"{where}.paraphrases", base, spec.get("paraphrases"), "paraphrases")
    if any(a.training == "chunks+paraphrases" for a in known):
        if not paraphrases:
            check.error(f"{where}.paraphrases", "ft-par arms need a paraphrases file")
        if not n_par:
            check.error(f"{where}.n_paraphrases", "ft-par arms need a list of positive paraphrase counts")
    if paraphrases and not Path(_path(base, paraphrases)).is_file():
        check.error(f"{where}.paraphrases", f"{_path(base, paraphrases)}: no such file")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in n_par):
        check.error(f"{where}.n_paraphrases", f"{n_par!r}: expected positive paraphrase counts")
        n_par = []
    if n_par and not paraphrases:
        check.error(f"{where}.paraphrases", "n_paraphrases needs a paraphrases file")
    qa, qa_split = _data(check, f"{where}.qa", base, spec.get("qa"), "questions"), None
    practice = _data(check, f"{where}.qa_practice", base, spec.get("qa_practice"), "practice_questions")
    practice_chunks = _data(check, f"{where}.qa_practice_chunks", base, spec.get("qa_practice_chunks"),
                            "practice_corpus")
    if any(a.uses_qa_data for a in known):
        if not qa and not practice:
            check.error(f"{where}.qa", "ft-mix / ft-raft arms need QA pairs to train on: a questions file to split "
                                       "(qa: FILE) and/or practice questions about other documents (qa_practice: "
                                       "FILE, qa_practice_chunks: FILE)")
        if qa and not Path(_path(base, qa)).is_file():
            check.error(f"{where}.qa", f"{_path(base, qa)}: no such file")
        if qa:
            split = {"seed": seed if isinstance(seed, int) else 0,
                     **check.keys(f"{where}.qa_split", spec.get("qa_split") or {}, QA_SPLIT_KEYS)}
            try:
                qa_split = QuestionSplit(split.get("train_fraction", 0.5), split["seed"], split.get("swap", False))
            except ConfigError as error:
                check.error(f"{where}.qa_split", str(error))
        elif spec.get("qa_split"):
            check.error(f"{where}.qa_split", "qa_split splits the questions of qa: FILE, which is not given")
        if bool(practice) != bool(practice_chunks):
            missing = "qa_practice_chunks" if practice else "qa_practice"
            check.error(f"{where}.{missing}", "practice questions (qa_practice) and their documents "
                                              "(qa_practice_chunks) go together")
        for key, value, kind in (("qa_practice", practice, "file"), ("qa_practice_chunks", practice_chunks, "path")):
            if value and not Path(_path(base, value)).exists():
                check.error(f"{where}.{key}", f"{_path(base, value)}: no such {kind}")
    elif qa or spec.get("qa_split") or practice or practice_chunks:
        given = [k for k in ("qa", "qa_split", "qa_practice", "qa_practice_chunks") if spec.get(k)]
        check.error(f"{where}.{given[0]}", f"{' / '.join(given)}: for arms that train on questions (ft-mix, ft-raft "
                                           "and their +rag)")
    if "limit" in spec:
        _check_limit(check, f"{where}.limit", spec["limit"])
    merged_ft = {**finetune, **(spec.get("finetune") or {})}
    if spec.get("finetune"):  # the grid-wide block is checked once, by the caller
        _check_finetune(check, f"{where}.finetune", merged_ft)
    sweep = _sweep(check, f"{where}.sweep", spec.get("sweep"), merged_ft, [a for a in known if a.fine_tuned])
    if sweep and (not paraphrases or merged_ft.get("val_paraphrases", 1) < 1):
        check.error(f"{where}.sweep", "the report compares arms at the budget with the lowest held-out paraphrase "
                                      "loss, never on the scored questions: a sweep needs paraphrases: FILE and "
                                      "val_paraphrases >= 1")
    merged_retrieval = {**retrieval, **check.keys(f"{where}.retrieval", spec.get("retrieval") or {}, RETRIEVAL_KEYS)}
    _check_retrieval(check, f"{where}.retrieval", merged_retrieval)
    return Experiment(
        name=name, title=str(spec.get("title") or name), tasks=tuple(tasks), arms=tuple(a.name for a in known), kb=kb,
        train_kb=train_kb,
        paraphrases=_path(base, paraphrases) if paraphrases else None, n_paraphrases=tuple(sorted(set(n_par))),
        control_tasks=tuple(spec.get("control_tasks") or ()), finetune=merged_ft, sweep=sweep,
        retrieval=merged_retrieval,
        limit=spec.get("limit", limit), qa=_path(base, qa) if qa else None, qa_split=qa_split,
        qa_practice=_path(base, practice) if practice else None,
        qa_practice_chunks=_path(base, practice_chunks) if practice_chunks else None)


def _sweep(check: _Checker, where: str, raw, finetune: dict, fine_tuned: list) -> tuple:
    """``{KEY: [values]}`` -> ``((KEY, (values...)), ...)`` sorted by key; every combination is checked as the
    FinetuneConfig it makes."""
    import itertools

    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        check.error(where, "expected a mapping of fine-tuning settings to lists of values, e.g. "
                           "{learning_rate: [5.0e-5, 5.0e-4], epochs: [2, 4]}")
        return ()
    if not fine_tuned:
        check.error(where, "a sweep varies fine-tuning settings; this experiment has no fine-tuned arm")
        return ()
    sweep, ok = [], True
    for key in sorted(raw):
        values = raw[key]
        if not isinstance(values, list) or not values:
            check.error(f"{where}.{key}", f"{values!r}: expected a non-empty list of values")
            ok = False
        elif len(set(map(repr, values))) != len(values):
            check.error(f"{where}.{key}", f"{values!r}: a value is listed twice")
            ok = False
        else:
            sweep.append((key, tuple(values)))
    if not ok:
        return ()
    seen = set()
    for values in itertools.product(*(v for _, v in sweep)):
        combination = dict(zip((k for k, _ in sweep), values))
        before = len(check.problems)
        _check_finetune(check, where, {**finetune, **combination})
        if len(check.problems) > before:  # one bad value: report it once, not once per combination
            problem = check.problems.pop()
            if problem not in seen:
                seen.add(problem)
                check.problems.append(problem)
    return tuple(sweep)


def _check_finetune(check: _Checker, where: str, settings: dict) -> None:
    from lm_eval_kinject.finetune import FinetuneConfig

    own = sorted(set(settings) & set(FT_OWN_KEYS))
    if own:
        check.error(where, f"{own} are set by the grid for each checkpoint (models, kb, paraphrases, seed)")
        return
    try:
        FinetuneConfig(kb="kb", out="out", **settings)
    except TypeError as error:
        from dataclasses import fields

        valid = [f.name for f in fields(FinetuneConfig) if f.name not in FT_OWN_KEYS]
        unknown = [k for k in settings if k not in valid]
        check.error(where, f"unknown key(s) {unknown}{''.join(did_you_mean(k, valid) for k in unknown)}; "
                           f"valid: {', '.join(valid)}" if unknown else str(error))
    except ConfigError as error:
        check.error(where, str(error))


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_limit(check: _Checker, where: str, limit) -> None:
    if limit is not None and not (_positive_int(limit) or (isinstance(limit, float) and 0 < limit <= 1)):
        check.error(where, f"{limit!r}: expected a positive number of questions, a fraction in (0, 1], or null for all")


def _check_lm_eval(check: _Checker, where: str, settings: dict) -> None:
    """Types of the lm_eval block, so that a bad value fails at --check and not in every cell."""
    if settings["backend"] not in BACKENDS:
        check.error(f"{where}.backend", f"{settings['backend']!r}: expected one of {', '.join(BACKENDS)}")
    _check_limit(check, f"{where}.limit", settings["limit"])
    batch = settings["batch_size"]
    if not (_positive_int(batch) or (isinstance(batch, str) and re.fullmatch(r"auto(:\d+)?", batch))):
        check.error(f"{where}.batch_size", f"{batch!r}: expected a positive integer, 'auto' or 'auto:N'")
    if not isinstance(settings["device"], str) or not settings["device"]:
        check.error(f"{where}.device", f"{settings['device']!r}: expected a device name such as cpu, cuda, cuda:0")


def _check_retrieval(check: _Checker, where: str, settings: dict) -> None:
    from lm_eval_kinject.prompting import TEMPLATES

    try:
        RetrieverConfig.from_mapping(settings, where).check_k(settings["k"], where="k")
    except ConfigError as error:
        check.error(where, str(error).removeprefix(f"{where}: "))
    k = settings["k"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        check.error(f"{where}.k", f"{k!r}: expected a positive integer")
    if not isinstance(settings.get("query_with_options", False), bool):
        check.error(f"{where}.query_with_options", f"{settings['query_with_options']!r}: expected true or false")
    if settings["template"] not in TEMPLATES:
        check.error(f"{where}.template", f"{settings['template']!r}: expected one of {', '.join(TEMPLATES)}")
