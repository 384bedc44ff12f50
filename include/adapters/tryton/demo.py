"""`make demo ERP=tryton`: the demo's flows, mappings and suites against Tryton instead of the reference ERP.

Only the ERP's own side differs. Where the reference demo runs the sandbox's DAGs that stand for the ERP's staff
(`erp_sandbox_import_job`, `erp_sandbox_business_day`), this runs Tryton's: its import job over erp_inbound and a
fulfilment pass (ship, invoice, collect) through Tryton's workflow. The figures printed after the run come from the
contract's views and from Tryton's own API (proteus), not from the bridge's tables.
"""

from __future__ import annotations

import time

from include.adapters.tryton import build
from include.sandbox.erp import db as erp_db
from include.sandbox.erp.report import CONTRACT_SUMMARY_SQL, print_summary

REFERENCE_DB = "erp_sandbox"  # scripts/env.sh's default ERP_DB: never overwrite the reference sandbox with Tryton


def build_erp(dbname: str, customers: int, skus: int, seed: int, history_sales: int) -> None:
    if dbname == REFERENCE_DB:
        raise SystemExit(f"ERP_DB is '{dbname}', the reference sandbox's database: set ERP_DB to the Tryton "
                         "database's name (make demo ERP=tryton sets tryton_demo)")
    sizes = {"customers": customers, "skus": skus, "seed": seed, "history_sales": history_sales}
    print(f"==> 1/4 Tryton ERP: database '{dbname}' with the demo company "
          f"({', '.join(f'{k} {v}' for k, v in sizes.items())})")
    done = build.build(dbname, sizes)
    print(f"    ready in {done['seconds']:.0f} s (copied from template {done['template']}; the first build installs "
          "Tryton, about 100 s)")


def run_erp_job(dag_id: str, dbname: str) -> None:
    """What Tryton's staff and jobs do where the reference demo runs the sandbox's DAG `dag_id` (its conf, e.g. a
    number of simulated days, has no meaning for a real ERP: one pass does what is due now). Raises on failure."""
    started = time.monotonic()
    if dag_id == "erp_sandbox_import_job":
        counts = build.tryton("import", dbname)
    elif dag_id == "erp_sandbox_business_day":  # ship what stock allows, post invoices, collect them
        counts = build.tryton("fulfil", dbname, "--pay")
    else:
        raise ValueError(f"no Tryton counterpart for the sandbox DAG {dag_id}")
    print(f"    tryton: {'import job' if dag_id.endswith('import_job') else 'fulfilment':<24} "
          f"{time.monotonic() - started:5.1f} s  {counts}")


def print_systems(dbname: str) -> dict:
    """Prints what Tryton holds; returns Tryton's own counts (crm_order_numbers reads them)."""
    with erp_db.connect(dbname) as conn:
        print_summary(conn, CONTRACT_SUMMARY_SQL, "Tryton holds (through the contract's views):")
    summary = build.tryton("summary", dbname)
    print("Tryton's own API (proteus) says:")
    print(f"  sales from CRM orders: {summary['sales']} for {summary['crm_orders']} CRM orders "
          f"({'each exactly once' if summary['sales'] == summary['crm_orders'] else 'DUPLICATES'}); "
          f"held as quotations (credit): {summary['held']}; parties created from CRM accounts: "
          f"{summary['parties_from_crm']}")
    print("  sales by state: " + _counts(summary["states"]) + "; shipments: " + _counts(summary["shipments"])
          + "; invoices: " + _counts(summary["invoices"]))
    print(f"  stock forecasts: {_counts(summary['forecasts'])} ({summary['forecast_lines_active']} lines active)")
    return summary


def crm_order_numbers(crm, summary: dict) -> tuple[int, int]:
    """(CRM orders that reached Tryton, of those showing Tryton's number on the CRM order)."""
    shown = {r["id"]: r.get("ERP_Order_No") for r in crm.iter_records("Sales_Orders", ["ERP_Order_No"])}
    return len(summary["numbers"]), sum(1 for ref, no in summary["numbers"].items() if shown.get(ref) == no)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
