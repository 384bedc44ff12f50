"""Benchmark (not a test): crm_orders_to_erp — confirm-to-ERP-number latency and a 10,000-order burst.

    scripts/with_postgres.sh .venv/bin/python -m tests.benchmarks.bench_crm_orders_to_erp [--orders 15] [--burst 10000]

Latency: a real Airflow — api-server, scheduler, dag-processor and triggerer, LocalExecutor, metadata in
PostgreSQL — runs `crm_orders_to_erp` on its schedule *or* the Asset `bridge://crm_order_events`. The CRM
sandbox notifies the receiver (`include.bridge.crm_events`, subscribed by the `crm_watch_renewal` DAG) on every
order change; the trigger wakes the DAG. A salesperson confirms one order at a time; the clock runs from the
confirming API call until the ERP order number is readable on the CRM order. The ERP's import job is played
by a loop that drains the inbound tables every second (a real ERP's own processing time adds to the figure;
the sandbox's `erp_sandbox_import_job` DAG runs every minute and is not used here).

Burst: 10,000 orders confirmed at once, run through the flow's steps (the functions the DAG tasks call, as
in bench_erp_stock_to_crm): seconds per step, orders/s, peak memory of this process; the ERP's processing of
the burst is timed separately.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import requests

from include.bridge import db as bridge_db
from include.sandbox.crm.process import free_port
from include.sandbox.erp import importer
from tests.conftest import ROOT, CrmSandbox, ErpSandbox, airflow_env_for, drop_database, new_database, run_dag

TOKEN = uuid.uuid4().hex


class PromptErp(threading.Thread):
    """The ERP's import job, draining erp_inbound every 0.2 s (its time is measured and taken out, see latency)."""

    def __init__(self, erp: ErpSandbox):
        super().__init__(daemon=True)
        self.erp, self.stop = erp, threading.Event()

    def run(self) -> None:
        from include.sandbox.erp import db

        conn = db.connect(self.erp.dbname)
        while not self.stop.wait(0.2):
            importer.process_inbound(conn)
        conn.close()


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - the process owns it until the end of the benchmark
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s")


def order_fields(accounts: list[str], products: list[str], rng: random.Random, prepaid: bool) -> dict:
    lines = [{"Product_Name": {"id": rng.choice(products)}, "Quantity": rng.randint(1, 5),
              "List_Price": float(rng.randint(20, 200)), "Sequence_Number": n,
              "Line_Tax": [{"name": "VAT", "percentage": 13}]} for n in range(1, rng.randint(1, 4) + 1)]
    return {"Subject": f"bench {uuid.uuid4().hex[:8]}", "Status": "Created",
            "Account_Name": {"id": rng.choice(accounts)}, "Currency": "CNY",
            "Ordered_Items": lines, "Is_Prepaid": prepaid}


def linked(bridge_conn, entity: str) -> list[str]:
    with bridge_conn.cursor() as cur:
        cur.execute("SELECT crm_id FROM bridge.id_map WHERE entity = %s ORDER BY erp_key", (entity,))
        rows = [r[0] for r in cur.fetchall()]
    bridge_conn.commit()
    return rows


def latency(env: dict, work: Path, erp: ErpSandbox, crm: CrmSandbox, bridge, n_orders: int) -> list[tuple]:
    """(seconds from Confirmed to ERP_Order_No in the CRM, the same without the ERP's import time), one order at a
    time, through the running Airflow."""
    client, rng = crm.client(), random.Random(11)
    receiver_port, api_port = free_port(), free_port()
    env = env | {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
                 "AIRFLOW__API__PORT": str(api_port), "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                 "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
                 "AIRFLOW_VAR_CRM_NOTIFY_URL": f"http://127.0.0.1:{receiver_port}/zoho/notifications",
                 "AIRFLOW_CONN_CRM_NOTIFY": json.dumps({"conn_type": "generic", "password": TOKEN})}
    airflow = str(Path(sys.executable).parent / "airflow")
    procs = [start([sys.executable, "-m", "include.bridge.crm_events", "serve", "--port", str(receiver_port)],
                   env | {"BRIDGE_DB_DSN": f"dbname={bridge[0]}", "CRM_NOTIFY_TOKEN": TOKEN}, work / "receiver.log")]
    prompt_erp = PromptErp(erp)
    try:
        wait_for("the receiver", lambda: _ok(f"http://127.0.0.1:{receiver_port}/health"), 30)
        assert run_dag(env, "crm_watch_renewal") == "success", "crm_watch_renewal failed"
        for component in (["api-server", "--port", str(api_port)], ["scheduler"], ["dag-processor"], ["triggerer"]):
            procs.append(start([airflow, *component], env, work / f"airflow-{component[0]}.log"))
        wait_for("the api-server", lambda: _ok(f"http://127.0.0.1:{api_port}/api/v2/monitor/health"), 120)
        wait_for("the DAG parsed", lambda: subprocess.run(
            [airflow, "dags", "unpause", "crm_orders_to_erp"], env=env, capture_output=True).returncode == 0, 180, 2)
        prompt_erp.start()
        accounts, products = linked(bridge[1], "customer"), _erp_products(erp, bridge)
        created = [o.id for o in client.insert("Sales_Orders", [order_fields(accounts, products, rng, True)
                                                                for _ in range(n_orders + 1)])]
        figures, phases = [], []
        for i, crm_id in enumerate(created):
            time.sleep(rng.uniform(1, 5))  # orders arrive now and then, not in lock-step with the triggerer
            t0, wall = time.monotonic(), time.time()
            client.update("Sales_Orders", [{"id": crm_id, "Status": "Confirmed"}])
            wait_for(f"order {crm_id} to get its ERP number", lambda c=crm_id: client.get_record(
                "Sales_Orders", c).get("ERP_Order_No"), 600, 0.1)
            seconds = time.monotonic() - t0
            path = where_the_time_went(env, bridge[1], erp, crm_id, wall, wall + seconds)
            if i:  # the first one warms the triggerer and the scheduler up
                figures.append((seconds, seconds - path.get("ERP", 0.0)))
                phases.append(path)
            else:  # the triggerer starts the Asset's watcher some seconds after the DAG is unpaused: measure after
                wait_for("the event trigger to claim the warm-up's notification", lambda: not _unclaimed(bridge[1]),
                         300, 1)
            print(f"  order {i:>2}: {seconds:5.1f} s{'  (warm-up, not counted)' if not i else ''}  "
                  + ", ".join(f"{k} {v:.1f}" for k, v in path.items()), flush=True)
        if phases:
            print("  median seconds per phase: " + ", ".join(
                f"{k} {statistics.median(p.get(k, 0.0) for p in phases):.1f}" for k in phases[-1]), flush=True)
        return figures
    finally:
        prompt_erp.stop.set()
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)


def where_the_time_went(env: dict, bridge_conn, erp: ErpSandbox, crm_id: str, confirmed: float,
                        seen: float) -> dict[str, float]:
    """Seconds of each phase of one order's path, from the bridge's event row, Airflow's metadata (the run that
    sent it: its queue time, each task's start and end) and the ERP's document: notify (confirm → receiver),
    trigger (→ claimed), schedule (→ first task starts), each task as `<task>` with the hop before it as
    `>task`, ERP (its import job: received → processed, not ours), seen (→ readable on the CRM order)."""
    with bridge_conn.cursor() as cur:
        cur.execute("""SELECT extract(epoch FROM received_at), extract(epoch FROM claimed_at) FROM bridge.crm_event
                       WHERE %s = ANY (record_ids) AND received_at >= to_timestamp(%s) ORDER BY id LIMIT 1""",
                    (crm_id, confirmed - 1))
        received, claimed = cur.fetchone() or (None, None)
        cur.execute("""SELECT run_id FROM bridge.audit_log WHERE flow = 'crm_orders_to_erp' AND target_system = 'erp'
                         AND business_key = %s ORDER BY id DESC LIMIT 1""", (crm_id,))
        sent_by = cur.fetchone()
    bridge_conn.commit()
    phases: dict[str, float] = {}
    if received is not None:
        phases["notify"] = float(received) - confirmed
        if claimed is not None:
            phases["trigger"] = float(claimed) - float(received)
    meta = psycopg2.connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2", "postgresql"))
    try:
        with meta.cursor() as cur:
            cur.execute("""SELECT task_id, extract(epoch FROM start_date), extract(epoch FROM end_date)
                           FROM task_instance WHERE dag_id = 'crm_orders_to_erp' AND run_id = %s
                           ORDER BY start_date""", (sent_by[0] if sent_by else "",))
            tasks = cur.fetchall()
    finally:
        meta.close()
    last = float(claimed) if claimed is not None else None
    for task_id, started, ended in tasks:
        if started is None or ended is None:
            continue
        if last is not None:
            phases["schedule" if not phases.get("schedule") and task_id == tasks[0][0] else f">{task_id}"] = \
                float(started) - last
        phases[task_id], last = float(ended) - float(started), float(ended)
    document = erp.query("""SELECT extract(epoch FROM created_at) AS received, extract(epoch FROM processed_at)
                            AS processed FROM erp_inbound.sales_order_in WHERE source_id = %s
                            ORDER BY id DESC LIMIT 1""", (crm_id,))
    if document and document[0]["processed"] is not None:
        phases["ERP"] = float(document[0]["processed"]) - float(document[0]["received"])
    if last is not None:
        phases["seen"] = seen - last
    return phases


def burst(env: dict, erp: ErpSandbox, crm: CrmSandbox, bridge, n_orders: int) -> dict:
    """n_orders confirmed at once, through the flow's steps; seconds per step."""
    from include.bridge.runtime import Systems
    from include.flows import crm_orders_to_erp as flow

    client, rng = crm.client(max_retries=10), random.Random(12)
    accounts, products = linked(bridge[1], "customer"), _erp_products(erp, bridge)
    t = time.monotonic()
    records = [order_fields(accounts, products, rng, rng.random() < 0.8) | {"Status": "Confirmed"}
               for _ in range(n_orders)]
    for i in range(0, len(records), 100):
        client.insert("Sales_Orders", records[i:i + 100])
    figures = {"create in CRM": time.monotonic() - t}
    info = bridge[1].info
    systems = Systems.from_connections(
        bridge[1], f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{bridge[0]}",
        erp=erp.connect_as("erp_reader"), crm=client, erp_write=erp.connect_as("erp_writer"))
    run_id = f"bench_burst_{uuid.uuid4().hex[:6]}"
    credits_before = crm.credits_used()  # the bridge's calls only, not the orders' creation above
    t = time.monotonic()
    run = flow.ORDERS.extract(systems, run_id)
    figures["extract"] = time.monotonic() - t
    t = time.monotonic()
    flow.ORDERS.validate(systems, run)
    figures["gate + credit"] = time.monotonic() - t
    t = time.monotonic()
    flow.ORDERS.send(systems, run)
    figures["send"] = time.monotonic() - t
    t = time.monotonic()
    processed = importer.process_inbound(erp.admin)
    figures["ERP import (not ours)"] = time.monotonic() - t
    t = time.monotonic()
    written = flow.ORDERS.write_back(systems, run)
    figures["write-back"] = time.monotonic() - t
    credits = crm.credits_used() - credits_before
    counts = {"credits": credits, "credits per 1,000 orders": round(1000 * credits / n_orders, 1), "orders": n_orders,
              "lines staged": run.counts.get("rows_extracted"), "sent": run.counts.get("sent"),
              "held": run.counts.get("held"), "quarantined": run.counts.get("quarantined"),
              "written back": written.get("written_back"), "ERP processed": processed["sales_order_in"]}
    return {"figures": figures, "counts": counts}


def _unclaimed(bridge_conn) -> int:
    with bridge_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bridge.crm_event WHERE claimed_at IS NULL")
        n = cur.fetchone()[0]
    bridge_conn.commit()
    return n


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def _erp_products(erp: ErpSandbox, bridge) -> list[str]:
    """CRM product ids of active ERP items (an inactive one is rightly quarantined: not what is measured here)."""
    active = {r["sku"] for r in erp.query("SELECT sku FROM erp_api.items WHERE is_active")}
    with bridge[1].cursor() as cur:
        cur.execute("SELECT crm_id, erp_key FROM bridge.id_map WHERE entity = 'product' ORDER BY erp_key")
        rows = [crm_id for crm_id, sku in cur.fetchall() if sku in active]
    bridge[1].commit()
    return rows[:200]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=15, help="orders confirmed one at a time (latency)")
    parser.add_argument("--burst", type=int, nargs="+", default=[1_000, 3_000, 10_000],
                        help="orders confirmed at once (throughput), one burst after the other: how cost grows")
    args = parser.parse_args()
    meta_db, bridge_name = new_database("airflow_bench"), new_database("bridge_bench")
    erp = ErpSandbox(customers=60, skus=300, history_days=40, seed=7)
    bridge = (bridge_name, psycopg2.connect(dbname=bridge_name))
    bridge_db.install_schema(bridge[1])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        crm = CrmSandbox(work / "crm")
        try:
            crm.reset(customers=60, skus=300, seed_value=7)
            crm.configure(credits_per_day=10**9)
            # Airflow's metadata in PostgreSQL (LocalExecutor runs tasks in parallel): migrated for this env
            env = airflow_env_for(work / "airflow", erp, bridge, crm, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=(
                f"postgresql+psycopg2://{os.environ['PGUSER']}@{os.environ['PGHOST']}:{os.environ['PGPORT']}/"
                f"{meta_db}"), AIRFLOW__CORE__EXECUTOR="LocalExecutor")
            for dag_id in ("master_data_match", "erp_credit_to_crm"):
                assert run_dag(env, dag_id) == "success", f"{dag_id} failed"
            if args.orders:
                print(f"latency, event-triggered, {args.orders} orders confirmed one at a time:", flush=True)
                figures = latency(env, work, erp, crm, bridge, args.orders)
                for label, seconds in (("confirm -> ERP number in the CRM", [f[0] for f in figures]),
                                       ("the same without the ERP's import time", [f[1] for f in figures])):
                    q = statistics.quantiles(seconds, n=20, method="inclusive") if len(seconds) > 1 else seconds * 19
                    print(f"  {label}: p50 {statistics.median(seconds):.1f} s, p95 {q[18]:.1f} s, max "
                          f"{max(seconds):.1f} s (n = {len(seconds)})", flush=True)
                print("  on the schedule alone: up to one 5-minute interval + one run", flush=True)
            for size in [n for n in args.burst if n]:
                print(f"burst of {size:,} confirmed orders:", flush=True)
                result = burst(env, erp, crm, bridge, size)
                for step, s in result["figures"].items():
                    rate = f"{size / s:>8,.0f} orders/s" if s and step != "create in CRM" else ""
                    print(f"  {step:<22} {s:7.1f} s {rate}", flush=True)
                ours = sum(s for k, s in result["figures"].items()
                           if k not in ("create in CRM", "ERP import (not ours)"))
                print(f"  flow total {ours:.1f} s = {size / ours:,.0f} orders/s; counts {result['counts']}; "
                      f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB (this process, so "
                      "far)", flush=True)
        finally:
            crm.stop()
            bridge[1].close()
            erp.admin.close()
            for name in (erp.dbname, bridge_name, meta_db):
                drop_database(name)


if __name__ == "__main__":
    main()
