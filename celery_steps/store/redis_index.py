"""Reading across shards on Redis: listing runs from the run indexes, finding the waiters of
an event, the function table, and the sweep that trims index entries of expired runs."""

from __future__ import annotations

from typing import Any

import redis

from celery_steps.expressions import MISSING, lookup_path, match_key
from celery_steps.store.base import RunRecord, Waiter
from celery_steps.store.redis_keys import STATUSES, KeyLayout
from celery_steps.store.redis_values import record_of, s, waiter_of

# A listing reads this many entries of each index per round, four times more each round.
LIST_DEPTH = 100


class RedisIndex:
    """The cross-shard reads of :class:`~celery_steps.store.redis.RedisStore`."""

    r: redis.Redis
    keys: KeyLayout

    def __init__(self) -> None:
        self._sweep_cursors: dict[str, int] = {}

    # -- functions --------------------------------------------------------------------------
    def register_functions(self, function_ids: list[str]) -> None:
        if function_ids:
            self.r.sadd(self.keys.functions, *function_ids)

    def known_function(self, function_id: str) -> bool:
        return bool(self.r.sismember(self.keys.functions, function_id))

    # -- waiters ----------------------------------------------------------------------------
    def find_waiters(self, event_name: str, event: dict[str, Any]) -> list[Waiter]:
        shards = range(self.keys.shards)
        with self.r.pipeline(transaction=False) as pipe:
            for shard in shards:
                base = self.keys.waiters(shard, event_name)
                pipe.hgetall(base)
                pipe.smembers(base + ":paths")
            replies = pipe.execute()
        buckets = replies[::2]
        matched: list[str] = []
        for shard, paths in zip(shards, replies[1::2], strict=True):
            for raw_path in paths:
                path = s(raw_path)
                value = lookup_path(event, path)
                if value is not MISSING:
                    matched.append(self.keys.waiter_index(shard, event_name, path,
                                                          match_key(value)))
        if matched:
            with self.r.pipeline(transaction=False) as pipe:
                for key in matched:
                    pipe.hgetall(key)
                buckets.extend(pipe.execute())
        return [waiter_of(raw) for bucket in buckets for raw in bucket.values()]

    # -- listing ----------------------------------------------------------------------------
    def _all_fn_indexes(self) -> list[str]:
        shards = range(self.keys.shards)
        with self.r.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.smembers(self.keys.fns(shard))
            per_shard = pipe.execute()
        return sorted(self.keys.fn_index(k, s(f)) for k in shards for f in per_shard[k])

    def _plan(self, function_id: str | None, status: str | None) -> tuple[list[str], bool]:
        """The indexes to page, and whether each entry's status must be read (a function's
        index filtered by status: when it is smaller than the status's index)."""
        shards = range(self.keys.shards)
        if status is None:
            if function_id is None:
                return self._all_fn_indexes(), False
            return [self.keys.fn_index(k, function_id) for k in shards], False
        by_status = [self.keys.status_index(k, status) for k in shards]
        if function_id is None:
            return by_status, False
        by_function = [self.keys.fn_index(k, function_id) for k in shards]
        with self.r.pipeline(transaction=False) as pipe:
            for index in (*by_function, *by_status):
                pipe.zcard(index)
            sizes = pipe.execute()
        if sum(sizes[:len(by_function)]) < sum(sizes[len(by_function):]):
            return by_function, True
        return by_status, False

    def list_runs(self, *, function_id: str | None, status: str | None, limit: int,
                  before: tuple[int, str] | None = None) -> list[RunRecord]:
        """Newest first. Pages the function's or the status's run indexes (the smaller,
        when both filters are given) from the cursor, merging the shards: a page reads about
        ``limit`` entries of each index it pages, and loads only runs it returns."""
        if limit <= 0 or (status is not None and status not in STATUSES):
            return []
        indexes, read_status = self._plan(function_id, status)
        top: int | str = "+inf" if before is None else before[0]
        found: list[RunRecord] = []
        done: set[str] = set()
        depth = max(limit, LIST_DEPTH) + 1  # (+1: the cursor's own entry comes back too)
        while True:
            with self.r.pipeline(transaction=False) as pipe:
                for index in indexes:
                    pipe.zrevrangebyscore(index, top, "-inf", start=0, num=depth,
                                          withscores=True)
                pages = pipe.execute()
            # below the lowest entry of a full page, that index may hold unread newer runs
            frontier = max((int(page[-1][1]) for page in pages if len(page) == depth),
                           default=None)
            candidates: list[tuple[int, str, str, str]] = []
            for index, page in zip(indexes, pages, strict=True):
                for raw, score in page:
                    entry = s(raw)
                    run_id, _, fn = entry.partition("|")
                    if (run_id in done or (fn and function_id is not None and fn != function_id)
                            or (before is not None and (int(score), run_id) >= before)
                            or (frontier is not None and int(score) < frontier)):
                        continue
                    candidates.append((int(score), run_id, index, entry))
            candidates.sort(reverse=True)
            if read_status:
                candidates = self._in_status(candidates, status, done)
            while candidates:
                chunk, candidates = (candidates[:limit - len(found)],
                                     candidates[limit - len(found):])
                for (_, run_id, index, entry), record in zip(
                        chunk, self._load_many([c[1] for c in chunk]), strict=True):
                    done.add(run_id)
                    if record is None:
                        self.r.zrem(index, entry)  # expired after the retention: trim lazily
                    elif status is None or record.status == status:
                        found.append(record)
                        if len(found) >= limit:
                            return found
            if frontier is None:
                return found
            depth *= 4

    def _in_status(self, candidates: list[tuple[int, str, str, str]], status: str | None,
                   done: set[str]) -> list[tuple[int, str, str, str]]:
        """The candidates whose run is in ``status`` now (one pipelined read of each run's
        status); the others are done with."""
        with self.r.pipeline(transaction=False) as pipe:
            for _, run_id, _, _ in candidates:
                pipe.hget(self.keys.run(run_id), "status")
            statuses = pipe.execute()
        kept = []
        for candidate, current in zip(candidates, statuses, strict=True):
            if current is None or s(current) == status:
                kept.append(candidate)  # (an expired one is trimmed when loaded)
            else:
                done.add(candidate[1])
        return kept

    def _load_many(self, run_ids: list[str]) -> list[RunRecord | None]:
        """Several runs in one round trip (each read alone, not one snapshot of all)."""
        with self.r.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                rk = self.keys.run_keys(run_id)
                pipe.hgetall(rk.meta)
                pipe.hgetall(rk.steps)
                pipe.get(rk.events)
            replies = pipe.execute()
        return [record_of(run_id, meta, steps, events) if meta else None
                for run_id, meta, steps, events in zip(
                    run_ids, replies[::3], replies[1::3], replies[2::3], strict=True)]

    # -- housekeeping -----------------------------------------------------------------------
    def sweep(self, *, now: int, older_than_ms: int, limit: int) -> int:
        """Trim the index entries of runs that expired: about ``limit`` entries of each
        index per call, resuming where the last call stopped (a long-lived run at the
        start of an index holds nothing up)."""
        dropped = 0
        for shard in range(self.keys.shards):
            fns = self.keys.fns(shard)
            functions = [s(f) for f in self.r.smembers(fns)]
            indexes = [self.keys.fn_index(shard, f) for f in functions]
            indexes += [self.keys.status_index(shard, st) for st in STATUSES]
            for index in indexes:
                dropped += self._sweep_index(index, now - older_than_ms, limit)
            with self.r.pipeline(transaction=False) as pipe:
                for index in indexes[:len(functions)]:
                    pipe.exists(index)
                gone = [f for f, alive in zip(functions, pipe.execute(), strict=True)
                        if not alive]
            if gone:
                self.r.srem(fns, *gone)
        return dropped

    def _sweep_index(self, index: str, created_before: int, limit: int) -> int:
        cursor, page = self.r.zscan(index, self._sweep_cursors.get(index, 0), count=limit)
        self._sweep_cursors[index] = int(cursor)
        old = [(s(entry), s(entry).partition("|")[0]) for entry, score in page
               if float(score) <= created_before]
        if not old:
            return 0
        with self.r.pipeline(transaction=False) as pipe:
            for _, run_id in old:
                pipe.exists(self.keys.run(run_id))
            alive = pipe.execute()
        gone = [entry for (entry, _), exists in zip(old, alive, strict=True) if not exists]
        if gone:
            self.r.zrem(index, *gone)
        return len(gone)
