"""Every script is safe to run twice: redis-py re-sends a call whose reply was lost.

A lost reply is injected on the wire: the script runs on the server, then the client sees
a dropped connection instead of the answer, reconnects and sends the same call again (the
store's redis-py ``Retry``). The answer of the second run must be what the first one meant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.client import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from celery_steps.store.base import NOTIFY_SAFETY_MS, NewRun, Outcome, Suspension
from celery_steps.store.redis import RedisStore
from tests.store._support import (
    FUNCTION,
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    assert_due_exactly_at,
    create,
    holder,
    leased,
    new_id,
    run_member,
    suspended_waiting,
)

DONE = {"op": "run", "pos": 0, "status": "completed", "result": 1}


class LoseReply:
    """Drops the reply of the next call of script ``name``, once, after it ran."""

    def __init__(self, store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = store
        self.sha: str | None = None
        self.lost = 0
        original = Redis._send_command_parse_response

        def send(client: Any, conn: Any, command_name: str, *args: Any, **options: Any) -> Any:
            reply = original(client, conn, command_name, *args, **options)
            if self.sha is not None and command_name == "EVALSHA" and args[1] == self.sha:
                self.sha = None
                self.lost += 1
                raise RedisConnectionError("reply lost on the wire (injected)")
            return reply

        monkeypatch.setattr(Redis, "_send_command_parse_response", send)

    def next_call_of(self, name: str) -> None:
        script = self.store._scripts[name].inner
        self.store.r.script_load(script.script)  # so the first send is the EVALSHA itself
        self.sha = script.sha


@pytest.fixture
def rstore(redis_server: Any, namespace: str) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_server.url(), namespace=namespace)
    yield s
    s.close()


@pytest.fixture
def lose(rstore: RedisStore, monkeypatch: pytest.MonkeyPatch) -> LoseReply:
    return LoseReply(rstore, monkeypatch)


def test_a_suspend_retried_after_a_lost_reply_still_sees_the_wake_flag(rstore, lose) -> None:
    # given a held run that an event woke while it ran (the wake flag is set)
    run_id, token = leased(rstore)
    assert acquire(rstore, run_id, "tok-2@other", now=NOW + 1, lease_ms=LEASE_MS)[0] == "busy"
    # when its suspend's reply is lost and redis-py sends it again
    lose.next_call_of("suspend")
    rerun = rstore.suspend(run_id, token, Suspension("sleeping", NOW + 60_000))
    # then the answer is still "replay now": the wake is not swallowed
    assert lose.lost == 1 and rerun is True
    assert rstore.load_run(run_id).status == "running"
    assert rstore.save_step(run_id, token, "fetch", DONE) == ("ok", None)


def test_a_plain_suspend_retried_after_a_lost_reply_still_reports_suspended(rstore, lose):
    run_id, token = leased(rstore)
    lose.next_call_of("suspend")
    assert rstore.suspend(run_id, token, Suspension("sleeping", NOW + 60_000)) is False
    assert lose.lost == 1 and rstore.load_run(run_id).status == "sleeping"
    assert_due_exactly_at(rstore, run_member(run_id), NOW + 60_000)


def test_a_create_run_retried_after_a_lost_reply_still_reports_created(rstore, lose) -> None:
    # the caller only sends a new run's start when create_run says it created it
    run_id = new_id()
    lose.next_call_of("create_run")
    created = rstore.create_run(NewRun(id=run_id, function_id=FUNCTION, event_ids=["e"],
                                       created_at=NOW))
    assert lose.lost == 1 and created is True
    # while a genuinely second creation is still refused
    assert rstore.create_run(NewRun(id=run_id, function_id=FUNCTION, event_ids=["e"],
                                    created_at=NOW + 1)) is False


def test_a_resolve_step_retried_after_a_lost_reply_still_reports_won(rstore, lose) -> None:
    # the caller only enqueues the run when resolve_step says it won
    run_id, _ = suspended_waiting(rstore)
    lose.next_call_of("resolve_step")
    won = rstore.resolve_step(run_id, "wait", {"status": "completed", "result": 1},
                              wake_at=NOW + 10)
    assert lose.lost == 1 and won is True


def test_an_acquire_retried_after_a_lost_reply_is_still_ok(rstore, lose) -> None:
    run_id = create(rstore)
    token = holder(rstore)
    lose.next_call_of("acquire")
    status, record = acquire(rstore, run_id, token, now=NOW, lease_ms=LEASE_MS)
    assert lose.lost == 1 and status == "ok" and record is not None


def test_a_save_step_retried_after_a_lost_reply_is_still_ok(rstore, lose) -> None:
    run_id, token = leased(rstore)
    lose.next_call_of("save_step")
    assert rstore.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    assert lose.lost == 1 and rstore.load_run(run_id).steps == {"fetch": DONE}


def test_a_finish_retried_after_a_lost_reply_still_reports_finished(rstore, lose) -> None:
    run_id, token = leased(rstore)
    lose.next_call_of("finish")
    assert rstore.finish(run_id, token, Outcome("completed", NOW + 5, "1"),
                         retention_ms=RETENTION_MS) is True
    assert lose.lost == 1 and rstore.load_run(run_id).status == "completed"


def test_a_cancel_retried_after_a_lost_reply_leaves_its_outbox_armed(rstore, lose) -> None:
    # a retried cancel answers "already cancelled"; its notifications still follow
    run_id, _ = leased(rstore)
    lose.next_call_of("cancel")
    rstore.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    record = rstore.load_run(run_id)
    assert lose.lost == 1 and record.status == "cancelled" and record.notify is True
    assert_due_exactly_at(rstore, run_member(run_id), NOW + 1 + NOTIFY_SAFETY_MS)


def test_a_put_event_retried_after_a_lost_reply_still_reports_stored(rstore, lose) -> None:
    event_id = new_id("evt")
    lose.next_call_of("put_event")
    assert rstore.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=60_000) is True
    assert lose.lost == 1
