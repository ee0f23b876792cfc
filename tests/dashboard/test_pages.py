"""The HTML pages on the memory store: what each shows, links, filters and paging."""

from __future__ import annotations

import html
import re

import pytest
from starlette.testclient import TestClient

from celery_steps import CelerySteps, Context, Debounce
from celery_steps.clock import FakeClock
from celery_steps.dashboard import queries
from celery_steps.dashboard.formatting import format_time
from celery_steps.runs import SkippedStart
from celery_steps.testing import fire_timers
from tests.dashboard.conftest import form_token, start

BAR = re.compile(r'<rect class="bar bar-(\w+)[^"]*" x="([\d.]+)" y="1" width="([\d.]+)"')


def rows(page: str, css: str) -> list[str]:
    return re.findall(rf'(<tr class="{css}".*?</tr>)', page, re.S)


def test_the_home_page_lists_functions_with_triggers_flow_control_and_recent_statuses(
    client: TestClient, steps: CelerySteps
) -> None:
    # given two completed checkouts and a failed run
    start(steps, "shop/order.paid", {"order": 1, "customer": "a"})
    start(steps, "shop/order.paid", {"order": 2, "customer": "b"})
    start(steps, "shop/explode")

    # when
    page = client.get("/")

    # then
    assert page.status_code == 200
    [checkout] = [r for r in rows(page.text, "function") if ">checkout<" in r]
    assert "event shop/order.paid" in checkout
    assert "cron 0 9 * * * (Europe/Paris)" in checkout
    assert "concurrency 5 per event.data.customer" in checkout
    assert "rate limit 100 per 1m" in checkout
    assert 'href="/runs?function=checkout&amp;status=completed"' in checkout
    assert re.search(r"status-completed\">completed</span> 2<", checkout)
    [explode] = [r for r in rows(page.text, "function") if ">explode<" in r]
    assert re.search(r"status-failed\">failed</span> 1<", explode)


def test_the_runs_page_filters_by_function_and_status(client: TestClient,
                                                      steps: CelerySteps) -> None:
    ok = start(steps, "shop/order.paid", {"order": 1})
    failed = start(steps, "shop/explode")

    by_function = client.get("/runs", params={"function": "checkout"}).text
    by_status = client.get("/runs", params={"status": "failed"}).text

    assert ok in by_function and failed not in by_function
    assert failed in by_status and ok not in by_status


def test_the_runs_page_pages_with_a_cursor_newest_first(client: TestClient,
                                                        steps: CelerySteps,
                                                        clock: FakeClock) -> None:
    # given five runs, one second apart
    ids = []
    for n in range(5):
        ids.append(start(steps, "shop/explode", {"n": n}))
        clock.advance(1)
    newest_first = list(reversed(ids))

    # when the pages of two are followed through their "Older" links
    seen: list[str] = []
    path = "/runs?function=explode&limit=2"
    while True:
        page = client.get(path).text
        seen += re.findall(r'href="/runs/(run_\w+)"', page)
        older = re.search(r'rel="next" href="([^"]+)"', page)
        if older is None:
            break
        path = html.unescape(older.group(1))

    # then every run shows once, in order, and the last page has no "Older" link
    assert seen == newest_first


def test_the_runs_page_filtered_by_status_pages_full_pages_of_that_status(
    client: TestClient, steps: CelerySteps, clock: FakeClock
) -> None:
    # given three sleeping shipments, each followed by four failed runs
    sleeping = []
    for n in range(3):
        sleeping.append(start(steps, "shop/order.ship", {"order": n}, finish=False))
        clock.advance(1)
        for m in range(4):
            start(steps, "shop/explode", {"n": n * 4 + m})
            clock.advance(1)

    # when the sleeping runs are paged two at a time through the "Older" links
    first = client.get("/runs", params={"status": "sleeping", "limit": 2}).text
    older = re.search(r'rel="next" href="([^"]+)"', first)
    assert older is not None
    last = client.get(html.unescape(older.group(1))).text

    # then the first page is full, the second holds the oldest and has no "Older" link
    assert re.findall(r'href="/runs/(run_\w+)"', first) == sleeping[::-1][:2]
    assert re.findall(r'href="/runs/(run_\w+)"', last) == sleeping[:1]
    assert 'rel="next"' not in last
    assert "looked through" not in first + last


def test_an_empty_older_page_says_no_older_runs_match(client: TestClient,
                                                      steps: CelerySteps) -> None:
    run_id = start(steps, "shop/explode")
    first = client.get("/runs", params={"status": "sleeping"}).text
    past = client.get("/runs", params={"status": "failed", "before": run_id}).text
    assert "No runs match." in first
    assert "No older runs match." in past and 'rel="next"' not in past


def test_the_bulk_page_says_when_more_runs_match_than_one_action_handles(
    client: TestClient, steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given three failed runs and bulk actions of at most two runs
    monkeypatch.setattr(queries, "BULK_LIMIT", 2)
    for n in range(3):
        start(steps, "shop/explode", {"n": n})

    # when the replay confirmation page is read, for all three and for two of them
    over = client.get("/bulk/replay", params={"status": "failed"}).text
    monkeypatch.setattr(queries, "BULK_LIMIT", 3)
    exact = client.get("/bulk/replay", params={"status": "failed"}).text

    # then the first offers two, says more match and that running it again would not reach
    # them; the second offers all three
    assert "Replay 2+ runs?" in over
    assert "More runs match than one action handles (at most 2 runs)" in over
    assert "selects the newest matching runs again" in over
    assert "Replay 3 runs?" in exact and "More runs match" not in exact


def test_a_truncated_bulk_cancel_by_status_says_running_it_again_does_the_rest(
    client: TestClient, steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given three sleeping shipments and bulk actions of at most two runs
    monkeypatch.setattr(queries, "BULK_LIMIT", 2)
    sleeping = [start(steps, "shop/order.ship", {"order": n}, finish=False) for n in range(3)]

    # when the cancel of the sleeping runs is confirmed and posted
    confirm = client.get("/bulk/cancel", params={"status": "sleeping"}).text
    token = form_token(client, "/bulk/cancel?status=sleeping")
    done = client.post("/bulk/cancel", data={"csrf_token": token, "status": "sleeping"}).text

    # then both pages say that running it again reaches the rest, and two runs were cancelled
    assert "Cancel 2+ runs?" in confirm
    assert "Run it again for the rest" in confirm and "Run it again for the rest" in done
    assert "Cancelled 2 of 2 runs" in done
    assert sorted(steps.get_run(r).status for r in sleeping) == [
        "cancelled", "cancelled", "sleeping"]


def test_a_bad_filter_is_a_400_with_the_reason(client: TestClient) -> None:
    page = client.get("/runs", params={"status": "sleepy"})
    assert page.status_code == 400
    assert "unknown status &#39;sleepy&#39;" in page.text


def test_the_run_page_draws_each_step_on_the_timeline(client: TestClient,
                                                      steps: CelerySteps) -> None:
    # given a completed checkout: 6 steps, one retried, one failed, a sleep and an invoke
    run_id = start(steps, "shop/order.paid", {"order": 7})
    run = steps.get_run(run_id)

    # when
    page = client.get(f"/runs/{run_id}").text

    # then one bar per step, placed by start and sized by duration on the run's span
    step_ids = re.findall(r'data-step-id="([^"]+)"', page)
    assert step_ids == [s.id for s in run.steps]
    bars = BAR.findall(page)
    assert [b[0] for b in bars] == [s.status for s in run.steps]
    span = (run.ended_at - run.created_at).total_seconds()  # type: ignore[operator]
    sleep = run.steps[4]
    left = float(bars[4][1])
    width = float(bars[4][2])
    assert left == pytest.approx((sleep.started_at - run.created_at).total_seconds()  # type: ignore[operator]
                                 / span * 1000, abs=0.01)
    assert width == pytest.approx(2.0 / span * 1000, abs=0.01)
    assert all(float(x) + float(w) <= 1000.0 for _, x, w in bars)
    # attempts, the durations, the failed step's error, the child run link
    [charge] = [r for r in rows(page, "step") if 'data-step-id="charge-card"' in r]
    took = run.steps[1].ended_at - run.steps[1].started_at  # type: ignore[operator]
    assert "<td>2</td>" in charge  # attempts
    assert f"<td>{round(took.total_seconds() * 1000)}ms</td>" in charge
    child = run.steps[5].child_run_id
    assert child is not None
    assert f'invoked run <a class="mono" href="/runs/{child}">' in page
    assert "NonRetriableError" in page
    assert 'http-equiv="refresh"' not in page  # an ended run stays put


def test_an_invoked_run_links_back_to_its_parent(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.paid", {"order": 7})
    child = steps.get_run(run_id).steps[-1].child_run_id

    page = client.get(f"/runs/{child}").text

    assert f'<dd class="parent"><a class="mono" href="/runs/{run_id}">{run_id}</a></dd>' in page


def test_a_waiting_run_shows_the_awaited_event_and_timeout_and_reloads_itself(
    client: TestClient, steps: CelerySteps, clock: FakeClock
) -> None:
    # given a run past its sleep, waiting for its delivery
    run_id = start(steps, "shop/order.ship", {"order": 9}, finish=False)
    clock.advance(3601)
    fire_timers(steps)
    run = steps.get_run(run_id)
    assert run.status == "waiting"

    page = client.get(f"/runs/{run_id}").text

    assert '<meta http-equiv="refresh" content="3">' in page
    timeout = format_time(run.steps[-1].wake_at)
    assert timeout.startswith("2026-09-24 ")  # three days on
    assert f"waits for shop/delivered, times out at {timeout}" in page
    assert 'class="bar bar-waiting bar-open"' in page
    assert "Cancel run" in page


def test_a_sleeping_run_shows_when_it_wakes(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 9}, finish=False)

    page = client.get(f"/runs/{run_id}").text

    wakes = steps.get_run(run_id).steps[-1].wake_at
    assert wakes is not None and wakes.strftime("%H:%M") == "15:13"  # an hour on
    assert f"wakes at {format_time(wakes)}" in page


def test_a_step_error_with_a_traceback_shows_it_in_a_pre(
    client: TestClient, steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a run whose failed step carries a traceback
    run_id = start(steps, "shop/explode")
    run = steps.get_run(run_id)
    error = {"name": "ValueError", "message": "bad", "traceback": 'File "x.py", line 1\n  <b>'}
    with_tb = run.model_copy(update={"steps": [run.steps[0].model_copy(update={"error": error})],
                                     "error": error})
    monkeypatch.setattr(steps, "get_run", lambda _id: with_tb)

    page = client.get(f"/runs/{run_id}").text

    assert page.count('<pre>File &#34;x.py&#34;, line 1\n  &lt;b&gt;</pre>') == 2


def test_the_event_page_shows_payload_runs_and_skipped_functions(
    client: TestClient, steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an event that started a checkout, and (as routing will record) a skipped start
    run_id = start(steps, "shop/order.paid", {"order": 3}, event_id="evt-3")
    info = steps.get_event("evt-3")
    skipped = info.model_copy(update={"skipped": [
        SkippedStart(function_id="ship", reason="rate limited", run_id=None)]})
    real = steps.get_event
    monkeypatch.setattr(steps, "get_event",
                        lambda eid: skipped if eid == "evt-3" else real(eid))

    page = client.get("/events/evt-3").text

    assert "&#34;order&#34;: 3" in page
    assert f'href="/runs/{run_id}"' in page
    assert "rate limited" in page and ">ship<" in page


def test_the_event_page_says_why_matched_functions_started_no_run(
    client: TestClient, steps: CelerySteps
) -> None:
    # given a debounced function: a second event within the period joins the first one's run
    @steps.function(id="reindex", trigger="shop/catalog.changed", debounce=Debounce("1m"))
    def reindex(ctx: Context) -> None:
        return None

    [first] = steps.send("shop/catalog.changed", {"sku": 1}, id="evt-first")
    [second] = steps.send("shop/catalog.changed", {"sku": 2}, id="evt-second")
    [run] = steps.runs_for_event(first)

    # when showing the second event
    page = client.get(f"/events/{second}").text

    # then it names the function, the reason, and links the run the event went into
    skipped = page.split("Matched functions that started no run", 1)[1]
    assert ">reindex<" in skipped and "debounced" in skipped
    assert f'href="/runs/{run.id}"' in skipped
    assert "None recorded." not in skipped
    assert "None recorded." in client.get(f"/events/{first}").text


def test_the_run_page_links_its_events(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.paid", {}, event_id="evt/with slash?")
    page = client.get(f"/runs/{run_id}").text
    assert 'href="/events/evt%2Fwith%20slash%3F"' in page
    event_page = client.get("/events/evt%2Fwith%20slash%3F")
    assert event_page.status_code == 200
    assert "evt/with slash?" in event_page.text


def test_unknown_runs_and_events_are_404_pages(client: TestClient) -> None:
    assert client.get("/runs/run_nope").status_code == 404
    missing = client.get("/events/nope")
    assert missing.status_code == 404
    assert "no event with id" in missing.text


def test_every_page_and_the_stylesheet_are_served(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.paid", {}, event_id="evt-1")
    for path in ("/", "/runs", f"/runs/{run_id}", "/events/evt-1", "/bulk/cancel",
                 "/bulk/replay?function=checkout", "/static/dashboard.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/bulk/explode").status_code == 404


def test_the_app_mounts_under_a_prefix_with_links_that_keep_it(steps: CelerySteps) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from celery_steps.dashboard import create_app

    run_id = start(steps, "shop/order.paid", {})
    outer = Starlette(routes=[Mount("/ops/steps", create_app(steps))])
    with TestClient(outer) as client:
        page = client.get(f"/ops/steps/runs/{run_id}")
        assert page.status_code == 200
        assert 'href="/ops/steps/static/dashboard.css"' in page.text
        assert 'action="/ops/steps/runs/' in page.text
        assert client.get("/ops/steps/static/dashboard.css").status_code == 200
