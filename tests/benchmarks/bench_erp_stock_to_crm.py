"""Benchmark (not a test): erp_stock_to_crm at 10,000 / 100,000 / 1,000,000 SKUs x 3 warehouses.

    scripts/with_postgres.sh .venv/bin/python -m tests.benchmarks.bench_erp_stock_to_crm [--skus 10000 100000]

Per size: builds an ERP sandbox and a CRM sandbox (same demo company), a fresh bridge DB, then runs the
flow's steps (the functions the DAG tasks call, without the scheduler) for a full first sync, and again
after 1,000 stock rows changed (lookback 0, so only they are read). Prints seconds per step, rows/s, the gate's
share of the wall time, the peak memory of each step (Linux's VmHWM, reset before each: an Airflow task is a process
of its own; the ERP is seeded in a process of its own), the load's records/s against the CRM sandbox's ceiling for the
write path the load used — measured in this run, on this sandbox, just before the flow: the same client writing
`CEILING_RECORDS` products by batches of 100 and by one bulk-write job, nothing else — and the Zoho API credits the
run spent (the sandbox charges per call type as Zoho lists them) in all and per 1,000 records loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import tempfile
import time
import uuid

import psycopg2

from include.bridge.runtime import Systems
from include.flows import erp_stock_to_crm as flow
from include.sandbox.erp import db as erp_db
from include.sandbox.erp import seed as erp_seed
from tests.benchmarks.measure import gx_import_seconds, new_bridge, run_mirror, seed_apart
from tests.conftest import CrmSandbox, drop_database

CEILING_RECORDS = 25_000  # one bulk-write job's worth (include/zoho/limits.py BULK_WRITE_ROWS_PER_JOB)


def ceiling_records(ids: list[str], tag: str) -> list[dict]:
    """What the flow writes, field for field (its mapping's fields and types, and its stamp), for `ids`: the bare
    write path gets records of the same shape as the flow's."""
    spec = flow.mapping()
    sample = {"double": lambda i: float(i % 997), "date": lambda i: "2026-12-20", "boolean": lambda i: i % 2 == 0,
              "textarea": lambda i: f"WH-SH: {i % 97}.0 available / {i % 89}.0 on hand; WH-GZ: 3.0 available ({tag})"}
    stamp = {spec["stamp_field"]: "2026-12-07T10:00:00+08:00"} if spec.get("stamp_field") else {}
    return [{"id": crm_id, **{f: sample[(d or {}).get("type", "textarea")](i) for f, d in spec["fields"].items()},
             **stamp} for i, crm_id in enumerate(ids)]


def ceilings(crm: CrmSandbox, skus: int) -> dict[str, float]:
    """Records/s of the bare write paths the flow uses, on this sandbox now, with records of the flow's shape: the
    client updating products by id in batches of 100 (one after another, as the benchmark's load does) and by one
    bulk-write job (update by id), nothing else around them."""
    client = crm.client(max_retries=10)
    ids = [r["id"] for r in itertools.islice(client.iter_coql("Products", ["Product_Code"]),
                                             min(CEILING_RECORDS, skus))]  # not the whole catalogue in memory
    out = {}
    t = time.monotonic()
    client.update("Products", ceiling_records(ids, "batches"))
    out["batches"] = len(ids) / (time.monotonic() - t)
    t = time.monotonic()
    client.bulk_write("Products", ceiling_records(ids, "bulk"), find_by="id", operation="update")
    out["bulk"] = len(ids) / (time.monotonic() - t)
    return out


def seed_erp(erp_name: str, skus: int) -> None:
    """In its own process (see run_size): the seeder's memory is not the flow's."""
    erp_db.build(erp_name)
    with erp_db.connect(erp_name) as conn:
        erp_seed.seed(conn, customers=2000, skus=skus, seed=42, start_date=dt.date(2026, 6, 15), history_days=0,
                      progress=lambda *_: None)


def run_once(systems: Systems, run_id: str, crm: CrmSandbox) -> dict:
    """The flow's four steps in turn (tests/benchmarks/measure.py), each step's seconds at the top level."""
    result = run_mirror(flow.MIRROR, systems, run_id, crm)
    return result | result["seconds"]


def bench(skus: int, keep: str | None = None) -> None:
    erp_name, bridge_name = f"erp_bench_flow_{skus}", f"bridge_bench_{uuid.uuid4().hex[:6]}"
    try:
        full, delta, crm_seed, ceiling = run_size(skus, erp_name, bridge_name, keep)
    finally:
        if keep:
            print(f"kept: ERP database {erp_name}, bridge database {bridge_name}, CRM sandbox data {keep}/crm")
        else:
            for name in (bridge_name, erp_name):
                drop_database(name)
    for name, r in (("full", full), ("1,000 changed", delta)):
        peak = max(r["peaks"].values())
        total = r["extract"] + r["gate+plan"] + r["load"] + r["finish"]
        load_rate = r["loaded"] / r["load"] if r["load"] else 0
        path = "bulk" if r["bulk"] else "batches"
        print(f"{skus:>10,} {name:<14} {r['rows']:>10,} {r['loaded']:>9,} {total:>8.1f} {r['rows'] / total:>9,.0f} "
              f"{r['extract']:>8.1f} {r['gate+plan']:>9.1f} {r['gate']:>6.1f} {r['docs']:>5.1f} "
              f"{r['gate'] / total:>6.0%} {r['load']:>7.1f} "
              f"{r['finish']:>7.1f} {load_rate:>9,.0f} {ceiling[path]:>9,.0f} {load_rate / ceiling[path]:>6.0%} "
              f"{path:>8} {peak:>8.0f} {r['credits']:>8,} {r['counted']:>8,} "
              f"{1000 * r['credits'] / max(r['loaded'], 1):>9,.1f}", flush=True)
    print(f"{'':>10} (CRM sandbox seeded with {skus:,} products in {crm_seed:.0f} s; ceilings measured on "
          f"{min(CEILING_RECORDS, skus):,} products: batches {ceiling['batches']:,.0f}/s, bulk "
          f"{ceiling['bulk']:,.0f}/s)", flush=True)
    read = full["steps"].get("before_images", 0.0)
    if read and full["bulk"]:  # a first sync reads the module once for the audit's before-images, inside the load
        writing = full["loaded"] / max(full["load"] - read, 1e-9)
        print(f"{'':>10} full: the load's before-image export (one bulk read) {read:.1f} s; the writes alone "
              f"{writing:,.0f}/s = {writing / ceiling['bulk']:.0%} of the bulk ceiling", flush=True)
    for name, r in (("full", full), ("1,000 changed", delta)):
        print(f"{'':>10} {name}: peak MB per step {', '.join(f'{k} {v:,.0f}' for k, v in r['peaks'].items())} "
              f"(resident before the run {r['baseline']:,.0f}); ledger seconds "
              f"{', '.join(f'{k} {v:.2f}' for k, v in r['steps'].items())}", flush=True)


def run_size(skus: int, erp_name: str, bridge_name: str, keep: str | None = None):
    seed_apart(seed_erp, (erp_name, skus), f"the ERP sandbox ({skus:,} SKUs)")
    bridge = new_bridge(bridge_name)
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory()) as tmp:
        crm = CrmSandbox(os.path.join(tmp, "crm"))
        try:
            t = time.monotonic()
            crm.reset(customers=50, skus=skus, seed_value=42)
            crm.configure(credits_per_day=10**9)
            crm_seed = time.monotonic() - t
            ceiling = ceilings(crm, skus)
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
    return full, delta, crm_seed, ceiling


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skus", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--keep", metavar="DIR", help="keep the databases and the CRM sandbox's data (in DIR) of "
                        "the (one) size, to look into its queries afterwards")
    args = parser.parse_args()
    if args.keep and len(args.skus) > 1:
        parser.error("--keep: one size at a time")
    print(f"{'SKUs':>10} {'run':<14} {'rows':>10} {'loaded':>9} {'total s':>8} {'rows/s':>9} {'extract':>8} "
          f"{'gate+plan':>9} {'gate':>6} {'docs':>5} {'gate %':>6} {'load':>7} {'finish':>7} {'load/s':>9} "
          f"{'ceiling':>9} {'vs ceil':>6} "
          f"{'path':>8} {'peak MB':>8} {'credits':>8} {'counted':>8} {'per 1,000':>9}")
    imported = gx_import_seconds()
    for n in args.skus:
        bench(n, args.keep)
    print(f"Great Expectations import + first context: {imported:.1f} s (once per process, not in the figures above)")


if __name__ == "__main__":
    main()
