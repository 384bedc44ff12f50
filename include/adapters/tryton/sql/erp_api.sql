-- The read contract (schema erp_api) over Tryton 8.2's own tables: same view names, columns and types as the
-- reference ERP (include/sandbox/erp/sql/30_api.sql); tests/tryton checks that column by column.
-- Tryton stores timestamps as UTC without a zone, quantities as double precision in the move's unit
-- (internal_quantity: in the product's default unit) and references as 'model,id' strings (origin, shipment).
-- A company with several Tryton companies would add a company filter here; the demo company is the only one.
CREATE SCHEMA erp_api;
CREATE SCHEMA erp_adapter;  -- the adapter's helpers: not part of the contract

CREATE FUNCTION erp_api.utc(a timestamp, b timestamp) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$ SELECT greatest(a, b) AT TIME ZONE 'UTC' $$;

-- products by SKU (the template code; the demo company has one variant per template)
CREATE VIEW erp_api.items AS
SELECT t.code AS sku, t.name AS item_name, c.name AS item_group, u.symbol AS uom,
       round(tax.rate * 100, 2) AS tax_rate, t.type = 'goods' AS is_stock_item, coalesce(t.producible, false)
           AS is_manufactured,
       coalesce(extract(day FROM lt.lead_time)::integer, 0) AS lead_time_days, NULL::numeric AS weekly_capacity,
       t.active AND p.active AS is_active, erp_api.utc(t.write_date, t.create_date) AS updated_at
FROM product_product p
JOIN product_template t ON t.id = p.template
JOIN product_uom u ON u.id = t.default_uom
LEFT JOIN product_category c ON c.id = t.account_category
LEFT JOIN LATERAL (SELECT max(x.rate) AS rate FROM "product_category-customer-account_tax" r
                   JOIN account_tax x ON x.id = r.tax WHERE r.category = t.account_category) tax ON true
LEFT JOIN LATERAL (SELECT l.lead_time FROM product_lead_time l WHERE l.template = t.id LIMIT 1) lt ON true
WHERE t.code IS NOT NULL;

CREATE VIEW erp_api.item_uom AS
SELECT i.sku, i.uom, 1::numeric AS factor_to_stock_uom FROM erp_api.items i;

CREATE VIEW erp_api.warehouses AS
SELECT l.code, l.name, NULL::text AS city, l.active AS is_active
FROM stock_location l WHERE l.type = 'warehouse';

-- Stock per product x warehouse from the moves in and out of the warehouse's storage zone (and its children):
-- on hand = done moves; reserved = planned moves out of storage (sales shipments, production inputs);
-- incoming = planned moves into the warehouse from suppliers (purchase) and from production (output).
CREATE VIEW erp_api.stock_availability AS
WITH wh AS (
    SELECT w.id, w.code, s."left", s."right"
    FROM stock_location w JOIN stock_location s ON s.id = w.storage_location
    WHERE w.type = 'warehouse'
), moves AS (
    SELECT wh.code AS warehouse, m.product, m.state,
           coalesce(m.effective_date, m.planned_date) AS move_date,
           CASE WHEN t."left" >= wh."left" AND t."right" <= wh."right" THEN m.internal_quantity ELSE 0 END AS qty_in,
           CASE WHEN f."left" >= wh."left" AND f."right" <= wh."right" THEN m.internal_quantity ELSE 0 END AS qty_out,
           f.type AS from_type, greatest(m.write_date, m.create_date) AS changed
    FROM stock_move m
    JOIN stock_location f ON f.id = m.from_location
    JOIN stock_location t ON t.id = m.to_location
    JOIN wh ON (t."left" >= wh."left" AND t."right" <= wh."right")
            <> (f."left" >= wh."left" AND f."right" <= wh."right")
    WHERE m.state IN ('done', 'assigned', 'draft')
), per AS (
    SELECT warehouse, product,
           sum(qty_in - qty_out) FILTER (WHERE state = 'done') AS on_hand,
           sum(qty_out) FILTER (WHERE state <> 'done') AS reserved,
           sum(qty_in) FILTER (WHERE state <> 'done' AND from_type = 'supplier') AS incoming_po,
           sum(qty_in) FILTER (WHERE state <> 'done' AND from_type = 'production') AS incoming_mo,
           sum(qty_in - qty_out) FILTER (WHERE state = 'done' OR move_date <= current_date + 13) AS projected_14d,
           max(changed) AS changed
    FROM moves GROUP BY 1, 2
)
SELECT t.code AS sku, per.warehouse, u.symbol AS uom,
       round(coalesce(per.on_hand, 0)::numeric, 3) AS on_hand,
       round(coalesce(per.reserved, 0)::numeric, 3) AS reserved,
       round((coalesce(per.on_hand, 0) - coalesce(per.reserved, 0))::numeric, 3) AS available,
       round(coalesce(per.incoming_po, 0)::numeric, 3) AS incoming_po,
       round(coalesce(per.incoming_mo, 0)::numeric, 3) AS incoming_mo,
       round(coalesce(per.projected_14d, 0)::numeric, 3) AS projected_14d,
       shortage.first_shortage_date,
       -- safety stock is an order point in Tryton's stock_supply module, which the demo company does not use
       0::numeric AS safety_stock,
       (coalesce(per.on_hand, 0) - coalesce(per.reserved, 0)) < 0 AS below_safety_stock,
       per.changed AT TIME ZONE 'UTC' AS updated_at
FROM per
JOIN product_product p ON p.id = per.product
JOIN product_template t ON t.id = p.template
JOIN product_uom u ON u.id = t.default_uom
LEFT JOIN LATERAL (
    -- the Odoo-style 14-day projection: the first day d0..d13 whose closing balance goes below zero
    SELECT min(d)::date AS first_shortage_date
    FROM generate_series(current_date, current_date + 13, interval '1 day') AS d
    WHERE (SELECT sum(qty_in - qty_out) FROM moves m2
           WHERE m2.warehouse = per.warehouse AND m2.product = per.product
             AND (m2.state = 'done' OR m2.move_date <= d)) < 0
) shortage ON true
WHERE t.code IS NOT NULL;

-- Customers: parties with a customer code; the CRM record a party came from is a free identifier
-- '<source_system>:<source_id>' (set by the adapter's import job); the group is the party category.
CREATE VIEW erp_api.customers AS
SELECT p.code AS customer_code, p.name AS customer_name, NULL::text AS customer_name_en,
       (SELECT i.code FROM party_identifier i WHERE i.party = p.id AND i.type = 'cn_vat' ORDER BY i.id LIMIT 1)::char(18)
           AS uscc,
       (SELECT c.name FROM "party_party-party_category" r JOIN party_category c ON c.id = r.category
        WHERE r.party = p.id ORDER BY c.id LIMIT 1) AS customer_group,
       NULL::text AS region, a.city, a.street AS address,
       (SELECT m.value FROM party_contact_mechanism m WHERE m.party = p.id AND m.type = 'phone'
        ORDER BY m.id LIMIT 1) AS phone,
       coalesce(cur.code, home.code)::char(3) AS currency,
       (SELECT max(d.days) FROM party_party_payment_term pt
        JOIN account_invoice_payment_term_line l ON l.payment = pt.customer_payment_term
        JOIN account_invoice_payment_term_line_delta d ON d.line = l.id WHERE pt.party = p.id) AS payment_terms_days,
       p.active AS is_active, split_part(src.code, ':', 1) AS source_system,
       nullif(substr(src.code, length(split_part(src.code, ':', 1)) + 2), '') AS source_id,
       p.create_date AT TIME ZONE 'UTC' AS created_at, erp_api.utc(p.write_date, p.create_date) AS updated_at
FROM party_party p
CROSS JOIN (SELECT c.code FROM company_company co JOIN currency_currency c ON c.id = co.currency
            ORDER BY co.id LIMIT 1) home
LEFT JOIN LATERAL (SELECT x.city, coalesce(x.street_unstructured, x.street_name) AS street FROM party_address x WHERE x.party = p.id ORDER BY x.sequence, x.id
                   LIMIT 1) a ON true
LEFT JOIN LATERAL (SELECT c.code FROM party_party_customer_currency pc JOIN currency_currency c
                   ON c.id = pc.customer_currency WHERE pc.party = p.id LIMIT 1) cur ON true
LEFT JOIN LATERAL (SELECT i.code FROM party_identifier i WHERE i.party = p.id AND i.type IS NULL
                   AND i.code LIKE '%:%' ORDER BY i.id LIMIT 1) src ON true
WHERE p.code ~ '^C[0-9]+$';

-- Sales orders: Tryton's sale (number, reference = the CRM order id, state) with line sums from its moves
-- and invoices. Tryton states: draft, quotation, confirmed, processing, done, cancelled.
CREATE VIEW erp_api.sales_order_status AS
WITH lines AS (
    SELECT l.sale, l.id, l.quantity, l.unit_price,
           coalesce((SELECT sum(x.rate) FROM "sale_line-account_tax" r JOIN account_tax x ON x.id = r.tax
                     WHERE r.line = l.id), 0) AS tax,
           coalesce((SELECT sum(m.internal_quantity) FROM stock_move m JOIN stock_location t ON t.id = m.to_location
                     WHERE m.origin = 'sale.line,' || l.id AND m.state = 'done' AND t.type = 'customer'), 0)
               AS shipped,
           coalesce((SELECT sum(m.internal_quantity) FROM stock_move m JOIN stock_location f ON f.id = m.from_location
                     WHERE m.origin = 'sale.line,' || l.id AND m.state = 'assigned' AND f.type = 'storage'), 0)
               AS reserved,
           coalesce((SELECT sum(il.quantity) FROM account_invoice_line il JOIN account_invoice i ON i.id = il.invoice
                     WHERE il.origin = 'sale.line,' || l.id AND i.state IN ('posted', 'paid')), 0) AS invoiced
    FROM sale_line l WHERE l.type = 'line' AND l.quantity > 0
), per_sale AS (
    SELECT sale, sum(quantity) AS ordered_qty, sum(reserved) AS reserved_qty, sum(shipped) AS shipped_qty,
           sum(invoiced) AS invoiced_qty,
           round(sum(unit_price::float8 * shipped * (1 + tax::float8))::numeric, 2) AS shipped_amount,
           round(sum(unit_price::float8 * quantity * (1 + tax::float8))::numeric, 2) AS total
    FROM lines GROUP BY 1
), inv AS (
    SELECT il_sale.sale, sum(i.total_amount_cache) AS invoiced_amount,
           sum(i.total_amount_cache) - sum(coalesce(open.amount, 0)) AS paid_amount
    FROM account_invoice i
    JOIN LATERAL (SELECT DISTINCT l.sale FROM account_invoice_line il
                  JOIN sale_line l ON il.origin = 'sale.line,' || l.id WHERE il.invoice = i.id) il_sale ON true
    LEFT JOIN LATERAL (SELECT sum(ml.debit - ml.credit) AS amount FROM account_move_line ml
                       JOIN account_account a ON a.id = ml.account JOIN account_account_type at ON at.id = a.type
                       WHERE ml.move = i.move AND at.receivable AND ml.reconciliation IS NULL) open ON true
    WHERE i.state IN ('posted', 'paid')
    GROUP BY 1
)
SELECT s.number AS erp_order_no,
       CASE WHEN s.reference LIKE 'HIST-%' OR s.reference IS NULL THEN NULL ELSE 'zoho_crm' END AS source_system,
       CASE WHEN s.reference LIKE 'HIST-%' THEN NULL ELSE s.reference END AS external_ref,
       s.description AS customer_po_no, p.code AS customer_code, s.sale_date AS order_date,
       s.shipping_date AS delivery_date, c.code::char(3) AS currency, 1::numeric AS exchange_rate,
       CASE s.state
           WHEN 'draft' THEN 'DRAFT' WHEN 'quotation' THEN 'DRAFT'
           WHEN 'confirmed' THEN 'OPEN' WHEN 'cancelled' THEN 'CANCELLED' WHEN 'done' THEN 'COMPLETED'
           WHEN 'processing' THEN CASE WHEN s.shipment_state = 'sent' THEN 'TO_BILL'
                                       WHEN coalesce(ps.shipped_qty, 0) > 0 THEN 'PARTIALLY_DELIVERED'
                                       ELSE 'OPEN' END
       END AS status,
       s.state AS status_raw,
       NULL::text AS hold_reason, false AS is_prepaid,
       round(coalesce(ps.ordered_qty, 0)::numeric, 3) AS ordered_qty,
       round(coalesce(ps.reserved_qty, 0)::numeric, 3) AS reserved_qty,
       round(coalesce(ps.shipped_qty, 0)::numeric, 3) AS shipped_qty,
       round(coalesce(ps.invoiced_qty, 0)::numeric, 3) AS invoiced_qty,
       round(greatest(coalesce(ps.ordered_qty, 0) - coalesce(ps.shipped_qty, 0) - coalesce(ps.reserved_qty, 0), 0)
             ::numeric, 3) * (s.state IN ('confirmed', 'processing'))::int AS shortage_qty,
       round((100 * coalesce(ps.shipped_qty, 0) / nullif(ps.ordered_qty, 0))::numeric, 2) AS per_delivered,
       round((100 * coalesce(ps.invoiced_qty, 0) / nullif(ps.ordered_qty, 0))::numeric, 2) AS per_billed,
       coalesce(s.total_amount_cache, ps.total, 0) AS ordered_amount,
       coalesce(ps.shipped_amount, 0) AS shipped_amount,
       coalesce(inv.invoiced_amount, 0) AS invoiced_amount, coalesce(inv.paid_amount, 0) AS paid_amount,
       coalesce(s.total_amount_cache, ps.total, 0) AS ordered_amount_home,
       (SELECT max(m.effective_date) FROM stock_move m JOIN sale_line l ON m.origin = 'sale.line,' || l.id
        JOIN stock_location t ON t.id = m.to_location
        WHERE l.sale = s.id AND m.state = 'done' AND t.type = 'customer') AS last_ship_date,
       erp_api.utc(s.write_date, s.create_date) AS updated_at
FROM sale_sale s
JOIN party_party p ON p.id = s.party
JOIN currency_currency c ON c.id = s.currency
LEFT JOIN per_sale ps ON ps.sale = s.id
LEFT JOIN inv ON inv.sale = s.id
WHERE s.number IS NOT NULL;

CREATE VIEW erp_api.sales_order_lines AS
SELECT s.number AS erp_order_no, CASE WHEN s.reference LIKE 'HIST-%' THEN NULL ELSE s.reference END AS external_ref,
       (row_number() OVER (PARTITION BY s.id ORDER BY l.sequence NULLS LAST, l.id))::integer AS line_no,
       t.code AS sku, w.code AS warehouse, round(l.quantity::numeric, 3) AS qty, u.symbol AS uom,
       l.unit_price, 0::numeric AS discount_pct,
       round(coalesce((SELECT sum(x.rate) FROM "sale_line-account_tax" r JOIN account_tax x ON x.id = r.tax
                       WHERE r.line = l.id), 0) * 100, 2) AS tax_rate,
       round(l.unit_price * l.quantity::numeric, 2) AS net_amount, s.shipping_date AS delivery_date,
       0::numeric AS reserved_qty, 0::numeric AS shipped_qty, 0::numeric AS invoiced_qty, 0::numeric AS shortage_qty,
       erp_api.utc(s.write_date, s.create_date) AS updated_at
FROM sale_line l
JOIN sale_sale s ON s.id = l.sale
JOIN product_product p ON p.id = l.product
JOIN product_template t ON t.id = p.template
JOIN product_uom u ON u.id = l.unit
LEFT JOIN stock_location w ON w.id = s.warehouse
WHERE l.type = 'line' AND s.number IS NOT NULL;

-- What each customer invoice bills, line by line.
CREATE VIEW erp_api.invoice_lines AS
SELECT i.number AS invoice_no,
       (row_number() OVER (PARTITION BY i.id ORDER BY l.sequence NULLS LAST, l.id))::integer AS line_no,
       t.code AS sku, round(l.quantity::numeric, 3) AS qty, u.symbol AS uom, l.unit_price, 0::numeric AS discount_pct,
       round(coalesce((SELECT sum(x.rate) FROM "account_invoice_line-account_tax" r JOIN account_tax x ON x.id = r.tax
                       WHERE r.line = l.id), 0) * 100, 2) AS tax_rate,
       round(l.unit_price * l.quantity::numeric, 2) AS net_amount,
       erp_api.utc(i.write_date, i.create_date) AS updated_at
FROM account_invoice_line l
JOIN account_invoice i ON i.id = l.invoice
JOIN product_product p ON p.id = l.product
JOIN product_template t ON t.id = p.template
JOIN product_uom u ON u.id = l.unit
WHERE l.type = 'line' AND i.type = 'out' AND i.number IS NOT NULL;

-- Customer invoices (type 'out'); outstanding = the invoice's receivable lines not yet reconciled.
CREATE VIEW erp_api.invoices AS
SELECT i.number AS invoice_no, p.code AS customer_code, so.number AS sales_order_no,
       CASE WHEN so.reference LIKE 'HIST-%' THEN NULL ELSE so.reference END AS external_ref,
       i.invoice_date, due.due_date, c.code::char(3) AS currency, 1::numeric AS exchange_rate,
       i.untaxed_amount_cache AS net_amount, i.tax_amount_cache AS tax_amount, i.total_amount_cache AS amount,
       coalesce(open.amount, 0) AS outstanding, i.total_amount_cache - coalesce(open.amount, 0) AS paid_amount,
       i.total_amount_cache AS amount_home, coalesce(open.amount, 0) AS outstanding_home,
       CASE WHEN i.state = 'paid' THEN 'PAID' WHEN i.state = 'cancelled' THEN 'CANCELLED'
            WHEN i.state IN ('draft', 'validated') THEN 'DRAFT'
            WHEN due.due_date < current_date THEN 'OVERDUE'
            WHEN coalesce(open.amount, 0) < i.total_amount_cache THEN 'PARTIALLY_PAID'
            ELSE 'UNPAID' END AS status,
       i.state AS status_raw,
       erp_api.utc(i.write_date, i.create_date) AS updated_at
FROM account_invoice i
JOIN party_party p ON p.id = i.party
JOIN currency_currency c ON c.id = i.currency
LEFT JOIN LATERAL (SELECT s.number, s.reference FROM account_invoice_line il
                   JOIN sale_line l ON il.origin = 'sale.line,' || l.id JOIN sale_sale s ON s.id = l.sale
                   WHERE il.invoice = i.id ORDER BY s.id LIMIT 1) so ON true
LEFT JOIN LATERAL (SELECT sum(ml.debit - ml.credit) FILTER (WHERE ml.reconciliation IS NULL) AS amount
                   FROM account_move_line ml JOIN account_account a ON a.id = ml.account
                   JOIN account_account_type at ON at.id = a.type
                   WHERE ml.move = i.move AND at.receivable) open ON true
LEFT JOIN LATERAL (SELECT min(ml.maturity_date) AS due_date FROM account_move_line ml
                   JOIN account_account a ON a.id = ml.account JOIN account_account_type at ON at.id = a.type
                   WHERE ml.move = i.move AND at.receivable) due ON true
WHERE i.type = 'out' AND i.number IS NOT NULL;

-- Credit the ERPNext way, from Tryton's receivable move lines (AR aged by maturity date), its sales not yet
-- invoiced (open orders) and the party's credit limit (account_credit_limit); hold: OVERDUE past 60 days or
-- LIMIT_EXCEEDED (the reference ERP's rules).
CREATE VIEW erp_api.customer_credit AS
WITH open_items AS (
    SELECT ml.party, ml.debit - ml.credit AS amount, greatest(current_date - ml.maturity_date, 0) AS days_overdue
    FROM account_move_line ml
    JOIN account_account a ON a.id = ml.account JOIN account_account_type at ON at.id = a.type
    WHERE at.receivable AND ml.reconciliation IS NULL AND ml.party IS NOT NULL
), ar AS (
    SELECT party, sum(amount) AS open_ar,
           coalesce(sum(amount) FILTER (WHERE days_overdue > 0), 0) AS overdue_amount,
           coalesce(max(days_overdue) FILTER (WHERE amount > 0), 0) AS max_overdue_days,
           coalesce(sum(amount) FILTER (WHERE days_overdue <= 30), 0) AS ar_0_30,
           coalesce(sum(amount) FILTER (WHERE days_overdue BETWEEN 31 AND 60), 0) AS ar_31_60,
           coalesce(sum(amount) FILTER (WHERE days_overdue BETWEEN 61 AND 90), 0) AS ar_61_90,
           coalesce(sum(amount) FILTER (WHERE days_overdue > 90), 0) AS ar_90_plus
    FROM open_items GROUP BY 1
), orders AS (
    SELECT p.id AS party, sum(greatest(o.ordered_amount - o.invoiced_amount, 0)) AS open_orders
    FROM erp_api.sales_order_status o JOIN party_party p ON p.code = o.customer_code
    WHERE o.status IN ('OPEN', 'PARTIALLY_DELIVERED', 'TO_BILL') GROUP BY 1
), sales AS (
    SELECT i.party, sum(i.untaxed_amount_cache) AS ytd_sales,
           coalesce(sum(i.untaxed_amount_cache) FILTER (WHERE i.invoice_date >= date_trunc('month', current_date)), 0)
               AS mtd_sales,
           max(greatest(i.write_date, i.create_date)) AS changed
    FROM account_invoice i
    WHERE i.type = 'out' AND i.state IN ('posted', 'paid') AND i.invoice_date >= date_trunc('year', current_date)
    GROUP BY 1
), pay AS (
    SELECT ml.party, max(m.date) AS last_payment_date
    FROM account_move_line ml JOIN account_move m ON m.id = ml.move
    JOIN account_account a ON a.id = ml.account JOIN account_account_type at ON at.id = a.type
    JOIN account_journal j ON j.id = m.journal
    WHERE at.receivable AND ml.credit > 0 AND j.type = 'cash' GROUP BY 1
), calc AS (
    SELECT c.customer_code, c.currency AS customer_currency,
           coalesce(lim.credit_limit_amount, dflt.amount) AS credit_limit,  -- the party's, else the company's
           coalesce(ar.open_ar, 0) AS open_ar, coalesce(o.open_orders, 0) AS open_orders,
           coalesce(ar.overdue_amount, 0) AS overdue_amount, coalesce(ar.max_overdue_days, 0) AS max_overdue_days,
           coalesce(ar.ar_0_30, 0) AS ar_0_30, coalesce(ar.ar_31_60, 0) AS ar_31_60,
           coalesce(ar.ar_61_90, 0) AS ar_61_90, coalesce(ar.ar_90_plus, 0) AS ar_90_plus,
           coalesce(s.ytd_sales, 0) AS ytd_sales, coalesce(s.mtd_sales, 0) AS mtd_sales, pay.last_payment_date,
           greatest(c.updated_at, erp_api.utc(lim.write_date, lim.create_date), s.changed AT TIME ZONE 'UTC')
               AS updated_at
    FROM erp_api.customers c
    JOIN party_party p ON p.code = c.customer_code
    LEFT JOIN party_party_credit_limit_amount lim ON lim.party = p.id
    LEFT JOIN LATERAL (SELECT d.default_credit_limit_amount AS amount
                       FROM account_configuration_default_credit_limit_amount d ORDER BY d.id LIMIT 1) dflt ON true
    LEFT JOIN ar ON ar.party = p.id
    LEFT JOIN orders o ON o.party = p.id
    LEFT JOIN sales s ON s.party = p.id
    LEFT JOIN pay ON pay.party = p.id
)
SELECT customer_code, (SELECT c.code FROM company_company co JOIN currency_currency c ON c.id = co.currency
                       ORDER BY co.id LIMIT 1)::char(3) AS currency,
       customer_currency, credit_limit, open_ar, open_orders, open_ar + open_orders AS credit_used,
       credit_limit - open_ar - open_orders AS credit_available, overdue_amount, max_overdue_days,
       ar_0_30, ar_31_60, ar_61_90, ar_90_plus, ytd_sales, mtd_sales, last_payment_date,
       hold_reason IS NOT NULL AS credit_hold, hold_reason, false AS bypass_credit_check, updated_at
FROM (SELECT *, CASE WHEN max_overdue_days > 60 THEN 'OVERDUE'
                     WHEN open_ar + open_orders > credit_limit THEN 'LIMIT_EXCEEDED' END AS hold_reason
      FROM calc) x;

-- Production orders (Tryton's production: request, draft, waiting, assigned, running, done, cancelled); the sale a
-- request was raised for is its origin ('sale.line,ID' through sale_supply_production).
CREATE VIEW erp_api.production_schedule AS
SELECT coalesce(m.number, 'REQ-' || m.id) AS mo_no, t.code AS sku, w.code AS warehouse,
       round(m.quantity::numeric, 3) AS qty,
       round(coalesce((SELECT sum(o.internal_quantity) FROM stock_move o WHERE o.production_output = m.id
                       AND o.state = 'done'), 0)::numeric, 3) AS produced_qty,
       coalesce(m.planned_start_date, m.planned_date) AS planned_start, m.planned_date AS planned_finish,
       coalesce(m.origin_planned_date, m.planned_date) AS original_planned_finish,
       (m.planned_date - coalesce(m.origin_planned_date, m.planned_date))::integer AS slip_days,
       m.effective_start_date AS actual_start, m.effective_date AS actual_finish,
       CASE m.state WHEN 'request' THEN 'PLANNED' WHEN 'draft' THEN 'PLANNED' WHEN 'waiting' THEN 'PLANNED'
                    WHEN 'assigned' THEN 'PLANNED' WHEN 'running' THEN 'IN_PROGRESS' WHEN 'done' THEN 'DONE'
                    WHEN 'cancelled' THEN 'CANCELLED' END AS status,
       m.state AS status_raw,
       CASE WHEN m.state IN ('assigned', 'running', 'done') THEN 'AVAILABLE' ELSE 'PENDING' END AS material_status,
       NULL::date AS material_due_date,
       s.number AS erp_order_no, s.reference AS external_ref,
       CASE WHEN s.id IS NOT NULL THEN 'SALES_ORDER' ELSE 'REORDER' END AS demand_source,
       NULL::text AS forecast_version,
       erp_api.utc(m.write_date, m.create_date) AS updated_at
FROM production m
JOIN product_product p ON p.id = m.product
JOIN product_template t ON t.id = p.template
JOIN stock_location w ON w.id = m.warehouse
LEFT JOIN sale_line l ON m.origin = 'sale.line,' || l.id
LEFT JOIN sale_sale s ON s.id = l.sale;

-- The forecast the ERP plans with. A version (one batch of erp_inbound.demand_forecast_in) becomes one Tryton stock
-- forecast per warehouse and period; the import job answers the batch with their ids ('FC-5,7,9'), and the
-- version is active while all of them are done (Tryton's confirmed state) and superseded once all are cancelled.
CREATE VIEW erp_adapter.forecast_version_forecasts AS
SELECT i.erp_doc_no AS version_no, i.source_system, i.batch_id, min(i.horizon_start) AS horizon_start,
       max(i.horizon_end) AS horizon_end, count(*)::integer AS row_count, sum(i.qty)::numeric AS total_qty,
       min(i.processed_at) AS created_at,
       string_to_array(substr(i.erp_doc_no, 4), ',')::integer[] AS forecast_ids
FROM erp_inbound.demand_forecast_in i
WHERE i.status = 'PROCESSED' AND i.erp_doc_no LIKE 'FC-%'
GROUP BY i.erp_doc_no, i.source_system, i.batch_id;

CREATE VIEW erp_api.forecast_versions AS
SELECT v.version_no, v.source_system, v.batch_id, v.horizon_start, v.horizon_end,
       CASE WHEN bool_and(f.state = 'done') THEN 'Active' WHEN bool_and(f.state = 'cancelled') THEN 'Superseded'
            ELSE 'Draft' END AS status,
       v.row_count, v.total_qty, 0 AS production_orders_planned, 0 AS purchase_requests_raised,
       v.created_at, max(erp_api.utc(f.write_date, f.create_date)) AS updated_at
FROM erp_adapter.forecast_version_forecasts v
JOIN stock_forecast f ON f.id = ANY (v.forecast_ids)
GROUP BY v.version_no, v.source_system, v.batch_id, v.horizon_start, v.horizon_end, v.row_count, v.total_qty,
         v.created_at;

CREATE VIEW erp_api.demand_forecast AS
SELECT v.version_no, v.source_system, v.batch_id, v.horizon_start, v.horizon_end, t.code AS sku,
       NULL::text AS region, w.code AS warehouse, f.from_date AS period_start, 'PIPELINE'::text AS demand_type,
       round(l.quantity::numeric, 3) AS qty, erp_api.utc(f.write_date, f.create_date) AS updated_at
FROM erp_adapter.forecast_version_forecasts v
JOIN stock_forecast f ON f.id = ANY (v.forecast_ids)
JOIN stock_forecast_line l ON l.forecast = f.id
JOIN product_product p ON p.id = l.product
JOIN product_template t ON t.id = p.template
JOIN stock_location w ON w.id = f.warehouse
WHERE f.state = 'done';

-- The standard selling list (the contract's name for it, 'Standard Selling') is the template's list price, tax
-- excluded in Tryton, valid from the day it was set; sale price lists with formulas are not expanded here.
CREATE VIEW erp_api.price_list AS
SELECT i.sku, 'Standard Selling'::text AS price_list, i.uom,
       (SELECT c.code FROM company_company co JOIN currency_currency c ON c.id = co.currency
        ORDER BY co.id LIMIT 1)::char(3) AS currency,
       lp.list_price AS unit_price, i.tax_rate, false AS tax_included,
       lp.list_price AS unit_price_excl_tax, round(lp.list_price * (1 + i.tax_rate / 100), 4) AS unit_price_incl_tax,
       1::numeric AS min_qty, (lp.create_date AT TIME ZONE 'UTC')::date AS valid_from, NULL::date AS valid_to,
       greatest(i.updated_at, erp_api.utc(lp.write_date, lp.create_date)) AS updated_at
FROM erp_api.items i
JOIN product_template t ON t.code = i.sku
JOIN product_list_price lp ON lp.template = t.id
WHERE lp.list_price IS NOT NULL;

CREATE VIEW erp_api.tax_rates AS
SELECT 'VAT' || round(rate * 100)::text AS code, round(rate * 100, 2) AS rate, description
FROM account_tax WHERE type = 'percentage';

CREATE VIEW erp_api.currencies AS
SELECT c.code::char(3) AS code, c.name, c.id = (SELECT currency FROM company_company ORDER BY id LIMIT 1) AS is_home,
       -- Tryton's rate is units of this currency per unit of the base; the contract's: home per unit of this
       round(1 / nullif(r.rate, 0), 6) AS rate_to_home, r.date AS rate_date
FROM currency_currency c
LEFT JOIN LATERAL (SELECT x.rate, x.date FROM currency_currency_rate x WHERE x.currency = c.id
                   ORDER BY x.date DESC LIMIT 1) r ON true
WHERE c.code IN ('CNY', 'USD', 'EUR') OR r.rate IS NOT NULL;

-- Tryton deletes only draft documents and keeps no log of them: nothing to report.
CREATE VIEW erp_api.deleted_documents AS
SELECT NULL::text AS doc_type, NULL::text AS doc_no, NULL::timestamptz AS deleted_at WHERE false;

CREATE VIEW erp_api.business_date AS SELECT current_date AS today;
