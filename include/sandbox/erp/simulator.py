"""Business simulator: advances the sandbox ERP by one business day, the way the company would.

Per day, all set-based SQL in one transaction: exchange rates move; some purchase receipts and
production finishes slip; due purchase lines are received; production orders start (consuming BOM
components) and finish; customers place new orders; free stock is allocated to waiting order lines
(oldest delivery date first); reserved lines due within a day ship; shipped-not-billed goods are
invoiced; customers pay (a few are slow payers, some pay in part); unpaid invoices past due become
overdue; order statuses follow; bins below safety stock and order shortages are replenished by
purchase or production orders; a few list prices change. Derived figures are then refreshed, so
updated_at moves exactly on what changed. Randomness comes from erp.rnd(key) seeded by the 'seed'
setting, so the same database state gives the same day.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

DAY_SQL = """
CREATE TEMP TABLE sim_touched (sku text) ON COMMIT DROP;

UPDATE erp.setting SET value = (value::date + 1)::text WHERE key = 'business_date';

INSERT INTO erp.exchange_rate (currency, rate_date, rate_to_home)
SELECT r.currency, erp.today(), round(r.rate_to_home * (0.998 + erp.rnd('fx' || r.currency || erp.today()) * 0.004), 6)
FROM erp.exchange_rate r
WHERE r.rate_date = erp.today() - 1
ON CONFLICT DO NOTHING;

-- slips: some receipts and production finishes due today move out by a few days
UPDATE erp.purchase_order_line
SET expected_date = expected_date + 1 + floor(erp.rnd('poslipd' || po_no || line_no) * 5)::int
WHERE received_qty < qty AND expected_date = erp.today()
  AND erp.rnd('poslip' || po_no || line_no || erp.today()) < erp.setting_num('po_slip_rate', 0.08);

UPDATE erp.production_order
SET planned_finish = planned_finish + 1 + floor(erp.rnd('moslipd' || mo_no || erp.today()) * 7)::int,
    updated_at = now()
WHERE status IN ('Not Started', 'In Process') AND planned_finish = erp.today()
  AND erp.rnd('moslip' || mo_no || erp.today()) < erp.setting_num('mo_slip_rate', 0.12);

-- purchase receipts
CREATE TEMP TABLE sim_rcv ON COMMIT DROP AS
SELECT pl.po_no, pl.line_no, pl.sku, pl.warehouse, pl.qty - pl.received_qty AS q
FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no)
WHERE p.status = 'To Receive' AND pl.received_qty < pl.qty AND pl.expected_date <= erp.today();
UPDATE erp.purchase_order_line pl SET received_qty = pl.qty
FROM sim_rcv r WHERE pl.po_no = r.po_no AND pl.line_no = r.line_no;
UPDATE erp.bin b SET actual_qty = b.actual_qty + r.q, updated_at = now()
FROM (SELECT sku, warehouse, sum(q) AS q FROM sim_rcv GROUP BY 1, 2) r
WHERE b.sku = r.sku AND b.warehouse = r.warehouse;
UPDATE erp.purchase_order p SET status = 'Completed', updated_at = now()
WHERE p.status = 'To Receive' AND p.po_no IN (SELECT po_no FROM sim_rcv)
  AND NOT EXISTS (SELECT 1 FROM erp.purchase_order_line l WHERE l.po_no = p.po_no AND l.received_qty < l.qty);
INSERT INTO sim_touched SELECT sku FROM sim_rcv;

-- production starts: components are consumed from unreserved stock of the production warehouse
CREATE TEMP TABLE sim_start ON COMMIT DROP AS
SELECT mo_no, sku, warehouse, qty FROM erp.production_order
WHERE status = 'Not Started' AND planned_start <= erp.today();
UPDATE erp.production_order m SET status = 'In Process', actual_start = erp.today(), updated_at = now()
FROM sim_start s WHERE m.mo_no = s.mo_no;
UPDATE erp.bin b SET actual_qty = greatest(b.actual_qty - n.q, b.reserved_qty, 0), updated_at = now()
FROM (SELECT bi.component_sku AS sku, s.warehouse, sum(s.qty * bi.qty / bm.qty) AS q
      FROM sim_start s JOIN erp.bom bm ON bm.sku = s.sku JOIN erp.bom_item bi USING (bom_no)
      GROUP BY 1, 2) n
WHERE b.sku = n.sku AND b.warehouse = n.warehouse;
INSERT INTO sim_touched
SELECT bi.component_sku FROM sim_start s JOIN erp.bom bm ON bm.sku = s.sku JOIN erp.bom_item bi USING (bom_no);

-- production finishes
CREATE TEMP TABLE sim_done ON COMMIT DROP AS
SELECT mo_no, sku, warehouse, qty - produced_qty AS q FROM erp.production_order
WHERE status = 'In Process' AND planned_finish <= erp.today();
UPDATE erp.production_order m
SET status = 'Completed', produced_qty = m.qty, actual_finish = erp.today(), material_status = 'AVAILABLE',
    updated_at = now()
FROM sim_done d WHERE m.mo_no = d.mo_no;
INSERT INTO erp.bin (sku, warehouse) SELECT DISTINCT sku, warehouse FROM sim_done ON CONFLICT DO NOTHING;
UPDATE erp.bin b SET actual_qty = b.actual_qty + d.q, updated_at = now()
FROM (SELECT sku, warehouse, sum(q) AS q FROM sim_done GROUP BY 1, 2) d
WHERE b.sku = d.sku AND b.warehouse = d.warehouse;
INSERT INTO sim_touched SELECT sku FROM sim_done;

-- new orders placed directly with the ERP (phone, EDI): about one per 25 customers per day
CREATE TEMP TABLE sim_new ON COMMIT DROP AS
WITH params AS (
    SELECT (SELECT max(customer_id) FROM erp.customer) AS max_c,
           (SELECT least(max(item_id), 2000) FROM erp.item) AS max_i,
           greatest(1, round((SELECT count(*) FROM erp.customer) / 25.0
                             * (0.5 + erp.rnd('norders' || erp.today()))))::int AS k
), picks AS (
    SELECT g, c.customer_code, c.currency
    FROM params
    CROSS JOIN LATERAL generate_series(1, params.k) g
    JOIN erp.customer c ON c.customer_id = 1 + floor(erp.rnd('cust' || erp.today() || ':' || g) * params.max_c)::int
    WHERE c.is_active
)
SELECT p.g, p.customer_code, p.currency,
       erp.doc_no('SO', 'erp.so_seq') AS so_no,
       coalesce((SELECT rate_to_home FROM erp.exchange_rate x WHERE x.currency = p.currency
                 ORDER BY rate_date DESC LIMIT 1), 1) AS rate,
       erp.today() + 3 + floor(erp.rnd('deliv' || erp.today() || ':' || p.g) * 25)::int AS delivery_date,
       (SELECT max_i FROM params) AS max_i
FROM picks p;
INSERT INTO erp.sales_order (so_no, customer_code, order_date, delivery_date, currency, exchange_rate, status,
                             source_system, source_id)
SELECT so_no, customer_code, erp.today(), delivery_date, currency, rate, 'To Deliver and Bill', 'ERP', so_no
FROM sim_new;
INSERT INTO erp.sales_order_line (so_no, line_no, sku, warehouse, qty, uom, unit_price, discount_pct, tax_rate,
                                  net_amount, delivery_date)
SELECT DISTINCT ON (n.so_no, i.sku) n.so_no, ln, i.sku,
       (ARRAY['SH01', 'SZ01', 'SZ02'])[1 + floor(erp.rnd('wh' || n.so_no) * 3)::int],
       q.qty, i.stock_uom, round(pr.unit_price / n.rate, 4), d.disc, t.rate,
       round(q.qty * round(pr.unit_price / n.rate, 4) * (1 - d.disc / 100), 2), n.delivery_date
FROM sim_new n
CROSS JOIN LATERAL generate_series(1, 1 + floor(erp.rnd('nlines' || n.so_no) * 3)::int) ln
CROSS JOIN LATERAL (SELECT 1 + floor(power(erp.rnd('sku' || n.so_no || ':' || ln), 2) * n.max_i)::bigint
                    AS item_id) pick
JOIN erp.item i ON i.item_id = pick.item_id
JOIN erp.item_price pr ON pr.sku = i.sku AND pr.price_list = 'Standard Selling' AND pr.currency = 'CNY'
JOIN erp.tax_rate t ON t.code = i.tax_rate_code
CROSS JOIN LATERAL (SELECT CASE WHEN i.item_group = 'ASM' THEN 1
                                ELSE 1 + floor(erp.rnd('qty' || n.so_no || ':' || ln) * 40) END::numeric AS qty) q
CROSS JOIN LATERAL (SELECT (ARRAY[0, 0, 5, 10])[1 + floor(erp.rnd('disc' || n.so_no) * 4)::int]::numeric AS disc) d
WHERE i.is_stock_item AND i.is_active
ORDER BY n.so_no, i.sku, ln;
DELETE FROM erp.sales_order o USING sim_new n
WHERE o.so_no = n.so_no AND NOT EXISTS (SELECT 1 FROM erp.sales_order_line l WHERE l.so_no = o.so_no);
UPDATE erp.sales_order o SET net_total = t.net, tax_total = t.tax, grand_total = t.net + t.tax
FROM (SELECT so_no, sum(net_amount) AS net, sum(round(net_amount * tax_rate / 100, 2)) AS tax
      FROM erp.sales_order_line WHERE so_no IN (SELECT so_no FROM sim_new) GROUP BY so_no) t
WHERE o.so_no = t.so_no;

-- allocate free stock to waiting lines, earliest delivery date first
CREATE TEMP TABLE sim_alloc ON COMMIT DROP AS
WITH need AS (
    SELECT l.so_no, l.line_no, l.sku, l.warehouse, l.delivery_date,
           l.qty - l.delivered_qty - l.reserved_qty AS short
    FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no)
    WHERE o.status IN ('To Deliver and Bill', 'To Deliver') AND l.qty - l.delivered_qty - l.reserved_qty > 0
), queue AS (
    SELECT n.*, b.actual_qty - b.reserved_qty AS free,
           sum(n.short) OVER (PARTITION BY n.sku, n.warehouse ORDER BY n.delivery_date, n.so_no, n.line_no)
               - n.short AS ahead
    FROM need n JOIN erp.bin b USING (sku, warehouse)
    WHERE b.actual_qty > b.reserved_qty
)
SELECT so_no, line_no, sku, warehouse, least(short, free - ahead) AS q FROM queue WHERE free - ahead > 0;
UPDATE erp.sales_order_line l SET reserved_qty = l.reserved_qty + a.q
FROM sim_alloc a WHERE l.so_no = a.so_no AND l.line_no = a.line_no;
UPDATE erp.bin b SET reserved_qty = b.reserved_qty + a.q, updated_at = now()
FROM (SELECT sku, warehouse, sum(q) AS q FROM sim_alloc GROUP BY 1, 2) a
WHERE b.sku = a.sku AND b.warehouse = a.warehouse;
INSERT INTO sim_touched SELECT sku FROM sim_alloc;

-- shipments: reserved goods of lines due by tomorrow leave the warehouse
CREATE TEMP TABLE sim_ship ON COMMIT DROP AS
SELECT l.so_no, l.line_no, l.sku, l.warehouse, l.reserved_qty AS q
FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no)
WHERE o.status IN ('To Deliver and Bill', 'To Deliver') AND l.reserved_qty > 0
  AND l.delivery_date <= erp.today() + 1;
INSERT INTO erp.delivery_note (dn_no, so_no, ship_date)
SELECT erp.doc_no('DN', 'erp.dn_seq'), so_no, erp.today()
FROM (SELECT DISTINCT so_no FROM sim_ship ORDER BY so_no) s;
INSERT INTO erp.delivery_note_line (dn_no, so_no, line_no, sku, warehouse, qty)
SELECT dn.dn_no, s.so_no, s.line_no, s.sku, s.warehouse, s.q
FROM sim_ship s JOIN erp.delivery_note dn ON dn.so_no = s.so_no AND dn.ship_date = erp.today();
UPDATE erp.sales_order_line l SET delivered_qty = l.delivered_qty + s.q, reserved_qty = l.reserved_qty - s.q
FROM sim_ship s WHERE l.so_no = s.so_no AND l.line_no = s.line_no;
UPDATE erp.bin b SET actual_qty = b.actual_qty - s.q, reserved_qty = b.reserved_qty - s.q, updated_at = now()
FROM (SELECT sku, warehouse, sum(q) AS q FROM sim_ship GROUP BY 1, 2) s
WHERE b.sku = s.sku AND b.warehouse = s.warehouse;
INSERT INTO sim_touched SELECT sku FROM sim_ship;

-- invoicing of shipped, not yet billed goods
CREATE TEMP TABLE sim_bill_line ON COMMIT DROP AS
SELECT o.so_no, l.line_no, l.sku, l.delivered_qty - l.billed_qty AS qty, l.unit_price, l.discount_pct, l.tax_rate,
       round(l.net_amount * (l.delivered_qty - l.billed_qty) / l.qty, 2) AS net
FROM erp.sales_order o JOIN erp.sales_order_line l USING (so_no)
WHERE l.delivered_qty > l.billed_qty AND o.status NOT IN ('Cancelled', 'Closed');
CREATE TEMP TABLE sim_bill ON COMMIT DROP AS
SELECT erp.doc_no('SINV', 'erp.inv_seq') AS invoice_no, b.*
FROM (SELECT o.so_no, o.customer_code, o.currency, o.exchange_rate, c.payment_terms_days,
             sum(bl.net) AS net, sum(round(bl.net * bl.tax_rate / 100, 2)) AS tax
      FROM sim_bill_line bl JOIN erp.sales_order o USING (so_no) JOIN erp.customer c USING (customer_code)
      GROUP BY o.so_no, o.customer_code, o.currency, o.exchange_rate, c.payment_terms_days
      ORDER BY o.so_no) b;
INSERT INTO erp.sales_invoice (invoice_no, customer_code, so_no, invoice_date, due_date, currency, exchange_rate,
                               net_amount, tax_amount, grand_total, outstanding_amount, status)
SELECT invoice_no, customer_code, so_no, erp.today(), erp.today() + payment_terms_days, currency, exchange_rate,
       net, tax, net + tax, net + tax, 'Unpaid'
FROM sim_bill ORDER BY invoice_no;
INSERT INTO erp.sales_invoice_line (invoice_no, line_no, so_no, so_line_no, sku, qty, unit_price, discount_pct,
                                    tax_rate, net_amount)
SELECT b.invoice_no, row_number() OVER (PARTITION BY b.invoice_no ORDER BY bl.line_no), bl.so_no, bl.line_no, bl.sku,
       bl.qty, bl.unit_price, bl.discount_pct, bl.tax_rate, bl.net
FROM sim_bill_line bl JOIN sim_bill b USING (so_no);
UPDATE erp.sales_order_line l SET billed_qty = l.delivered_qty
FROM sim_bill b WHERE l.so_no = b.so_no AND l.delivered_qty > l.billed_qty;

-- payments: most customers pay around the due date, about one in eight pays late, some pay in part
CREATE TEMP TABLE sim_pay ON COMMIT DROP AS
SELECT i.invoice_no, i.customer_code, i.currency, i.so_no,
       CASE WHEN erp.rnd('part' || i.invoice_no || erp.today()) < 0.2 AND i.outstanding_amount > 100
            THEN round(i.outstanding_amount / 2, 2) ELSE i.outstanding_amount END AS amount
FROM erp.sales_invoice i
WHERE i.outstanding_amount > 0 AND i.status IN ('Unpaid', 'Partly Paid', 'Overdue')
  AND erp.rnd('pay' || i.invoice_no || erp.today()) <
      CASE WHEN erp.rnd('slow' || i.customer_code) < 0.12 THEN 0.01
           WHEN erp.today() >= i.due_date - 5 THEN 0.25 ELSE 0.04 END;
INSERT INTO erp.payment_entry (payment_no, customer_code, invoice_no, payment_date, amount, currency)
SELECT erp.doc_no('PAY', 'erp.pay_seq'),
       customer_code, invoice_no, erp.today(), amount, currency
FROM (SELECT * FROM sim_pay ORDER BY invoice_no) p;
UPDATE erp.sales_invoice i
SET outstanding_amount = i.outstanding_amount - p.amount,
    status = CASE WHEN i.outstanding_amount = p.amount THEN 'Paid'
                  WHEN i.due_date < erp.today() THEN 'Overdue' ELSE 'Partly Paid' END,
    updated_at = now()
FROM sim_pay p WHERE i.invoice_no = p.invoice_no;

UPDATE erp.sales_invoice SET status = 'Overdue', updated_at = now()
WHERE outstanding_amount > 0 AND due_date < erp.today() AND status IN ('Unpaid', 'Partly Paid');

-- order status follows delivery and billing; every order something happened to today gets a new updated_at
UPDATE erp.sales_order o
SET status = s.new_status, updated_at = now()
FROM (SELECT so_no,
             CASE WHEN sum(delivered_qty) >= sum(qty) AND sum(billed_qty) >= sum(qty) THEN 'Completed'
                  WHEN sum(delivered_qty) >= sum(qty) THEN 'To Bill'
                  WHEN sum(billed_qty) >= sum(qty) THEN 'To Deliver'
                  ELSE 'To Deliver and Bill' END AS new_status
      FROM erp.sales_order_line
      WHERE so_no IN (SELECT so_no FROM erp.sales_order
                      WHERE status IN ('To Deliver and Bill', 'To Deliver', 'To Bill'))
      GROUP BY so_no) s
WHERE o.so_no = s.so_no
  AND (o.status <> s.new_status
       OR o.so_no IN (SELECT so_no FROM sim_alloc UNION SELECT so_no FROM sim_ship UNION SELECT so_no FROM sim_bill
                      UNION SELECT so_no FROM sim_pay WHERE so_no IS NOT NULL));
UPDATE erp.sales_order SET updated_at = now()
WHERE so_no IN (SELECT so_no FROM sim_pay WHERE so_no IS NOT NULL) AND status = 'Completed';

-- replenishment: bins projected below safety stock with nothing on order get a reorder request.
-- Candidates are chosen before inserting: an INSERT whose NOT EXISTS reads the table it fills would
-- rescan its own new rows for every candidate (quadratic on a busy day).
CREATE TEMP TABLE sim_reorder ON COMMIT DROP AS
SELECT b.sku, b.warehouse, greatest(ceil(2 * b.safety_stock - b.projected_14d), 1) AS qty,
       CASE WHEN i.is_manufactured THEN 'Manufacture' ELSE 'Purchase' END AS request_type,
       erp.today() + i.lead_time_days AS required_by
FROM erp.bin b JOIN erp.item i USING (sku)
WHERE b.projected_14d < b.safety_stock AND b.ordered_qty = 0 AND b.planned_qty = 0 AND i.is_stock_item
  AND NOT EXISTS (SELECT 1 FROM erp.material_request m
                  WHERE m.sku = b.sku AND m.warehouse = b.warehouse AND m.status = 'Pending');
INSERT INTO erp.material_request (mr_no, sku, warehouse, qty, request_type, reason, required_by)
SELECT erp.doc_no('MR', 'erp.mr_seq'), sku, warehouse, qty, request_type, 'REORDER', required_by
FROM (SELECT * FROM sim_reorder ORDER BY sku, warehouse) r;

-- pending requests become purchase orders (one per supplier) and production orders
CREATE TEMP TABLE sim_mr ON COMMIT DROP AS
SELECT m.mr_no, m.sku, m.warehouse, m.qty, m.request_type, m.so_no, i.default_supplier, i.lead_time_days
FROM erp.material_request m JOIN erp.item i USING (sku)
WHERE m.status = 'Pending';
CREATE TEMP TABLE sim_po ON COMMIT DROP AS
SELECT supplier, erp.doc_no('PO', 'erp.po_seq') AS po_no
FROM (SELECT DISTINCT coalesce(default_supplier, 'S001') AS supplier FROM sim_mr
      WHERE request_type = 'Purchase' ORDER BY 1) s;
INSERT INTO erp.purchase_order (po_no, supplier_code, order_date, status)
SELECT po_no, supplier, erp.today(), 'To Receive' FROM sim_po;
INSERT INTO erp.purchase_order_line (po_no, line_no, sku, warehouse, qty, expected_date, mr_no)
SELECT p.po_no, row_number() OVER (PARTITION BY p.po_no ORDER BY m.mr_no), m.sku, m.warehouse, m.qty,
       erp.today() + m.lead_time_days, m.mr_no
FROM sim_mr m JOIN sim_po p ON p.supplier = coalesce(m.default_supplier, 'S001')
WHERE m.request_type = 'Purchase';
INSERT INTO erp.production_order (mo_no, sku, warehouse, qty, planned_start, planned_finish, original_planned_finish,
                                  status, material_status, material_due_date, so_no, mr_no)
SELECT erp.doc_no('MO', 'erp.mo_seq'),
       m.sku, m.warehouse, m.qty, erp.today() + 1, erp.today() + m.lead_time_days, erp.today() + m.lead_time_days,
       'Not Started', coalesce(ms.status, 'AVAILABLE'), ms.due, m.so_no, m.mr_no
FROM (SELECT * FROM sim_mr WHERE request_type = 'Manufacture' ORDER BY mr_no) m
LEFT JOIN LATERAL (
    SELECT CASE WHEN bool_and(coalesce(b.actual_qty - b.reserved_qty, 0) >= m.qty * bi.qty / bm.qty) THEN 'AVAILABLE'
                WHEN bool_or(coalesce(b.actual_qty - b.reserved_qty, 0) > 0) THEN 'PARTIAL' ELSE 'SHORT' END AS status,
           max(CASE WHEN coalesce(b.actual_qty - b.reserved_qty, 0) < m.qty * bi.qty / bm.qty
                    THEN erp.today() + ci.lead_time_days END) AS due
    FROM erp.bom bm JOIN erp.bom_item bi USING (bom_no) JOIN erp.item ci ON ci.sku = bi.component_sku
    LEFT JOIN erp.bin b ON b.sku = bi.component_sku AND b.warehouse = m.warehouse
    WHERE bm.sku = m.sku
) ms ON true;
UPDATE erp.material_request SET status = 'Ordered' WHERE mr_no IN (SELECT mr_no FROM sim_mr);
INSERT INTO erp.bin (sku, warehouse) SELECT DISTINCT sku, warehouse FROM sim_mr ON CONFLICT DO NOTHING;
INSERT INTO sim_touched SELECT sku FROM sim_mr;

-- list prices: a few change each day (ERP is master for price)
UPDATE erp.item_price
SET unit_price = round(unit_price * (0.95 + erp.rnd('pxv' || sku || erp.today()) * 0.12), 2),
    valid_from = erp.today(), updated_at = now()
WHERE price_list = 'Standard Selling'
  AND sku IN (SELECT i.sku FROM erp.item i
              WHERE i.item_id IN (SELECT 1 + floor(erp.rnd('px' || erp.today() || ':' || g) * m.n)::bigint
                                  FROM (SELECT max(item_id) AS n FROM erp.item) m,
                                       generate_series(1, greatest(1, ceil(m.n * 0.002)::int)) g));

-- derived figures: bins touched today or with dated events in the 14-day window, and every customer.
-- A busy day can grow the document tables many times over; fresh statistics keep the refresh plans sane.
ANALYZE erp.material_request, erp.purchase_order_line, erp.production_order, erp.sales_order_line;
SELECT erp.refresh_bins(ARRAY(
    SELECT DISTINCT sku FROM (
        SELECT sku FROM sim_touched
        UNION ALL SELECT sku FROM erp.purchase_order_line WHERE received_qty < qty AND expected_date <= erp.today() + 14
        UNION ALL SELECT sku FROM erp.production_order WHERE status IN ('Not Started', 'In Process')
        UNION ALL SELECT l.sku FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no)
                  WHERE o.status IN ('To Deliver and Bill', 'To Deliver') AND l.qty > l.delivered_qty
    ) s));
SELECT erp.refresh_customer_credit(NULL);
"""


def simulate_day(conn) -> dict:
    """Advance one business day; returns the new date and what happened."""
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute(DAY_SQL)
        cur.execute(
            """SELECT erp.today(),
                      (SELECT count(*) FROM erp.sales_order WHERE order_date = erp.today()),
                      (SELECT count(*) FROM erp.delivery_note WHERE ship_date = erp.today()),
                      (SELECT count(*) FROM erp.sales_invoice WHERE invoice_date = erp.today()),
                      (SELECT count(*) FROM erp.payment_entry WHERE payment_date = erp.today()),
                      (SELECT count(*) FROM erp.purchase_order WHERE order_date = erp.today()),
                      (SELECT count(*) FROM erp.production_order WHERE created_at >= now()),
                      (SELECT count(*) FROM erp.production_order
                       WHERE updated_at >= now() AND planned_finish > original_planned_finish)"""
        )
        row = cur.fetchone()
    conn.commit()
    keys = ("business_date", "orders", "shipments", "invoices", "payments", "purchase_orders",
            "production_orders", "production_slipped")
    result = dict(zip(keys, row, strict=True))
    result["business_date"] = str(result["business_date"])
    result["seconds"] = round(time.monotonic() - started, 2)
    return result


def simulate(conn, days: int = 1, progress=None, mo_slip_rate: float | None = None) -> list[dict]:
    """Advance `days` business days. mo_slip_rate: share of production orders due on a day that slip, for these
    days only (a bad week in the factory); the ERP's own setting is restored afterwards."""
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM erp.setting WHERE key = 'mo_slip_rate'")
        saved = cur.fetchone()
    if mo_slip_rate is not None:
        _set_slip_rate(conn, str(mo_slip_rate))
    try:
        results = []
        for _ in range(days):
            results.append(simulate_day(conn))
            if progress:
                progress(results[-1])
        return results
    finally:
        if mo_slip_rate is not None:
            _set_slip_rate(conn, saved[0] if saved else None)


def _set_slip_rate(conn, value: str | None) -> None:
    with conn.cursor() as cur:
        cur.execute("DELETE FROM erp.setting WHERE key = 'mo_slip_rate'")
        if value is not None:
            cur.execute("INSERT INTO erp.setting VALUES ('mo_slip_rate', %s)", (value,))
    conn.commit()
