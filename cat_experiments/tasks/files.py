"""Reading row files (JSONL, JSON, Parquet) with errors that name the file, the line and the field."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import DataError


def read_rows(path: str | Path, required: Iterable[str] = (), key: str = "dataset.path") -> list[dict[str, Any]]:
    """All rows of a .jsonl/.json/.parquet file. A missing file, a malformed JSONL line or a row
    without a required field raises DataError naming the config key, file, line and field."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{key}={str(path)!r}: file not found")
    required = tuple(required)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        numbered = list(enumerate(rows, start=1))
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: malformed JSON at line {err.lineno}: {err.msg}") from None
        rows = data.get("rows") if isinstance(data, dict) else data  # a list of rows, or {"rows": [...]}
        if not isinstance(rows, list):
            what = f"a JSON object with keys {sorted(data)[:5]}" if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{key}={str(path)!r}: expected a JSON list of rows (or {{\"rows\": [...]}}), got {what}")
        numbered = list(enumerate(rows, start=1))
    else:
        numbered = []
        with path.open() as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: malformed JSONL line ({err.msg} at column {err.colno})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                numbered.append((lineno, row))
    if not numbered:
        raise DataError(f"{key}={str(path)!r}: the file has no rows")
    for lineno, row in numbered:
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        missing = [f for f in required if f not in row or row[f] is None]
        if missing:
            raise DataError(f"{path}:{lineno}: row has no field {missing[0]!r} (required: {', '.join(required)})")
    return [row for _, row in numbered]
