"""Exponential backoff with jitter for retries."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Delay before retry number ``attempt + 1``: about ``base``, doubling, capped at ``cap``."""
    delay: float = min(cap, base * (2.0 ** min(attempt, 32)))
    return float(min(cap, delay * random.uniform(0.8, 1.2)))
