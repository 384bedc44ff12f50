"""Ship, invoice and collect what is open — runs in Tryton's venv; the demo's "business days" on a real ERP.

Everything goes through Tryton's workflow buttons (assign, pick, pack, done; post; pay), as a warehouse clerk and
an accountant would click them.
"""

from __future__ import annotations

from collections import Counter

from proteus import Model


def fulfil_open_sales(pay: bool = False) -> dict[str, int]:
    counts = {"sales_processed": 0, "shipments_done": 0, "invoices_posted": 0, "invoices_paid": 0}
    for sale in Model.get("sale.sale").find([("state", "=", "confirmed")]):  # what the queue worker would run
        sale.click("process")
        counts["sales_processed"] += 1
    for shipment in Model.get("stock.shipment.out").find([("state", "in", ["waiting", "assigned", "picked",
                                                                            "packed"])]):
        if shipment.state == "waiting":
            shipment.click("assign_try")
            if shipment.state != "assigned":
                continue  # not enough stock: it waits, as in any warehouse
        for step in ("pick", "pack", "do"):
            if shipment.state != "done":
                shipment.click(step)
        counts["shipments_done"] += 1
    for invoice in Model.get("account.invoice").find([("type", "=", "out"), ("state", "=", "draft")]):
        invoice.click("post")
        counts["invoices_posted"] += 1
        if pay:
            from include.adapters.tryton.company import post_payment

            post_payment(invoice)
            counts["invoices_paid"] += 1
    return counts


def sales_by_reference() -> dict[str, list[dict]]:
    """Tryton's sales that carry a CRM reference, as Tryton itself reports them (for tests and the demo)."""
    out: dict[str, list[dict]] = {}
    for sale in Model.get("sale.sale").find([("reference", "!=", None), ("reference", "not like", "HIST-%")]):
        out.setdefault(sale.reference, []).append({
            "number": sale.number, "state": sale.state, "shipment_state": sale.shipment_state,
            "invoice_state": sale.invoice_state, "party": sale.party.code, "total": str(sale.total_amount),
            "lines": [{"sku": ln.product.code, "quantity": ln.quantity} for ln in sale.lines if ln.product]})
    return out


def crm_summary() -> dict:
    """What the CRM put into Tryton, counted through Tryton's API (the demo's stage 2 / 3 figures)."""
    sales = sales_by_reference()
    parties = Model.get("party.identifier").find([("type", "=", None), ("code", "like", "zoho_crm:%")])
    forecasts = Model.get("stock.forecast").find([])
    return {"crm_orders": len(sales), "sales": sum(len(v) for v in sales.values()),
            "held": sum(1 for v in sales.values() for s in v if s["state"] == "quotation"),
            "states": _count(s["state"] for v in sales.values() for s in v),
            "shipments": _count(s["shipment_state"] for v in sales.values() for s in v),
            "invoices": _count(s["invoice_state"] for v in sales.values() for s in v),
            "parties_from_crm": len({i.party.id for i in parties}),
            "forecasts": _count(f.state for f in forecasts),
            "forecast_lines_active": sum(len(f.lines) for f in forecasts if f.state == "done"),
            "numbers": {ref: v[0]["number"] for ref, v in sales.items()}}


def _count(values) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))
