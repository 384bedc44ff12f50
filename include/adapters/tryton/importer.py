"""Tryton's import job for the contract's inbound tables — runs in Tryton's venv.

Rows are claimed the way the reference ERP's job claims them (``FOR UPDATE SKIP LOCKED``, oldest first), and each
document goes into Tryton through proteus — Tryton's model API with its own checks, numbering, on_change rules and
workflow — never by writing Tryton's tables. Tryton commits a document in its own transaction, so the two commits
(the document in Tryton, the row's answer) are not one: exactly-once comes from the external reference instead. A
customer carries the identifier '<source_system>:<source_id>', a sale its source id in `reference`; both are looked
up before anything is created, so a row whose answer was lost in a crash is answered "already created" on the next
pass and never creates a second document. The payload hash (in the sale's comment) tells a resend from a change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row

from include.sandbox.erp.forecast_checks import forecast_row_problems

log = logging.getLogger(__name__)

BATCH_SIZE = 200
MAX_RETRIES = 5
HASH_PREFIX = "bridge payload "
ORDER_FIELDS = ("customer_code", "customer_po_no", "order_date", "delivery_date", "currency", "prices_include_tax")
LINE_FIELDS = ("line_no", "sku", "qty", "unit_price", "discount_pct", "discount_amount", "warehouse")


class Rejected(Exception):
    """A business rule (ours or Tryton's) refused the document; the message is shown to people as is."""


class NotReady(Exception):
    """The document is not complete yet (lines still missing); try again later."""


def process_inbound(dbname: str) -> dict[str, dict[str, int]]:
    with psycopg.connect(dbname=dbname, application_name="tryton-import-job", row_factory=dict_row) as conn:
        return {"customer_in": _drain(conn, "customer_in", _post_customer),
                "sales_order_in": _drain(conn, "sales_order_in", _post_sales_order),
                "demand_forecast_in": _drain_forecasts(conn)}


def _drain(conn, table: str, post) -> dict[str, int]:
    counts = {"processed": 0, "error": 0, "retry": 0}
    seen: list[int] = []
    while True:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"""SELECT * FROM erp_inbound.{table}
                            WHERE status = 'NEW' AND (next_retry_at IS NULL OR next_retry_at <= now())
                              AND NOT (id = ANY (%s))
                            ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""", (seen, BATCH_SIZE))
            rows = cur.fetchall()
            for row in rows:
                seen.append(row["id"])
                counts[_post_one(cur, table, row, post)] += 1
        if len(rows) < BATCH_SIZE:
            return counts


def _reason(exc: Exception) -> str:
    """What Tryton (UserError / UserWarning: .message) or a rule of ours said, as people are shown it."""
    return (exc.message if hasattr(exc, "message") else str(exc)).strip()


def _post_one(cur, table: str, row: dict, post) -> str:
    from trytond.exceptions import UserError, UserWarning

    try:
        doc_no, message, extra = post(cur, row)
    except (Rejected, UserError, UserWarning) as exc:
        reason = _reason(exc)
        cur.execute(f"UPDATE erp_inbound.{table} SET status = 'ERROR', error_message = %s, processed_at = now() "
                    "WHERE id = %s", (reason, row["id"]))
        return "error"
    except NotReady as exc:
        final = row["retry_count"] + 1 >= MAX_RETRIES
        cur.execute(f"""UPDATE erp_inbound.{table}
                        SET retry_count = retry_count + 1,
                            next_retry_at = now() + make_interval(secs => 30 * power(2, retry_count)),
                            status = CASE WHEN %s THEN 'ERROR' ELSE status END, error_message = %s,
                            processed_at = CASE WHEN %s THEN now() END
                        WHERE id = %s""", (final, str(exc), final, row["id"]))
        return "error" if final else "retry"
    sets = "".join(f", {k} = %s" for k in extra)
    cur.execute(f"""UPDATE erp_inbound.{table} SET status = 'PROCESSED', erp_doc_no = %s, result_message = %s,
                        error_message = NULL, processed_at = now(){sets} WHERE id = %s""",
                (doc_no, message, *extra.values(), row["id"]))
    return "processed"


# ------------------------------------------------------------------------------------------ customers
def _source_key(row: dict) -> str:
    return f"{row['source_system']}:{row['source_id']}"


def _post_customer(cur, row: dict):
    from proteus import Model

    Party, Identifier = Model.get("party.party"), Model.get("party.identifier")
    found = Identifier.find([("type", "=", None), ("code", "=", _source_key(row))], limit=1)
    if found:
        return found[0].party.code, "already created from this source record; not created again", {}
    name = (row["customer_name"] or "").strip()
    if not name:
        raise Rejected("customer name is missing")
    uscc = (row["uscc"] or "").strip().upper() or None
    if uscc:
        same = Identifier.find([("type", "=", "cn_vat"), ("code", "=", uscc)], limit=1)
        if same:
            party = same[0].party
            party.identifiers.new(type=None, code=_source_key(row))
            party.save()
            return (party.code, f"linked to existing customer {party.code} (same unified social credit code); "
                                "not created again", {})
    party = Party(name=name)
    if uscc:
        party.identifiers.new(type="cn_vat", code=uscc)  # Tryton checks the code (python-stdnum's cn.uscc)
    party.identifiers.new(type=None, code=_source_key(row))
    if row["city"] or row["address"]:
        party.addresses[0].city = row["city"]
        party.addresses[0].street_unstructured = row["address"]
    if row["phone"]:
        party.contact_mechanisms.new(type="phone", value=row["phone"])
    if row["customer_group"]:
        group = Model.get("party.category").find([("name", "=", row["customer_group"])], limit=1)
        if not group:
            raise Rejected(f"customer group '{row['customer_group']}' does not exist")
        party.categories.append(Model.get("party.category")(group[0].id))
    if row["currency"]:
        currency = Model.get("currency.currency").find([("code", "=", row["currency"].strip().upper())], limit=1)
        if not currency:
            raise Rejected(f"currency '{row['currency']}' is not set up in the ERP")
        party.customer_currency = currency[0]
    days = row["payment_terms_days"] if row["payment_terms_days"] is not None else 30
    terms = {int(t.name.split()[1]): t for t in Model.get("account.invoice.payment_term").find(
        [("name", "like", "Net %")])}
    if days < 0:
        raise Rejected("payment terms cannot be negative")
    party.customer_payment_term = terms[min(terms, key=lambda d: abs(d - days))]
    party.save()
    return party.code, "customer created", {}


# --------------------------------------------------------------------------------------- sales orders
def _payload_hash(hdr: dict, lines: list[dict]) -> str:
    body = {"h": {k: hdr.get(k) for k in ORDER_FIELDS}, "l": [{k: ln.get(k) for k in LINE_FIELDS} for ln in lines]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _post_sales_order(cur, hdr: dict):
    from proteus import Model

    cur.execute("SELECT * FROM erp_inbound.sales_order_line_in WHERE idempotency_key = %s ORDER BY line_no",
                (hdr["idempotency_key"],))
    lines = cur.fetchall()
    if hdr["line_count"] is not None and len(lines) < hdr["line_count"]:
        raise NotReady(f"{len(lines)} of {hdr['line_count']} lines present")
    phash = _payload_hash(hdr, lines)
    Sale = Model.get("sale.sale")
    existing = Sale.find([("reference", "=", hdr["source_id"]), ("state", "!=", "cancelled")], limit=1) or \
        Sale.find([("reference", "=", hdr["source_id"])], limit=1)
    sale = existing[0] if existing else None
    action = hdr["action"]
    if action == "CREATE":
        if sale:
            if (sale.comment or "") == HASH_PREFIX + phash:
                if sale.state == "draft":  # an import killed between Tryton's save and the quote: finish it
                    return _answer(_submit(sale, cur, hdr), "order created (an interrupted import finished)")
                return _answer(sale, "already created by an earlier message; not created again")
            raise Rejected(f"order {hdr['source_id']} already exists in the ERP as {sale.number} with different "
                           "content; send the change as an amendment")
        sale = Sale()
        _fill_sale(sale, hdr, lines, phash)
        return _answer(_submit(sale, cur, hdr), "order created")
    if not sale:
        raise Rejected(f"no ERP order exists for {hdr['source_system']} reference {hdr['source_id']}")
    if action == "CANCEL":
        if sale.state == "cancelled":
            return _answer(sale, "already cancelled")
        _cancel(sale)
        return _answer(sale, "order cancelled")
    if (sale.comment or "") == HASH_PREFIX + phash:
        if sale.state == "draft":  # an amendment killed between Tryton's save and the quote: finish it
            return _answer(_submit(sale, cur, hdr), "order amended (an interrupted import finished)")
        return _answer(sale, "no change against the ERP order")
    _back_to_draft(sale, "amended")
    _fill_sale(sale, hdr, lines, phash)
    return _answer(_submit(sale, cur, hdr), "order amended")


def _fill_sale(sale, hdr: dict, lines: list[dict], phash: str) -> None:
    from proteus import Model

    # every check before anything changes: a refused amendment leaves the Tryton sale as it was
    products = {p.code: p for p in Model.get("product.product").find(
        [("code", "in", [ln["sku"] for ln in lines])])}
    errors = [f"line {ln['line_no']}: item '{ln['sku']}' does not exist" for ln in lines
              if ln["sku"] not in products]
    errors += [f"line {ln['line_no']}: quantity must be positive" for ln in lines if not ln["qty"] or ln["qty"] <= 0]
    party = Model.get("party.party").find([("code", "=", hdr["customer_code"])], limit=1)
    if not party:
        errors.append(f"customer '{hdr['customer_code']}' does not exist in the ERP")
    currency = Model.get("currency.currency").find([("code", "=", hdr["currency"])], limit=1) \
        if hdr["currency"] else None
    if hdr["currency"] and not currency:
        errors.append(f"currency '{hdr['currency']}' is not set up in the ERP")
    if not lines:
        errors.append("the order has no lines")
    if errors:
        raise Rejected("; ".join(errors))
    if sale.id and sale.id > 0 and sale.lines:  # an amendment: the new lines replace the old ones
        Model.get("sale.line").delete(list(sale.lines))
        sale.reload()
    sale.party = party[0]
    sale.reference, sale.description = hdr["source_id"], hdr["customer_po_no"]
    sale.comment = HASH_PREFIX + phash
    sale.sale_date, sale.shipping_date = hdr["order_date"], hdr["delivery_date"]
    if currency:
        sale.currency = currency[0]
    warehouses = {w.code: w for w in Model.get("stock.location").find([("type", "=", "warehouse")])}
    sale.warehouse = warehouses.get(next((ln["warehouse"] for ln in lines if ln["warehouse"]), None)) or \
        warehouses["SH01"]
    for ln in lines:
        product = products[ln["sku"]]
        line = sale.lines.new()  # attribute by attribute: each runs Tryton's on_change (unit, taxes, price)
        line.product = product
        line.quantity = float(ln["qty"])
        if ln["unit_price"] is not None:
            line.unit_price = _net_unit_price(ln, hdr["prices_include_tax"], line)


def _net_unit_price(ln: dict, prices_include_tax: bool, line) -> Decimal:
    """Tryton's sale line has one unit price, tax excluded: the discount and an included tax are taken out."""
    qty = Decimal(ln["qty"])
    gross = Decimal(ln["unit_price"]) * qty
    discount = Decimal(ln["discount_amount"]) if ln["discount_amount"] is not None else \
        gross * Decimal(ln["discount_pct"] or 0) / 100
    net = gross - discount
    if prices_include_tax:
        rate = sum((t.rate for t in line.taxes), Decimal(0))
        net = net / (1 + rate)
    return (net / qty).quantize(Decimal("0.0001"))


def _submit(sale, cur, hdr: dict):
    """Quote, then confirm unless the customer's credit does not cover the order (the quotation is the hold) —
    an approval recorded in the CRM (credit_approved_by) releases it."""
    sale.save()
    sale.click("quote")
    cur.execute("SELECT credit_available, hold_reason FROM erp_api.customer_credit WHERE customer_code = %s",
                (hdr["customer_code"],))
    credit = cur.fetchone()
    over_limit = credit and credit["credit_available"] is not None and credit["credit_available"] < 0
    if (over_limit or (credit and credit["hold_reason"] == "OVERDUE")) and not hdr["credit_approved_by"]:
        return sale
    sale.click("confirm")
    return sale


def _back_to_draft(sale, what: str) -> None:
    if sale.state in ("quotation", "confirmed"):
        sale.click("draft")
    elif sale.state != "draft":
        raise Rejected(f"order {sale.number} is {sale.state} in Tryton and cannot be {what}; "
                       "change it in Tryton by hand")


def _cancel(sale) -> None:
    if sale.state == "processing" and not any(s.state == "done" for s in sale.shipments):
        # nothing has left the warehouse: cancel its shipments and draft invoices, then let Tryton close the sale
        for shipment in sale.shipments:
            shipment.click("cancel")
        for invoice in sale.invoices:
            if invoice.state in ("draft", "validated"):
                invoice.click("cancel")
        sale.reload()
        if sale.state == "processing":
            raise Rejected(f"order {sale.number} is being processed in Tryton and cannot be cancelled")
        return
    _back_to_draft(sale, "cancelled")
    sale.click("cancel")


def _answer(sale, message: str):
    sale.reload()
    held = sale.state == "quotation"
    status = {"draft": "DRAFT", "quotation": "ON_HOLD", "confirmed": "OPEN", "processing": "OPEN",
              "done": "COMPLETED", "cancelled": "CANCELLED"}[sale.state]
    extra = {"erp_status": status, "hold_reason": "LIMIT_EXCEEDED" if held else None}
    return sale.number, message + ("; on credit hold until approved" if held else ""), extra


# ------------------------------------------------------------------------------------------ forecasts
def _drain_forecasts(conn) -> dict[str, int]:
    """A complete batch becomes one Tryton stock forecast per warehouse and period, done (= active); the forecasts
    of an earlier batch for the same horizon are cancelled, so a new version replaces the old one as a whole. If
    Tryton refuses any of it, the earlier version is put back and every row of the batch is answered with the reason.
    (A crash after Tryton confirmed and before the rows' answer is committed leaves a version the next pass over the
    same batch cancels as "earlier": the forecast converges to one active version.)"""
    from proteus import Model
    from trytond.exceptions import UserError, UserWarning

    counts = {"processed": 0, "error": 0, "retry": 0}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("""SELECT batch_id FROM erp_inbound.demand_forecast_in WHERE status = 'NEW'
                       GROUP BY batch_id HAVING count(*) = max(batch_row_count) ORDER BY min(id)""")
        for batch in [r["batch_id"] for r in cur.fetchall()]:
            cur.execute("SELECT * FROM erp_inbound.demand_forecast_in WHERE batch_id = %s AND status = 'NEW' "
                        "ORDER BY id FOR UPDATE SKIP LOCKED", (batch,))
            rows = cur.fetchall()
            products = {p.code: p for p in Model.get("product.product").find(
                [("code", "in", sorted({r["sku"] for r in rows if r["sku"]}))])}
            warehouses = {w.code: w for w in Model.get("stock.location").find([("type", "=", "warehouse")])}
            bad = _forecast_row_errors(rows, products, warehouses)
            if bad:  # one invalid row rejects the batch, as the contract says
                _answer_forecast_rows(cur, rows, bad, None)
                counts["error"] += len(rows)
                continue
            Forecast = Model.get("stock.forecast")
            earlier = Forecast.find([("state", "=", "done"), ("from_date", ">=", rows[0]["horizon_start"]),
                                     ("to_date", "<=", rows[0]["horizon_end"])])
            created = []
            try:
                for old in earlier:  # first: Tryton refuses two active forecasts over the same dates
                    _forecast_to(old, "cancelled")
                # ORDERS rows are sales already in Tryton: they are demand there, not again as forecast
                for forecast in _forecasts(Model, [r for r in rows if r["demand_type"] == "PIPELINE"], products,
                                           warehouses):
                    created.append(forecast)
                    forecast.click("confirm")
            except (UserError, UserWarning) as exc:
                for forecast in (f for f in created if f.id > 0):  # saved ones; an unsaved one is nothing
                    _forecast_to(forecast, "cancelled")
                for old in earlier:  # the earlier version stays the active one
                    old.reload()
                    _forecast_to(old, "done")
                refused = f"forecast refused by Tryton: {_reason(exc)}"
                _answer_forecast_rows(cur, rows, {r["id"]: refused for r in rows}, None)
                counts["error"] += len(rows)
                continue
            # the version is the set of Tryton forecasts it became (erp_api.forecast_versions groups them back)
            version = "FC-" + ",".join(str(f.id) for f in created) if created else None
            _answer_forecast_rows(cur, rows, {}, version)
            counts["processed"] += len(rows)
    return counts


def _forecast_row_errors(rows: list[dict], products: dict, warehouses: dict) -> dict[int, str]:
    """The reference ERP's checks of a forecast row, by row id (an empty dict: the batch is valid)."""
    return {r["id"]: "; ".join(problems) for r in rows
            if (problems := forecast_row_problems(r, rows[0], products, warehouses))}


def _answer_forecast_rows(cur, rows: list[dict], errors: dict[int, str], version: str | None) -> None:
    """The whole batch answered: PROCESSED with the version, or (any error) every row ERROR with its reason."""
    if not errors:
        cur.execute("UPDATE erp_inbound.demand_forecast_in SET status = 'PROCESSED', erp_doc_no = %s, "
                    "processed_at = now() WHERE id = ANY (%s)", (version, [r["id"] for r in rows]))
        return
    cur.executemany("UPDATE erp_inbound.demand_forecast_in SET status = 'ERROR', error_message = %s, "
                    "processed_at = now() WHERE id = %s",
                    [(errors.get(r["id"]) or f"batch rejected: {len(errors)} other rows are invalid", r["id"])
                     for r in rows])


def _ceil_to(qty: float, rounding: float, digits: int) -> float:
    """Tryton's Uom.ceil (a server method proteus does not expose): up to the next multiple of the rounding."""
    return round(math.ceil(round(qty / rounding, 9)) * rounding, digits)


def _forecast_to(forecast, state: str) -> None:
    """Tryton's forecast workflow: draft -> done / cancelled, and both back to draft only."""
    if forecast.state != state:
        if forecast.state != "draft":
            forecast.click("draft")
        forecast.click("confirm" if state == "done" else "cancel")


def _forecasts(Model, rows: list[dict], products: dict, warehouses: dict) -> list:
    """Unsaved Tryton forecasts for the rows: one per warehouse and period, each ending the day before the
    warehouse's next period (Tryton refuses overlapping forecasts) and the last one at the horizon's end."""
    import datetime as dt

    customers, = Model.get("stock.location").find([("type", "=", "customer")], limit=1)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["warehouse"] or "SH01", r["period_start"]), []).append(r)
    out = []
    for (warehouse, period), items in sorted(groups.items()):
        later = [p for w, p in groups if w == warehouse and p > period]
        end = min(later) - dt.timedelta(days=1) if later else max(r["horizon_end"] for r in items)
        forecast = Model.get("stock.forecast")(warehouse=warehouses.get(warehouse, warehouses["SH01"]),
                                               from_date=period, to_date=end, destination=customers)
        qty: dict[str, float] = {}  # Tryton: one line per product; the contract's rows split it by region / type
        for r in items:
            qty[r["sku"]] = qty.get(r["sku"], 0.0) + float(r["qty"])
        for sku, total in sorted(qty.items()):
            line = forecast.lines.new(product=products[sku])
            # a pipeline forecast is weighted (21.7 units); Tryton keeps quantities to the unit's rounding, so it
            # is rounded up there: planning for a part unit more, not less
            line.quantity = _ceil_to(total, line.unit.rounding, line.unit.digits)
        out.append(forecast)
    return out


if __name__ == "__main__":  # pragma: no cover - `python -m include.adapters.tryton import` is the entry point
    print(process_inbound(os.environ["ERP_DB"]))
