"""Engine tests run eagerly on the memory store with a fake clock: fast and deterministic."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celery_steps import CelerySteps
from celery_steps.clock import FakeClock
from celery_steps.testing import eager_steps


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=1_790_000_000_000)


@pytest.fixture
def steps(clock: FakeClock) -> Iterator[CelerySteps]:
    yield eager_steps(clock, steps_retry_backoff_base=1.0)
