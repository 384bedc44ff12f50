"""Benchmark (not a test): erp_stock_to_crm at 10,000 / 100,000 / 1,000,000 SKUs x 3 warehouses.

    scripts/with_postgres.sh .venv/bin/python -m tests.benchmarks.bench_erp_stock_to_crm [--skus 10000 100000]

Per size: builds an ERP sandbox and a CRM sandbox (same demo company), a fresh bridge DB, then runs the
flow's steps (the functions the DAG tasks call, without the scheduler) for a full first sync, and again
after 1,000 stock rows changed (lookback 0, so only they are read). Prints seconds per step, rows/s, peak
memory of this process, the load's records/s against the CRM sandbox's raw update ceiling
(tests/benchmarks/bench_crm_upsert.py: ~8,400 updates/s at concurrency 5 on this machine), and the Zoho API credits
the run spent (the sandbox charges per call type as Zoho lists them) in all and per 1,000 records loaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import tempfile
import time
import uuid

import psycopg2

from include.bridge import db as bridge_db
from include.bridge.runtime import Systems
from include.flows import erp_stock_to_crm as flow
from include.sandbox.erp import db as erp_db
from include.sandbox.erp import seed as erp_seed
from tests.conftest import CrmSandbox

CRM_UPDATE_CEILING = 8_400  # records/s, bench_crm_upsert at concurrency 5


def run_once(systems: Systems, run_id: str, crm: CrmSandbox) -> dict:
    timings, credits_before = {}, crm.credits_used()
    t = time.monotonic()
    run = flow.MIRROR.extract(systems, run_id)
    timings["extract"] = time.monotonic() - t
    t = time.monotonic()
    flow.MIRROR.validate(systems, run)
    timings["gate+plan"] = time.monotonic() - t
    t = time.monotonic()
    for chunk in run.facts["chunks"]:
        flow.MIRROR.load(systems, run, chunk)
    timings["load"] = time.monotonic() - t
    t = time.monotonic()
    result = flow.MIRROR.finish(systems, run)
    timings["finish"] = time.monotonic() - t
    return {"rows": run.counts["rows"], "loaded": result["loaded"], "bulk": run.facts.get("bulk"),
            "credits": crm.credits_used() - credits_before, **timings}


def bench(skus: int) -> None:
    erp_name, bridge_name = f"erp_bench_flow_{skus}", f"bridge_bench_{uuid.uuid4().hex[:6]}"
    try:
        full, delta, crm_seed = run_size(skus, erp_name, bridge_name)
    finally:
        admin = psycopg2.connect(dbname="postgres")
        admin.autocommit = True
        for name in (bridge_name, erp_name):
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, r in (("full", full), ("1,000 changed", delta)):
        total = r["extract"] + r["gate+plan"] + r["load"] + r["finish"]
        load_rate = r["loaded"] / r["load"] if r["load"] else 0
        print(f"{skus:>10,} {name:<14} {r['rows']:>10,} {r['loaded']:>9,} {total:>8.1f} {r['rows'] / total:>9,.0f} "
              f"{r['extract']:>8.1f} {r['gate+plan']:>9.1f} {r['load']:>7.1f} {r['finish']:>7.1f} "
              f"{load_rate / CRM_UPDATE_CEILING:>7.0%} {'bulk' if r['bulk'] else 'batches':>8} {peak:>8.0f} "
              f"{r['credits']:>8,} {1000 * r['credits'] / max(r['loaded'], 1):>9,.1f}",
              flush=True)
    print(f"{'':>10} (CRM sandbox seeded with {skus:,} products in {crm_seed:.0f} s)", flush=True)


def run_size(skus: int, erp_name: str, bridge_name: str):
    erp_db.build(erp_name)
    with erp_db.connect(erp_name) as conn:
        erp_seed.seed(conn, customers=2000, skus=skus, seed=42, start_date=dt.date(2026, 6, 15), history_days=0,
                      progress=lambda *_: None)
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{bridge_name}"')
    bridge = psycopg2.connect(dbname=bridge_name)
    bridge_db.install_schema(bridge)
    with tempfile.TemporaryDirectory() as tmp:
        crm = CrmSandbox(os.path.join(tmp, "crm"))
        try:
            t = time.monotonic()
            crm.reset(customers=50, skus=skus, seed_value=42)
            crm.configure(credits_per_day=10**9)
            crm_seed = time.monotonic() - t
            erp_conn = psycopg2.connect(dbname=erp_name, user=erp_db.READ_ROLE,
                                        password=os.environ["ERP_READ_PASSWORD"])
            info = bridge.info
            url = f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{bridge_name}"
            systems = Systems.from_connections(bridge, url, erp=erp_conn, crm=crm.client(max_retries=10))
            full = run_once(systems, f"bench-full-{skus}", crm)
            flow.mapping()["settings"]["lookback_minutes"] = 0  # read exactly what changed from now on
            time.sleep(1)
            with erp_db.connect(erp_name) as conn, conn.cursor() as cur:
                cur.execute("""UPDATE erp.bin SET actual_qty = actual_qty + 1, updated_at = now()
                               WHERE (sku, warehouse) IN (SELECT sku, warehouse FROM erp.bin ORDER BY md5(sku)
                                                          LIMIT 1000)""")
            delta = run_once(systems, f"bench-delta-{skus}", crm)
            flow.mapping()["settings"]["lookback_minutes"] = 10
            erp_conn.close()
        finally:
            crm.stop()
    bridge.close()
    return full, delta, crm_seed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skus", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    print(f"{'SKUs':>10} {'run':<14} {'rows':>10} {'loaded':>9} {'total s':>8} {'rows/s':>9} {'extract':>8} "
          f"{'gate+plan':>9} {'load':>7} {'finish':>7} {'vs CRM':>7} {'mode':>8} {'peak MB':>8} {'credits':>8} "
          f"{'per 1,000':>9}")
    for n in args.skus:
        bench(n)


if __name__ == "__main__":
    main()
