"""JSONL helpers: atomic whole-file writes and append-only, resumable writes."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None: JSON has no NaN (``jq`` and
    browsers reject it), so a rate over an empty group is written as ``null``."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`json_safe` ``value`` (indented; other types through ``str``)."""
    return json.dumps(json_safe(value), allow_nan=False, **{"indent": 2, "default": str, **kwargs})


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write ``rows`` to ``path`` atomically (a temp file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file; a bad line fails with the file and line number."""
    from reasonalign.data.schema import DataError

    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), i, None, f"invalid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise DataError(str(path), i, None, "expected a JSON object")
            rows.append(row)
    return rows


def read_finished_lines(path: Path) -> list[dict]:
    """Rows of an append-only file, dropping a torn last line left by an interruption."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    data = path.read_bytes()
    good_end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn write
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line)
    if good_end != len(data):
        with path.open("r+b") as f:
            f.truncate(good_end)
    return rows


def append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Append rows and flush them to disk, so finished work survives an interruption."""
    from reasonalign.pipeline import faults

    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with Path(path).open("a", encoding="utf-8") as f:
        if faults.armed("jsonl_append"):  # fault injection: a torn append
            f.write(text[: len(text) // 2])
            f.flush()
            faults.die()
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
