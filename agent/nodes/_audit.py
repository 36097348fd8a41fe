"""One audit record per node: what it read, what it decided, how long it took."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["record"]


def record(node: str, start: float, **fields: Any) -> list[dict[str, Any]]:
    return [{"node": node, "ms": round((time.perf_counter() - start) * 1000, 2), **fields}]
