"""Question sets as Hugging Face datasets: export a JSONL data folder, and read one back wherever a folder is taken.

A *data folder* is what ``kinject fictional generate``, ``kinject current-events`` and ``../shared`` hold:
``questions.jsonl`` and ``chunks.jsonl`` (+ ``paraphrases.jsonl``, a world's ``practice_*.jsonl`` and
``facts.jsonl``). ``export_dataset`` writes it as a Hub dataset folder: one Parquet file per config
(``questions`` with split ``test``; ``corpus``, ``paraphrases``, ... with split ``train``) and a dataset card
(``README.md``) whose YAML header names licence, task categories, sizes and the configs' files, so that
``datasets.load_dataset(DIR, "questions")`` works offline and ``huggingface_hub`` can upload the folder as it is.
Parquet only: ``datasets`` 4 dropped loading scripts, and upstream lm-eval takes Parquet-backed Hub datasets.

``data_folder(value)`` is the way back: a JSONL folder is returned as it is; a dataset folder or a Hub id is read
with ``datasets.load_dataset`` and written once as a JSONL folder in kinject's cache (keyed by the content), so every
command that reads a data folder (tasks, ``kb build``, ``finetune``, grids) takes either.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from lm_eval_kinject.errors import ConfigError, DataError
from lm_eval_kinject.records import read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["CONFIGS", "export_dataset", "dataset_card", "is_dataset_folder", "is_dataset", "data_folder", "data_file",
           "as_file", "push_to_hub", "read_config"]


@dataclass(frozen=True)
class DatasetConfig:
    name: str  # the dataset config
    file: str  # the data folder's JSONL file
    split: str
    required: dict  # fields every row must have
    what: str  # for the card


CONFIGS = (
    DatasetConfig("questions", "questions.jsonl", "test", {"id": str, "question": str, "choices": list, "answer": int},
                  "4-option questions: `id`, `question`, `choices` (4 strings), `answer` (0-3), `chunk_id` (the "
                  "corpus passage that answers it)"),
    DatasetConfig("corpus", "chunks.jsonl", "train", {"chunk_id": str, "text": str},
                  "the knowledge base: `chunk_id`, `text` (and `article` or `title`)"),
    DatasetConfig("paraphrases", "paraphrases.jsonl", "train", {"chunk_id": str, "paraphrases": list},
                  "rewrites of corpus passages: `chunk_id`, `paraphrases` (strings)"),
    DatasetConfig("practice_questions", "practice_questions.jsonl", "train",
                  {"id": str, "question": str, "choices": list, "answer": int},
                  "QA pairs about the practice passages (training exercises, never scored)"),
    DatasetConfig("practice_corpus", "practice_chunks.jsonl", "train", {"chunk_id": str, "text": str},
                  "practice passages: documents outside the knowledge base that the practice questions ask about"),
    DatasetConfig("facts", "facts.jsonl", "train", {"chunk_id": str},
                  "the structured facts each passage was written from (generated worlds)"),
)
_BY_NAME = {c.name: c for c in CONFIGS}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _read_rows(path: Path, config: DatasetConfig) -> list[dict]:
    rows = [record for _, record in read_jsonl(path, config.required)]
    if config.name in ("questions", "practice_questions"):
        from lm_eval_kinject.questions import read_current_events_questions

        read_current_events_questions(path)  # the tasks' own checks: 4 choices, answer 0-3, unique ids
    if not rows:
        raise DataError(f"{path}: empty; expected {config.what}")
    return rows


def _write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(key for row in rows for key in row))  # every field of any row, in first-seen order
    table = pa.table({key: [row.get(key) for row in rows] for key in columns})
    pq.write_table(table, path)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _licence_of(src: Path) -> str | None:
    """The licence a data folder states: a kinject world is the project's own (Apache-2.0); a folder whose README
    names CC BY-SA (Wikipedia text) is cc-by-sa-4.0."""
    manifest = src / "manifest.json"
    if manifest.is_file() and "lm_eval_kinject.fictional" in manifest.read_text(encoding="utf-8"):
        return "apache-2.0"
    readme = src / "README.md"
    if readme.is_file() and re.search(r"CC[ -]BY-SA", readme.read_text(encoding="utf-8")):
        return "cc-by-sa-4.0"
    return None


def _origin(src: Path) -> str:
    """How the data was made, for the card: a world's generator settings, or the folder's own README."""
    manifest = src / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("generator") == "lm_eval_kinject.fictional":
            settings = data.get("config", {})
            return ("A fictional world generated by lm-eval-kinject (`kinject fictional generate`, generator version "
                    f"{data.get('generator_version')}; settings {json.dumps(settings, sort_keys=True)}). Every name, "
                    "place, year and count is invented, so no model can know the answers before reading the corpus: "
                    "a base model scores chance, and whatever a model answers right afterwards was injected. The "
                    "same settings and seed give byte-identical files.")
    readme = src / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8").strip()
        return "From the source folder's README:\n\n" + re.sub(r"^#", "###", text, flags=re.M)
    return "Exported from a kinject data folder; the folder had no README or manifest to say how it was made."


def dataset_card(name: str, licence: str, counts: dict[str, int], origin: str, source: str) -> str:
    import yaml

    header = {
        "license": licence,
        "pretty_name": name,
        "language": ["en"],
        "task_categories": ["multiple-choice", "question-answering"],
        "task_ids": ["multiple-choice-qa"],
        "size_categories": [_size_category(counts["questions"])],
        "tags": ["knowledge-injection", "retrieval-augmented-generation", "lm-eval-kinject"],
        "configs": [{"config_name": c.name, "data_files": [{"split": c.split, "path": f"{c.name}/{c.split}.parquet"}]}
                    for c in CONFIGS if c.name in counts],
    }
    rows = "\n".join(f"| `{c.name}` | `{c.split}` | {counts[c.name]} | {c.what} |" for c in CONFIGS if c.name in counts)
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {name}

A knowledge-injection question set in the form of Ovadia et al. (2024), "Fine-Tuning or Retrieval? Comparing
Knowledge Injection in LLMs": multiple-choice questions whose answers are in a corpus of passages, to compare a model
that was fine-tuned on the corpus, one that retrieves from it, and both.

| config | split | rows | content |
|---|---|---:|---|
{rows}

## Use

```python
import datasets
questions = datasets.load_dataset("PATH_OR_HUB_ID", "questions", split="test")
corpus = datasets.load_dataset("PATH_OR_HUB_ID", "corpus", split="train")
```

With lm-eval and lm-eval-kinject: `lm_eval --model kinject-rag --model_args kb=KB --tasks current_events_cloze
--metadata '{{"dataset_path": "PATH_OR_HUB_ID"}}'` (build the KB with `kinject kb build PATH_OR_HUB_ID --out KB`).

## How it was made

{origin}

Exported by `kinject export` from `{source}`.
"""


def export_dataset(src: Path, out: Path, name: str | None = None, licence: str | None = None,
                   overwrite: bool = False) -> dict[str, int]:
    """Write the data folder ``src`` as a Hub dataset folder ``out`` (atomically); the row count per config."""
    src, out = Path(src), Path(out)
    if is_dataset_folder(src):
        raise ConfigError(f"{src}: already a dataset folder (README.md with configs); nothing to export")
    for required in ("questions", "corpus"):
        if not (src / _BY_NAME[required].file).is_file():
            raise ConfigError(f"{src}: no {_BY_NAME[required].file}; expected a data folder with questions.jsonl and "
                              "chunks.jsonl (+ paraphrases.jsonl), as `kinject fictional generate` writes")
    licence = licence or _licence_of(src)
    if not licence:
        raise ConfigError(f"{src}: its licence is not stated (no README naming one, not a kinject world); name it "
                          "with --license (a Hub licence id, e.g. cc-by-4.0)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = {}
    for config in CONFIGS:
        path = src / config.file
        if not path.is_file():
            continue
        rows = _read_rows(path, config)
        (tmp / config.name).mkdir()
        _write_parquet(rows, tmp / config.name / f"{config.split}.parquet")
        counts[config.name] = len(rows)
    card = dataset_card(name or src.resolve().name, licence, counts, _origin(src), str(src))
    (tmp / "README.md").write_text(card, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return counts


def is_dataset_folder(path: Path) -> bool:
    """A folder holding a dataset card with ``configs`` (what ``export_dataset`` writes, and Hub datasets have)."""
    card = Path(path) / "README.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    return text.startswith("---") and re.search(r"^configs:", text.split("---", 2)[1] if text.count("---") >= 2
                                                else "", flags=re.M) is not None


_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".md", ".html", ".xml", ".bz2", ".parquet", ".yaml", ".yml")


def _looks_like_hub_id(value: str) -> bool:
    """owner/name, not a local path, and not a file name (``data/chunks.jsonl`` is a missing file, not a repo)."""
    return (bool(_HUB_ID.match(value)) and not Path(value).exists()
            and not value.lower().endswith(_FILE_SUFFIXES))


def is_dataset(value: str | Path) -> bool:
    """A dataset folder, or a name that is no local path but reads as a Hub dataset id (owner/name)."""
    path = Path(str(value)).expanduser()
    return is_dataset_folder(path) if path.is_dir() else _looks_like_hub_id(str(value))


def data_file(value: str | Path, config: str) -> Path:
    """The JSONL file of one config (``questions``, ``corpus``, ``paraphrases``, ...) of a data folder, a dataset
    folder or a Hub id."""
    spec = _BY_NAME[config]
    path = data_folder(value) / spec.file
    if not path.is_file():
        raise DataError(f"{value}: no {config!r} config ({spec.file}); expected {spec.what}")
    return path


def as_file(value: str | Path, config: str) -> Path:
    """``value`` where a JSONL file is expected: the file itself, or that config of a dataset folder / Hub id."""
    return data_file(value, config) if is_dataset(value) else Path(value)


def read_config(source: str | Path, config: str) -> list[dict]:
    """The rows of one config of a dataset folder or Hub id (``datasets.load_dataset``); DataError in one line."""
    import datasets

    try:
        data = datasets.load_dataset(str(source), config, split=_BY_NAME[config].split)
    except Exception as error:  # no such config, offline, the Hub's own errors: the same one line
        raise DataError(f"{source}: cannot load config {config!r} ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:200]})") from None
    return data.to_list()


def data_folder(value: str | Path, what: str = "data folder") -> Path:
    """A JSONL data folder for ``value``: the folder itself, or a dataset folder / Hub id written as one (cached)."""
    path = Path(str(value)).expanduser()
    if path.is_dir() and not is_dataset_folder(path):
        return path
    if not path.is_dir() and not _looks_like_hub_id(str(value)):
        raise DataError(f"{what} {str(value)!r}: no such folder, and not a Hub dataset id (owner/name)")
    card = path / "README.md"
    key = (str(path.resolve()), card.stat().st_mtime_ns, card.stat().st_size) if path.is_dir() else (str(value),)
    if key not in _READ:
        _READ[key] = _materialise(value, what)
    return _READ[key]


_READ: dict[tuple, Path] = {}  # each dataset is read once per process


def _materialise(value: str | Path, what: str) -> Path:
    import datasets

    from lm_eval_kinject.presets import cache_dir

    names = [c.name for c in CONFIGS]
    try:
        available = datasets.get_dataset_config_names(str(value))
    except Exception as error:  # offline, unknown repo, unreadable card: one line
        where = "" if Path(str(value)).expanduser().is_dir() else "no such local folder, and "
        raise DataError(f"{what} {str(value)!r}: {where}cannot read the dataset's configs ({type(error).__name__}: "
                        f"{' '.join(str(error).split())[:200]})") from None
    if "questions" not in available and "corpus" not in available:
        raise DataError(f"{what} {str(value)!r}: a dataset without 'questions' or 'corpus' configs (it has "
                        f"{available}); expected one written by `kinject export`")
    tables = {name: read_config(value, name) for name in names if name in available}
    lines = {name: "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
                           for row in (_plain(r) for r in rows)) for name, rows in tables.items()}
    digest = hashlib.sha256("".join(f"{n}\0{t}" for n, t in sorted(lines.items())).encode()).hexdigest()[:16]
    slug = re.sub(r"[^\w.-]+", "_", str(value).strip("/").split("/")[-1]) or "dataset"
    target = cache_dir() / "datasets" / f"{slug}-{digest}"
    if (target / "questions.jsonl").is_file() or (target / "chunks.jsonl").is_file():
        return target
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, text in lines.items():
        (tmp / _BY_NAME[name].file).write_text(text, encoding="utf-8")
    (tmp / "SOURCE").write_text(f"{value}\n", encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # another process wrote it first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("%s: read as a data folder at %s", value, target)
    return target


def _plain(row: dict) -> dict:
    """A row without the None fields Parquet adds for columns other rows have (JSONL rows omit them)."""
    return {k: v for k, v in row.items() if v is not None}


def push_to_hub(folder: Path, repo: str, private: bool = False) -> str:
    """Upload an exported dataset folder to the Hub as dataset ``repo``; its URL. DataError in one line when the Hub
    cannot be reached or refuses."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset",
                          commit_message="kinject export")
    except Exception as error:  # offline (HF_HUB_OFFLINE), no token, network: the same one line
        raise DataError(f"--push-to-hub {repo}: the Hub cannot be reached or refused the upload "
                        f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); the dataset folder "
                        f"{folder} is complete: upload it later with `huggingface-cli upload {repo} {folder} "
                        "--repo-type dataset`") from None
    return f"https://huggingface.co/datasets/{repo}"
