"""Benchmark (not a test): how fast the sandbox ERP loads and simulates at scale.

    scripts/with_postgres.sh .venv/bin/python -m tests.benchmarks.bench_erp_seed [--skus 10000 100000 1000000]

Prints, per catalogue size: seconds to load master data (COPY), rows/s for the stock bins, seconds for the
first simulated business day (it carries the opening reorder wave) and per later day, peak memory of the
loader, and the database size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import time

from include.sandbox.erp import db, seed, simulator


def drop_database(name: str) -> None:
    conn = db.connect("postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skus", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=2, help="business days simulated after loading")
    args = parser.parse_args()
    print(f"{'SKUs':>10} {'bins':>10} {'load s':>8} {'bins/s':>10} {'day 1 s':>8} {'later s/day':>11} "
          f"{'peak MB':>8} {'DB MB':>7}")
    for n in args.skus:
        name = f"erp_bench_{n}"
        db.build(name)
        conn = db.connect(name)
        t0 = time.monotonic()
        seed.seed(conn, customers=args.customers, skus=n, start_date=dt.date(2026, 6, 15), history_days=0,
                  progress=lambda *_: None)
        load = time.monotonic() - t0
        days = [d["seconds"] for d in simulator.simulate(conn, args.days)]
        first, later = days[0], sum(days[1:]) / max(len(days) - 1, 1)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), pg_database_size(current_database()) FROM erp.bin")
            bins, size = cur.fetchone()
        conn.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{n:>10,} {bins:>10,} {load:>8.1f} {bins / load:>10,.0f} {first:>8.1f} {later:>11.1f} "
              f"{peak:>8.0f} {size / 2**20:>7.0f}", flush=True)
        drop_database(name)

if __name__ == "__main__":
    main()
