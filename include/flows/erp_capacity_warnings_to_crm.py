"""Flow erp_capacity_warnings_to_crm: weekly capacity against demand -> CRM Products.Capacity_Warning (stage 3).

The mirror path (include/bridge/mirror.py) over a query of contract views (erp_api.items, sales_order_lines,
demand_forecast, production_schedule, business_date), one staged row per manufactured product and week:
firm demand (open order lines by delivery week), forecast demand (the active forecast's PIPELINE rows spread
over the days of their month), production planned to finish that week, and production orders waiting for
late material. A product whose demand or planned production exceeds its weekly capacity, or whose production
waits for material, gets a warning salespeople see while quoting; the warning clears when the cause does.
Mapping: include/mappings/erp_capacity_warnings_to_crm.yaml.

Alerts: one per product per run whose warning appeared (up to `max_alerts_per_run`, then one summary alert
for the rest); a warning that stays (its figures updated) is not alerted again until it has cleared.
"""

from __future__ import annotations

import psycopg2.extras

from include.bridge import mirror
from include.bridge.alerts import Alert

FLOW = "erp_capacity_warnings_to_crm"


def new_warnings(bridge, batch_id: str) -> dict:
    """Products this batch gives a warning they did not have (read before finish replaces the synced state): a
    warning whose figures move from day to day is updated on the product, not alerted again."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT q.business_key AS sku, q.values ->> 'Capacity_Warning' AS warning
                       FROM bridge.load_queue q
                       LEFT JOIN bridge.synced_state s ON s.flow = q.flow AND s.business_key = q.business_key
                       WHERE q.batch_id = %s AND q.status = 'loaded' AND q.values ->> 'Capacity_Warning' IS NOT NULL
                         AND s.values ->> 'Capacity_Warning' IS NULL
                       ORDER BY 1""", (batch_id,))
        return {"new_warnings": [dict(r) for r in cur.fetchall()]}


def warning_alerts(run_id: str, warnings: list[dict], limit: int) -> list[Alert]:
    alerts = [Alert(kind="business", flow=FLOW, run_id=run_id, event_key=f"capacity:{w['sku']}",
                    title=f"capacity / material warning for {w['sku']}", lines=w["warning"].split("; "))
              for w in warnings[:limit]]
    if len(warnings) > limit:
        rest = [w["sku"] for w in warnings[limit:]]
        alerts.append(Alert(kind="business", flow=FLOW, run_id=run_id, event_key="capacity:more",
                            title=f"{len(rest)} more products with capacity / material warnings",
                            lines=[", ".join(rest[:50]) + (" …" if len(rest) > 50 else "")]))
    return alerts


class CapacityWarningsMirror(mirror.MirrorFlow):
    def before_finish(self, bridge, batch_id: str) -> dict:
        return new_warnings(bridge, batch_id)

    def after_finish(self, systems, run, counts: dict, send_alert) -> dict:
        warnings = counts.get("new_warnings", [])
        if send_alert:
            for alert in warning_alerts(run.run_id, warnings, int(self.spec.settings["max_alerts_per_run"])):
                send_alert(alert)
        return {"warnings_raised": len(warnings)}


MIRROR = CapacityWarningsMirror(FLOW)
