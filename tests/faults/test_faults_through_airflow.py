"""Faults injected into real DAG runs (Airflow dag.test, each run its own process), then one normal re-run; after
it both systems hold the source's truth and no ledger row says `running` without a live Airflow run.

The bridge DB lives on a PostgreSQL server of this module's own (tests/faults/private_pg.py), which the test
crashes (`pg_ctl -m immediate`) at the chosen point; the CRM sandbox is this module's own process, which the test
SIGKILLs mid-load and starts again on its data. The points are reached deterministically with locks, not timing:

| fault                                                | after one normal re-run                                |
|------------------------------------------------------|--------------------------------------------------------|
| bridge DB lost after the ERP insert committed,       | each order once in the ERP, its ERP number and status  |
|   before the bridge recorded it (sent_at); the       |   in the CRM, never credit-checked again; the killed   |
|   failure alert cannot reach the DB either, so the   |   run's ledger row closed by the sweep                 |
|   run's ledger row stays `running`                   |                                                        |
| CRM sandbox SIGKILLed mid-load of erp_stock_to_crm,  | every field the stock mirror writes equals the ERP's   |
|   restarted on its data                              |   now (reconciliation: no stock difference)            |
"""

from __future__ import annotations

import os
import signal
import time

import psycopg2
import pytest

from include.bridge import db as bridge_db
from include.sandbox.erp import importer, simulator
from tests import dagruns
from tests.conftest import CrmSandbox, linked_airflow_env, run_dag
from tests.faults.private_pg import PrivatePostgres

pytestmark = pytest.mark.slow
ORDERS, BRIDGE = "crm_orders_to_erp", "bridge_faults"


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory):
    server = PrivatePostgres(tmp_path_factory.mktemp("pg"))
    conn = server.connect()
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {BRIDGE}")
    conn.close()
    conn = server.connect(BRIDGE)
    bridge_db.install_schema(conn)
    conn.close()
    yield server
    server.close()


@pytest.fixture(scope="module")
def crm_process(tmp_path_factory, erp):
    """The module's own CRM sandbox (the session's is shared with other modules: it is never killed)."""
    data = tmp_path_factory.mktemp("crm_faults") / "data"
    box = {"server": CrmSandbox(data)}
    box["server"].reset(customers=60, skus=300, seed_value=7)  # the ERP fixture's demo company
    yield box
    box["server"].stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory, erp, private_pg, crm_process):
    return linked_airflow_env(tmp_path_factory.mktemp("airflow"), erp, (BRIDGE, None), crm_process["server"],
                              AIRFLOW_CONN_BRIDGE_DB=private_pg.url(BRIDGE))


def q(private_pg, sql: str, params=None) -> list[tuple]:
    conn = private_pg.connect(BRIDGE)
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    conn.commit()
    conn.close()
    return rows


def wait_for(check, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def no_ledger_row_running(private_pg) -> None:
    assert q(private_pg, "SELECT flow, airflow_run_id FROM bridge.run_ledger WHERE status = 'running'") == []


def test_the_bridge_db_lost_between_the_erp_insert_and_its_bookkeeping(env, erp, private_pg, crm_process):
    client = crm_process["server"].client()
    new = [r["id"] for r in client.iter_records("Sales_Orders", ["Status"])
           if r["Status"] in ("Created", "Approved")][:6]
    client.update("Sales_Orders", [{"id": i, "Status": "Confirmed"} for i in new])
    inbound_before = erp.scalar("SELECT count(*) FROM erp_inbound.sales_order_in")
    erp_lock = psycopg2.connect(dbname=erp.dbname)  # holds the ERP insert until the bridge's keys are pinned
    erp_lock.cursor().execute("LOCK TABLE erp_inbound.sales_order_in IN EXCLUSIVE MODE")
    out = os.path.join(env["AIRFLOW_HOME"], "lost_bridge_db.txt")
    pid = dagruns.start_dag_run(env, ORDERS, {"logical_date": "2026-05-01T09:00:00+00:00",
                                              "wait_for_erp_seconds": 0}, out)
    pin = private_pg.connect(BRIDGE)
    try:
        with pin.cursor() as cur:  # the outbox keys are in (committed, sent_at empty): lock them against the update
            wait_for(lambda: cur.execute("SELECT idempotency_key FROM bridge.order_outbox WHERE sent_at IS NULL "
                                         "FOR UPDATE") or cur.fetchall(), "the outbox keys")
        erp_lock.rollback()  # the ERP insert goes through and commits; the bridge's sent_at update now waits
        wait_for(lambda: erp.scalar("SELECT count(*) FROM erp_inbound.sales_order_in") > inbound_before,
                 "the ERP insert")
        private_pg.crash()
    finally:
        erp_lock.close()
        pin.close()
    dagruns.wait(pid, 300)
    assert dagruns.states(out) == ["failed"]
    private_pg.start()
    [(left_running,)] = q(private_pg, "SELECT count(*) FROM bridge.run_ledger WHERE status = 'running'")
    assert left_running == 1  # the failure alert could not reach the bridge DB either

    importer.process_inbound(erp.admin)  # the ERP's import job ran meanwhile
    assert run_dag(env, ORDERS, wait_for_erp_seconds=0) == "success"  # one normal re-run

    in_erp: dict[str, list[str]] = {}
    for r in erp.query("SELECT source_id, so_no FROM erp.sales_order WHERE source_system = 'zoho_crm'"):
        in_erp.setdefault(r["source_id"], []).append(r["so_no"])
    assert all(len(v) == 1 for v in in_erp.values())
    assert set(new) & set(in_erp), "some of the confirmed orders were sent before the crash"
    crm_now = {r["id"]: r for r in client.iter_records("Sales_Orders", ["Status", "ERP_Order_No"])}
    for crm_id, [so_no] in in_erp.items():
        assert crm_now[crm_id]["ERP_Order_No"] == so_no, crm_id  # every order in the ERP shows its number
        assert crm_now[crm_id]["Status"] != "Credit Hold", crm_id  # never judged again against its own credit
    assert q(private_pg, "SELECT count(*) FROM bridge.order_outbox WHERE sent_at IS NULL") == [(0,)]
    no_ledger_row_running(private_pg)
    [(message,)] = q(private_pg, "SELECT message FROM bridge.run_ledger WHERE airflow_run_id LIKE '%2026-05-01%'")
    assert "closed by the sweep" in message


def test_the_crm_killed_mid_load_then_restarted(env, erp, private_pg, crm_process):
    assert run_dag(env, "erp_stock_to_crm") == "success"
    simulator.simulate(erp.admin, 1)  # a business day: many products change
    server = crm_process["server"]
    server.configure(latency_ms=400, fault_methods=["PUT"])
    puts = server.admin("GET", "stats")["stats"].get("handled_PUT", 0)
    out = os.path.join(env["AIRFLOW_HOME"], "crm_killed.txt")
    pid = dagruns.start_dag_run(env, "erp_stock_to_crm", {}, out)
    wait_for(lambda: server.admin("GET", "stats")["stats"].get("handled_PUT", 0) > puts, "the first CRM update")
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    dagruns.wait(pid, 300)
    assert dagruns.states(out) == ["failed"]
    crm_process["server"] = server = CrmSandbox(server.data_dir, port=server.port)  # back, on its own data

    assert run_dag(env, "erp_stock_to_crm") == "success"  # one normal re-run
    assert run_dag(env, "reconcile_crm_erp", order_grace_minutes=0) == "success"
    [(batch,)] = q(private_pg, "SELECT batch_id FROM bridge.reconciliation_run ORDER BY created_at DESC LIMIT 1")
    assert q(private_pg, "SELECT business_key, detail FROM bridge.reconciliation_difference "
                         "WHERE batch_id = %s AND kind = 'stock_mismatch'", (batch,)) == []
    [(compared,)] = q(private_pg, "SELECT compared FROM bridge.reconciliation_run WHERE batch_id = %s", (batch,))
    assert compared["stock figures (every mapped field)"] > 250
    no_ledger_row_running(private_pg)
