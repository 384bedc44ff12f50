"""Flow erp_production_to_crm: production dates behind each CRM sales order -> the CRM order (stage 3).

The mirror path (include/bridge/mirror.py) over erp_api.production_schedule, one staged row per production
order, aggregated per ERP sales order and written by record id to the CRM order it is linked to (orders sent by
crm_orders_to_erp and the copies erp_history_to_crm made): Expected_Ship_Date (the last production order's
finish — later when its material arrives after the planned start — plus the shipping day), Production_Status
and a material warning in Capacity_Warning. Mapping: include/mappings/erp_production_to_crm.yaml.

A slip — the expected ship date moving later than the date the owner last saw — alerts the order's owner once
(IM @-mention through the Variable `crm_owner_im_ids`, e-mail to the alert list): bridge.ship_date_notice keeps
the last date each order's owner was told, so retries, clears and reruns never repeat an alert.
"""

from __future__ import annotations

import json

import psycopg2.extras

from include.bridge import engine, mirror
from include.bridge.alerts import Alert

FLOW = "erp_production_to_crm"


def ship_dates_loaded(bridge, batch_id: str) -> list[dict]:
    """Orders of this batch whose Expected_Ship_Date reached the CRM, with the date their owner last saw."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT q.crm_id, q.business_key AS erp_order_no,
                              (q.values ->> 'Expected_Ship_Date')::date AS ship_date, n.notified_date
                       FROM bridge.load_queue q
                       LEFT JOIN bridge.ship_date_notice n ON n.crm_id = q.crm_id
                       WHERE q.batch_id = %s AND q.status = 'loaded' AND q.values ->> 'Expected_Ship_Date' IS NOT NULL
                       ORDER BY q.business_key""", (batch_id,))
        rows = [dict(r) for r in cur.fetchall()]
    bridge.rollback()
    return rows


def slip_alert(run_id: str, slip: dict, record: dict, im_ids: dict[str, str]) -> Alert:
    owner = record.get("Owner") or {}
    who = owner.get("name") or owner.get("email") or "the order owner"
    mention = im_ids.get(owner.get("email") or "") or im_ids.get(owner.get("id") or "")
    return Alert(kind="business", flow=FLOW, run_id=run_id, event_key=f"slip:{slip['crm_id']}:{slip['ship_date']}",
                 title=f"order {record.get('Subject') or slip['erp_order_no']} ships later: {slip['ship_date']}",
                 lines=[f"expected ship date moved from {slip['notified_date']} to {slip['ship_date']} "
                        f"(ERP order {slip['erp_order_no']}): production behind it slipped",
                        f"for {who}{' <' + owner['email'] + '>' if owner.get('email') else ''}: "
                        "please tell the customer before they ask"],
                 mentions=[mention] if mention else [])


class ProductionMirror(mirror.MirrorFlow):
    def after_finish(self, systems, run, counts: dict, send_alert) -> dict:
        """Tell each owner once about a slip (a later date than the one last notified)."""
        bridge = systems.bridge()
        loaded = ship_dates_loaded(bridge, run.batch_id)
        slips = [r for r in loaded if r["notified_date"] is not None and r["ship_date"] > r["notified_date"]]
        if slips and send_alert and self.spec.settings.get("alert_slips"):
            from include.bridge.runtime import variable

            im_ids = json.loads(variable("crm_owner_im_ids", "{}") or "{}")
            # Subject and Owner of the slipped orders (slips are few: COQL by id)
            records = engine.crm_values(systems.crm(), "Sales_Orders", [s["crm_id"] for s in slips],
                                        ["Subject", "Owner"])
            for s in slips:
                send_alert(slip_alert(run.run_id, s, records.get(s["crm_id"], {}), im_ids))
        # the date each owner has now seen: an earlier date (production caught up) is the new reference too
        with bridge.cursor() as cur:
            psycopg2.extras.execute_values(cur, """
                INSERT INTO bridge.ship_date_notice (crm_id, erp_order_no, notified_date) VALUES %s
                ON CONFLICT (crm_id) DO UPDATE SET notified_date = excluded.notified_date, notified_at = now(),
                    erp_order_no = excluded.erp_order_no""",
                [(r["crm_id"], r["erp_order_no"], r["ship_date"]) for r in loaded])
        bridge.commit()
        return {"ship_dates_set": len(loaded), "slips": len(slips)}


MIRROR = ProductionMirror(FLOW)
