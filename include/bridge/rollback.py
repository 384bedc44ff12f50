"""Rollback of a run: the audit log's before-images restore what the run changed.

CRM side: every record the run wrote gets the field values it had before the run (the before-image of the first
write in the run); a record the run created is deleted. The flows' own sync state follows (synced_state holds the
restored values), so the next run sees the CRM as it is and re-plans. ERP side: documents are never deleted —
they are reversed through the inbound contract: an order the run created is cancelled (CANCEL), an amendment is
amended back to the version before; a cancellation, a customer creation and a forecast version cannot be reversed
through the contract and are listed for the ERP team (a forecast: run crm_forecast_to_erp again after the fix).
Every restore is audited (flow bridge_rollback, before = the run's after-image) and listed in bridge.rollback_log;
rolling back the same run twice changes nothing more.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import psycopg2.extras

from include.bridge import engine, mirror

log = logging.getLogger(__name__)
FLOW = "bridge_rollback"


def log_rollback(cur, batch_id: str, run_id: str, target_system: str, change: dict, action: str,
                 detail: str | None) -> None:
    cur.execute("""INSERT INTO bridge.rollback_log (rolled_back, flow, rollback_run_id, target_system, entity,
                                                     business_key, record_id, action, detail)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (batch_id, change["flow"], run_id, target_system, change["entity"], change["business_key"],
                 change["record_id"], action, detail))


def changes_of(bridge, batch_id: str) -> list[dict]:
    """Per record the run wrote: the first before-image and the last after-image, in order of first write."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT flow, target_system, entity, business_key, record_id, before, after, run_id
                       FROM bridge.audit_log WHERE batch_id = %s ORDER BY id""", (batch_id,))
        rows = cur.fetchall()
    bridge.rollback()
    merged: OrderedDict = OrderedDict()
    for r in rows:
        key = (r["target_system"], r["entity"], r["record_id"] or r["business_key"])
        if key not in merged:
            merged[key] = dict(r)
        else:
            merged[key]["after"] = r["after"]
    return list(merged.values())


def done_already(bridge, batch_id: str) -> set[tuple]:
    with bridge.cursor() as cur:
        cur.execute("""SELECT target_system, entity, coalesce(record_id, business_key) FROM bridge.rollback_log
                       WHERE rolled_back = %s AND action <> 'failed'""", (batch_id,))
        done = {tuple(r) for r in cur.fetchall()}
    bridge.rollback()
    return done


def restore_crm(bridge, crm, batch_id: str, run_id: str, changes: list[dict]) -> dict:
    counts = {"restored": 0, "deleted": 0, "failed": 0}
    by_module: dict[str, list[dict]] = {}
    for c in changes:  # CRM audit rows name their record "<Module>:<id>"; rows from before record_id have none
        if c["record_id"]:
            module, crm_id = c["record_id"].split(":", 1)
            by_module.setdefault(module, []).append(c | {"crm_id": crm_id})
    log_rows, audit_rows = [], []
    for module, items in by_module.items():
        restore = [c for c in items if c["before"] is not None]
        create = [c for c in items if c["before"] is None]
        outcomes = crm.update(module, [{"id": c["crm_id"], **c["before"]} for c in restore]) if restore else []
        for c, o in zip(restore, outcomes, strict=True):
            counts["restored" if o.ok else "failed"] += 1
            log_rows.append((c, "restored" if o.ok else "failed", None if o.ok else f"{o.code} {o.message}"))
            if o.ok:
                audit_rows.append((c, c["after"], c["before"]))
        deleted = crm.delete(module, [c["crm_id"] for c in create]) if create else []
        for c, o in zip(create, deleted, strict=True):
            ok = o.ok or o.code == "INVALID_DATA"  # already gone
            counts["deleted" if ok else "failed"] += 1
            log_rows.append((c, "deleted" if ok else "failed", "the run created it" if ok else o.message))
            if ok:
                audit_rows.append((c, c["after"], None))
    with bridge.cursor() as cur:
        for c, action, detail in log_rows:
            log_rollback(cur, batch_id, run_id, "crm", c, action, detail)
            if action in ("restored", "deleted"):  # the flow's sync state: what the CRM holds now
                if c["before"] is None:
                    cur.execute("DELETE FROM bridge.synced_state WHERE flow = %s AND business_key = %s",
                                (c["flow"], c["business_key"]))
                else:
                    mirror.set_synced_values(cur, c["flow"], c["business_key"], c["before"])
    engine.audit(bridge, FLOW, "crm", "rollback", [engine.AuditRow(c["business_key"], before, after, c["record_id"])
                                                  for c, before, after in audit_rows], run_id, f"rollback:{batch_id}")
    bridge.commit()
    return counts


class Reversal(NamedTuple):
    """What a flow did to undo one ERP change of a rolled-back run: action cancel_sent, amend_sent,
    not_reversible or failed; detail: the document key sent, or why nothing could be sent."""
    change: dict
    action: str
    detail: str | None


def irreversible(changes: list[dict], why: str) -> list[Reversal]:
    """A flow's answer for ERP changes the inbound contract cannot undo: listed for the ERP team with the reason."""
    return [Reversal(c, "not_reversible", why) for c in changes]


# reverse(bridge, erp_write, batch_id, rollback_run_id, changes) -> the Reversal of each change
ErpReversal = Callable[[Any, Any, str, str, list[dict]], list[Reversal]]


def reverse_erp(bridge, erp_write, batch_id: str, run_id: str, changes: list[dict],
                reversals: Mapping[str, ErpReversal]) -> dict:
    """ERP documents of the run, reversed by the flow that sent them (`reversals`: flow name -> its reversal,
    from the flow registry); a flow without one cannot reverse through the ERP's inbound contract."""
    counts = {"cancel_sent": 0, "amend_sent": 0, "not_reversible": 0, "failed": 0}
    by_flow: dict[str, list[dict]] = {}
    for c in changes:
        by_flow.setdefault(c["flow"], []).append(c)
    done: list[Reversal] = []
    for flow, items in by_flow.items():
        reverse = reversals.get(flow)
        done += reverse(bridge, erp_write, batch_id, run_id, items) if reverse else [
            Reversal(c, "not_reversible", f"{flow} has no reversal through the ERP inbound contract") for c in items]
    with bridge.cursor() as cur:
        for r in done:
            counts[r.action] += 1
            log_rollback(cur, batch_id, run_id, "erp", r.change, r.action, r.detail)
    bridge.commit()
    return {k: v for k, v in counts.items() if v or k != "failed"}


def batch_of(bridge, flow: str | None, run_id: str | None, batch_id: str | None) -> tuple[str, str]:
    """(batch id, flow) of the run to roll back, from a batch id or a flow + Airflow run id."""
    with bridge.cursor() as cur:
        if batch_id:
            cur.execute("SELECT batch_id, flow, status FROM bridge.run_ledger WHERE batch_id = %s", (batch_id,))
        else:
            cur.execute("SELECT batch_id, flow, status FROM bridge.run_ledger WHERE flow = %s AND airflow_run_id = %s",
                        (flow, run_id))
        rows = cur.fetchall()
    bridge.rollback()
    if len(rows) != 1:
        raise ValueError(f"no single run to roll back for batch_id={batch_id!r} flow={flow!r} run_id={run_id!r} "
                         f"(found {len(rows)}; bridge.run_ledger lists the runs)")
    if rows[0][2] == "running":
        raise ValueError(f"run {rows[0][0]} of {rows[0][1]} is still running: wait for it to end before rolling back")
    return rows[0][0], rows[0][1]


def run(systems, rollback_run_id: str, *, reversals: Mapping[str, ErpReversal], batch_id: str | None = None,
        flow: str | None = None, run_id: str | None = None) -> dict:
    """Roll back one run of a flow; returns counts per action. `reversals`: each flow's way of reversing its ERP
    documents (include.flows.erp_reversals())."""
    bridge = systems.bridge()
    batch, of_flow = batch_of(bridge, flow, run_id, batch_id)
    done = done_already(bridge, batch)
    changes = [c for c in changes_of(bridge, batch)
               if (c["target_system"], c["entity"], c["record_id"] or c["business_key"]) not in done]
    crm_changes = [c for c in changes if c["target_system"] == "crm"]
    erp_changes = [c for c in changes if c["target_system"] == "erp"]
    counts = {"records": len(changes)}
    if crm_changes:
        counts |= restore_crm(bridge, systems.crm(), batch, rollback_run_id, crm_changes)
    if erp_changes:
        counts |= reverse_erp(bridge, systems.erp_write(), batch, rollback_run_id, erp_changes, reversals)
    with bridge.cursor() as cur:
        cur.execute("""UPDATE bridge.run_ledger SET status = 'rolled_back', message = coalesce(message, '') || %s
                       WHERE batch_id = %s""",
                    (f" | rolled back by {rollback_run_id}: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
                     batch))
    bridge.commit()
    return {"batch_id": batch, "flow": of_flow} | counts
