"""Chaos at scale: the mixed workload of ``tests/chaos`` under faults, then every invariant.

    .venv/bin/python -m bench.chaos --runs 1000 --seed 7
    .venv/bin/python -m bench.chaos --runs 200 --seed 3 --faults kill-child=3,redis-restart=1

``--runs`` is the number of orders the driver sends; each order is a run that invokes a child
run and starts a notify run, and cron ticks add a run per minute, so the runs checked are
about three times ``--runs``. The engine (Redis servers, workers, the fault injector, the
checker) is :mod:`tests.chaos.harness`; this script only sets it up and prints the figures.
Exit status 1 when an invariant was violated (the report says which, with the fault log).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.chaos.harness import ChaosConfig, run_chaos
from tests.chaos.injector import KINDS, parse_weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="orders to send (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="all",
                        help="weights, e.g. kill-child=4,redis-restart=1 (kinds: "
                             f"{', '.join(KINDS)}); default: all, with the harness's weights")
    parser.add_argument("--fault-interval", type=float, default=2.0,
                        help="mean seconds between two faults (default 2)")
    parser.add_argument("--max-down", type=float, default=1.5,
                        help="longest Redis outage of a restart, seconds (default 1.5)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    parser.add_argument("--inflight", type=int, default=24,
                        help="orders sent but not yet at their wait, at most (default 24)")
    parser.add_argument("--settle", type=float, default=300.0,
                        help="seconds to wait for every run to end after the faults stop")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the logs, Redis files and ledger even without violations")
    args = parser.parse_args(argv)
    config = ChaosConfig(
        seed=args.seed, orders=args.runs, workers=args.workers, concurrency=args.concurrency,
        fault_interval=args.fault_interval, weights=parse_weights(args.faults),
        max_down=args.max_down, max_inflight=args.inflight, settle_timeout=args.settle,
        fault_window_max=max(600.0, args.runs * 3.0), keep_dir=args.keep,
    )
    print(f"chaos: {args.runs} orders, seed {args.seed}, {args.workers} workers x "
          f"{args.concurrency}, a fault every {args.fault_interval}s on average", flush=True)
    result = run_chaos(config, progress=True)
    print(result.report(), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result.figures(), indent=2) + "\n")
    return 1 if result.violations or result.harness_errors else 0


if __name__ == "__main__":
    sys.exit(main())
