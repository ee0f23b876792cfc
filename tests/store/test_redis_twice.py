"""Every mutating script is safe to run twice, and every run script is fenced.

redis-py sends a script call again when its reply was lost (the store's ``Retry``): the
script then runs twice. A lost reply is injected on the wire, for one server and for a
cluster alike: the script runs, the client sees a dropped connection instead of the answer
and sends the same call again. The second run must leave the keys exactly as the first left
them and answer what the first answered (or what the store makes the same of).

A holder whose run (or branch) was taken over is refused by every script it calls, and that
script changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.client import Redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from celery_steps.store.base import ConcurrencyGate, Outcome, Suspension, ThrottleGate
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_client import connect
from celery_steps.store.redis_values import s
from tests.store._support import (
    FUNCTION,
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    acquire_branch,
    create,
    finished,
    holder,
    leased,
    new_id,
    run_member,
    suspended_waiting,
    wait_step,
    waiter,
)

Call = Callable[[], Any]
State = dict[str, Any]


def snapshot(client: redis.Redis, namespace: str) -> State:
    """Every key of ``namespace``: its type, value, and whether it expires."""
    state: State = {}
    for raw in client.scan_iter(match=f"{namespace}:*", count=1000):
        key = s(raw)
        kind = s(client.type(key))
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(client.smembers(key))
        else:
            value = client.lrange(key, 0, -1)
        state[key] = (kind, value, client.pttl(key) >= 0)
    return state


class LostReply:
    """Drops the reply of one call of a script after it ran (the client sends it again), and
    records both runs' replies and the state each run left."""

    def __init__(self, store: RedisStore, peek: redis.Redis,
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.store, self.peek = store, peek
        self.sha: str | None = None
        self.skip = 0
        self.replies: list[Any] = []
        self.states: list[State] = []
        send_command, parse_response = AbstractConnection.send_command, Redis.parse_response

        def send(conn: Any, *args: Any, **kwargs: Any) -> Any:
            sent = send_command(conn, *args, **kwargs)  # (connecting sends commands too)
            conn.sent_for_test = args
            return sent

        def parse(client: Any, conn: Any, command_name: str, **options: Any) -> Any:
            reply = parse_response(client, conn, command_name, **options)
            sent = getattr(conn, "sent_for_test", ())
            if self.sha is None or command_name != "EVALSHA" or sent[1:2] != (self.sha,):
                return reply
            if not self._ours(sent):  # another store in this process (a test's leftover thread)
                return reply
            if self.skip:
                self.skip -= 1
                return reply
            self.replies.append(reply)
            self.states.append(snapshot(self.peek, self.store.ns))
            if len(self.replies) == 1:
                raise RedisConnectionError("reply lost on the wire (injected)")
            self.sha = None
            return reply

        monkeypatch.setattr(AbstractConnection, "send_command", send)
        monkeypatch.setattr(Redis, "parse_response", parse)

    def _ours(self, sent: tuple[Any, ...]) -> bool:
        """Whether an EVALSHA touches this store's keys (``EVALSHA sha numkeys key ...``)."""
        if len(sent) < 4 or int(sent[2]) == 0:
            return True
        key = sent[3].decode() if isinstance(sent[3], bytes) else str(sent[3])
        return key.startswith(f"{self.store.ns}:")

    def next_call_of(self, name: str, *, skip: int = 0) -> None:
        """Lose the reply of the call of script ``name`` after the next ``skip`` ones."""
        script = self.store._scripts[name].inner
        self.store.r.script_load(script.script)  # so the first send is the EVALSHA itself
        self.sha, self.skip = script.sha, skip


@pytest.fixture(params=["redis", "cluster"])
def server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("redis_server" if request.param == "redis"
                                   else "redis_cluster")


@pytest.fixture
def rstore(server: Any, namespace: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(server.url(), namespace=namespace)
    yield store
    store.close()


@pytest.fixture
def peek(server: Any) -> Iterator[redis.Redis]:
    client = connect(server.url())
    yield client
    client.close()


@pytest.fixture
def lose(rstore: RedisStore, peek: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> LostReply:
    return LostReply(rstore, peek, monkeypatch)


# -- the calls, each given the state it needs ------------------------------------------------
def gate(store: RedisStore, kind: str) -> str:
    """A gate key in the store's namespace (so a snapshot sees it), in one slot."""
    return f"{store.ns}:gate-{kind}-{{{new_id('g')}}}"


def gated(store: RedisStore) -> tuple[str, str]:
    """A run held by a live holder, with a place in a concurrency gate."""
    return leased(store, concurrency=(ConcurrencyGate(gate(store, "conc"), 2),))


def item(n: int) -> dict[str, Any]:
    return {"name": "t/item", "data": {"n": n}, "id": new_id(f"evt-{n}"), "ts": NOW}


def renewing(st: RedisStore) -> Call:
    run_id, token = gated(st)
    return lambda: st.renew(run_id, token, now=NOW + 1_000, lease_ms=LEASE_MS,
                            running=("fetch", NOW + 500))


def releasing(st: RedisStore) -> Call:
    run_id, token = gated(st)
    return lambda: st.release(run_id, token)


def beginning_a_wait(st: RedisStore) -> Call:
    run_id, token = leased(st)
    w = waiter(run_id, path="data.order", value="o-1")
    return lambda: st.begin_wait(run_id, token, "wait", wait_step(NOW + 60_000), (w,))


def holding_a_branch(st: RedisStore) -> Call:
    run_id, _ = leased(st)
    return lambda: acquire_branch(st, run_id, "b", holder(st, "branch-1"))


def taking_over_a_dead_branch(st: RedisStore) -> Call:
    # the first call of acquire_branch answers busy; the second (the dead holder named) holds
    run_id, _ = leased(st)
    assert acquire_branch(st, run_id, "b", holder(st, "branch-0", alive=False))[0] == "ok"
    return lambda: acquire_branch(st, run_id, "b", holder(st, "branch-1"))


def releasing_a_branch(st: RedisStore) -> Call:
    run_id, _ = leased(st)
    token = holder(st, "branch-1")
    assert acquire_branch(st, run_id, "b", token)[0] == "ok"
    return lambda: st.release_branch(run_id, "b", token)


def waking(st: RedisStore) -> Call:
    run_id, token = leased(st)
    assert st.suspend(run_id, token, Suspension("sleeping", NOW + 60_000)) is False
    return lambda: st._wake([run_member(run_id)])


def acknowledging_a_notification(st: RedisStore) -> Call:
    run_id = finished(st)
    return lambda: st.notified(run_id)


def scheduling(st: RedisStore) -> Call:
    member = run_member(new_id())
    return lambda: st.schedule(member, NOW + 5_000)


def claiming_due_timers(st: RedisStore) -> Call:
    st.schedule(run_member(new_id()), NOW)
    return lambda: st.claim_due(now=NOW + 1, limit=10, redo_ms=30_000)


def acknowledging_timers(st: RedisStore) -> Call:
    st.schedule(run_member(new_id()), NOW)
    claimed = st.claim_due(now=NOW + 1, limit=10, redo_ms=30_000)
    return lambda: st.ack_timers(claimed)


def admitting(st: RedisStore) -> Call:
    # the last start the limit lets in: a second run must not count it twice
    key = gate(st, "rate")
    return lambda: st.admit_rate(key, limit=1, period_ms=60_000, now=NOW)


def claiming_a_singleton(st: RedisStore) -> Call:
    key, run_id = gate(st, "single"), new_id()
    return lambda: st.claim_singleton(key, run_id, now=NOW)


def clearing_a_gate(st: RedisStore) -> Call:
    key, run_id = gate(st, "single"), new_id()
    assert st.claim_singleton(key, run_id, now=NOW) is None
    return lambda: st.release_singleton(key, run_id)


def collecting(st: RedisStore, mode: str, max_size: int) -> Call:
    key, first = gate(st, "pend"), item(0)
    create(st, events=[first], event_ids=[first["id"]], pending=key)
    return lambda: st.join_pending(key, item(1), mode=mode,  # type: ignore[arg-type]
                                   now=NOW + 10, max_size=max_size, period_ms=1_000,
                                   timeout_ms=5_000)


def debouncing(st: RedisStore) -> Call:
    return collecting(st, "debounce", 0)


def filling_a_batch(st: RedisStore) -> Call:
    return collecting(st, "batch", 2)


def taking_a_place(st: RedisStore) -> Call:
    run_id = create(st, concurrency=(ConcurrencyGate(gate(st, "conc"), 1),))
    token = holder(st)
    return lambda: acquire(st, run_id, token)


def freeing_a_place(st: RedisStore) -> Call:
    return releasing(st)


def starting_through_a_throttle(st: RedisStore) -> Call:
    run_id = create(st, throttle=ThrottleGate(gate(st, "thr"), 1, 60_000))
    token = holder(st)
    return lambda: acquire(st, run_id, token)


def queuing_at_a_throttle(st: RedisStore) -> Call:
    key = ThrottleGate(gate(st, "thr"), 1, 60_000)
    run_ids = [new_id(), new_id()]
    st.join_throttle(key, function_id=FUNCTION, run_id=run_ids[0], score=NOW, now=NOW)
    return lambda: st.join_throttle(key, function_id=FUNCTION, run_id=run_ids[1],
                                    score=NOW, now=NOW)


# -- the scripts already covered by test_redis_retries, here also on a cluster ----------------
def creating(st: RedisStore) -> Call:
    return lambda: create(st, waiters=(), concurrency=(ConcurrencyGate(gate(st, "c"), 1),))


def acquiring(st: RedisStore) -> Call:
    run_id, token = create(st), holder(st)
    return lambda: acquire(st, run_id, token)


def saving_a_step(st: RedisStore) -> Call:
    run_id, token = leased(st)
    return lambda: st.save_step(run_id, token, "fetch", {"op": "run", "status": "completed",
                                                         "pos": 0, "result": 1})


def suspending(st: RedisStore) -> Call:
    run_id, token = gated(st)
    return lambda: st.suspend(run_id, token, Suspension("sleeping", NOW + 60_000))


def finishing(st: RedisStore) -> Call:
    run_id, token = gated(st)
    return lambda: st.finish(run_id, token, Outcome("completed", NOW + 5, "1"),
                             retention_ms=RETENTION_MS)


def cancelling(st: RedisStore) -> Call:
    run_id, _ = gated(st)
    return lambda: st.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)


def resolving(st: RedisStore) -> Call:
    run_id, _ = suspended_waiting(st)
    return lambda: st.resolve_step(run_id, "wait", {"status": "completed", "result": 1},
                                   wake_at=NOW + 10)


def storing_an_event(st: RedisStore) -> Call:
    event_id = new_id("evt")
    return lambda: st.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=60_000)


def completing_routing(st: RedisStore) -> Call:
    event_id = new_id("evt")
    assert st.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=60_000) is True
    return lambda: st.complete_routing(event_id, [new_id()], ttl_ms=60_000)


def same(reply: Any) -> Any:
    return reply


def ignored(reply: Any) -> None:
    """The store makes nothing of this script's answer."""


def limited(reply: Any) -> bool:
    """gate_take: the store only asks whether the run must wait ('held' and 'taken' alike)."""
    return s(reply) == "limited"


@dataclass(frozen=True)
class Twice:
    script: str
    given: Callable[[RedisStore], Call]
    skip: int = 0  # script calls of the store method before the one whose reply is lost
    answer: Callable[[Any], Any] = same  # what the store makes of the script's reply


CASES = [
    Twice("renew", renewing),
    Twice("release", releasing),
    Twice("begin_wait", beginning_a_wait),
    Twice("acquire_branch", holding_a_branch),
    Twice("acquire_branch", taking_over_a_dead_branch, skip=1),
    Twice("release_branch", releasing_a_branch),
    Twice("wake", waking),
    Twice("notified", acknowledging_a_notification, answer=ignored),
    Twice("schedule", scheduling),
    Twice("claim_due", claiming_due_timers),
    Twice("ack_timers", acknowledging_timers),
    Twice("admit", admitting),
    Twice("claim_singleton", claiming_a_singleton),
    Twice("clear_gate", clearing_a_gate, answer=ignored),
    Twice("join_pending", debouncing),
    Twice("join_pending", filling_a_batch),
    Twice("gate_take", taking_a_place, answer=limited),
    Twice("gate_free", freeing_a_place),
    Twice("throttle", starting_through_a_throttle),
    Twice("throttle", queuing_at_a_throttle),
    Twice("create_run", creating),
    Twice("acquire", acquiring),
    Twice("save_step", saving_a_step),
    Twice("suspend", suspending),
    Twice("finish", finishing),
    Twice("cancel", cancelling),
    Twice("resolve_step", resolving),
    Twice("put_event", storing_an_event),
    Twice("complete_routing", completing_routing),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.script}-{c.given.__name__}")
def test_a_script_run_twice_leaves_the_state_and_answer_of_one_run(
        rstore: RedisStore, lose: LostReply, case: Twice) -> None:
    # given the state the script changes
    call = case.given(rstore)
    # when the reply of its run is lost and redis-py sends the same call again
    lose.next_call_of(case.script, skip=case.skip)
    call()
    # then it ran twice, the second run changed nothing and answered as the first
    assert len(lose.replies) == 2, f"{case.script} was not run twice"
    first, second = lose.states
    assert second == first
    assert case.answer(lose.replies[1]) == case.answer(lose.replies[0])


# -- fencing: a holder that was replaced writes nothing ----------------------------------------
Stale = Callable[[RedisStore, str, str], Any]


def taken_over(st: RedisStore) -> tuple[str, str, str]:
    """A gated run whose holder's process died and that a live holder took over:
    (run id, the stale holder, the live one)."""
    run_id = create(st, concurrency=(ConcurrencyGate(gate(st, "conc"), 2),))
    stale, fresh = holder(st, "stale", alive=False), holder(st, "fresh")
    assert acquire(st, run_id, stale)[0] == "ok"
    assert acquire(st, run_id, fresh)[0] == "ok"
    return run_id, stale, fresh


FENCED: list[tuple[str, Stale, Any]] = [
    ("renew", lambda st, run_id, stale: st.renew(run_id, stale, now=NOW + 1, lease_ms=LEASE_MS),
     False),
    ("release", lambda st, run_id, stale: st.release(run_id, stale), None),
    ("begin_wait", lambda st, run_id, stale: st.begin_wait(
        run_id, stale, "wait", wait_step(NOW + 60_000), (waiter(run_id),)), False),
    ("save_step", lambda st, run_id, stale: st.save_step(
        run_id, stale, "fetch", {"op": "run", "status": "completed", "pos": 0, "result": 1}),
     ("lost", None)),
    ("suspend", lambda st, run_id, stale: st.suspend(
        run_id, stale, Suspension("sleeping", NOW + 60_000)), None),
    ("finish", lambda st, run_id, stale: st.finish(
        run_id, stale, Outcome("completed", NOW + 5, "1"), retention_ms=RETENTION_MS), False),
]


@pytest.mark.parametrize(("script", "call", "refused"), FENCED, ids=[f[0] for f in FENCED])
def test_a_replaced_holder_is_refused_and_changes_nothing(
        rstore: RedisStore, peek: redis.Redis, script: str, call: Stale, refused: Any) -> None:
    # given a run taken over from a holder whose process died
    run_id, stale, _ = taken_over(rstore)
    before = snapshot(peek, rstore.ns)
    # when the stale holder calls the script, then it is refused and nothing changed
    assert call(rstore, run_id, stale) == refused
    assert snapshot(peek, rstore.ns) == before


def test_a_replaced_holder_releases_nothing_after_its_successor_let_go(
        rstore: RedisStore, peek: redis.Redis) -> None:
    # given a run taken over, then let go by the holder that took it over
    run_id, stale, fresh = taken_over(rstore)
    rstore.release(run_id, fresh)
    before = snapshot(peek, rstore.ns)
    # when the stale holder releases it (its places: the run's timer member), nothing changes
    rstore.release(run_id, stale)
    assert snapshot(peek, rstore.ns) == before


def test_a_replaced_branch_holder_neither_releases_nor_retakes_the_branch(
        rstore: RedisStore, peek: redis.Redis) -> None:
    # given a branch whose holder's process died, taken over by a live holder
    run_id, _ = leased(rstore)
    stale, fresh = holder(rstore, "stale", alive=False), holder(rstore, "fresh")
    assert acquire_branch(rstore, run_id, "b", stale)[0] == "ok"
    assert acquire_branch(rstore, run_id, "b", fresh)[0] == "ok"
    before = snapshot(peek, rstore.ns)
    # when the stale holder lets go of the branch or asks for it again
    rstore.release_branch(run_id, "b", stale)
    again = acquire_branch(rstore, run_id, "b", stale)
    # then it is refused, the branch still held by its successor, and nothing changed
    assert again[0] == "busy"
    assert snapshot(peek, rstore.ns) == before
    assert acquire_branch(rstore, run_id, "b", holder(rstore, "third"))[0] == "busy"
