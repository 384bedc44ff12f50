"""Flow erp_stock_to_crm: ERP stock availability -> CRM Products (stage 1).

The mirror path of include/bridge/mirror.py, mapped by include/mappings/erp_stock_to_crm.yaml:
every warehouse row of each SKU that changed is staged and gated (negative quantities, unknown SKUs,
unknown warehouses are quarantined), then the per-SKU totals, the 14-day projection and the per-warehouse
detail go to the linked CRM product — only for products whose figures changed. Products that fell below
safety stock in this run raise one business alert.
"""

from __future__ import annotations

from include.bridge import mirror
from include.bridge.alerts import Alert

FLOW = "erp_stock_to_crm"


def spec() -> mirror.Mirror:
    return mirror.load(FLOW)


def mapping() -> dict:
    return spec().spec


def fell_below_safety(bridge, batch_id: str) -> dict:
    """Products this batch takes below safety stock (they were not below in what the CRM shows)."""
    with bridge.cursor() as cur:
        cur.execute("""SELECT q.business_key FROM bridge.load_queue q
                       LEFT JOIN bridge.synced_state s ON s.flow = q.flow AND s.business_key = q.business_key
                       WHERE q.batch_id = %s AND q.status = 'loaded' AND (q.values ->> 'Below_Safety_Stock')::boolean
                         AND NOT coalesce((s.values ->> 'Below_Safety_Stock')::boolean, false)
                       ORDER BY 1""", (batch_id,))
        return {"fell_below_safety": [r[0] for r in cur.fetchall()]}


def safety_alert(run_id: str, skus: list[str]) -> Alert | None:
    if not skus or not mapping()["settings"].get("alert_below_safety_stock"):
        return None
    shown = ", ".join(skus[:20]) + (f" and {len(skus) - 20} more" if len(skus) > 20 else "")
    return Alert(kind="business", flow=FLOW, run_id=run_id, event_key="below_safety_stock",
                 title=f"{len(skus)} products fell below safety stock", lines=[shown])


class StockMirror(mirror.ProductMirror):
    def parameters(self, systems) -> dict:
        return {"warehouses": mirror.erp_values(systems, "SELECT code FROM erp_api.warehouses WHERE is_active")}

    def before_finish(self, bridge, batch_id: str) -> dict:
        return fell_below_safety(bridge, batch_id)

    def after_finish(self, systems, run, counts: dict, send_alert) -> dict:
        below = counts.get("fell_below_safety", [])
        alert = safety_alert(run.run_id, below)
        if alert and send_alert:
            send_alert(alert)
        return super().after_finish(systems, run, counts, send_alert) | {"below_safety": len(below)}


MIRROR = StockMirror(FLOW)
