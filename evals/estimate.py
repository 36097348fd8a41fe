"""A policy's estimated value with its 95% interval, as every off-policy estimator here returns it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int
    matched: int  # decisions where the logging policy took the target's action
