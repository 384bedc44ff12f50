"""`make demo`: the main job end to end on the embedded default (local Postgres, the sandboxes).

Builds and seeds the sandbox ERP, prepares Airflow's local metadata DB (SQLite), runs the pipelines
through Airflow (`dag.test()`), and prints what each system holds afterwards. Later stages add their
flows to FLOW_ORDER.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
import warnings

import psycopg2
import requests

from include.adapters.csv_folder import demo as files_demo
from include.adapters.tryton import demo as tryton_demo
from include.sandbox.crm.process import CrmSandboxProcess
from include.sandbox.erp import db as erp_db
from include.sandbox.erp import seed as erp_seed
from include.sandbox.erp.report import print_summary

# DAGs the demo runs, in order, with their run conf: stage 1 (master data first, then every ERP -> CRM
# mirror), a second stock sync that finds nothing to push, a business day in the ERP, and syncs that move
# only what changed.
STAGE_1 = ["master_data_match", "erp_stock_to_crm", "erp_credit_to_crm", "erp_prices_to_crm", "erp_history_to_crm"]
# Stage 2: accounts and confirmed orders to the ERP, the ERP's import job, the answers back, ten business
# days of shipping / invoicing / collecting, and the fulfilment status back to the CRM orders.
STAGE_2 = [("crm_customers_to_erp", {"wait_for_erp_seconds": 0}), ("crm_orders_to_erp", {"wait_for_erp_seconds": 0}),
           ("erp_sandbox_import_job", {}),
           ("crm_customers_to_erp", {"wait_for_erp_seconds": 0}), ("crm_orders_to_erp", {"wait_for_erp_seconds": 0}),
           ("erp_sandbox_business_day", {"days": 10}), ("erp_fulfilment_to_crm", {})]
# Stage 3: the pipeline as the ERP's demand forecast, the ERP's import job (it activates the version and plans
# production and purchasing from it), the forecast again (unchanged: nothing sent), a business day, production
# dates and capacity warnings back to the CRM; a bad week in the factory (production slips) and the dates move.
STAGE_3 = [("crm_forecast_to_erp", {"wait_for_erp_seconds": 0}), ("erp_sandbox_import_job", {}),
           ("crm_forecast_to_erp", {"wait_for_erp_seconds": 0}), ("erp_sandbox_business_day", {"days": 1}),
           ("erp_production_to_crm", {}), ("erp_sandbox_business_day", {"days": 5, "mo_slip_rate": 0.6}),
           ("erp_production_to_crm", {})]
FLOW_ORDER: list[tuple[str, dict]] = [
    *[(dag_id, {}) for dag_id in STAGE_1],
    ("erp_stock_to_crm", {}),
    ("erp_sandbox_business_day", {"days": 1}),
    *[(dag_id, {}) for dag_id in STAGE_1[1:]],
    *STAGE_2,
    *STAGE_3,
    # operations: the night's syncs, then what still differs between the two systems and who corrects it
    *[(dag_id, {}) for dag_id in ("erp_stock_to_crm", "erp_credit_to_crm", "erp_history_to_crm",
                                  "erp_fulfilment_to_crm")],
    ("reconcile_crm_erp", {}),
]
# The reference sandbox's DAGs that play the ERP's own staff and jobs; another ERP runs its own in their place.
ERP_STAFF_DAGS = {"erp_sandbox_import_job", "erp_sandbox_business_day"}
LEDGER_SQL = """SELECT flow, status, rows_extracted, rows_loaded, rows_quarantined, rows_failed,
                       (SELECT string_agg(k || ' ' || round((v #>> '{}')::numeric, 1) || 's', ', ')
                        FROM jsonb_each(step_seconds) AS s(k, v)) AS steps
                FROM bridge.run_ledger ORDER BY started_at"""


# Airflow's INFO logs would bury the demo's own report; task failures still print in full.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")


def airflow_db_ready() -> None:
    """Create / upgrade Airflow's metadata DB (SQLite under .local/airflow by default) and the CRM pool."""
    from include.bridge.runtime import crm_client, set_crm_pool
    from include.zoho.limits import pool_slots

    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    # load tasks share this pool: its size is what the org's edition allows (python -m include.bridge.doctor)
    edition = crm_client("zoho_crm").edition()
    set_crm_pool(pool_slots(edition), edition)


def fresh_bridge_db() -> None:
    """The demo starts both sandboxes afresh, so the integration's state starts afresh too."""
    from include.bridge import db as bridge_db

    name = os.environ.get("BRIDGE_DB", "bridge")
    erp_db.create_database(name, drop=True)
    with psycopg2.connect(dbname=name) as conn:
        bridge_db.install_schema(conn)
        bridge_db.create_console_role(conn)  # what `make ui`'s console reads through


def print_ledger() -> None:
    with psycopg2.connect(dbname=os.environ.get("BRIDGE_DB", "bridge")) as conn, conn.cursor() as cur:
        cur.execute(LEDGER_SQL)
        rows = cur.fetchall()
    print("Run ledger (bridge.run_ledger):")
    print(f"  {'flow':<27} {'status':<8} {'extracted':>9} {'loaded':>7} {'quarant.':>8} {'failed':>6}  steps")
    for flow, status, extracted, loaded, quarantined, failed, steps in rows:
        print(f"  {flow:<27} {status:<8} {extracted:>9} {loaded:>7} {quarantined:>8} {failed:>6}  {steps or ''}")


def run_dag(dag_id: str, conf: dict) -> str:
    from include.bridge.runtime import dag_test_run

    return dag_test_run(dag_id, conf)


def crm_sandbox(customers: int, skus: int, seed: int) -> CrmSandboxProcess | None:
    """Use the CRM sandbox answering at CRM_SANDBOX_URL, or start one for the demo; reseed it either way."""
    url = os.environ.get("CRM_SANDBOX_URL", "http://127.0.0.1:8765")
    body = {"customers": customers, "skus": skus, "seed_value": seed}
    try:
        requests.get(f"{url}/__sandbox/health", timeout=1).raise_for_status()
    except requests.RequestException:
        process = CrmSandboxProcess(os.path.join(os.environ.get("LOCAL_DIR", ".local"), "crm"),
                                    port=int(url.rsplit(":", 1)[1]))
        print(f"    started CRM sandbox at {process.url} (log: {process.log_path})")
        counts = process.reset(**body)["records"]
        print(f"    seeded: {', '.join(f'{k} {v}' for k, v in counts.items())}")
        return process
    counts = requests.post(f"{url}/__sandbox/reset", json=body, timeout=120).json()["records"]
    print(f"    using the CRM sandbox already running at {url}; reseeded: "
          f"{', '.join(f'{k} {v}' for k, v in counts.items())}")
    return None


def print_write_back(dbname: str, tryton_counts: dict | None = None) -> None:
    """Stage 2 as the business sees it: each confirmed CRM order once in the ERP, held ones not, fulfilment back."""
    from collections import Counter

    from include.bridge.idmap import erp_order_copies
    from include.bridge.runtime import crm_client

    crm = crm_client("zoho_crm")
    print("Stage 2 (write-back):")
    if tryton_counts:  # counted in Tryton through its API (print_systems); here what the CRM orders show of it
        reached, numbered_like_tryton = tryton_demo.crm_order_numbers(crm, tryton_counts)
        print(f"  CRM orders in Tryton: {reached}, showing Tryton's own sale number: {numbered_like_tryton}")
    else:
        with erp_db.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute("""SELECT count(*), count(DISTINCT source_id), count(*) FILTER (WHERE status = 'On Hold')
                           FROM erp.sales_order WHERE source_system = 'zoho_crm'""")
            documents, orders, erp_held = cur.fetchone()
            cur.execute("SELECT count(*) FROM erp.customer WHERE source_system = 'zoho_crm'")
            customers = cur.fetchone()[0]
        print(f"  ERP sales orders from the CRM: {documents} for {orders} CRM orders "
              f"({'each exactly once' if documents == orders else 'DUPLICATES'}), {erp_held} on hold in the ERP; "
              f"{customers} ERP customers created from CRM accounts")
    fields = ["Status", "ERP_Order_No", "Fulfilment_Status"]
    with psycopg2.connect(dbname=os.environ.get("BRIDGE_DB", "bridge")) as conn, conn.cursor() as cur:
        mirrored = erp_order_copies(conn)
        cur.execute("SELECT count(*) FROM bridge.quarantine WHERE flow = 'crm_orders_to_erp' AND status = 'open'")
        quarantined = cur.fetchone()[0]
    # the CRM's own orders, not the copies the history mirror made of ERP orders
    mine = [r for r in crm.iter_records("Sales_Orders", fields) if r["id"] not in mirrored]
    numbered = sum(1 for r in mine if r.get("ERP_Order_No"))
    held = sum(1 for r in mine if r.get("Status") == "Credit Hold")
    shipped = Counter(r.get("Fulfilment_Status") or "not shipped yet" for r in mine if r.get("ERP_Order_No"))
    print(f"  CRM orders showing their ERP number: {numbered}; on credit hold, not sent: {held}; "
          f"quarantined with the reason on the order: {quarantined}")
    print("  fulfilment back in the CRM: " + ", ".join(f"{k} {v}" for k, v in sorted(shipped.items())))


def print_forecast_loop(dbname: str) -> None:
    """Stage 3 as the business sees it: forecast in the ERP, the plan it made, dates and warnings in the CRM."""
    from include.bridge.runtime import crm_client

    with psycopg2.connect(dbname=os.environ.get("BRIDGE_DB", "bridge")) as conn, conn.cursor() as cur:
        cur.execute("""SELECT count(*), coalesce(sum(row_count) FILTER (WHERE erp_status = 'PROCESSED'), 0),
                              max(erp_version_no) FILTER (WHERE erp_status = 'PROCESSED')
                       FROM bridge.forecast_version""")
        versions, rows_sent, version = cur.fetchone()
        cur.execute("SELECT count(*) FROM bridge.quarantine WHERE flow = 'crm_forecast_to_erp' AND status = 'open'")
        bad_deals = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FILTER (WHERE event_key LIKE 'slip:%%'),
                              count(*) FILTER (WHERE event_key LIKE 'capacity:%%')
                       FROM bridge.alert_log WHERE flow IN ('erp_production_to_crm', 'erp_capacity_warnings_to_crm')""")
        slip_alerts, capacity_alerts = cur.fetchone()
    with erp_db.connect(dbname) as conn, conn.cursor() as cur:
        cur.execute("""SELECT coalesce(sum(production_orders_planned), 0), coalesce(sum(purchase_requests_raised), 0),
                              count(*) FROM erp_api.forecast_versions WHERE status = 'Active'""")
        planned, requested, active = cur.fetchone()
    crm = crm_client("zoho_crm")
    orders = list(crm.iter_coql("Sales_Orders", ["Expected_Ship_Date", "Capacity_Warning"],
                                where="Expected_Ship_Date is not null"))
    warned = list(crm.iter_coql("Products", ["Capacity_Warning"], where="Capacity_Warning is not null"))
    print("Stage 3 (forecast -> production -> ship dates):")
    print(f"  forecast rows sent to the ERP: {rows_sent} in {versions} version(s), active as {version} "
          f"({active} active version per horizon); deals quarantined with the reason on the deal: {bad_deals}")
    print(f"  planned by the ERP from the forecast: {planned} production orders, "
          f"{requested} purchase requests for short materials")
    print(f"  CRM orders with an expected ship date from production: {len(orders)} "
          f"({sum(1 for o in orders if o.get('Capacity_Warning'))} with a material warning); "
          f"slip alerts to owners: {slip_alerts}")
    print(f"  CRM products with a capacity / material warning: {len(warned)}; capacity alerts: {capacity_alerts}")


def print_reconciliation() -> None:
    with psycopg2.connect(dbname=os.environ.get("BRIDGE_DB", "bridge")) as conn, conn.cursor() as cur:
        cur.execute("SELECT total, counts, report_path FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 1")
        row = cur.fetchone()
    if row:
        total, counts, path = row
        print(f"Reconciliation: {total} differences ("
              + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none") + f"); report: {path}")


def check_crm_connection() -> None:
    from include.bridge.runtime import crm_client

    ok, message = crm_client("zoho_crm").check_connection()
    print(f"    Airflow connection zoho_crm: {'OK, ' if ok else 'FAILED, '}{message}")
    if not ok:
        raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument("--erp", choices=["reference", "tryton", "files"], default="reference",
                        help="the ERP behind the contract: the reference sandbox, Tryton (include/adapters/tryton), "
                             "or the reference sandbox through the CSV drop folder (include/adapters/csv_folder)")
    parser.add_argument("--customers", type=int, help="default 200 (reference), 60 (tryton)")
    parser.add_argument("--skus", type=int, help="default 1000 (reference), 80 (tryton)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--history-days", type=int, default=100, help="reference: days of ERP history")
    parser.add_argument("--history-sales", type=int, default=12, help="tryton: history sales to seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tryton = args.erp == "tryton"
    customers = args.customers or (60 if tryton else 200)
    skus = args.skus or (80 if tryton else 1000)

    started = time.monotonic()
    dbname = erp_db.erp_db_name()
    if tryton:
        tryton_demo.build_erp(dbname, customers, skus, args.seed, args.history_sales)
    else:
        print(f"==> 1/4 ERP sandbox: building database '{dbname}' with demo company data")
        erp_db.build(dbname)
        with erp_db.connect(dbname) as conn:
            timings = erp_seed.seed(conn, customers=customers, skus=skus, seed=args.seed,
                                    history_days=args.history_days)
            print(f"    seeded in {sum(timings.values()):.1f} s")

    print("==> 2/4 CRM sandbox (Zoho CRM v8 protocol), seeded from the same demo company")
    crm = crm_sandbox(customers, skus, args.seed)
    try:
        return run_pipelines(dbname, started, args.erp)
    finally:
        if crm:
            crm.stop()


def run_pipelines(dbname: str, started: float, erp: str = "reference") -> int:
    print("==> 3/4 Airflow: metadata DB, connections and pipelines")
    airflow_db_ready()
    fresh_bridge_db()
    check_crm_connection()
    if erp == "files":
        files_demo.prepare(dbname, run_dag)
    failed = []
    for dag_id, conf in FLOW_ORDER:
        if erp == "tryton" and dag_id in ERP_STAFF_DAGS:
            tryton_demo.run_erp_job(dag_id, dbname)
            continue
        if erp == "files" and dag_id in ERP_STAFF_DAGS:
            files_demo.run_erp_job(dag_id, conf, dbname, run_dag)
            continue
        t0 = time.monotonic()
        state = run_dag(dag_id, conf)
        print(f"    {dag_id:<32} {state:<8} {time.monotonic() - t0:5.1f} s")
        if state != "success":
            failed.append(dag_id)

    print("==> 4/4 what the systems hold now")
    tryton_counts = None
    if erp == "tryton":
        tryton_counts = tryton_demo.print_systems(dbname)
    else:
        with erp_db.connect(dbname) as conn:
            print_summary(conn)
    if erp == "files":
        files_demo.print_files()
    stats = requests.get(f"{os.environ.get('CRM_SANDBOX_URL', 'http://127.0.0.1:8765')}/__sandbox/stats",
                         timeout=10).json()
    print("CRM sandbox holds:\n  " + ", ".join(f"{k} {v}" for k, v in stats["records"].items()))
    print_write_back(dbname, tryton_counts)
    print_forecast_loop(dbname)
    print_reconciliation()
    print_ledger()
    print(f"demo finished in {time.monotonic() - started:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
