"""Benchmark: crm_forecast_to_erp on a large pipeline and reconcile_crm_erp on a large catalogue.

`scripts/with_postgres.sh .venv/bin/python -m tests.benchmarks.bench_stage3_and_reconcile --deals 20000 --skus 10000`

Builds an ERP sandbox and a CRM sandbox from the same demo company (`--skus`, `--customers`), links master data,
adds `--deals` open deals with 1–3 product lines each to the CRM, then runs the flows' steps as the DAG tasks call
them (no scheduler in the way) and prints seconds per step, rows/s and each step's own peak memory:
forecast extract (CRM → staging) / gate + buckets + totals gate / send (ERP inbound) / the ERP's activation and
planning (the sandbox's import job, not the bridge) / record; then the reconciliation's snapshot and comparison.
Figures, not a timed test: the machine's load changes them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import tempfile
import time
import uuid
from pathlib import Path

from include.sandbox.erp import importer
from tests.benchmarks.measure import new_bridge, resident_mb, timed
from tests.conftest import CrmSandbox, ErpSandbox, drop_database


def add_deals(client, bridge, n: int, seed: int = 5) -> float:
    """n open deals of linked accounts with 1-3 lines of linked products; returns the seconds it took."""
    rng = random.Random(seed)
    with bridge.cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = 'customer'")
        accounts = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = 'product'")
        products = [r[0] for r in cur.fetchall()]
    bridge.rollback()
    stages = [("Qualification", 10), ("Needs Analysis", 20), ("Proposal", 40), ("Negotiation", 70)]
    today = dt.date.today()
    t = time.monotonic()
    batch = []
    for i in range(n):
        stage, prob = rng.choice(stages)
        batch.append({"Deal_Name": f"bench deal {i}", "Stage": stage, "Probability": prob,
                      "Closing_Date": (today + dt.timedelta(days=rng.randint(1, 170))).isoformat(),
                      "Account_Name": {"id": rng.choice(accounts)},
                      "Sales_Region": rng.choice(["East", "North", "South"]),
                      "Deal_Items": [{"Product": {"id": p}, "Quantity": float(rng.randint(1, 40))}
                                     for p in rng.sample(products, rng.randint(1, 3))]})
        if len(batch) == 100:
            client.insert("Deals", batch)
            batch = []
    if batch:
        client.insert("Deals", batch)
    return time.monotonic() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=2_000)
    args = parser.parse_args()

    from include.bridge.runtime import Systems
    from include.flows import crm_forecast_to_erp as forecast
    from include.flows import master_data_match, reconcile_crm_erp

    t = time.monotonic()
    erp = ErpSandbox(customers=args.customers, skus=args.skus, history_days=20, seed=11)
    bridge_name = f"bridge_bench_{uuid.uuid4().hex[:8]}"
    bridge = new_bridge(bridge_name)
    with tempfile.TemporaryDirectory() as tmp:
        crm = CrmSandbox(Path(tmp) / "crm")
        try:
            crm.reset(customers=args.customers, skus=args.skus, seed_value=11)
            crm.configure(credits_per_day=10**9, concurrency_limit=50)
            client = crm.client(max_retries=10)
            info = bridge.info
            systems = Systems.from_connections(
                bridge, f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{bridge_name}",
                erp=erp.connect_as("erp_reader"), crm=client, erp_write=erp.connect_as("erp_writer"))
            master_data_match.MATCH.run(systems, f"bench_{uuid.uuid4().hex[:6]}")
            print(f"setup: ERP {args.skus:,} SKUs / {args.customers:,} customers, CRM seeded, master data linked in "
                  f"{time.monotonic() - t:.0f} s", flush=True)
            seconds = add_deals(client, bridge, args.deals)
            print(f"added {args.deals:,} deals to the CRM in {seconds:.1f} s (not counted)", flush=True)

            figures: dict[str, float] = {}
            peaks: dict[str, float] = {}
            baseline = resident_mb()
            credits = crm.credits_used()  # what the flows spend, not the deals' creation above
            run_id = f"bench_fc_{uuid.uuid4().hex[:6]}"
            run = timed(figures, peaks, "extract", forecast.FORECAST.extract, systems, run_id, dt.date.today())
            timed(figures, peaks, "gate + buckets + totals", forecast.FORECAST.validate, systems, run)
            timed(figures, peaks, "send", forecast.FORECAST.send, systems, run)
            processed = timed(figures, peaks, "ERP activation + planning (not ours)", importer.process_inbound,
                              erp.admin)
            recorded = timed(figures, peaks, "record", forecast.FORECAST.record, systems, run, wait_seconds=0)
            lines = run.counts["rows_extracted"]
            print(f"crm_forecast_to_erp: {run.counts['open_deals']:,} open deals, {lines:,} lines staged, "
                  f"{run.counts['buckets']:,} buckets sent ({run.counts.get('sent', 0):,} rows), version "
                  f"{recorded['version']}, ERP rows applied {processed['demand_forecast_in']['processed']:,}")
            planned = erp.query("SELECT production_orders_planned, purchase_requests_raised FROM "
                                "erp_api.forecast_versions WHERE status = 'Active'")
            print(f"  the ERP planned {planned[0]['production_orders_planned']:,} production orders and "
                  f"{planned[0]['purchase_requests_raised']:,} purchase requests from it")
            for step, s in figures.items():
                print(f"  {step:<38} {s:7.1f} s {lines / s if s else 0:>10,.0f} lines/s  peak {peaks[step]:6,.0f} MB")
            ours = sum(s for k, s in figures.items() if "not ours" not in k)
            spent, credits = crm.credits_used() - credits, crm.credits_used()
            print(f"  flow total {ours:.1f} s = {lines / ours:,.0f} lines/s; peak of a step "
                  f"{max(v for k, v in peaks.items() if 'not ours' not in k):,.0f} MB (resident before "
                  f"{baseline:,.0f}); "
                  f"{spent:,} API credits ({1000 * spent / max(run.counts['open_deals'], 1):,.1f} per 1,000 deals)",
                  flush=True)

            figures, peaks = {}, {}
            run_id = f"bench_rc_{uuid.uuid4().hex[:6]}"
            snap = timed(figures, peaks, "snapshot (CRM + ERP)", reconcile_crm_erp.RECONCILIATION.snapshot, systems,
                         run_id, dt.date.today())
            compared = timed(figures, peaks, "compare + gate + report", reconcile_crm_erp.RECONCILIATION.compare,
                             systems, snap)
            rows = sum(snap.facts["compared"].values())
            print(f"reconcile_crm_erp: compared {', '.join(f'{k} {v:,}' for k, v in snap.facts['compared'].items())}; "
                  f"{compared['differences']:,} differences {compared['counts']}")
            for step, s in figures.items():
                print(f"  {step:<38} {s:7.1f} s {rows / s if s else 0:>10,.0f} records/s  "
                      f"peak {peaks[step]:6,.0f} MB")
            print(f"  peak of a step {max(peaks.values()):,.0f} MB; {crm.credits_used() - credits:,} API credits",
                  flush=True)
        finally:
            crm.stop()
            bridge.close()
            erp.admin.close()
            erp.drop()
            drop_database(bridge_name)


if __name__ == "__main__":
    main()
