"""The sandbox ERP's own import job: drains erp_inbound the way real 中间表 jobs do.

Rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` so several job instances never take the
same row. Each document is posted inside a savepoint: a business rejection marks the row ERROR with a
reason a person can read; an unexpected database error rolls back that document only and schedules a
retry (retry_count / next_retry_at). Documents are looked up by their external reference
(source_system + source_id) before anything is created, so a resent row never creates a second one;
a payload hash tells a true resend from a changed document.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

import psycopg2
import psycopg2.extras

from include.bridge.uscc import is_valid_uscc
from include.sandbox.erp import planner
from include.sandbox.erp.forecast_checks import forecast_row_problems

log = logging.getLogger(__name__)

BATCH_SIZE = 200
MAX_RETRIES = 5
CENT = Decimal("0.01")


class Rejected(Exception):
    """A business rule rejected the document; the message is shown to people as is."""


class NotReady(Exception):
    """The document is not complete yet (e.g. lines still missing); try again later."""


@dataclass
class Outcome:
    doc_no: str
    message: str | None = None
    extra: dict = field(default_factory=dict)


def money(value) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def payload_hash(header: dict, lines: list[dict], fields: tuple[str, ...], line_fields: tuple[str, ...]) -> str:
    body = {
        "h": {k: header.get(k) for k in fields},
        "l": [{k: ln.get(k) for k in line_fields} for ln in lines],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------- driver
def process_inbound(conn, batch_size: int = BATCH_SIZE) -> dict[str, dict[str, int]]:
    """Process every claimable NEW row of every inbound table; returns counts per table and outcome."""
    return {
        "customer_in": _drain(conn, "customer_in", _post_customer, batch_size),
        "sales_order_in": _drain(conn, "sales_order_in", _post_sales_order, batch_size),
        "demand_forecast_in": process_forecasts(conn),
    }


def _drain(conn, table: str, post, batch_size: int) -> dict[str, int]:
    counts = {"processed": 0, "error": 0, "retry": 0}
    seen: set[int] = set()  # each row at most once per run, even one left NEW for a retry
    while True:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(
                f"""SELECT * FROM erp_inbound.{table}
                    WHERE status = 'NEW' AND (next_retry_at IS NULL OR next_retry_at <= now())
                      AND NOT (id = ANY (%s))
                    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""",
                (list(seen), batch_size),
            )
            rows = cur.fetchall()
            for row in rows:
                seen.add(row["id"])
                counts[_post_one(cur, table, row, post)] += 1
        conn.commit()
        if len(rows) < batch_size:
            return counts


def _post_one(cur, table: str, row: dict, post) -> str:
    cur.execute("SAVEPOINT doc")
    try:
        outcome: Outcome = post(cur, row)
    except Rejected as exc:
        cur.execute("ROLLBACK TO SAVEPOINT doc")
        cur.execute(
            f"""UPDATE erp_inbound.{table} SET status = 'ERROR', error_message = %s, processed_at = now()
                WHERE id = %s""",
            (str(exc), row["id"]),
        )
        return "error"
    except (NotReady, psycopg2.Error) as exc:
        cur.execute("ROLLBACK TO SAVEPOINT doc")
        final = row["retry_count"] + 1 >= MAX_RETRIES
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("%s id=%s not posted (attempt %s): %s", table, row["id"], row["retry_count"] + 1, reason)
        cur.execute(
            f"""UPDATE erp_inbound.{table}
                SET retry_count = retry_count + 1,
                    next_retry_at = now() + make_interval(secs => 30 * power(2, retry_count)),
                    status = CASE WHEN %s THEN 'ERROR' ELSE status END,
                    error_message = %s,
                    processed_at = CASE WHEN %s THEN now() END
                WHERE id = %s""",
            (final, f"gave up after {MAX_RETRIES} attempts: {reason}" if final else reason, final, row["id"]),
        )
        return "error" if final else "retry"
    cur.execute("RELEASE SAVEPOINT doc")
    sets = "".join(f", {k} = %s" for k in outcome.extra)
    cur.execute(
        f"""UPDATE erp_inbound.{table}
            SET status = 'PROCESSED', erp_doc_no = %s, result_message = %s, error_message = NULL,
                processed_at = now(){sets}
            WHERE id = %s""",
        (outcome.doc_no, outcome.message, *outcome.extra.values(), row["id"]),
    )
    return "processed"


def _setting(cur, key: str, default: str) -> str:
    cur.execute("SELECT value FROM erp.setting WHERE key = %s", (key,))
    found = cur.fetchone()
    return found["value"] if found else default


# ------------------------------------------------------------------------------------------ customers
def _post_customer(cur, row: dict) -> Outcome:
    cur.execute(
        "SELECT customer_code FROM erp.customer WHERE source_system = %s AND source_id = %s",
        (row["source_system"], row["source_id"]),
    )
    found = cur.fetchone()
    if found:
        return Outcome(found["customer_code"], "already created from this source record; not created again")

    errors = []
    name = (row["customer_name"] or "").strip()
    if not name:
        errors.append("customer name is missing")
    uscc = (row["uscc"] or "").strip().upper() or None
    if uscc and not is_valid_uscc(uscc):
        errors.append(f"unified social credit code '{row['uscc']}' is not valid (18 characters, check digit)")
    cur.execute("SELECT code FROM erp.currency WHERE is_home")
    home = cur.fetchone()["code"]
    currency = (row["currency"] or home).strip().upper()
    cur.execute("SELECT 1 FROM erp.currency WHERE code = %s", (currency,))
    if not cur.fetchone():
        errors.append(f"currency '{currency}' is not set up in the ERP")
    group = row["customer_group"] or _setting(cur, "default_customer_group", "SME")
    cur.execute("SELECT 1 FROM erp.customer_group WHERE code = %s", (group,))
    if not cur.fetchone():
        errors.append(f"customer group '{group}' does not exist")
    terms = row["payment_terms_days"] if row["payment_terms_days"] is not None else 30
    if terms < 0:
        errors.append("payment terms cannot be negative")
    if errors:
        raise Rejected("; ".join(errors))

    if uscc:
        cur.execute("SELECT customer_code, source_id FROM erp.customer WHERE uscc = %s FOR UPDATE", (uscc,))
        same = cur.fetchone()
        if same:
            if same["source_id"] is None:  # link the existing customer to this source record
                cur.execute(
                    "UPDATE erp.customer SET source_system = %s, source_id = %s, updated_at = now() "
                    "WHERE customer_code = %s",
                    (row["source_system"], row["source_id"], same["customer_code"]),
                )
            return Outcome(
                same["customer_code"],
                f"linked to existing customer {same['customer_code']} (same unified social credit code); "
                "not created again",
            )

    cur.execute("SELECT 'C' || lpad(n::text, greatest(5, length(n::text)), '0') AS code "
                "FROM nextval('erp.customer_seq') AS n")
    code = cur.fetchone()["code"]
    cur.execute(
        """INSERT INTO erp.customer (customer_code, customer_name, customer_name_en, uscc, customer_group,
               region, city, address, phone, currency, payment_terms_days, source_system, source_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (code, name, row["customer_name_en"], uscc, group, row["region"] or "Unassigned", row["city"],
         row["address"], row["phone"], currency, terms, row["source_system"], row["source_id"]),
    )
    cur.execute("SELECT erp.refresh_customer_credit(ARRAY[%s])", (code,))
    return Outcome(code, "customer created")


# --------------------------------------------------------------------------------------- sales orders
ORDER_FIELDS = ("customer_code", "customer_po_no", "order_date", "delivery_date", "currency", "exchange_rate",
                "prices_include_tax", "is_prepaid")
LINE_FIELDS = ("line_no", "sku", "qty", "uom", "unit_price", "discount_pct", "discount_amount", "tax_rate",
               "warehouse", "delivery_date")


def _post_sales_order(cur, hdr: dict) -> Outcome:
    cur.execute(
        "SELECT * FROM erp_inbound.sales_order_line_in WHERE idempotency_key = %s ORDER BY line_no",
        (hdr["idempotency_key"],),
    )
    lines = cur.fetchall()
    if hdr["line_count"] is not None and len(lines) < hdr["line_count"]:
        raise NotReady(f"{len(lines)} of {hdr['line_count']} lines present")
    phash = payload_hash(hdr, lines, ORDER_FIELDS, LINE_FIELDS)
    cur.execute(
        """SELECT o.so_no, o.payload_hash, o.status,
                  (SELECT coalesce(sum(delivered_qty), 0) FROM erp.sales_order_line l WHERE l.so_no = o.so_no)
                      AS delivered
           FROM erp.sales_order o WHERE o.source_system = %s AND o.source_id = %s FOR UPDATE""",
        (hdr["source_system"], hdr["source_id"]),
    )
    existing = cur.fetchone()
    action = hdr["action"]

    if action == "CREATE":
        if existing:
            if existing["payload_hash"] == phash:
                return _order_outcome(cur, existing["so_no"],
                                      "already created by an earlier message; not created again")
            raise Rejected(
                f"order {hdr['source_id']} already exists in the ERP as {existing['so_no']} with different "
                "content; send the change as an amendment"
            )
        order = _validate_order(cur, hdr, lines)
        so_no = _next_no(cur, "SO", "erp.so_seq")
        _write_order(cur, so_no, hdr, order, phash, new=True)
        return _order_outcome(cur, so_no, "order created")

    if not existing:
        raise Rejected(f"no ERP order exists for {hdr['source_system']} reference {hdr['source_id']}")
    so_no = existing["so_no"]
    if action == "CANCEL":
        if existing["status"] == "Cancelled":
            return _order_outcome(cur, so_no, "already cancelled")
        if existing["delivered"] > 0:
            raise Rejected(f"order {so_no} has already shipped goods; cancelling it needs a return order")
        _cancel_order(cur, so_no)
        return _order_outcome(cur, so_no, "order cancelled")

    # AMEND
    if existing["status"] in ("Cancelled", "Closed", "Completed"):
        raise Rejected(f"order {so_no} is {existing['status'].lower()} and cannot be amended")
    if existing["delivered"] > 0:
        raise Rejected(f"order {so_no} has already shipped goods; amend it in the ERP by hand")
    if existing["payload_hash"] == phash:
        return _order_outcome(cur, so_no, "no change against the ERP order")
    order = _validate_order(cur, hdr, lines)
    _release_order(cur, so_no)
    cur.execute("DELETE FROM erp.sales_order_line WHERE so_no = %s", (so_no,))
    _write_order(cur, so_no, hdr, order, phash, new=False)
    return _order_outcome(cur, so_no, "order amended")


def _next_no(cur, prefix: str, seq: str) -> str:
    cur.execute("SELECT erp.doc_no(%s, %s) AS no", (prefix, seq))
    return cur.fetchone()["no"]


def _validate_order(cur, hdr: dict, lines: list[dict]) -> dict:
    """Check the document against master data; returns it normalized, or raises Rejected with every problem."""
    errors: list[str] = []
    cur.execute("SELECT erp.today() AS today, (SELECT code FROM erp.currency WHERE is_home) AS home")
    ctx = cur.fetchone()
    customer = _order_customer(cur, hdr, errors)
    currency, rate = _order_currency(cur, hdr, ctx["home"], errors)
    order_date = hdr["order_date"] or ctx["today"]
    delivery_date = hdr["delivery_date"] or order_date
    if delivery_date < order_date:
        errors.append(f"delivery date {delivery_date} is before the order date {order_date}")
    if not lines:
        errors.append("the order has no lines")
    master = _line_master_data(cur, sorted({ln["sku"] for ln in lines if ln["sku"]}))
    out_lines = []
    for ln in lines:
        line = _validate_line(ln, hdr, master, delivery_date, errors)
        if line is not None and not errors:
            out_lines.append(line)
    if errors:
        raise Rejected("; ".join(errors))
    net = sum((ln["net_amount"] for ln in out_lines), Decimal(0))
    tax = sum((ln["tax_amount"] for ln in out_lines), Decimal(0))
    return {"customer": customer, "currency": currency, "rate": rate, "order_date": order_date,
            "delivery_date": delivery_date, "lines": out_lines, "net": net, "tax": tax, "grand": net + tax}


def _order_customer(cur, hdr: dict, errors: list[str]) -> dict | None:
    cur.execute("SELECT * FROM erp.customer WHERE customer_code = %s", (hdr["customer_code"],))
    customer = cur.fetchone()
    if not hdr["customer_code"]:
        errors.append("customer code is missing")
    elif not customer:
        errors.append(f"unknown customer '{hdr['customer_code']}'")
    elif not customer["is_active"]:
        errors.append(f"customer {hdr['customer_code']} is disabled")
    return customer


def _order_currency(cur, hdr: dict, home: str, errors: list[str]) -> tuple[str, Decimal]:
    """(currency, exchange rate to the home currency)."""
    currency = (hdr["currency"] or "").strip().upper()
    rate = Decimal(1)
    if not currency:
        errors.append("currency is missing")
        return currency, rate
    cur.execute("SELECT is_home FROM erp.currency WHERE code = %s", (currency,))
    cur_row = cur.fetchone()
    if not cur_row:
        errors.append(f"currency '{currency}' is not set up in the ERP")
    elif not cur_row["is_home"]:
        if hdr["exchange_rate"] is None or hdr["exchange_rate"] <= 0:
            errors.append(f"exchange rate to {home} is missing for an order in {currency}")
        else:
            rate = Decimal(hdr["exchange_rate"])
    return currency, rate


def _line_master_data(cur, skus: list[str]) -> dict:
    """Items, unit conversions, tax rates, warehouses and the default warehouse the lines are checked against."""
    cur.execute(
        "SELECT sku, stock_uom, is_active, is_stock_item, is_manufactured FROM erp.item WHERE sku = ANY (%s)",
        (skus,),
    )
    items = {r["sku"]: r for r in cur.fetchall()}
    cur.execute("SELECT sku, uom, factor FROM erp.uom_conversion WHERE sku = ANY (%s)", (skus,))
    factors = {(r["sku"], r["uom"]): r["factor"] for r in cur.fetchall()}
    cur.execute("SELECT rate FROM erp.tax_rate")
    tax_rates = {r["rate"] for r in cur.fetchall()}
    cur.execute("SELECT code FROM erp.warehouse WHERE is_active")
    warehouses = {r["code"] for r in cur.fetchall()}
    return {"items": items, "factors": factors, "tax_rates": tax_rates, "warehouses": warehouses,
            "default_wh": _setting(cur, "default_warehouse", "SH01")}


def _validate_line(ln: dict, hdr: dict, master: dict, delivery_date, errors: list[str]) -> dict | None:
    """One line checked (problems appended to `errors`) and normalized to stock units and net prices."""
    where = f"line {ln['line_no']}"
    item = master["items"].get(ln["sku"])
    if not ln["sku"]:
        errors.append(f"{where}: SKU is missing")
    elif not item:
        errors.append(f"{where}: unknown SKU '{ln['sku']}'")
    elif not item["is_active"]:
        errors.append(f"{where}: SKU {ln['sku']} is discontinued")
    qty, price = ln["qty"], ln["unit_price"]
    if qty is None or qty <= 0:
        errors.append(f"{where}: quantity must be greater than 0 (got {qty})")
    if price is None or price < 0:
        errors.append(f"{where}: unit price is missing or negative")
    disc = ln["discount_pct"] if ln["discount_pct"] is not None else Decimal(0)
    amount = ln.get("discount_amount")
    if amount is None and not 0 <= disc <= 100:
        errors.append(f"{where}: discount {disc}% is outside 0-100%")
    if ln["tax_rate"] is None or ln["tax_rate"] not in master["tax_rates"]:
        allowed = ", ".join(f"{r.normalize()}%" for r in sorted(master["tax_rates"]))
        errors.append(f"{where}: tax rate {ln['tax_rate']} is not allowed (allowed: {allowed})")
    wh = ln["warehouse"] or master["default_wh"]
    if wh not in master["warehouses"]:
        errors.append(f"{where}: unknown warehouse '{wh}'")
    factor = Decimal(1)
    if item:
        uom = ln["uom"] or item["stock_uom"]
        if uom != item["stock_uom"]:
            if (ln["sku"], uom) not in master["factors"]:
                errors.append(f"{where}: unit '{uom}' is not defined for {ln['sku']}")
            else:
                factor = master["factors"][(ln["sku"], uom)]
    expected = None
    if qty is not None and price is not None and qty > 0 and price >= 0:
        expected, disc = _line_amount(where, qty * price, disc, amount, ln["line_total"], errors)
    if errors:
        return None
    net_price = price / (1 + ln["tax_rate"] / 100) if hdr["prices_include_tax"] else price
    net_amount = money(expected / (1 + ln["tax_rate"] / 100)) if hdr["prices_include_tax"] else expected
    return {
        "line_no": ln["line_no"], "sku": ln["sku"], "warehouse": wh, "qty": qty * factor,
        "uom": ln["uom"] or item["stock_uom"], "uom_factor": factor,
        "unit_price": (net_price / factor).quantize(Decimal("0.0001")), "discount_pct": disc,
        "tax_rate": ln["tax_rate"], "net_amount": net_amount,
        "tax_amount": money(net_amount * ln["tax_rate"] / 100),
        "delivery_date": ln["delivery_date"] or delivery_date,
        "is_stock_item": item["is_stock_item"], "is_manufactured": item["is_manufactured"],
    }


def _line_amount(where: str, gross: Decimal, disc: Decimal, amount: Decimal | None, line_total,
                 errors: list[str]) -> tuple[Decimal, Decimal]:
    """(the line's amount, its discount %). A discount sent as an amount is taken as it is: the line is exactly
    money(qty x price - amount) and a line_total sent with it must equal that to the cent (an amount turned into a
    rounded % would move the total by cents, or by more on a large line). A % discount: within 0.01."""
    if amount is not None:
        if not 0 <= amount <= gross:
            errors.append(f"{where}: discount amount {amount} is outside 0 - {money(gross)} (the line's gross)")
        expected = money(gross - amount)
        pct = min(max((amount / gross * 100).quantize(CENT, rounding=ROUND_HALF_UP), Decimal(0)), Decimal(100)) \
            if gross else Decimal(0)
        if line_total is not None and Decimal(line_total) != expected:
            errors.append(f"{where}: line total {line_total} does not match quantity x price - discount = {expected}")
        return expected, pct
    expected = money(gross * (1 - disc / 100))
    if line_total is not None and abs(Decimal(line_total) - expected) > CENT:
        errors.append(f"{where}: line total {line_total} does not match quantity x price x (1 - discount) "
                      f"= {expected}")
    return expected, disc


def _credit_hold(cur, hdr: dict, order: dict, exclude_so: str | None) -> str | None:
    """ERPNext-style credit check at submit; an approval recorded upstream overrides it."""
    if hdr["credit_approved_by"]:
        return None
    code = order["customer"]["customer_code"]
    cur.execute("SELECT erp.refresh_customer_credit(ARRAY[%s])", (code,))
    cur.execute("SELECT * FROM erp.customer_credit_summary WHERE customer_code = %s", (code,))
    credit = cur.fetchone()
    if credit["hold_reason"] == "MANUAL":
        return "MANUAL"
    block_days = int(_setting(cur, "overdue_block_days", "60"))
    if credit["max_overdue_days"] > block_days and not hdr["is_prepaid"]:
        return "OVERDUE"
    exposure = credit["open_ar"] + credit["open_orders"] + money(order["grand"] * order["rate"])
    if exclude_so:  # an amendment replaces the order's own open value
        cur.execute(
            """SELECT coalesce(sum(round(net_amount * (qty - billed_qty) / qty
                                         * (1 + tax_rate / 100), 2)), 0) * max(o.exchange_rate) AS own
               FROM erp.sales_order_line JOIN erp.sales_order o USING (so_no)
               WHERE so_no = %s AND o.status <> 'On Hold'""",
            (exclude_so,),
        )
        exposure -= cur.fetchone()["own"] or 0
    if (not order["customer"]["bypass_credit_check"] and not hdr["is_prepaid"]
            and exposure > credit["credit_limit"]):
        return "LIMIT_EXCEEDED"
    return None


def _write_order(cur, so_no: str, hdr: dict, order: dict, phash: str, new: bool) -> None:
    hold = _credit_hold(cur, hdr, order, exclude_so=None if new else so_no)
    status = "On Hold" if hold else "To Deliver and Bill"
    values = (order["customer"]["customer_code"], order["order_date"], order["delivery_date"], order["currency"],
              order["rate"], status, hold, hdr["is_prepaid"], hdr["credit_approved_by"], hdr["customer_po_no"],
              phash, order["net"], order["tax"], order["grand"])
    if new:
        cur.execute(
            """INSERT INTO erp.sales_order (customer_code, order_date, delivery_date, currency, exchange_rate,
                   status, hold_reason, is_prepaid, credit_override_by, customer_po_no, payload_hash,
                   net_total, tax_total, grand_total, so_no, source_system, source_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            values + (so_no, hdr["source_system"], hdr["source_id"]),
        )
    else:
        cur.execute(
            """UPDATE erp.sales_order SET customer_code = %s, order_date = %s, delivery_date = %s, currency = %s,
                   exchange_rate = %s, status = %s, hold_reason = %s, is_prepaid = %s, credit_override_by = %s,
                   customer_po_no = %s, payload_hash = %s, net_total = %s, tax_total = %s, grand_total = %s,
                   updated_at = now()
               WHERE so_no = %s""",
            values + (so_no,),
        )
    psycopg2.extras.execute_values(
        cur,
        """INSERT INTO erp.sales_order_line (so_no, line_no, sku, warehouse, qty, uom, uom_factor, unit_price,
               discount_pct, tax_rate, net_amount, delivery_date) VALUES %s""",
        [(so_no, ln["line_no"], ln["sku"], ln["warehouse"], ln["qty"], ln["uom"], ln["uom_factor"],
          ln["unit_price"], ln["discount_pct"], ln["tax_rate"], ln["net_amount"], ln["delivery_date"])
         for ln in order["lines"]],
    )
    if not hold:
        _reserve(cur, so_no, order["lines"])
    skus = sorted({ln["sku"] for ln in order["lines"]})
    cur.execute("SELECT erp.refresh_bins(%s)", (skus,))
    cur.execute("SELECT erp.refresh_customer_credit(ARRAY[%s])", (order["customer"]["customer_code"],))


def _reserve(cur, so_no: str, lines: list[dict]) -> None:
    """Reserve what is available now; the shortfall becomes production or purchase demand."""
    for ln in sorted(lines, key=lambda x: (x["sku"], x["warehouse"])):  # fixed lock order: no deadlocks
        if not ln["is_stock_item"]:
            continue
        cur.execute("INSERT INTO erp.bin (sku, warehouse) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (ln["sku"], ln["warehouse"]))
        cur.execute("SELECT actual_qty - reserved_qty AS available FROM erp.bin "
                    "WHERE sku = %s AND warehouse = %s FOR UPDATE", (ln["sku"], ln["warehouse"]))
        available = max(cur.fetchone()["available"], Decimal(0))
        take = min(ln["qty"], available)
        if take > 0:
            cur.execute("UPDATE erp.sales_order_line SET reserved_qty = %s WHERE so_no = %s AND line_no = %s",
                        (take, so_no, ln["line_no"]))
            cur.execute("UPDATE erp.bin SET reserved_qty = reserved_qty + %s WHERE sku = %s AND warehouse = %s",
                        (take, ln["sku"], ln["warehouse"]))
        short = ln["qty"] - take
        if short > 0:
            cur.execute(
                """INSERT INTO erp.material_request (mr_no, sku, warehouse, qty, request_type, reason, so_no,
                       required_by)
                   VALUES (erp.doc_no('MR', 'erp.mr_seq'),
                           %s, %s, %s, %s, 'SO_SHORTAGE', %s, %s)""",
                (ln["sku"], ln["warehouse"], short, "Manufacture" if ln["is_manufactured"] else "Purchase",
                 so_no, ln["delivery_date"]),
            )


def _release_order(cur, so_no: str) -> None:
    cur.execute("UPDATE erp.sales_order_line SET reserved_qty = 0 WHERE so_no = %s", (so_no,))
    cur.execute("UPDATE erp.material_request SET status = 'Cancelled' WHERE so_no = %s AND status = 'Pending'",
                (so_no,))


def _cancel_order(cur, so_no: str) -> None:
    _release_order(cur, so_no)
    cur.execute("UPDATE erp.sales_order SET status = 'Cancelled', hold_reason = NULL, updated_at = now() "
                "WHERE so_no = %s RETURNING customer_code", (so_no,))
    code = cur.fetchone()["customer_code"]
    cur.execute("SELECT array_agg(DISTINCT sku) AS skus FROM erp.sales_order_line WHERE so_no = %s", (so_no,))
    cur.execute("SELECT erp.refresh_bins(%s)", (cur.fetchone()["skus"],))
    cur.execute("SELECT erp.refresh_customer_credit(ARRAY[%s])", (code,))


def _order_outcome(cur, so_no: str, message: str) -> Outcome:
    cur.execute("SELECT status, hold_reason, shortage_qty FROM erp_api.sales_order_status WHERE erp_order_no = %s",
                (so_no,))
    st = cur.fetchone()
    return Outcome(so_no, message, {"erp_status": st["status"], "hold_reason": st["hold_reason"],
                                    "shortage_qty": st["shortage_qty"]})


# ------------------------------------------------------------------------------------------ forecasts
def process_forecasts(conn) -> dict[str, int]:
    """Apply complete forecast batches atomically: a batch replaces the active version of its horizon."""
    counts = {"processed": 0, "error": 0, "retry": 0}
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT DISTINCT source_system, batch_id FROM erp_inbound.demand_forecast_in WHERE status = 'NEW'")
        batches = cur.fetchall()
    for b in batches:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(
                """SELECT * FROM erp_inbound.demand_forecast_in
                   WHERE source_system = %s AND batch_id = %s AND status = 'NEW'
                   ORDER BY id FOR UPDATE SKIP LOCKED""",
                (b["source_system"], b["batch_id"]),
            )
            rows = cur.fetchall()
            if not rows or len(rows) < rows[0]["batch_row_count"]:
                conn.rollback()  # incomplete (still being written) or taken by another job
                counts["retry"] += len(rows)
                continue
            status, doc_no, errors = _apply_forecast(cur, rows)
            if status == "PROCESSED":
                cur.execute(
                    """UPDATE erp_inbound.demand_forecast_in SET status = 'PROCESSED', erp_doc_no = %s,
                           processed_at = now() WHERE id = ANY (%s)""",
                    (doc_no, [r["id"] for r in rows]),
                )
                counts["processed"] += len(rows)
            else:
                psycopg2.extras.execute_values(
                    cur,
                    """UPDATE erp_inbound.demand_forecast_in f SET status = 'ERROR', error_message = v.msg,
                           processed_at = now() FROM (VALUES %s) AS v(id, msg) WHERE f.id = v.id""",
                    [(r["id"], errors.get(r["id"]) or f"batch rejected: {len(errors)} other rows are invalid")
                     for r in rows],
                )
                counts["error"] += len(rows)
        conn.commit()
    return counts


def _apply_forecast(cur, rows: list[dict]) -> tuple[str, str | None, dict[int, str]]:
    first = rows[0]
    cur.execute("SELECT version_no FROM erp.forecast_version WHERE source_system = %s AND batch_id = %s",
                (first["source_system"], first["batch_id"]))
    done = cur.fetchone()
    if done:
        return "PROCESSED", done["version_no"], {}
    cur.execute("SELECT sku FROM erp.item WHERE sku = ANY (%s)", (list({r["sku"] for r in rows if r["sku"]}),))
    known = {r["sku"] for r in cur.fetchall()}
    cur.execute("SELECT code FROM erp.warehouse")
    warehouses = {r["code"] for r in cur.fetchall()}
    errors = {r["id"]: "; ".join(problems) for r in rows
              if (problems := forecast_row_problems(r, first, known, warehouses))}
    if errors:
        return "ERROR", None, errors
    cur.execute("SELECT erp.doc_no('FC', 'erp.fc_seq', 5) AS no")
    version = cur.fetchone()["no"]
    cur.execute(
        """UPDATE erp.forecast_version SET status = 'Superseded'
           WHERE status = 'Active' AND source_system = %s AND horizon_start <= %s AND horizon_end >= %s""",
        (first["source_system"], first["horizon_end"], first["horizon_start"]),
    )
    cur.execute(
        """INSERT INTO erp.forecast_version (version_no, source_system, batch_id, horizon_start, horizon_end,
               status, row_count, total_qty) VALUES (%s, %s, %s, %s, %s, 'Active', %s, %s)""",
        (version, first["source_system"], first["batch_id"], first["horizon_start"], first["horizon_end"],
         len(rows), sum(r["qty"] for r in rows)),
    )
    psycopg2.extras.execute_values(
        cur,
        """INSERT INTO erp.demand_forecast (version_no, sku, region, warehouse, period_start, demand_type, qty)
           VALUES %s""",
        [(version, r["sku"], r["region"], r["warehouse"], r["period_start"], r["demand_type"], r["qty"])
         for r in rows],
    )
    planner.plan_forecast(cur, version, first["source_system"])  # same transaction: version and plan together
    return "PROCESSED", version, {}
