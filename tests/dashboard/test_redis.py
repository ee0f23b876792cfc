"""The dashboard on a real Redis store: pages, cursor paging and actions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from celery_steps import CelerySteps
from celery_steps.clock import FakeClock
from celery_steps.dashboard import create_app
from tests.dashboard.conftest import form_token, start

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_client(redis_steps: CelerySteps) -> Iterator[TestClient]:
    with TestClient(create_app(redis_steps)) as client:
        yield client


def test_pages_and_api_read_runs_from_redis(redis_client: TestClient,
                                            redis_steps: CelerySteps) -> None:
    run_id = start(redis_steps, "shop/order.paid", {"order": 5}, event_id="evt-r5")
    child = redis_steps.get_run(run_id).steps[-1].child_run_id

    home = redis_client.get("/").text
    run_page = redis_client.get(f"/runs/{run_id}").text
    event_page = redis_client.get("/events/evt-r5").text
    api_run = redis_client.get(f"/api/runs/{run_id}").json()

    assert re.search(r"status-completed\">completed</span> 1<", home)
    assert len(re.findall(r'<rect class="bar ', run_page)) == 6
    assert f'href="/runs/{child}"' in run_page
    assert f'href="/runs/{run_id}"' in event_page
    assert api_run == redis_steps.get_run(run_id).model_dump(mode="json")


def test_api_paging_walks_every_run_once(redis_client: TestClient,
                                         redis_steps: CelerySteps) -> None:
    clock = redis_steps.clock
    assert isinstance(clock, FakeClock)
    ids = []
    for n in range(7):
        ids.append(start(redis_steps, "shop/explode", {"n": n}))
        clock.advance(0.01)

    seen: list[str] = []
    cursor = ""
    while True:
        body = redis_client.get("/api/runs", params={"function": "explode", "limit": 3,
                                                     "before": cursor}).json()
        seen += [r["id"] for r in body["runs"]]
        if body["next_before"] is None:
            break
        cursor = body["next_before"]

    assert seen == ids[::-1]


def test_cancel_and_replay_by_api_and_by_form_on_redis(redis_client: TestClient,
                                                       redis_steps: CelerySteps) -> None:
    by_api = start(redis_steps, "shop/order.ship", {"order": 1}, finish=False)
    by_form = start(redis_steps, "shop/order.ship", {"order": 2}, finish=False)

    api = redis_client.post(f"/api/runs/{by_api}/cancel", json={})
    token = form_token(redis_client, f"/runs/{by_form}")
    form = redis_client.post(f"/runs/{by_form}/cancel", data={"csrf_token": token})
    replay = redis_client.post(f"/api/runs/{by_api}/replay", json={})

    assert api.json()["cancelled"] is True
    assert form.status_code == 200  # the run page, after the redirect
    assert "status-cancelled" in form.text
    assert {redis_steps.get_run(r).status for r in (by_api, by_form)} == {"cancelled"}
    assert redis_steps.get_run(replay.json()["run_id"]).status == "sleeping"


def test_a_status_page_on_redis_loads_only_runs_of_that_status(
    redis_client: TestClient, redis_steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given two sleeping shipments, then 60 failed runs newer than both
    clock = redis_steps.clock
    assert isinstance(clock, FakeClock)
    sleeping = []
    for n in range(2):
        sleeping.append(start(redis_steps, "shop/order.ship", {"order": n}, finish=False))
        clock.advance(0.01)
    redis_steps.send([{"name": "shop/explode", "data": {"n": n}} for n in range(60)])
    store = redis_steps.runtime.store
    loaded: list[str] = []
    load_many = store._load_many  # type: ignore[attr-defined]

    def counting(run_ids: list[str]) -> Any:
        loaded.extend(run_ids)
        return load_many(run_ids)

    monkeypatch.setattr(store, "_load_many", counting)

    # when the sleeping runs are paged one at a time
    first = redis_client.get("/api/runs", params={"status": "sleeping", "limit": 1}).json()
    loaded_first = list(loaded)
    second = redis_client.get("/api/runs", params={"status": "sleeping", "limit": 1,
                                                   "before": first["next_before"]}).json()

    # then each page holds one of them, newest first, and only sleeping runs were loaded
    assert [r["id"] for r in first["runs"]] == sleeping[1:]
    assert first["next_before"] == sleeping[1]
    assert [r["id"] for r in second["runs"]] == sleeping[:1]
    assert second["next_before"] is None
    assert sorted(loaded_first) == sorted(sleeping)
    assert set(loaded) == set(sleeping)
