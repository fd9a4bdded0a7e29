"""Reading the project's line-oriented data files with errors that name file and line."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from lm_eval_kinject.errors import DataError

__all__ = ["read_jsonl"]


def read_jsonl(path: Path, required: dict[str, type | tuple[type, ...]]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for every non-blank line of a UTF-8 JSONL file.

    Args:
        path: the file.
        required: field name -> accepted type(s); a missing field or a wrong type is an error.

    Raises:
        DataError: a line that is not a JSON object, lacks a field, has a field of the wrong type,
            or bytes that are not UTF-8 (with the byte offset).
    """
    path = Path(path)
    offset = 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not UTF-8 (byte offset {offset + exc.start})") from None
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
            if "\r" in line.rstrip("\r\n"):
                raise DataError(f"{path}:{number}: a line ends in a lone carriage return (classic Mac line endings); "
                                "expected one JSON object per line, ending in LF or CRLF")
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                message = exc.msg.removesuffix(" at")  # "Invalid control character at" + our "at column"
                raise DataError(f"{path}:{number}: not valid JSON ({message} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            for name, kind in required.items():
                if name not in record:
                    raise DataError(f"{path}:{number}: missing field {name!r} "
                                    f"(expected fields: {', '.join(required)})")
                if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool)):
                    want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
                    raise DataError(f"{path}:{number}: field {name!r} should be {want}, "
                                    f"got {type(record[name]).__name__}")
            yield number, record
