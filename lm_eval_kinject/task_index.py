"""A cache of lm-eval's index of its own task YAMLs, so a ``lm_eval`` run starts ~15 s sooner.

Every ``TaskManager`` — so every ``lm_eval`` command — parses all of lm-eval's ~14,000 task YAML files
(lm-eval 0.4.13: ~14 s on 2 CPU cores, most of a small run's start-up) before it looks at the tasks
asked for. Those files are part of the installed lm-eval and change only when it is upgraded or edited.
This module keeps the parsed index of that one folder as JSON (no pickle) in kinject's cache folder,
keyed by the lm-eval version, the folder, and the number and latest modification time of its YAML
files (~0.15 s to check): an upgrade or an edited file rebuilds it. Other folders (ours, a user's
``include_path``) are indexed as lm-eval always does. Anything unexpected — another index format, an
unreadable or foreign cache file — falls back to lm-eval's own build; ``KINJECT_TASK_INDEX_CACHE=0``
turns the cache off.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["install", "OPT_OUT_ENV"]

OPT_OUT_ENV = "KINJECT_TASK_INDEX_CACHE"
FORMAT = 1


def _fingerprint(root: Path) -> dict:
    count, latest = 0, 0
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith((".yaml", ".yml")):
                count += 1
                latest = max(latest, os.stat(os.path.join(folder, name)).st_mtime_ns)
    from importlib.metadata import version

    return {"format": FORMAT, "lm_eval": version("lm_eval"), "root": str(root), "yaml_files": count,
            "latest_mtime_ns": latest}


def _cache_file(key: dict) -> Path:
    from lm_eval_kinject.presets import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "lm-eval-task-index" / f"{key['lm_eval']}-{digest}.json"


def _dump(key: dict, index: dict) -> str | None:
    """The cache file's text, or None when JSON would not give some entry back exactly."""
    stored = {"key": key, "entries": [{"name": e.name, "kind": e.kind.name, "cfg": e.cfg, "tags": sorted(e.tags),
                                       "yaml_path": None if e.yaml_path is None else str(e.yaml_path)}
                                      for e in index.values()]}
    text = json.dumps(stored, separators=(",", ":"))
    return text if json.loads(text) == stored else None


def _load(rows: list[dict]) -> dict:
    from lm_eval.tasks._index import Entry, Kind

    return {row["name"]: Entry(name=row["name"], kind=Kind[row["kind"]],
                               yaml_path=None if row["yaml_path"] is None else Path(row["yaml_path"]),
                               cfg=row["cfg"], tags=set(row["tags"])) for row in rows}


def _cached(root: Path, build) -> dict:
    key = _fingerprint(root)
    path = _cache_file(key)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return _load(stored["entries"])
    except FileNotFoundError:
        pass
    except Exception as exc:  # a damaged or foreign file: rebuild it
        logger.debug("task index cache %s unusable (%s); rebuilding", path, exc)
    index = build([root])
    try:
        text = _dump(key, index)
        if text is not None:
            from lm_eval_kinject.artifacts import write_text_atomic

            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
    except Exception as exc:  # a read-only cache folder, an entry JSON cannot hold: no cache, same index
        logger.debug("task index cache not written to %s (%s)", path, exc)
    return index


def install(index_cls) -> bool:
    """Make ``index_cls.build`` (lm-eval's ``TaskIndex``) read lm-eval's own task folder from the cache.

    Returns False when it was already installed, turned off, or ``index_cls`` is not the shape it knows.
    """
    if os.environ.get(OPT_OUT_ENV, "1") in ("0", "false", "no") or getattr(index_cls, "_kinject_cached", False):
        return False
    original = index_cls.__dict__.get("build")
    if not isinstance(original, staticmethod):
        return False
    build = original.__func__
    # lm-eval's task folder: the package that holds _index.py (lm_eval.tasks may still be importing here)
    default = Path(sys.modules[index_cls.__module__].__file__).resolve().parent

    def cached_build(paths, *, resolve_includes=True):
        paths = list(paths)
        if not paths or not resolve_includes or Path(paths[0]).resolve() != default:
            return build(paths, resolve_includes=resolve_includes)
        try:
            index = dict(_cached(default, build))
        except Exception as exc:  # lm-eval changed its Entry or Kind: its own build, uncached
            logger.debug("task index cache unavailable (%s)", exc)
            return build(paths, resolve_includes=resolve_includes)
        for name, entry in (build(paths[1:], resolve_includes=True) if paths[1:] else {}).items():
            if name in index:  # as lm-eval's own merge: a later folder overrides, with its warning
                logging.getLogger("lm_eval.tasks._index").warning(
                    "Task '%s' from %s overrides existing task from %s", name, entry.yaml_path,
                    index[name].yaml_path)
            index[name] = entry
        return index

    index_cls.build = staticmethod(cached_build)
    index_cls._kinject_cached = True
    index_cls._kinject_uncached_build = staticmethod(build)
    return True
