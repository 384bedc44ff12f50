"""Benchmark (not a test): the stage-1/2 ERP -> CRM mirrors other than stock, at three sizes of the demo company.

    scripts/with_postgres.sh .venv/bin/python -m tests.benchmarks.bench_erp_mirrors_to_crm \
        [--customers 1000 10000 100000] [--flows erp_credit_to_crm ...]

Per size N: an ERP sandbox with N customers and N SKUs and 20 business days of simulated trading (about 0.7 N sales
orders, 0.3 N invoices, 0.07 N production orders), a CRM sandbox seeded with the same company, master data linked
(not counted: products by SKU, customers by the ERP code in Account_Number; `--match` runs master_data_match), then
each flow's first full run, as its DAG's tasks call the steps (extract / gate + plan / load / finish), in the order
the DAGs run them: credit, prices, order history (creates the CRM orders), invoice history, fulfilment, production,
capacity warnings. Fulfilment follows only orders that came from the CRM: before it runs, the ERP's orders are
marked as CRM orders; production follows only orders made to order: before it runs, each production order is given
a sales order (the admin's SQL, not a flow). So both have the history's orders to update.

Prints one line per flow and size: rows staged, records written, seconds, rows/s, the gate's share of the wall time,
each step's own peak memory, the Zoho API credits spent (the sandbox charges per call type as Zoho lists them), and
how time and credits grew from the previous size (linear growth: x10 for x10 rows).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
import uuid

import psycopg2

from include.bridge.runtime import Systems
from include.flows import FLOWS, master_data_match
from include.sandbox.erp import db as erp_db
from include.sandbox.erp import seed as erp_seed
from tests.benchmarks.measure import gx_import_seconds, new_bridge, run_mirror, seed_apart
from tests.conftest import CrmSandbox, drop_database

ORDER = ["erp_credit_to_crm", "erp_prices_to_crm", "erp_order_history_to_crm", "erp_invoice_history_to_crm",
         "erp_fulfilment_to_crm", "erp_production_to_crm", "erp_capacity_warnings_to_crm"]
HISTORY_DAYS = 20


def seed_erp(erp_name: str, size: int) -> None:
    """In its own process: the seeder's memory is not the flows'."""
    erp_db.build(erp_name)
    with erp_db.connect(erp_name) as conn:
        erp_seed.seed(conn, customers=size, skus=size, seed=42, start_date=dt.date(2026, 6, 15),
                      history_days=HISTORY_DAYS, progress=lambda *_: None)


def as_crm_orders(erp_name: str) -> int:
    """Mark the ERP's orders as orders that came from the CRM (what crm_orders_to_erp's orders are)."""
    with erp_db.connect(erp_name) as conn, conn.cursor() as cur:
        cur.execute("UPDATE erp.sales_order SET source_system = 'zoho_crm', updated_at = now() "
                    "WHERE source_system IS DISTINCT FROM 'zoho_crm'")
        return cur.rowcount


def made_to_order(erp_name: str) -> int:
    """Give each of the ERP's production orders a sales order it is made for (the simulator's are made to stock;
    made-to-order ones come from CRM orders), so erp_production_to_crm has orders to show ship dates on."""
    with erp_db.connect(erp_name) as conn, conn.cursor() as cur:
        cur.execute("""UPDATE erp.production_order m SET so_no = o.so_no, updated_at = now()
                       FROM (SELECT mo_no, row_number() OVER (ORDER BY mo_no) AS n FROM erp.production_order) p
                       JOIN (SELECT so_no, row_number() OVER (ORDER BY so_no) AS n FROM erp.sales_order) o USING (n)
                       WHERE m.mo_no = p.mo_no""")
        return cur.rowcount


def link_master_data(systems, run_id: str) -> dict:
    """Products by SKU (master_data_match's own refresh) and customers by the ERP code in Account_Number only,
    without master_data_match's name matching: that grows faster than the customers (docs/benchmarks.md) and is not
    what this benchmark measures (--match runs the flow itself)."""
    from include.bridge import idmap
    from include.bridge.matching import Link

    bridge = systems.bridge()
    products = idmap.refresh_product_links(bridge, systems.crm(), full=True, run_id=run_id)
    customers = {c.code for c in master_data_match.read_customers(systems.erp())}
    accounts = master_data_match.read_accounts(systems.crm())
    links = [Link(a.number, a.crm_id, "erp_code", 1.0) for a in accounts if a.number in customers]
    linked, _ = master_data_match.apply_customer_links(bridge, links, {a.crm_id for a in accounts}, customers, run_id)
    bridge.commit()
    return {"products": products["products_read"], "customers": linked["customers_linked"]}


def run_size(size: int, flows: list[str], match: bool = False) -> list[tuple[str, dict]]:
    erp_name, bridge_name = f"erp_bench_mirrors_{size}", f"bridge_bench_{uuid.uuid4().hex[:6]}"
    t = time.monotonic()
    seed_apart(seed_erp, (erp_name, size), f"the ERP sandbox ({size:,} customers and SKUs)")
    results = []
    try:
        bridge = new_bridge(bridge_name)
        with tempfile.TemporaryDirectory() as tmp:
            crm = CrmSandbox(os.path.join(tmp, "crm"))
            try:
                crm.reset(customers=size, skus=size, seed_value=42)
                crm.configure(credits_per_day=10**9, concurrency_limit=50)
                erp_read = psycopg2.connect(dbname=erp_name, user=erp_db.READ_ROLE,
                                            password=os.environ["ERP_READ_PASSWORD"])
                erp_write = psycopg2.connect(dbname=erp_name, user=erp_db.WRITE_ROLE,
                                             password=os.environ["ERP_WRITE_PASSWORD"])
                info = bridge.info
                url = f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{bridge_name}"
                systems = Systems.from_connections(bridge, url, erp=erp_read, crm=crm.client(max_retries=10),
                                                   erp_write=erp_write)
                seeded, t = time.monotonic() - t, time.monotonic()
                if match:
                    master_data_match.MATCH.run(systems, f"bench_match_{size}")
                    how = "master_data_match linked them"
                else:
                    linked = link_master_data(systems, f"bench_match_{size}")
                    how = f"{linked['customers']:,} customers linked by code, {linked['products']:,} products by SKU"
                print(f"{size:>9,} (setup: ERP and CRM seeded in {seeded:.0f} s; {how} in "
                      f"{time.monotonic() - t:.1f} s)", flush=True)
                for name in flows:
                    if name == "erp_fulfilment_to_crm":
                        as_crm_orders(erp_name)
                    if name == "erp_production_to_crm":
                        made_to_order(erp_name)
                    result = run_mirror(FLOWS[name], systems, f"bench_{name}_{size}", crm)
                    results.append((name, result))
                    print_line(size, name, result)
                erp_read.close()
                erp_write.close()
            finally:
                crm.stop()
        bridge.close()
    finally:
        for name in (bridge_name, erp_name):
            drop_database(name)
    return results


HEADER = (f"{'size':>9} {'flow':<29} {'rows':>9} {'written':>9} {'total s':>8} {'rows/s':>8} {'extract':>8} "
          f"{'gate+plan':>9} {'gate %':>6} {'load':>7} {'finish':>7} {'path':>7} {'peak MB':>7} {'credits':>8} "
          f"{'per 1,000':>9}")


def print_line(size: int, name: str, r: dict) -> None:
    s = r["seconds"]
    print(f"{size:>9,} {name:<29} {r['rows']:>9,} {r['loaded']:>9,} {r['total']:>8.1f} "
          f"{r['rows'] / r['total'] if r['total'] else 0:>8,.0f} {s['extract']:>8.1f} {s['gate+plan']:>9.1f} "
          f"{r['gate'] / r['total'] if r['total'] else 0:>6.0%} {s['load']:>7.1f} {s['finish']:>7.1f} "
          f"{'bulk' if r['bulk'] else 'batches':>7} {max(r['peaks'].values()):>7.0f} {r['credits']:>8,} "
          f"{1000 * r['credits'] / max(r['loaded'], 1):>9,.1f}"
          + (f"  ({r['quarantined']:,} quarantined)" if r["quarantined"] else "")
          + (f"  ({r['failed']:,} refused by the CRM)" if r["failed"] else "")
          + (f"  ({r['not_linked']:,} skipped: no linked CRM record)" if r["not_linked"] else ""), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="sizes of the demo company: customers = SKUs = N")
    parser.add_argument("--flows", nargs="+", default=ORDER, choices=ORDER)
    parser.add_argument("--match", action="store_true", help="link master data with master_data_match itself "
                        "(its name matching; slow at 100,000 customers) instead of by code")
    args = parser.parse_args()
    imported = gx_import_seconds()
    print(HEADER, flush=True)
    by_size = {n: dict(run_size(n, args.flows, args.match)) for n in args.customers}
    sizes = list(by_size)
    if len(sizes) > 1:
        print("growth from one size to the next (time x, credits x, for rows x):")
        for name in args.flows:
            steps = []
            for a, b in zip(sizes, sizes[1:], strict=False):
                ra, rb = by_size[a][name], by_size[b][name]
                steps.append(f"{a:,}->{b:,}: rows x{rb['rows'] / max(ra['rows'], 1):.1f}, time "
                             f"x{rb['total'] / max(ra['total'], 1e-9):.1f}, credits "
                             f"x{rb['credits'] / max(ra['credits'], 1):.1f}")
            print(f"  {name:<29} {'; '.join(steps)}", flush=True)
    print(f"Great Expectations import + first context: {imported:.1f} s (once per process, not in the figures above)")


if __name__ == "__main__":
    main()
