"""Question sets for the kinject tasks: MMLU subjects and current-events style data directories.

Every loader returns a ``datasets.DatasetDict`` whose rows look like Hugging Face ``cais/mmlu``
(``question``, ``choices`` [4 strings], ``answer`` 0-3, plus ``subject``/``id``/``chunk_id``), so the
task YAMLs are the same whichever source the rows came from. The tasks call these through
``custom_dataset``, which lm-eval hands every ``--metadata`` key (and the model_args), so
``load_*`` accept and ignore keys they do not use.
"""
from __future__ import annotations

import csv
import itertools
import logging
import os
from pathlib import Path

from lm_eval_kinject.errors import DataError
from lm_eval_kinject.records import read_jsonl

logger = logging.getLogger(__name__)

MMLU_SUBJECTS = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")
MMLU_HUB_ID = "cais/mmlu"
MMLU_DIR_ENV = "KINJECT_MMLU_DIR"
CURRENT_EVENTS_DIR_ENV = "KINJECT_CURRENT_EVENTS_DIR"
FICTIONAL_DIR_ENV = "KINJECT_FICTIONAL_DIR"
N_CHOICES = 4
_LETTERS = "ABCD"

__all__ = ["MMLU_SUBJECTS", "load_mmlu", "load_current_events", "load_fictional", "read_mmlu_csv",
           "read_current_events_questions", "find_data_dir"]


def find_data_dir(metadata: dict, specific_key: str, env: str) -> Path | None:
    """The data folder from ``--metadata`` (specific key, then ``dataset_path``, then ``data_dir``) or the
    environment: a JSONL folder, or a dataset folder / Hub id of ``kinject export`` (read as one, cached)."""
    from lm_eval_kinject.hub_data import data_folder, is_dataset

    for source, value in ((specific_key, metadata.get(specific_key)), ("dataset_path", metadata.get("dataset_path")),
                          ("data_dir", metadata.get("data_dir")), (env, os.environ.get(env))):
        if value:
            path = Path(str(value)).expanduser()
            if is_dataset(value):
                return data_folder(value, what=source)
            if not path.is_dir():
                raise DataError(f"{source}={value!r}: no such directory (nor a Hub dataset id)")
            return path
    return None


def _parse_answer(value: str, letters: bool, where: str) -> int:
    value = value.strip()
    if letters and value in _LETTERS:
        return _LETTERS.index(value)
    if not letters and value in ("0", "1", "2", "3"):
        return int(value)
    expected = "a letter A-D" if letters else "an index 0-3"
    raise DataError(f"{where}: answer {value!r} is not {expected}")


def read_mmlu_csv(path: Path, subject: str) -> list[dict]:
    """Read one MMLU CSV: Hendrycks layout (no header, letter answers) or the header+index export.

    The export layout starts with ``question,choice0,choice1,choice2,choice3,answer`` (answers
    0-3), optionally after a pandas index column.
    """
    path = Path(path)
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: a leading byte-order mark is dropped
            reader = csv.reader(fh)
            first = next(reader, None)
            cells = [c.strip() for c in first or []]
            lowered = [c.lower() for c in cells[-6:]]
            # a header row: the export's (question, choice0..3, answer: 0-3) or a lettered one (question, A..D, answer)
            has_header = len(cells) in (6, 7) and lowered[0] == "question" and lowered[-1] == "answer"
            lettered_header = has_header and lowered[1:5] == ["a", "b", "c", "d"]
            drop_index = has_header and len(cells) == 7
            body = reader if has_header else itertools.chain([first] if first else [], reader)
            for record in body:
                where = f"{path}:{reader.line_num}"
                if drop_index:
                    record = record[1:]
                if len(record) != 2 + N_CHOICES:
                    raise DataError(f"{where}: expected 6 fields (question, 4 choices, answer), "
                                    f"got {len(record)}")
                rows.append({"question": record[0], "subject": subject,
                             "choices": record[1:1 + N_CHOICES],
                             "answer": _parse_answer(record[-1], letters=not has_header or lettered_header,
                                                     where=where)})
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte offset {exc.start})") from None
    if not rows:
        raise DataError(f"{path}: no questions in file")
    return rows


def _mmlu_split_file(data_dir: Path, split: str, subject: str) -> Path | None:
    for root in (data_dir, data_dir / "data"):  # the Hendrycks tarball unpacks into data/
        candidate = root / split / f"{subject}_{split}.csv"
        if candidate.is_file():
            return candidate
    return None


def load_mmlu_dir(data_dir: Path, subject: str):
    """A DatasetDict (test, dev and, when present, validation) from a local MMLU folder."""
    import datasets

    splits = {}
    for split, name in (("test", "test"), ("dev", "dev"), ("val", "validation")):
        path = _mmlu_split_file(data_dir, split, subject)
        if path is None:
            if split == "val":
                continue
            raise DataError(f"{data_dir}: missing the {split} split of {subject!r} (expected "
                            f"{split}/{subject}_{split}.csv or data/{split}/{subject}_{split}.csv)")
        splits[name] = datasets.Dataset.from_list(read_mmlu_csv(path, subject))
    return datasets.DatasetDict(splits)


def load_mmlu(subject: str, **metadata):
    """``custom_dataset`` of the kinject MMLU tasks: a local folder if configured, else ``cais/mmlu``.

    The folder comes from ``--metadata '{"mmlu_dir": ...}'`` (or ``data_dir``) or ``$KINJECT_MMLU_DIR``.
    """
    if subject not in MMLU_SUBJECTS:
        raise DataError(f"unknown MMLU subject {subject!r}; expected one of {list(MMLU_SUBJECTS)}")
    data_dir = find_data_dir(metadata, "mmlu_dir", MMLU_DIR_ENV)
    if data_dir is not None:
        logger.info("MMLU %s from %s", subject, data_dir)
        return load_mmlu_dir(data_dir, subject)
    import datasets

    try:
        return datasets.load_dataset(MMLU_HUB_ID, subject)
    except Exception as exc:  # network, auth or cache problems surface here, from deep inside
        raise DataError(f"could not load {MMLU_HUB_ID}/{subject} from the Hugging Face Hub "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                        f"Offline? Point to a local MMLU folder with --metadata "
                        f"'{{\"mmlu_dir\": \"/path/to/mmlu\"}}' or {MMLU_DIR_ENV}=/path/to/mmlu") from None


_QUESTION_FIELDS = {"id": str, "question": str, "choices": list, "answer": int}


def read_current_events_questions(path: Path) -> list[dict]:
    """Read ``questions.jsonl``: ``{"id","question","choices":[4],"answer":0-3,"chunk_id"}``."""
    rows, seen = [], {}
    for number, record in read_jsonl(path, _QUESTION_FIELDS):
        where = f"{path}:{number}"
        choices = record["choices"]
        if len(choices) != N_CHOICES or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of {N_CHOICES} strings, "
                            f"got {len(choices)} item(s)")
        if not 0 <= record["answer"] < N_CHOICES:
            raise DataError(f"{where}: 'answer' must be an index 0-3, got {record['answer']}")
        if record["id"] in seen:
            raise DataError(f"{where}: duplicate id {record['id']!r} (first on line {seen[record['id']]})")
        seen[record["id"]] = number
        chunk_id = record.get("chunk_id")
        rows.append({"id": record["id"], "question": record["question"], "choices": choices,
                     "answer": record["answer"], "chunk_id": "" if chunk_id is None else str(chunk_id)})
    if not rows:
        raise DataError(f"{path}: no questions in file")
    return rows


def load_current_events(**metadata):
    """``custom_dataset`` of ``current_events``: questions from a current-events data folder.

    The folder (``questions.jsonl``, ``chunks.jsonl``, optional ``paraphrases.jsonl``) comes from
    ``--metadata '{"current_events_dir": ...}'`` (or ``data_dir``) or ``$KINJECT_CURRENT_EVENTS_DIR``.
    """
    data_dir = find_data_dir(metadata, "current_events_dir", CURRENT_EVENTS_DIR_ENV)
    if data_dir is None:
        raise DataError("current_events needs a data folder holding questions.jsonl "
                        '({"id","question","choices":[4],"answer":0-3,"chunk_id"}) and chunks.jsonl: '
                        "pass --metadata '{\"current_events_dir\": \"/path/to/dir\"}' or set "
                        f"{CURRENT_EVENTS_DIR_ENV}=/path/to/dir")
    path = data_dir / "questions.jsonl"
    if not path.is_file():
        raise DataError(f"{data_dir}: missing questions.jsonl (one JSON object a line: "
                        '{"id","question","choices":[4 strings],"answer":0-3,"chunk_id"})')
    return _test_split(read_current_events_questions(path), metadata, path)


def _test_split(rows: list[dict], metadata: dict, path: Path):
    """The task's test split: every question, or one part of a train/held-out split by chunk
    (``--metadata '{"question_split": "heldout", "question_split_seed": 0}'``: see ``splits.py``)."""
    import datasets

    from lm_eval_kinject.splits import QuestionSplit

    split = QuestionSplit.from_metadata(metadata)
    if split is not None:
        rows = split[0].select(rows, split[1], source=str(path))
        logger.info("%s: scoring the %s split (%d questions; fraction %s, seed %d%s)", path, split[1], len(rows),
                    split[0].train_fraction, split[0].seed, ", swapped" if split[0].swap else "")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_fictional(**metadata):
    """``custom_dataset`` of ``kinject_fictional``: a world folder from ``--metadata '{"fictional_dir": ...}'``
    (or ``data_dir``) or ``$KINJECT_FICTIONAL_DIR``; with none, the default world (generated once, cached)."""
    from lm_eval_kinject.fictional import default_world

    data_dir = find_data_dir(metadata, "fictional_dir", FICTIONAL_DIR_ENV) or default_world()
    path = data_dir / "questions.jsonl"
    if not path.is_file():
        raise DataError(f"{data_dir}: missing questions.jsonl; make a world with `kinject fictional generate`")
    return _test_split(read_current_events_questions(path), metadata, path)
