"""The shape every offline eval has (openai/evals style): a named class whose ``run()`` gives flat metrics."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tailor.core.errors import DataError, RecordError

__all__ = ["Artifact", "Eval", "artifacts_of", "read_jsonl", "write_jsonl"]

# An artifact is something a report can draw or attach: a name → a JSON-able payload
# (e.g. {"kind": "curve", "x": [...], "series": {...}} or {"kind": "samples", "values": [...]}).
Artifact = Mapping[str, Any]


@runtime_checkable
class Eval(Protocol):
    """``run()`` → ``{"<suite>.<...>.<metric>": value}``; seeded: a rerun gives the same figures."""

    # ``name`` (the suite) is conventional but not required, so evals written before this protocol fit it.

    seed: int

    def run(self) -> dict[str, float]: ...


def artifacts_of(ev: object) -> dict[str, Artifact]:
    """An eval's optional ``artifacts()`` (plots, samples) after ``run()``; empty when it has none."""
    fn = getattr(ev, "artifacts", None)
    if fn is None:
        return {}
    result = fn()
    if not isinstance(result, Mapping):
        raise DataError(f"{type(ev).__name__}.artifacts() must return a mapping, got {type(result).__name__}")
    return dict(result)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Samples, one JSON object a line; a bad line raises ``RecordError`` naming file and line."""
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read samples {path}: {exc}") from exc
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"not JSON: {exc.msg}", source=str(path), line=number) from exc
            if not isinstance(record, dict):
                raise RecordError("each line must be a JSON object", source=str(path), line=number)
            yield record


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            n += 1
    tmp.replace(path)  # whole file or nothing
    return n
