"""Question loaders: both MMLU layouts, current-events JSONL, and every bad input's message."""
from __future__ import annotations

import json
import shutil

import pytest
from kinject_testing import CURRENT_EVENTS_DIR, MMLU_DIR, MMLU_EXPORT_DIR

from lm_eval_kinject.errors import DataError
from lm_eval_kinject.questions import (MMLU_SUBJECTS, load_current_events, load_mmlu, read_mmlu_csv)

EXPECTED_TEST_ROWS = {"anatomy": 135, "astronomy": 152, "college_biology": 144,
                      "college_chemistry": 100, "prehistory": 324}


@pytest.mark.parametrize("subject", MMLU_SUBJECTS)
def test_both_mmlu_layouts_give_the_same_test_rows(subject):
    hendrycks = load_mmlu(subject, mmlu_dir=str(MMLU_DIR))
    export = load_mmlu(subject, mmlu_dir=str(MMLU_EXPORT_DIR))
    assert hendrycks["test"].num_rows == EXPECTED_TEST_ROWS[subject]
    assert hendrycks["test"].to_list() == export["test"].to_list()
    assert hendrycks["dev"].num_rows == 5 and "validation" in hendrycks and "validation" not in export
    row = hendrycks["test"][0]
    assert set(row) == {"question", "subject", "choices", "answer"} and len(row["choices"]) == 4


def test_mmlu_letters_map_to_indices():
    rows = read_mmlu_csv(MMLU_DIR / "test" / "anatomy_test.csv", "anatomy")
    export = read_mmlu_csv(MMLU_EXPORT_DIR / "test" / "anatomy_test.csv", "anatomy")
    assert [r["answer"] for r in rows] == [r["answer"] for r in export]
    assert {r["answer"] for r in rows} == {0, 1, 2, 3}


def test_mmlu_folder_from_environment(monkeypatch):
    monkeypatch.setenv("KINJECT_MMLU_DIR", str(MMLU_EXPORT_DIR))
    assert load_mmlu("prehistory")["test"].num_rows == 324


def _copy_mmlu(tmp_path, subject="anatomy"):
    for split in ("test", "dev"):
        (tmp_path / split).mkdir()
        shutil.copy(MMLU_DIR / split / f"{subject}_{split}.csv", tmp_path / split)
    return tmp_path


def test_csv_row_with_wrong_field_count_names_file_and_line(tmp_path):
    root = _copy_mmlu(tmp_path)
    path = root / "test" / "anatomy_test.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(2, "What is it?,a,b,c,A\n")
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"anatomy_test\.csv:3: expected 6 fields .* got 5"):
        load_mmlu("anatomy", mmlu_dir=str(root))


@pytest.mark.parametrize("answer,layout", [("E", "letters"), ("4", "export")])
def test_csv_answer_out_of_range_names_file_and_line(tmp_path, answer, layout):
    path = tmp_path / "x.csv"
    if layout == "letters":
        path.write_text(f"Q1,a,b,c,d,A\nQ2,a,b,c,d,{answer}\n")
        expected = r"x\.csv:2: answer 'E' is not a letter A-D"
    else:
        path.write_text(f"question,choice0,choice1,choice2,choice3,answer\nQ1,a,b,c,d,{answer}\n")
        expected = r"x\.csv:2: answer '4' is not an index 0-3"
    with pytest.raises(DataError, match=expected):
        read_mmlu_csv(path, "anatomy")


def test_missing_split_is_named(tmp_path):
    root = _copy_mmlu(tmp_path)
    shutil.rmtree(root / "dev")
    with pytest.raises(DataError, match=r"missing the dev split of 'anatomy' .*dev/anatomy_dev\.csv"):
        load_mmlu("anatomy", mmlu_dir=str(root))


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(DataError, match=r"mmlu_dir='.*nope': no such directory"):
        load_mmlu("anatomy", mmlu_dir=str(tmp_path / "nope"))


def test_offline_hub_failure_says_how_to_point_at_local_data(monkeypatch):
    monkeypatch.delenv("KINJECT_MMLU_DIR", raising=False)
    with pytest.raises(DataError, match=r"could not load cais/mmlu/anatomy .*mmlu_dir"):
        load_mmlu("anatomy")


def test_current_events_sample_loads():
    ds = load_current_events(current_events_dir=str(CURRENT_EVENTS_DIR))["test"]
    assert ds.num_rows == 84
    assert ds[0]["id"] == "ce-0001" and ds[0]["chunk_id"] == "2023-hawaii-wildfires#1"


def _questions(tmp_path, lines):
    (tmp_path / "questions.jsonl").write_text("".join(line + "\n" for line in lines))
    return tmp_path


GOOD = json.dumps({"id": "q1", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 1, "chunk_id": "c#1"})


@pytest.mark.parametrize("bad,expected", [
    ("{not json", r"questions\.jsonl:2: not valid JSON"),
    (json.dumps({"id": "q2", "question": "Q?", "choices": ["a", "b", "c", "d"]}),
     r"questions\.jsonl:2: missing field 'answer'"),
    (json.dumps({"id": "q2", "question": "Q?", "choices": ["a", "b", "c"], "answer": 0}),
     r"questions\.jsonl:2: 'choices' must be a list of 4 strings, got 3"),
    (json.dumps({"id": "q2", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 4}),
     r"questions\.jsonl:2: 'answer' must be an index 0-3, got 4"),
    (json.dumps({"id": "q1", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 0}),
     r"questions\.jsonl:2: duplicate id 'q1' \(first on line 1\)"),
    (json.dumps({"id": "q2", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "B"}),
     r"questions\.jsonl:2: field 'answer' should be int, got str"),
    ('{"id": "q2", "question": "Q\x01?"}', r"questions\.jsonl:2: not valid JSON \(Invalid control character at column"),
])
def test_bad_questions_jsonl_names_file_and_line(tmp_path, bad, expected):
    root = _questions(tmp_path, [GOOD, bad])
    with pytest.raises(DataError, match=expected):
        load_current_events(current_events_dir=str(root))


def test_non_utf8_names_byte_offset(tmp_path):
    (tmp_path / "questions.jsonl").write_bytes(GOOD.encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(DataError, match=rf"questions\.jsonl:2: not UTF-8 \(byte offset {len(GOOD) + 1 + 8}\)"):
        load_current_events(current_events_dir=str(tmp_path))


def test_current_events_folder_without_questions_file(tmp_path):
    with pytest.raises(DataError, match=r"missing questions\.jsonl"):
        load_current_events(data_dir=str(tmp_path))


def test_current_events_without_any_data_says_how_to_provide_it(monkeypatch):
    monkeypatch.delenv("KINJECT_CURRENT_EVENTS_DIR", raising=False)
    with pytest.raises(DataError, match=r"current_events_dir.*KINJECT_CURRENT_EVENTS_DIR"):
        load_current_events(version=1.0, pretrained="smollm2-135m")


def test_byte_order_marks_are_dropped(tmp_path):
    """A BOM before a JSONL file's first record, an MMLU CSV without header, and one with a header row."""
    (tmp_path / "questions.jsonl").write_text("\ufeff" + GOOD + "\n", encoding="utf-8")
    rows = load_current_events(current_events_dir=str(tmp_path))["test"]
    assert rows[0]["question"] == json.loads(GOOD)["question"]
    plain = tmp_path / "plain.csv"
    plain.write_text("\ufeffWhat is 2+2?,3,4,5,6,B\n", encoding="utf-8")
    assert read_mmlu_csv(plain, "math") == [{"question": "What is 2+2?", "subject": "math",
                                             "choices": ["3", "4", "5", "6"], "answer": 1}]
    headed = tmp_path / "headed.csv"
    headed.write_text("\ufeffquestion,A,B,C,D,answer\nWhat is 2+2?,3,4,5,6,B\n", encoding="utf-8")
    assert read_mmlu_csv(headed, "math") == read_mmlu_csv(plain, "math")


def test_lone_carriage_returns_are_named(tmp_path):
    (tmp_path / "questions.jsonl").write_bytes((GOOD + "\r" + GOOD.replace("q1", "q2") + "\r").encode())
    with pytest.raises(DataError, match=r"questions\.jsonl:1: a line ends in a lone carriage return"):
        load_current_events(current_events_dir=str(tmp_path))
