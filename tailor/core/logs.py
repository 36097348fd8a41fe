"""How a failure is written to the log: its type and where it was raised, never its message.

Logs name customers by id only. An exception's message is the one part of a log line that Tailor does not
write itself: our own errors, the libraries' and the model endpoint's quote their input (a support
question, a profile, pydantic's ``input_value``), and a traceback prints it verbatim. The type and the
code locations are what finding the bug needs; the request's data stays in the ops database, where
forgetting a customer reaches it, and logs do not.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

__all__ = ["LIBRARY_LOGGERS", "describe", "quiet_libraries"]

# The model client and the HTTP stacks under it log each request at DEBUG and INFO (URLs with customer ids,
# headers, and in some versions the request options, which hold the prompt); none of it is Tailor's to log.
LIBRARY_LOGGERS = ("openai", "httpx", "httpcore", "httpx2", "httpcore2")

_ROOT = Path(__file__).resolve().parents[2]
_SITE = "site-packages/"


def _short(filename: str) -> str:
    if _SITE in filename:
        return filename.split(_SITE, 1)[1]
    try:
        return str(Path(filename).relative_to(_ROOT))
    except ValueError:
        return filename


def _one(exc: BaseException, frames: int) -> str:
    stack = traceback.extract_tb(exc.__traceback__)[-frames:] if frames > 0 else []
    where = " <- ".join(f"{_short(f.filename)}:{f.lineno} in {f.name}" for f in reversed(stack))
    return f"{type(exc).__name__} at {where}" if where else type(exc).__name__


def describe(exc: BaseException, frames: int = 4) -> str:
    """``RuntimeError at tailor/x.py:12 in f <- tailor/y.py:40 in g; from KeyError at ...``: the type and
    the innermost ``frames`` frames of ``exc`` and of each exception it was raised from; no message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(_one(current, frames))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "; from ".join(parts)


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Keep the HTTP and model clients' loggers at ``level`` or above, whatever the root logger's level, so
    that turning on DEBUG to find a bug in Tailor does not write prompts and profiles to the log."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        # The logger's own level, not its effective one: root may be turned to DEBUG after this runs.
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)
