"""CSRF, basic auth, escaping and security headers."""

from __future__ import annotations

import base64

import pytest
from starlette.testclient import TestClient

from celery_steps import CelerySteps
from celery_steps.dashboard import create_app
from celery_steps.dashboard.auth import credentials_match
from celery_steps.dashboard.csrf import PROTECTED
from celery_steps.dashboard.headers import SECURITY_HEADERS
from tests.dashboard.conftest import form_token, start
from tests.dashboard.shop import BROKEN_MESSAGE, ESCAPE_PROBE


# -- CSRF -----------------------------------------------------------------------------------
def test_a_form_post_without_a_token_is_refused(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)
    form_token(client, f"/runs/{run_id}")  # the client has the cookie, but sends no token

    response = client.post(f"/runs/{run_id}/cancel", data={"reason": "x"})

    assert response.status_code == 403
    assert steps.get_run(run_id).status == "sleeping"


def test_a_form_post_with_a_wrong_token_is_refused(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)
    form_token(client, f"/runs/{run_id}")
    response = client.post(f"/api/runs/{run_id}/cancel", data={"csrf_token": "0" * 64})
    assert response.status_code == 403
    assert response.json()["error"].startswith("missing or invalid CSRF token")


def test_a_token_from_another_cookie_is_refused(client: TestClient, steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)
    token = form_token(client, f"/runs/{run_id}")
    client.cookies.clear()
    client.cookies.set("steps_csrf", "x" * 43)  # a cookie the token was not made for
    assert client.post(f"/runs/{run_id}/cancel", data={"csrf_token": token}).status_code == 403


def test_the_run_page_forms_cancel_and_replay_with_their_token(client: TestClient,
                                                                steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)
    token = form_token(client, f"/runs/{run_id}")

    cancelled = client.post(f"/runs/{run_id}/cancel", data={"csrf_token": token},
                            follow_redirects=False)
    replayed = client.post(f"/runs/{run_id}/replay", data={"csrf_token": token},
                           follow_redirects=False)

    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == f"/runs/{run_id}"
    assert steps.get_run(run_id).status == "cancelled"
    assert replayed.status_code == 303
    new_id = replayed.headers["location"].removeprefix("/runs/")
    assert new_id != run_id and steps.get_run(new_id).function_id == "ship"


def test_the_bulk_forms_confirm_then_act_on_the_filtered_runs(client: TestClient,
                                                              steps: CelerySteps) -> None:
    # given two sleeping shipments
    sleeping = [start(steps, "shop/order.ship", {"order": n}, finish=False) for n in range(2)]

    # when the confirmation page is read and its form posted
    confirm = client.get("/bulk/cancel", params={"function": "ship", "status": "sleeping"})
    token = form_token(client, "/bulk/cancel?function=ship&status=sleeping")
    done = client.post("/bulk/cancel", data={"csrf_token": token, "function": "ship",
                                             "status": "sleeping"})

    # then the page asked first, and the post cancelled exactly those runs
    assert "Cancel 2 runs?" in confirm.text
    assert all(r in confirm.text for r in sleeping)
    assert done.status_code == 200
    assert "Cancelled 2 of 2 runs" in done.text
    assert {steps.get_run(r).status for r in sleeping} == {"cancelled"}
    # and the bulk form without its token does nothing
    again = [start(steps, "shop/order.ship", {"order": 9}, finish=False)]
    assert client.post("/bulk/replay", data={"function": "ship"}).status_code == 403
    assert steps.get_run(again[0]).status == "sleeping"


def test_a_cross_site_origin_is_refused_even_with_json(client: TestClient,
                                                       steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)
    token = form_token(client, f"/runs/{run_id}")

    by_json = client.post(f"/api/runs/{run_id}/cancel", json={},
                          headers={"Origin": "https://evil.example"})
    by_form = client.post(f"/runs/{run_id}/cancel", data={"csrf_token": token},
                          headers={"Origin": "https://evil.example"})
    by_fetch = client.post(f"/api/runs/{run_id}/cancel", json={},
                           headers={"Sec-Fetch-Site": "cross-site"})
    null_origin = client.post(f"/api/runs/{run_id}/cancel", json={}, headers={"Origin": "null"})

    assert [r.status_code for r in (by_json, by_form, by_fetch, null_origin)] == [403] * 4
    assert steps.get_run(run_id).status == "sleeping"
    same = client.post(f"/api/runs/{run_id}/cancel", json={},
                       headers={"Origin": "http://testserver"})
    assert same.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_a_post_that_is_neither_json_nor_a_dashboard_form_is_refused(
    client: TestClient, steps: CelerySteps, content_type: str | None
) -> None:
    run_id = start(steps, "shop/order.ship", {"order": 1}, finish=False)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"/api/runs/{run_id}/replay", content=b'{"x": 1}', headers=headers)
    assert response.status_code == 403
    assert steps.list_runs(function_id="ship") == [steps.get_run(run_id)]


def test_every_route_that_accepts_post_is_csrf_protected(steps: CelerySteps) -> None:
    app = create_app(steps)
    posting = [r for r in app.routes if "POST" in (getattr(r, "methods", None) or ())]
    assert len(posting) == 6
    assert all(getattr(r.endpoint, PROTECTED, False) for r in posting)  # type: ignore[attr-defined]


# -- basic auth -------------------------------------------------------------------------------
def _auth(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_basic_auth_guards_pages_api_and_static_files(steps: CelerySteps) -> None:
    app = create_app(steps, basic_auth=("ops", "s3cret:with:colons"))
    with TestClient(app) as client:
        for path in ("/", "/api/runs", "/static/dashboard.css"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith('Basic realm="celery-steps"')
            assert client.get(path, headers=_auth("ops", "wrong")).status_code == 401
            assert client.get(path, headers=_auth("ops", "s3cret:with:colons")).status_code == 200


def test_basic_auth_refuses_malformed_headers() -> None:
    assert not credentials_match(None, "u", "p")
    assert not credentials_match("Bearer abc", "u", "p")
    assert not credentials_match("Basic !!!", "u", "p")
    assert not credentials_match("Basic " + base64.b64encode(b"up").decode(), "u", "p")
    assert not credentials_match("Basic " + base64.b64encode(b"u:").decode(), "u", "p")
    assert credentials_match("basic " + base64.b64encode(b"u:p").decode(), "u", "p")


# -- escaping and headers ---------------------------------------------------------------------
def test_event_data_and_step_errors_are_shown_as_text_never_markup(client: TestClient,
                                                                   steps: CelerySteps) -> None:
    # given an event whose data holds a script, starting a run whose step fails with markup
    run_id = start(steps, "shop/explode", {"note": ESCAPE_PROBE}, event_id="evt-probe")

    event_page = client.get("/events/evt-probe").text
    run_page = client.get(f"/runs/{run_id}").text

    assert ESCAPE_PROBE not in event_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in event_page
    assert BROKEN_MESSAGE not in run_page
    assert "&lt;b&gt;warehouse&lt;/b&gt; said &lt;i&gt;no&lt;/i&gt;" in run_page
    assert "<script" not in event_page + run_page


def test_a_markup_filter_value_is_escaped(client: TestClient) -> None:
    page = client.get("/runs", params={"function": '"><script>alert(1)</script>'}).text
    assert "<script>" not in page
    assert "&#34;&gt;&lt;script&gt;" in page


def test_responses_carry_the_security_headers(client: TestClient) -> None:
    for path in ("/", "/api/runs", "/runs/run_nope", "/static/dashboard.css"):
        headers = client.get(path).headers
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name)
    assert "script-src" not in SECURITY_HEADERS["Content-Security-Policy"]  # default 'none'
    assert "frame-ancestors 'none'" in SECURITY_HEADERS["Content-Security-Policy"]


def test_pages_contain_no_script_and_no_inline_style(client: TestClient,
                                                     steps: CelerySteps) -> None:
    run_id = start(steps, "shop/order.paid", {}, event_id="evt-s")
    for path in ("/", "/runs", f"/runs/{run_id}", "/events/evt-s", "/bulk/replay"):
        page = client.get(path).text
        assert "<script" not in page and "style=" not in page, path


def test_the_csrf_cookie_is_http_only_and_same_site_strict(client: TestClient) -> None:
    cookie = client.get("/runs").headers["set-cookie"]
    assert "steps_csrf=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
