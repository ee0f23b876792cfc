"""The JSON API: runs (filtered, paged by cursor), one run, one event, cancel and replay."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from celery_steps import CelerySteps
from celery_steps.clock import FakeClock
from celery_steps.dashboard import queries
from tests.dashboard.conftest import start


def test_api_runs_filters_and_returns_the_next_cursor(client: TestClient, steps: CelerySteps,
                                                      clock: FakeClock) -> None:
    # given three failed runs and one completed one
    failed = []
    for n in range(3):
        failed.append(start(steps, "shop/explode", {"n": n}))
        clock.advance(1)
    start(steps, "shop/order.paid", {})

    # when the failed runs are read two at a time
    first = client.get("/api/runs", params={"status": "failed", "limit": 2}).json()
    second = client.get("/api/runs", params={"status": "failed", "limit": 2,
                                             "before": first["next_before"]}).json()

    # then the pages cover them newest first, and the last page has no cursor
    assert [r["id"] for r in first["runs"]] == failed[::-1][:2]
    assert first["next_before"] == failed[1]
    assert [r["id"] for r in second["runs"]] == failed[:1]
    assert second["next_before"] is None
    assert {r["status"] for r in first["runs"] + second["runs"]} == {"failed"}


def test_api_runs_by_function(client: TestClient, steps: CelerySteps) -> None:
    start(steps, "shop/explode")
    ok = start(steps, "shop/order.paid", {})
    body = client.get("/api/runs", params={"function": "checkout"}).json()
    # checkout's run; its invoked receipt run belongs to render-receipt
    assert [r["id"] for r in body["runs"]] == [ok]


def test_api_run_is_the_run_model_as_json(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.paid", {"order": 4})
    body = client.get(f"/api/runs/{run_id}").json()
    assert body == steps.get_run(run_id).model_dump(mode="json")
    assert body["steps"][2]["error"]["name"] == "NonRetriableError"


def test_api_event_is_the_event_info_as_json(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.paid", {"order": 4}, event_id="evt-4")
    body = client.get("/api/events/evt-4").json()
    assert body == steps.get_event("evt-4").model_dump(mode="json")
    assert body["run_ids"] == [run_id]
    assert body["event"]["data"] == {"order": 4}


def test_api_errors_are_json_with_a_status(client: TestClient) -> None:
    missing = client.get("/api/runs/run_nope")
    assert missing.status_code == 404
    assert "no run with id 'run_nope'" in missing.json()["error"]
    assert client.get("/api/events/nope").status_code == 404
    bad = client.get("/api/runs", params={"limit": "0"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "limit must be from 1 to 500, not 0"}
    cursor = client.get("/api/runs", params={"before": "run_gone"})
    assert cursor.status_code == 400
    assert "cursor" in cursor.json()["error"]


def test_api_cancel_stops_a_sleeping_run(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)

    response = client.post(f"/api/runs/{run_id}/cancel", json={})

    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "status": "cancelled", "cancelled": True}
    assert steps.get_run(run_id).status == "cancelled"


def test_api_cancel_of_an_ended_run_changes_nothing(client: TestClient,
                                                    steps: CelerySteps) -> None:
    run_id = start(steps, "shop/explode")
    response = client.post(f"/api/runs/{run_id}/cancel", json={})
    assert response.json() == {"run_id": run_id, "status": "failed", "cancelled": False}


def test_api_replay_starts_a_new_run_on_the_same_events(client: TestClient,
                                                         steps: CelerySteps) -> None:
    run_id = start(steps, "shop/explode", {"n": 1})

    response = client.post(f"/api/runs/{run_id}/replay", json={})

    assert response.status_code == 201
    new_id = response.json()["run_id"]
    assert response.json()["replay_of"] == run_id
    replayed = steps.get_run(new_id)
    assert new_id != run_id
    assert replayed.function_id == "explode"
    assert replayed.event_ids == steps.get_run(run_id).event_ids


def test_api_bulk_cancel_cancels_the_runs_a_filter_selects(client: TestClient,
                                                           steps: CelerySteps) -> None:
    # given two sleeping shipments and an ended run of the same function... and a failed one
    sleeping = [start(steps, "shop/order.ship", {"order": n}, finish=False) for n in range(2)]
    done = start(steps, "shop/explode")

    response = client.post("/api/bulk/cancel", json={"function": "ship"})

    assert response.status_code == 200
    body = response.json()
    assert body["matched"] == 2 and body["truncated"] is False
    assert sorted(body["run_ids"]) == sorted(sleeping)
    assert {steps.get_run(r).status for r in sleeping} == {"cancelled"}
    assert steps.get_run(done).status == "failed"


def test_api_bulk_replay_replays_every_selected_run(client: TestClient,
                                                    steps: CelerySteps) -> None:
    failed = [start(steps, "shop/explode", {"n": n}) for n in range(3)]

    body = client.post("/api/bulk/replay", json={"status": "failed"}).json()

    assert body["matched"] == 3
    assert len(body["run_ids"]) == 3
    assert {steps.get_run(r).function_id for r in body["run_ids"]} == {"explode"}
    assert not set(body["run_ids"]) & set(failed)


def test_api_bulk_cancel_stops_at_the_cap_and_says_it_was_truncated(
    client: TestClient, steps: CelerySteps, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given three sleeping shipments among failed runs, and bulk actions of at most two runs
    monkeypatch.setattr(queries, "BULK_LIMIT", 2)
    sleeping = []
    for n in range(3):
        sleeping.append(start(steps, "shop/order.ship", {"order": n}, finish=False))
        clock.advance(1)
        start(steps, "shop/explode", {"n": n})
        clock.advance(1)

    # when every sleeping run is cancelled, twice
    first = client.post("/api/bulk/cancel", json={"status": "sleeping"}).json()
    second = client.post("/api/bulk/cancel", json={"status": "sleeping"}).json()

    # then the first call cancels the newest two and says more matched; the second the rest
    assert first["matched"] == 2 and first["truncated"] is True
    assert first["run_ids"] == sleeping[::-1][:2]
    assert second["matched"] == 1 and second["truncated"] is False
    assert second["run_ids"] == sleeping[:1]
    assert {steps.get_run(r).status for r in sleeping} == {"cancelled"}


def test_api_bulk_refuses_a_body_that_is_not_a_filter_object(client: TestClient) -> None:
    assert client.post("/api/bulk/cancel", json=["ship"]).status_code == 400
    assert client.post("/api/bulk/cancel", json={"status": "nope"}).status_code == 400
    assert client.post("/api/bulk/explode", json={}).status_code == 404
