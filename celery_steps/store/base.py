"""The narrow state-store interface the engine, router and poller use.

Two implementations: :class:`~celery_steps.store.redis.RedisStore` (production) and
:class:`~celery_steps.store.memory.MemoryStore` (one process). ``tests/store`` runs one
contract suite against both. Times are integer milliseconds since the epoch.

Vocabulary:

- A *step state* is a JSON object stored per step key (``"fetch"``, ``"fetch:1"``): ``op``,
  ``pos`` (order of first run), ``status`` and op-specific fields (``result``, ``error``,
  ``attempts``, ``wake_at``...). A state whose status is in :data:`FINAL` never changes again
  (first writer wins).
- A run's *holder* (``token@proc``) is the one execution running it. Every write made while
  executing carries the holder and is refused once another holder replaced it (fencing). A
  holder nobody replaced may keep writing, however slow it was.
- A *process key* (``proc``) says a worker process is alive: its heartbeat refreshes it every
  ``lease/5`` (and a prefork worker's main process refreshes it for its pool children and
  deletes it the moment a child dies). A holder whose process key is gone is dead: the next
  acquire takes the run over and counts a *crash* against the step that was running.
- A *timer* is a member of one sorted set scored by due time: ``r|<function>|<run>`` wakes a
  run, ``e|<event>`` routes an event, ``b|<function>|<run>|<step>`` runs a parallel branch.
- A run's *wake flag* records that something happened while it was held (an event resolved
  its wait, a child ended); the holder sees it when it suspends and replays again.
- A run's *outbox* (``notify``) is set by the write that ends it, with its timer re-armed: what
  follows an end (resuming a parent, system events) is done by the runtime, which then clears
  it; if the process dies first, the timer fires and the runtime does it then.
- Every write is safe to run twice: redis-py re-sends a script whose reply was lost.
- A *gate* is global flow-control state, keyed by function (or shared name) and key value,
  never by run: a run's own writes never touch a gate (in Redis Cluster a script only touches
  the keys of one slot). A concurrency gate holds *places* (a run's timer member scored by
  lease expiry) and a *waiting queue* (runs scored by when they began to wait minus their
  priority); a place goes to a run only while no run waiting before it in the queue is owed
  it. A throttle gate is a GCRA clock with the same kind of queue. The store takes and frees
  places around a run's writes: taking first (a place whose run never got written expires
  with its lease), freeing after.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

FINAL = frozenset({"completed", "failed"})


class GateTaken(Exception):
    """Another run already collects events for this debounce/batch gate."""


AcquireStatus = Literal["ok", "busy", "missing", "ended", "limited", "foreign"]
# A run refused by its concurrency limit tries again this much later.
CONCURRENCY_RETRY_MS = 1000
# A run resumed from outside (event, child, branch, task) is enqueued at once; its timer is
# armed this much later as a safety net in case that message is lost.
RESUME_SAFETY_MS = 30_000
# An ended run's notifications are retried by its timer this long after the end, unless the
# runtime confirmed them first (the outbox).
NOTIFY_SAFETY_MS = 10_000
# A delivery that finds its run busy looks again this soon (or when the holder's process key
# lapses, if sooner). A live holder's heartbeat pushes the run's timer back past it; a dead
# holder's run is then taken over within this, once its death is noticed.
BUSY_RECHECK_MS = 2_000
BUSY_MARGIN_MS = 50  # past a process key's expiry, so it has lapsed when looked at
# A singleton gate claimed for a run that does not exist (yet) stays taken this long: the
# claimer creates the run right after claiming, or its routing is retried.
SINGLETON_CLAIM_MS = 60_000
# A run waiting in a gate's queue that does not come back within this of when it was due
# loses its place in the queue (its run vanished, or its process died); it gets the same
# place back when it asks again, its score being its own.
WAITER_GRACE_MS = 15_000
SaveStatus = Literal["ok", "exists", "lost", "cancelled"]
SKIP_REASONS = ("rate_limited", "singleton", "idempotent", "debounced", "batched")


def proc_of(holder: str) -> str:
    """The process part of a holder ``token@proc``."""
    return holder.partition("@")[2]


def proc_host(proc: str) -> str:
    """The host part of a process id ``host:pid:start``."""
    return proc.split(":", 1)[0]


@dataclass
class RunRecord:
    """A run as stored: metadata plus every step state by key."""

    id: str
    function_id: str
    status: str
    created_at: int
    event_ids: list[str]
    ended_at: int | None = None
    output: Any = None
    error: dict[str, str] | None = None
    attempt: int = 0
    parent: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    deadlines: dict[str, int] = field(default_factory=dict)
    # Executions taken over from a dead holder since the run last made progress.
    crashes: int = 0
    # The end's notifications are not confirmed yet (the outbox).
    notify: bool = False
    # What the run's events and step states take in the store (JSON bytes).
    state_bytes: int = 0
    # The run's W3C trace context (``traceparent``), set when it was created (tracing only).
    trace: str | None = None
    # (step key, since ms): the step.run its holder was executing at its last heartbeat.
    running_step: tuple[str, int] | None = None

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    def ordered_steps(self) -> list[tuple[str, dict[str, Any]]]:
        return sorted(self.steps.items(), key=lambda item: int(item[1].get("pos", 0)))


@dataclass(frozen=True)
class Waiter:
    """A ``wait_for_event`` (or ``cancel_on``) registration, indexed by event name and match.

    ``registered_at`` is stamped by the store when the waiter is stored, on the same clock as
    an event's ``received_at``: a wait sees exactly the events received after it existed.
    """

    event_name: str
    run_id: str
    function_id: str
    step_key: str
    registered_at: int = 0
    match_path: str | None = None
    match_key: str | None = None
    condition: str | None = None
    # cancel_on(timeout=...): events received later than this after registration are ignored
    timeout_ms: int | None = None
    # What ``condition`` reads of the run's triggering event (its ``event``), pruned to those
    # paths, so routing evaluates it without loading the run. None: not kept (a waiter
    # stored by an older version, or too big): routing loads the run.
    trigger: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def member(self) -> str:
        return f"{self.run_id}|{self.step_key}"


@dataclass(frozen=True)
class EventWrite:
    """One event to store (see :meth:`StateStore.put_events`)."""

    event_id: str
    event_json: str
    route_at: int
    ttl_ms: int


@dataclass(frozen=True)
class ConcurrencyGate:
    """At most ``limit`` runs hold a place in gate ``key`` at once (while they execute)."""

    key: str
    limit: int


@dataclass(frozen=True)
class ThrottleGate:
    """At most ``limit`` runs start through gate ``key`` per ``period_ms``, ``burst`` at once."""

    key: str
    limit: int
    period_ms: int
    burst: int = 1


@dataclass(frozen=True)
class Skip:
    """A function an event matched that started no run of its own: ``reason`` is one of
    :data:`SKIP_REASONS`, ``run_id`` the run the event went into or that stood in its way."""

    function_id: str
    reason: str
    run_id: str | None = None


@dataclass(frozen=True)
class NewRun:
    id: str
    function_id: str
    event_ids: list[str]
    created_at: int
    events: list[dict[str, Any]] = field(default_factory=list)
    parent: dict[str, Any] | None = None
    # A watchdog wake-up: if the start message is lost the poller starts the run then.
    start_by: int | None = None
    waiters: tuple[Waiter, ...] = ()
    # Absolute times (ms) from Timeouts: "start" (must have started by), "finish".
    deadlines: dict[str, int] = field(default_factory=dict)
    # The concurrency gates the run holds a place in while it executes (at most two).
    concurrency: tuple[ConcurrencyGate, ...] = ()
    # The throttle its first start goes through.
    throttle: ThrottleGate | None = None
    # Priority (ms): in a gate's queue the run goes as if it began waiting this much earlier.
    priority_ms: int = 0
    # A debounce/batch gate: the run collects that gate's events until it starts.
    pending: str | None = None
    # The run's W3C trace context (``traceparent``), when tracing.
    trace: str | None = None


@dataclass(frozen=True)
class Suspension:
    """Why a run stops executing now and what wakes it."""

    status: Literal["queued", "sleeping", "waiting"]
    wake_at: int | None
    step_key: str | None = None
    step_state: dict[str, Any] | None = None
    attempt: int | None = None
    waiters: tuple[Waiter, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """How a run ended."""

    status: Literal["completed", "failed", "cancelled"]
    ended_at: int
    output_json: str | None = None
    error: dict[str, str] | None = None


class StateStore(abc.ABC):
    """Everything celery-steps keeps. Implementations must make each method atomic."""

    # -- events -------------------------------------------------------------------------
    @abc.abstractmethod
    def put_event(self, event_id: str, event_json: str, *, route_at: int, ttl_ms: int) -> bool:
        """Store an event unless its id was seen within ``ttl_ms``, stamped with the store's
        time (``received_at``); arm its routing timer at ``route_at``."""

    def put_events(self, writes: list[EventWrite]) -> list[bool]:
        """:meth:`put_event` for many events, in as few round trips as the store allows."""
        return [self.put_event(w.event_id, w.event_json, route_at=w.route_at, ttl_ms=w.ttl_ms)
                for w in writes]

    @abc.abstractmethod
    def get_event(self, event_id: str) -> str | None:
        """The stored envelope ``{"event": ..., "received_at": ms}`` as JSON."""

    @abc.abstractmethod
    def complete_routing(self, event_id: str, run_ids: list[str], *, ttl_ms: int,
                         skipped: tuple[Skip, ...] = ()) -> None:
        """Record the runs an event started, and why the functions in ``skipped`` started
        none (kept as long as the run ids; a second routing adds the functions not recorded
        yet), and disarm its routing timer."""

    @abc.abstractmethod
    def skipped_starts(self, event_id: str) -> list[Skip]:
        """What :meth:`complete_routing` recorded in ``skipped`` (empty when nothing was)."""

    @abc.abstractmethod
    def routed_runs(self, event_id: str) -> list[str] | None:
        """Run ids an event started, or None while it is not routed yet."""

    # -- runs ---------------------------------------------------------------------------
    @abc.abstractmethod
    def create_run(self, run: NewRun) -> bool:
        """Create a queued run; False (and no change) when the id exists. A run with
        ``pending`` set raises :class:`GateTaken` (and changes nothing) while another run
        collects for that gate: join that one instead."""

    @abc.abstractmethod
    def load_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    def list_runs(
        self, *, function_id: str | None, status: str | None, limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[RunRecord]:
        """Newest first (by created_at, then id). ``before`` = (created_at, run id) of the
        last run of the previous page: only runs ordered after it are returned."""

    @abc.abstractmethod
    def acquire(
        self, run_id: str, holder: str, *, function_id: str, now: int, lease_ms: int
    ) -> tuple[AcquireStatus, RunRecord | None]:
        """Make ``holder`` the run's holder, mark it running, return its state.

        ``foreign`` (and nothing changed) when the run belongs to another function than
        ``function_id``: a message for one function never executes another's run.

        ``busy`` while a live holder has it (the wake flag is set, and the run's timer is due
        within :data:`BUSY_RECHECK_MS`, or when the holder's process key lapses). A holder whose
        process
        is dead is replaced and ``crashes`` goes up by one.

        A run with concurrency gates takes a place in each; when one is full, or a run waiting
        before it in that gate's queue is owed the free place, it is ``limited``: it joins the
        gate's queue (scored by when it began to wait, or its ``created_at`` for its first
        start, minus its priority) and its timer is set :data:`CONCURRENCY_RETRY_MS` ahead.
        Suspending, finishing, releasing or cancelling frees the run's places and wakes (sets
        the timer of) the runs at the head of each queue. A run's first start also goes
        through its throttle gate: refused, it is ``limited`` with its timer set to when the
        throttle lets it start, counting the runs queued before it.
        ``ended`` runs come back with their record when their outbox is still pending."""

    @abc.abstractmethod
    def renew(self, run_id: str, holder: str, *, now: int, lease_ms: int,
              running: tuple[str, int] | None = None) -> bool:
        """While ``holder`` holds the run: push its timer (the watchdog) and its places in
        its concurrency gates to ``now + lease_ms``, and record the step it is executing
        (``running``: step key, since ms; None: none), which ``save_step``, ``suspend``,
        ``finish`` and ``release`` clear. False once it no longer holds it."""

    @abc.abstractmethod
    def beat(self, proc: str, *, ttl_ms: int, holding: list[str] | None = None) -> None:
        """Say process ``proc`` is alive for ``ttl_ms`` more. ``holding`` (the timer members
        of the runs it executes) is kept with it; ``None`` (another process beating for it)
        only extends a key that exists, keeping what it holds."""

    @abc.abstractmethod
    def reap(self, proc: str) -> None:
        """Process ``proc`` is dead: its runs may be taken over at once, and are woken now."""

    @abc.abstractmethod
    def host_procs(self, host: str) -> list[str]:
        """The processes of ``host`` that beat for themselves and were not reaped yet."""

    @abc.abstractmethod
    def begin_wait(self, run_id: str, holder: str, step_key: str, state: dict[str, Any],
                   waiters: tuple[Waiter, ...]) -> bool:
        """For the holder, before it suspends: store a waiting step's state and register its
        waiters (stamped now). An event that resolves the step in between merges into that
        state and sets the wake flag. False once it no longer holds the run."""

    @abc.abstractmethod
    def save_step(
        self, run_id: str, holder: str, step_key: str, state: dict[str, Any]
    ) -> tuple[SaveStatus, dict[str, Any] | None]:
        """Checkpoint a step for the holder; a final state already stored wins. Resets the
        run's crash count (it made progress)."""

    @abc.abstractmethod
    def suspend(self, run_id: str, holder: str, suspension: Suspension) -> bool | None:
        """Record the suspension and let go of the run.

        Returns True when the wake flag was set (the caller keeps holding it and replays),
        False when suspended, None when the holder was replaced or the run cancelled.
        """

    @abc.abstractmethod
    def finish(self, run_id: str, holder: str, outcome: Outcome, *, retention_ms: int) -> bool:
        """End the run for the holder, arm its outbox, expire it after the retention."""

    @abc.abstractmethod
    def wait_ended(self, run_id: str, timeout: float) -> None:
        """Block until the run has ended or ``timeout`` seconds passed (callers check)."""

    @abc.abstractmethod
    def notified(self, run_id: str) -> None:
        """What follows the run's end was done: clear its outbox and its timer."""

    @abc.abstractmethod
    def release(self, run_id: str, holder: str) -> None:
        """Let go of the run without changing it (the holder stopped early)."""

    @abc.abstractmethod
    def cancel(self, run_id: str, *, now: int, reason: str, retention_ms: int) -> str | None:
        """Cancel a run in any state and arm its outbox. Returns its previous status, None
        when unknown."""

    @abc.abstractmethod
    def resolve_step(
        self, run_id: str, step_key: str, state: dict[str, Any], *, wake_at: int, wake: bool = True
    ) -> bool:
        """From outside the run (an event, a child run, a timeout): merge ``state`` (a final
        status) into the step's state unless it is final already, drop the step's waiters and,
        with ``wake``, set the wake flag and arm the run's timer at ``wake_at`` (a safety net:
        callers also enqueue the run at once). True when this call won.
        """

    @abc.abstractmethod
    def acquire_branch(self, run_id: str, step_key: str, holder: str, *,
                       function_id: str) -> tuple[AcquireStatus, RunRecord | None, int]:
        """Hold one ``parallel`` branch of a run: (status, run, crashes of this branch).
        ``busy`` while a live holder runs it; a dead holder is replaced (crashes + 1)."""

    @abc.abstractmethod
    def release_branch(self, run_id: str, step_key: str, holder: str) -> None: ...

    @abc.abstractmethod
    def note_task(self, task_id: str, outcome: dict[str, Any], *, ttl_ms: int) -> None:
        """Record what a worker knows of the ``run_task`` Celery task ``task_id``:
        ``{"status": "started", "proc": ...}`` when it starts it, ``{"status": "lost"}``
        when Celery failed it for the broker (each replaces the last), or how it ended
        (``completed`` with ``result``, ``failed`` with ``error``), which nothing later
        replaces. Kept ``ttl_ms``."""

    @abc.abstractmethod
    def task_outcome(self, task_id: str) -> dict[str, Any] | None:
        """How the task ended if a worker recorded it, else its last start, else None."""

    @abc.abstractmethod
    def proc_alive(self, proc: str) -> bool:
        """Whether process ``proc``'s key is alive (its heartbeat beats)."""

    # -- flow control -------------------------------------------------------------------
    @abc.abstractmethod
    def admit_rate(self, gate: str, *, limit: int, period_ms: int, now: int) -> bool:
        """Admit one run start through a rate-limit gate: False (and nothing recorded) when
        ``limit`` starts were admitted in the last ``period_ms`` (sliding window)."""

    @abc.abstractmethod
    def join_throttle(self, gate: ThrottleGate, *, function_id: str, run_id: str, score: int,
                      now: int) -> int:
        """Queue a run about to be created in a throttle gate's queue with ``score`` (its
        creation time minus its priority); returns in how many ms the throttle will let it
        start (GCRA: ``limit`` per ``period_ms``, ``burst`` at once), counting the runs queued
        before it. Nothing is consumed: its start (:meth:`acquire`) takes the slot."""

    @abc.abstractmethod
    def join_pending(self, gate: str, event: dict[str, Any], *, mode: Literal["debounce", "batch"],
                     now: int, max_size: int, period_ms: int,
                     timeout_ms: int | None) -> tuple[str, bool] | None:
        """Add an event to the run collecting a gate's events, while that run is queued.

        ``debounce``: the run's events become ``[event]`` and its start moves to
        ``now + period_ms`` (never later than ``timeout_ms`` after its first event).
        ``batch``: the event is appended; at ``max_size`` events the batch closes and starts
        now. Returns (run id, start now) or None when no run collects for the gate (the
        caller creates one with ``NewRun.pending``). An event already in the run is ignored.
        """

    @abc.abstractmethod
    def claim_singleton(self, gate: str, run_id: str, *, now: int,
                        force: bool = False) -> str | None:
        """Make ``run_id`` the gate's active run, unless another run holds it (returns that
        run's id): one that has not ended, or one claimed less than
        :data:`SINGLETON_CLAIM_MS` ago whose run does not exist yet. ``force`` takes the gate
        whatever holds it."""

    @abc.abstractmethod
    def release_singleton(self, gate: str, run_id: str) -> None:
        """Free the gate if ``run_id`` still holds it (its run ended): gates of keys never
        used again do not stay behind."""

    # -- functions ----------------------------------------------------------------------
    @abc.abstractmethod
    def register_functions(self, function_ids: list[str]) -> None:
        """Record function ids served by some app on this store (cross-app ``invoke``)."""

    @abc.abstractmethod
    def known_function(self, function_id: str) -> bool: ...

    # -- waiters ------------------------------------------------------------------------
    @abc.abstractmethod
    def find_waiters(self, event_name: str, event: dict[str, Any]) -> list[Waiter]:
        """Waiters on ``event_name`` whose match value equals the event's (O(1) per path)."""

    # -- timers -------------------------------------------------------------------------
    @abc.abstractmethod
    def schedule(self, member: str, due: int) -> None: ...

    @abc.abstractmethod
    def unschedule(self, member: str) -> None: ...

    @abc.abstractmethod
    def claim_due(self, *, now: int, limit: int, redo_ms: int) -> list[tuple[str, int]]:
        """Claim due timers: push each back by ``redo_ms`` (at-least-once) and return
        (member, new score) pairs; :meth:`ack_timers` removes them once handled."""

    @abc.abstractmethod
    def ack_timers(self, claimed: list[tuple[str, int]]) -> None: ...

    @abc.abstractmethod
    def next_due(self) -> int | None: ...

    @abc.abstractmethod
    def wait_for_signal(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds or until an earlier timer is scheduled."""

    @abc.abstractmethod
    def signal(self) -> None:
        """Wake a poller blocked in :meth:`wait_for_signal` (at least one; e.g. after a clock
        jump). Pollers not woken still wake within their own timeout."""

    # -- housekeeping -------------------------------------------------------------------
    @abc.abstractmethod
    def sweep(self, *, now: int, older_than_ms: int, limit: int) -> int:
        """Drop index entries of runs that expired (created more than ``older_than_ms`` ago
        and gone); at most ``limit`` per index. Returns how many were dropped."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections."""
