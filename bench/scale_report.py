"""The tables ``bench.scale`` prints (Markdown, as docs/performance.md quotes them)."""

from __future__ import annotations

from typing import Any

from bench.scale_bytes import BytesResult


def _census_delta(side: dict[str, Any], runs: int) -> dict[str, tuple[int, float]]:
    """Per key kind: keys added, and ``MEMORY USAGE`` bytes added per run."""
    c0, c1 = side["census0"], side["census1"]
    out: dict[str, tuple[int, float]] = {}
    for kind in sorted(set(c0) | set(c1)):
        k0, s0 = c0.get(kind, (0, 0))
        k1, s1 = c1.get(kind, (0, 0))
        if (k1, s1) != (k0, s0):
            out[kind] = (k1 - k0, (s1 - s0) / runs)
    return out


def print_bytes(result: BytesResult, sample: int) -> None:
    real = _census_delta(result.real, sample)
    synthetic = _census_delta(result.synthetic, sample)
    print(f"\n## (a) the real sample against its synthetic twin ({sample} sleepers each; "
          "MEMORY USAGE added, per run)\n")
    print("| key kind | real: keys | real: B/run | synthetic: keys | synthetic: B/run |")
    print("|---|---:|---:|---:|---:|")
    for kind in sorted(set(real) | set(synthetic)):
        rk, rb = real.get(kind, (0, 0.0))
        sk, sb = synthetic.get(kind, (0, 0.0))
        print(f"| {kind} | {rk:,} | {rb:,.1f} | {sk:,} | {sb:,.1f} |")
    steps_kinds = [k for k in real if not k.startswith("other")]
    print(f"| **total (celery-steps keys)** | | {sum(real[k][1] for k in steps_kinds):,.1f} | "
          f"| {sum(v for _, v in synthetic.values()):,.1f} |")
    for name in ("meta", "steps"):
        print(f"\nsample run {name} hash: real {result.real[f'sample_{name}_usage']} B "
              f"{result.real[f'sample_{name}']}; synthetic "
              f"{result.synthetic[f'sample_{name}_usage']} B {result.synthetic[f'sample_{name}']}")
    odd = result.synthetic.get("odd_replies") or result.synthetic.get("odd") or {}
    print(f"script replies other than a fresh run's: {odd or 'none'}")

    pending = result.pending
    print(f"\n## (a) bytes per sleeping run at scale (baseline: {pending['count']:,.0f} pending "
          f"Celery task messages, {pending['used']:,.0f} B each by used_memory, "
          f"{pending['usage']:,.0f} B each by the queue's MEMORY USAGE)\n")
    print("| sleeping runs | written in (s) | used_memory / run | used_memory_dataset / run | "
          "MEMORY USAGE / run: run keys + index shares | MEMORY USAGE / run: event keys "
          "(expire in 24 h) | used_memory / run ÷ pending message | the same, event keys "
          "expired | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in result.checkpoints:
        print(f"| {p.n:,} | {p.write_s:,.0f} | {p.used:,.0f} | {p.dataset:,.0f} | "
              f"{p.run_keys:,.0f} | {p.event_keys:,.0f} | {p.used / pending['used']:.1f}x | "
              f"{(p.used - p.event_keys) / pending['used']:.1f}x | {p.load:.2f} |")
    if result.stopped_by:
        last = result.checkpoints[-1].n if result.checkpoints else 0
        print(f"\nstopped at {last:,} runs: the {result.stopped_by} would not fit more "
              "(--write-budget, --runs)")
    if result.checkpoints:
        p = result.checkpoints[-1]
        print(f"synthetic write rate: {p.n / p.write_s:,.0f} runs/s; odd script replies: "
              f"{p.odd}")


def print_throughput(rows: list[dict[str, Any]], concurrency: int) -> None:
    print(f"\n## (b) events routed and runs completed per second (prefork nodes of "
          f"{concurrency} processes, default settings)\n")
    print("| nodes | events | celery-steps: sent in (s) | events routed / s | runs completed / s "
          "| plain Celery: sent in (s) | tasks completed / s | runs/s ÷ tasks/s | "
          "routed/s ÷ tasks/s | failed runs | load (steps, plain) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        s, p = r["steps"], r["plain"]
        print(f"| {r['nodes']} | {r['events']:,} | {s['sent_s']:.2f} | {s['routed_rate']:,.0f} | "
              f"{s['rate']:,.0f} | {p['sent_s']:.2f} | {p['rate']:,.0f} | "
              f"{s['rate'] / p['rate']:.2f} | {s['routed_rate'] / p['rate']:.2f} | "
              f"{s['failed']:,.0f} | {s['load']:.2f}, {p['load']:.2f} |")
