"""Convergence after faults (issue 15): after a fault and one normal re-run, both systems hold the source's truth.

Each test drives the real flow steps (the same functions the DAG's tasks call) against a real ERP sandbox in
PostgreSQL and the CRM sandbox over HTTP, and stops or interleaves them where a crash, a clear or a backfill beside
live runs would:

| fault                                                       | what must hold after it                          |
|-------------------------------------------------------------|--------------------------------------------------|
| a backfill staged an old snapshot, a newer run loaded, then | the backfill writes nothing older: CRM = ERP, the |
|   the backfill's load ran (stale overwrite)                 |   synced state keeps the newer version            |
| an old batch's load retried after a newer run finished      | same: its records are superseded, not written     |
| a load wrote its first page, the task died before finish,   | the audit's before-image is what the CRM held     |
|   the run was cleared (same batch)                          |   before the first attempt, not its own write     |
| a write-back landed, the task died, the retry re-read       | same, for audited CRM updates (engine)            |
| a task died and left its ledger row running                 | the next run's sweep closes it as failed; a clear |
|                                                             |   keeps the failed attempt in run_attempt         |
"""

from __future__ import annotations

import datetime as dt
import os

import psycopg2
import pytest

from include.bridge import engine
from include.bridge.runtime import Systems
from include.sandbox.erp import db as erp_db
from tests.conftest import bridge_rows

FLOW = "erp_stock_to_crm"


@pytest.fixture(scope="module")
def crm(crm_server, erp):
    crm_server.reset(customers=60, skus=300, seed_value=7)  # the ERP fixture's demo company
    return crm_server.client()


@pytest.fixture
def systems(erp, bridge, crm):
    erp_conn = psycopg2.connect(dbname=erp.dbname, user=erp_db.READ_ROLE, password=os.environ["ERP_READ_PASSWORD"])
    url = f"postgresql+psycopg2://{bridge[1].info.user}@{bridge[1].info.host}:{bridge[1].info.port}/{bridge[0]}"
    yield Systems.from_connections(bridge[1], url, erp=erp_conn, crm=crm)
    erp_conn.close()


def mirror():
    from include.flows import flow

    return flow(FLOW)


def full_run(systems, run_id: str, backfill=None) -> dict:
    m = mirror()
    run = m.extract(systems, run_id, backfill=backfill)
    m.validate(systems, run)
    for chunk in run.facts["chunks"]:
        m.load(systems, run, chunk)
    return m.finish(systems, run)


def on_hand(erp, sku: str) -> float:
    return float(erp.scalar("SELECT sum(on_hand) FROM erp_api.stock_availability WHERE sku = %s", (sku,)))


def crm_stock(crm, skus: list[str]) -> dict[str, float]:
    found = {}
    for rec in crm.iter_coql("Products", ["Product_Code", "Qty_in_Stock"], where="Qty_in_Stock is not null"):
        code = rec["Product_Code"].strip().upper()
        if code in skus:
            found[code] = rec["Qty_in_Stock"]
    return found


def bump(erp, skus: list[str], by: int) -> None:
    erp.query("UPDATE erp.bin SET actual_qty = actual_qty + %s, updated_at = now() "
              "WHERE sku = ANY (%s) AND warehouse = 'SZ01'", (by, skus))


@pytest.fixture(scope="module")
def synced(erp, bridge, crm):
    """A first full sync, so later runs move only what changed."""
    erp_conn = psycopg2.connect(dbname=erp.dbname, user=erp_db.READ_ROLE, password=os.environ["ERP_READ_PASSWORD"])
    url = f"postgresql+psycopg2://{bridge[1].info.user}@{bridge[1].info.host}:{bridge[1].info.port}/{bridge[0]}"
    result = full_run(Systems.from_connections(bridge[1], url, erp=erp_conn, crm=crm), "manual__initial")
    erp_conn.close()
    assert result["loaded"] > 250
    return erp.query("SELECT DISTINCT sku FROM erp.bin WHERE warehouse = 'SZ01' ORDER BY sku LIMIT 12")


def test_a_backfill_that_staged_an_old_snapshot_never_overwrites_a_newer_run(synced, systems, erp, crm):
    skus = [r["sku"] for r in synced[:4]]
    bump(erp, skus, 5)  # v1: what the backfill reads
    m = mirror()
    interval = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), dt.datetime.now(dt.UTC))
    backfill = m.extract(systems, "backfill__2026-12-05T00:00:00+00:00", backfill=interval)
    m.validate(systems, backfill)
    assert backfill.counts["queued"] >= len(skus)
    bump(erp, skus, 7)  # v2: what the normal run reads and loads while the backfill waits for its load
    assert full_run(systems, "scheduled__newer")["loaded"] >= len(skus)
    assert crm_stock(crm, skus) == {s: on_hand(erp, s) for s in skus}

    for chunk in backfill.facts["chunks"]:  # the backfill's load runs last: older values than the CRM's
        m.load(systems, backfill, chunk)
    result = m.finish(systems, backfill)
    assert result["loaded"] == 0
    assert crm_stock(crm, skus) == {s: on_hand(erp, s) for s in skus}  # still the newer values: nothing went back
    superseded, message = bridge_rows(_bridge(systems), """
        SELECT (SELECT count(*) FROM bridge.load_queue WHERE batch_id = l.batch_id AND status = 'superseded'),
               l.message FROM bridge.run_ledger l WHERE batch_id = %s""", (backfill.batch_id,))[0]
    assert superseded >= len(skus) and "newer version" in message
    # the synced state follows the same rule: it holds what the newer run wrote, so change detection is right
    state = dict(bridge_rows(_bridge(systems), """
        SELECT business_key, (values ->> 'Qty_in_Stock')::numeric FROM bridge.synced_state
        WHERE flow = %s AND business_key = ANY (%s)""", (FLOW, skus)))
    assert {k: float(v) for k, v in state.items()} == {s: on_hand(erp, s) for s in skus}
    # and the ledger says what interval the backfill covered
    start, end, was_backfill = bridge_rows(_bridge(systems), "SELECT interval_start, interval_end, backfill "
                                           "FROM bridge.run_ledger WHERE batch_id = %s", (backfill.batch_id,))[0]
    assert was_backfill and end == interval[1] and start == interval[0] - dt.timedelta(minutes=10)


def test_a_newer_run_planned_after_an_old_batch_loaded_is_not_held_back(synced, systems, erp, crm):
    """The rule is per key and per version: an old batch that did load leaves the next, newer run free to write."""
    skus = [r["sku"] for r in synced[4:6]]
    bump(erp, skus, 3)
    assert full_run(systems, "scheduled__a")["loaded"] >= len(skus)
    bump(erp, skus, 2)
    assert full_run(systems, "scheduled__b")["loaded"] >= len(skus)
    assert crm_stock(crm, skus) == {s: on_hand(erp, s) for s in skus}


def test_a_cleared_batch_keeps_the_before_image_of_its_first_attempt(synced, systems, erp, crm, bridge):
    """First writes: the load landed, the task died before finish, the run is cleared (same run id, same batch):
    the audit's before-image is what the CRM held before the first attempt."""
    m = mirror()
    sku = synced[6]["sku"]
    with bridge[1].cursor() as cur:  # the bridge has never written this product: its next write is a first write
        cur.execute("DELETE FROM bridge.synced_state WHERE flow = %s AND business_key = %s", (FLOW, sku))
    bridge[1].commit()
    held_before = crm_stock(crm, [sku])[sku]
    bump(erp, [sku], 11)
    run = m.extract(systems, "manual__cleared")
    m.validate(systems, run)
    for chunk in run.facts["chunks"]:
        m.load(systems, run, chunk)  # ... and the task dies here: no finish
    assert crm_stock(crm, [sku])[sku] == on_hand(erp, sku) != held_before
    assert full_run(systems, "manual__cleared")["loaded"] >= 0  # the clear: same run id, from extract
    before = bridge_rows(bridge, "SELECT before ->> 'Qty_in_Stock' FROM bridge.audit_log WHERE batch_id = %s "
                         "AND business_key = %s", (run.batch_id, sku))
    assert [float(b) for (b,) in before] == [held_before]


def test_an_audited_update_retried_after_it_landed_keeps_the_first_before_image(synced, systems, crm, bridge):
    product = next(iter(crm.iter_coql("Products", ["Product_Code", "Qty_in_Stock"], where="Qty_in_Stock is not null")))
    original = product["Qty_in_Stock"]
    record = {"id": product["id"], "Qty_in_Stock": original + 1000}
    batch = "convergence-write-back"
    engine.audited_update(bridge[1], crm, "crm_orders_to_erp", "product", "Products", [record], "r1", batch)
    # the task died after the update landed; the retry writes the same again and re-reads the CRM first
    engine.audited_update(bridge[1], crm, "crm_orders_to_erp", "product", "Products", [record], "r1", batch)
    befores = bridge_rows(bridge, "SELECT (before ->> 'Qty_in_Stock')::numeric FROM bridge.audit_log "
                          "WHERE batch_id = %s", (batch,))
    assert [float(b) for (b,) in befores] == [original, original]
    crm.update("Products", [{"id": product["id"], "Qty_in_Stock": original}])


def test_a_run_left_running_is_closed_by_the_sweep_and_a_clear_keeps_the_failed_attempt(bridge):
    conn = bridge[1]
    killed = engine.start_run(conn, FLOW, "scheduled__killed")
    live = engine.start_run(conn, FLOW, "scheduled__live")
    unknown = engine.start_run(conn, FLOW, "scheduled__unknown")
    states = {"scheduled__killed": False, "scheduled__live": True, "scheduled__unknown": None}
    closed = engine.sweep_abandoned(conn, FLOW, states.get, keep_run_id="scheduled__current")
    assert closed == [killed]
    rows = dict(bridge_rows(bridge, "SELECT batch_id, status FROM bridge.run_ledger WHERE batch_id = ANY (%s)",
                            ([killed, live, unknown],)))
    assert rows == {killed: "failed", live: "running", unknown: "running"}  # never closes what it is unsure of
    assert engine.start_run(conn, FLOW, "scheduled__killed") == killed  # the operator clears the killed run
    attempts = bridge_rows(bridge, "SELECT attempt, status, ended_by, message FROM bridge.run_attempt "
                           "WHERE batch_id = %s", (killed,))
    assert [(a, s, e) for a, s, e, _ in attempts] == [(1, "failed", "ended failed")]
    assert "no longer running" in attempts[0][3]
    assert bridge_rows(bridge, "SELECT attempt, status FROM bridge.run_ledger WHERE batch_id = %s",
                       (killed,)) == [(2, "running")]
    for batch in (killed, live, unknown):
        engine.finish_run(conn, batch, "success")


def _bridge(systems):
    return (None, systems.bridge())
