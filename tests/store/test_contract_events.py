"""StateStore contract: events (dedupe, routing timer, routed runs). Runs on every store."""

from __future__ import annotations

import json
import time

from tests.store._support import FAR_FUTURE, NOW, claimed, envelope_event, new_id

TTL_MS = 24 * 3600 * 1000


def test_put_event_refuses_a_duplicate_id_and_keeps_the_first_payload(store) -> None:
    event_id = new_id("evt")
    assert store.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=TTL_MS) is True
    # when the same id is sent again with another payload
    assert store.put_event(event_id, '{"n": 2}', route_at=NOW, ttl_ms=TTL_MS) is False
    # then the first payload is the one stored
    assert envelope_event(store.get_event(event_id)) == '{"n": 1}'


def test_get_event_returns_the_stored_payload_verbatim_with_its_arrival(store) -> None:
    event_id = new_id("evt")
    payload = '{"name": "shop/order.paid", "data": {"order": 7, "note": "é"}}'
    before = int(time.time() * 1000)
    store.put_event(event_id, payload, route_at=NOW, ttl_ms=TTL_MS)
    raw = store.get_event(event_id)
    assert envelope_event(raw) == payload
    assert before - 5 <= json.loads(raw)["received_at"] <= int(time.time() * 1000) + 5


def test_a_put_event_retried_after_a_lost_reply_is_still_stored_by_that_call(store) -> None:
    # given an event stored by a call whose reply the client never saw
    event_id = new_id("evt")
    assert store.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=TTL_MS) is True
    # when the client retries the very same call, then it is told the event is stored
    assert store.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=TTL_MS) is True


def test_get_event_of_an_unknown_id_is_none(store) -> None:
    assert store.get_event(new_id("evt")) is None


def test_put_event_arms_the_routing_timer_at_route_at(store) -> None:
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW + 500, ttl_ms=TTL_MS)
    assert f"e|{event_id}" not in claimed(store, NOW + 499)
    assert f"e|{event_id}" in claimed(store, NOW + 500)


def test_a_duplicate_put_event_does_not_rearm_the_routing_timer(store) -> None:
    # given an event routed (timer disarmed)
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=TTL_MS)
    store.complete_routing(event_id, ["run-a"], ttl_ms=TTL_MS)
    # when it is sent again (another payload: a duplicate, not a retry)
    assert store.put_event(event_id, '{"again": 1}', route_at=NOW, ttl_ms=TTL_MS) is False
    # then no routing timer comes back
    assert f"e|{event_id}" not in claimed(store, FAR_FUTURE)


def test_routed_runs_is_none_until_routing_completes(store) -> None:
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=TTL_MS)
    assert store.routed_runs(event_id) is None
    store.complete_routing(event_id, ["run-a", "run-b"], ttl_ms=TTL_MS)
    assert store.routed_runs(event_id) == ["run-a", "run-b"]


def test_an_event_routed_to_no_run_is_routed_with_an_empty_list(store) -> None:
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=TTL_MS)
    store.complete_routing(event_id, [], ttl_ms=TTL_MS)
    assert store.routed_runs(event_id) == []


def test_complete_routing_twice_merges_run_ids_without_duplicates(store) -> None:
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=TTL_MS)
    store.complete_routing(event_id, ["run-a", "run-b"], ttl_ms=TTL_MS)
    store.complete_routing(event_id, ["run-b", "run-c"], ttl_ms=TTL_MS)
    assert store.routed_runs(event_id) == ["run-a", "run-b", "run-c"]


def test_complete_routing_disarms_the_routing_timer(store) -> None:
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=TTL_MS)
    store.complete_routing(event_id, ["run-a"], ttl_ms=TTL_MS)
    assert f"e|{event_id}" not in claimed(store, FAR_FUTURE)


def test_routed_runs_of_an_unknown_event_is_none(store) -> None:
    assert store.routed_runs(new_id("evt")) is None
