"""A run's priority (seconds, -600..600) as each broker's message priority."""

from __future__ import annotations

import pytest

from celery_steps.integration.transport import broker_priority


@pytest.mark.parametrize(("seconds", "expected"), [
    (600, 0), (1, 0), (0, 3), (-1, 6), (-300, 6), (-301, 9), (-600, 9)])
def test_on_redis_a_higher_priority_lands_in_a_list_served_earlier(seconds: int,
                                                                   expected: int) -> None:
    assert broker_priority(seconds, "redis") == expected


@pytest.mark.parametrize(("seconds", "expected"), [
    (600, 9), (120, 6), (0, 5), (-150, 4), (-600, 1)])
def test_on_rabbitmq_a_higher_priority_is_a_higher_message_priority(seconds: int,
                                                                    expected: int) -> None:
    assert broker_priority(seconds, "amqp") == broker_priority(seconds, "pyamqp") == expected


@pytest.mark.parametrize("driver", ["sqs", "memory", "", None])
def test_brokers_without_message_priorities_get_none(driver: str | None) -> None:
    assert broker_priority(600, driver) is None
