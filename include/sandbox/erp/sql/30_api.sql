-- The read contract (schema erp_api). The integration's read-only role sees these views and nothing
-- else; a real ERP provides the same names and columns (see docs/erp-contract.md).
-- Every view has updated_at for incremental reads; amounts labelled *_home are in the home currency.
CREATE SCHEMA erp_api;

-- Normalized sales-order status (the contract's vocabulary) from ERPNext's raw status.
CREATE FUNCTION erp_api.normalized_order_status(p_status text, p_per_delivered numeric) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status
        WHEN 'Draft' THEN 'DRAFT'
        WHEN 'On Hold' THEN 'ON_HOLD'
        WHEN 'To Deliver and Bill' THEN CASE WHEN p_per_delivered > 0 THEN 'PARTIALLY_DELIVERED' ELSE 'OPEN' END
        WHEN 'To Deliver' THEN 'PARTIALLY_DELIVERED'
        WHEN 'To Bill' THEN 'TO_BILL'
        WHEN 'Completed' THEN 'COMPLETED'
        WHEN 'Closed' THEN 'CLOSED'
        WHEN 'Cancelled' THEN 'CANCELLED'
    END $$;


CREATE VIEW erp_api.stock_availability AS
SELECT b.sku,
       b.warehouse,
       i.stock_uom                     AS uom,
       b.actual_qty                    AS on_hand,
       b.reserved_qty                  AS reserved,
       b.actual_qty - b.reserved_qty   AS available,
       b.ordered_qty                   AS incoming_po,
       b.planned_qty                   AS incoming_mo,
       b.projected_14d,
       b.shortage_date                 AS first_shortage_date,
       b.safety_stock,
       (b.actual_qty - b.reserved_qty) < b.safety_stock AS below_safety_stock,
       b.updated_at
FROM erp.bin b
JOIN erp.item i USING (sku);

CREATE VIEW erp_api.customer_credit AS
SELECT s.customer_code,
       h.code                                  AS currency,          -- all amounts: home currency
       c.currency                              AS customer_currency, -- the customer trades in this
       s.credit_limit,
       s.open_ar,
       s.open_orders,
       s.open_ar + s.open_orders               AS credit_used,
       s.credit_limit - s.open_ar - s.open_orders AS credit_available,
       s.overdue_amount,
       s.max_overdue_days,
       s.ar_0_30, s.ar_31_60, s.ar_61_90, s.ar_90_plus,
       s.ytd_sales,
       s.mtd_sales,
       s.last_payment_date,
       s.hold_reason IS NOT NULL               AS credit_hold,
       s.hold_reason,
       c.bypass_credit_check,
       greatest(s.updated_at, c.updated_at)    AS updated_at
FROM erp.customer_credit_summary s
JOIN erp.customer c USING (customer_code)
CROSS JOIN (SELECT code FROM erp.currency WHERE is_home) h;

CREATE VIEW erp_api.customers AS
SELECT c.customer_code, c.customer_name, c.customer_name_en, c.uscc, c.customer_group, c.region, c.city,
       c.address, c.phone, c.currency, c.payment_terms_days, c.is_active, c.source_system, c.source_id,
       c.created_at, c.updated_at
FROM erp.customer c;

CREATE VIEW erp_api.items AS
SELECT i.sku, i.item_name, i.item_group, i.stock_uom AS uom, t.rate AS tax_rate, i.is_stock_item,
       i.is_manufactured, i.lead_time_days, i.weekly_capacity, i.is_active, i.updated_at
FROM erp.item i
JOIN erp.tax_rate t ON t.code = i.tax_rate_code;

CREATE VIEW erp_api.item_uom AS
SELECT sku, uom, factor AS factor_to_stock_uom FROM erp.uom_conversion;

CREATE VIEW erp_api.invoices AS
SELECT i.invoice_no,
       i.customer_code,
       i.so_no                         AS sales_order_no,
       o.source_id                     AS external_ref,
       i.invoice_date,
       i.due_date,
       i.currency,
       i.exchange_rate,
       i.net_amount,
       i.tax_amount,
       i.grand_total                   AS amount,
       i.outstanding_amount            AS outstanding,
       i.grand_total - i.outstanding_amount AS paid_amount,
       round(i.grand_total * i.exchange_rate, 2)        AS amount_home,
       round(i.outstanding_amount * i.exchange_rate, 2) AS outstanding_home,
       CASE i.status
           WHEN 'Unpaid' THEN 'UNPAID'
           WHEN 'Partly Paid' THEN 'PARTIALLY_PAID'
           WHEN 'Paid' THEN 'PAID'
           WHEN 'Overdue' THEN 'OVERDUE'
           WHEN 'Cancelled' THEN 'CANCELLED'
           WHEN 'Return' THEN 'RETURN'
           WHEN 'Credit Note Issued' THEN 'CREDIT_NOTE_ISSUED'
           WHEN 'Draft' THEN 'DRAFT'
       END                             AS status,
       i.status                        AS status_raw,
       i.updated_at
FROM erp.sales_invoice i
LEFT JOIN erp.sales_order o ON o.so_no = i.so_no;

-- what each invoice bills, line by line (Zoho creates an invoice only with its Invoiced_Items)
CREATE VIEW erp_api.invoice_lines AS
SELECT l.invoice_no, l.line_no, l.sku, l.qty, i.stock_uom AS uom, l.unit_price, l.discount_pct, l.tax_rate, l.net_amount,
       v.updated_at
FROM erp.sales_invoice_line l
JOIN erp.item i ON i.sku = l.sku
JOIN erp.sales_invoice v ON v.invoice_no = l.invoice_no;

CREATE VIEW erp_api.sales_order_status AS
SELECT o.so_no                          AS erp_order_no,
       o.source_system,
       o.source_id                      AS external_ref,
       o.customer_po_no,
       o.customer_code,
       o.order_date,
       o.delivery_date,
       o.currency,
       o.exchange_rate,
       erp_api.normalized_order_status(o.status, l.per_delivered) AS status,
       o.status                         AS status_raw,
       o.hold_reason,
       o.is_prepaid,
       l.ordered_qty, l.reserved_qty, l.shipped_qty, l.invoiced_qty, l.shortage_qty,
       l.per_delivered, l.per_billed,
       o.grand_total                    AS ordered_amount,
       l.shipped_amount,
       coalesce(inv.invoiced_amount, 0) AS invoiced_amount,
       coalesce(inv.paid_amount, 0)     AS paid_amount,
       round(o.grand_total * o.exchange_rate, 2) AS ordered_amount_home,
       dn.last_ship_date,
       o.updated_at
FROM erp.sales_order o
CROSS JOIN LATERAL (
    SELECT sum(qty) AS ordered_qty,
           sum(reserved_qty) AS reserved_qty,
           sum(delivered_qty) AS shipped_qty,
           sum(billed_qty) AS invoiced_qty,
           sum(CASE WHEN o.status IN ('To Deliver and Bill', 'To Deliver')
                    THEN qty - delivered_qty - reserved_qty ELSE 0 END) AS shortage_qty,
           round(100 * sum(delivered_qty) / sum(qty), 2) AS per_delivered,
           round(100 * sum(billed_qty) / sum(qty), 2) AS per_billed,
           round(sum(net_amount * delivered_qty / qty * (1 + tax_rate / 100)), 2)
               AS shipped_amount
    FROM erp.sales_order_line WHERE so_no = o.so_no
) l
LEFT JOIN LATERAL (
    SELECT sum(grand_total) AS invoiced_amount, sum(grand_total - outstanding_amount) AS paid_amount
    FROM erp.sales_invoice WHERE so_no = o.so_no AND status <> 'Cancelled'
) inv ON true
LEFT JOIN LATERAL (
    SELECT max(ship_date) AS last_ship_date FROM erp.delivery_note WHERE so_no = o.so_no
) dn ON true;

CREATE VIEW erp_api.sales_order_lines AS
SELECT l.so_no AS erp_order_no, o.source_id AS external_ref, l.line_no, l.sku, l.warehouse,
       l.qty, i.stock_uom AS uom, l.unit_price, l.discount_pct, l.tax_rate, l.net_amount, l.delivery_date,
       l.reserved_qty, l.delivered_qty AS shipped_qty, l.billed_qty AS invoiced_qty,
       CASE WHEN o.status IN ('To Deliver and Bill', 'To Deliver')
            THEN l.qty - l.delivered_qty - l.reserved_qty ELSE 0 END AS shortage_qty,
       o.updated_at
FROM erp.sales_order_line l
JOIN erp.sales_order o USING (so_no)
JOIN erp.item i USING (sku);

CREATE VIEW erp_api.production_schedule AS
SELECT m.mo_no,
       m.sku,
       m.warehouse,
       m.qty,
       m.produced_qty,
       m.planned_start,
       m.planned_finish,
       m.original_planned_finish,
       m.planned_finish - m.original_planned_finish AS slip_days,
       m.actual_start,
       m.actual_finish,
       CASE m.status WHEN 'Not Started' THEN 'PLANNED' WHEN 'In Process' THEN 'IN_PROGRESS'
                     WHEN 'Completed' THEN 'DONE' WHEN 'Stopped' THEN 'STOPPED'
                     WHEN 'Cancelled' THEN 'CANCELLED' END AS status,
       m.status AS status_raw,
       m.material_status,
       m.material_due_date,
       m.so_no   AS erp_order_no,
       o.source_id AS external_ref,
       CASE WHEN m.forecast_version IS NOT NULL THEN 'FORECAST'
            WHEN m.so_no IS NOT NULL THEN 'SALES_ORDER' ELSE 'REORDER' END AS demand_source,
       m.forecast_version,
       m.updated_at
FROM erp.production_order m
LEFT JOIN erp.sales_order o ON o.so_no = m.so_no;

-- The demand forecast the ERP plans with: the rows of every active version (one per horizon).
CREATE VIEW erp_api.demand_forecast AS
SELECT v.version_no, v.source_system, v.batch_id, v.horizon_start, v.horizon_end,
       f.sku, f.region, f.warehouse, f.period_start, f.demand_type, f.qty, v.updated_at
FROM erp.forecast_version v
JOIN erp.demand_forecast f USING (version_no)
WHERE v.status = 'Active';

-- Every forecast version received, with what planning it created.
CREATE VIEW erp_api.forecast_versions AS
SELECT version_no, source_system, batch_id, horizon_start, horizon_end, status, row_count, total_qty,
       production_orders_planned, purchase_requests_raised, created_at, updated_at
FROM erp.forecast_version;

CREATE VIEW erp_api.price_list AS
SELECT p.sku,
       p.price_list,
       p.uom,
       p.currency,
       p.unit_price,
       t.rate AS tax_rate,
       p.tax_included,
       CASE WHEN p.tax_included THEN round(p.unit_price / (1 + t.rate / 100), 4) ELSE p.unit_price END
           AS unit_price_excl_tax,
       CASE WHEN p.tax_included THEN p.unit_price ELSE round(p.unit_price * (1 + t.rate / 100), 4) END
           AS unit_price_incl_tax,
       p.min_qty,
       p.valid_from,
       p.valid_to,
       p.updated_at
FROM erp.item_price p
JOIN erp.item i USING (sku)
JOIN erp.tax_rate t ON t.code = i.tax_rate_code;

CREATE VIEW erp_api.tax_rates AS SELECT code, rate, description FROM erp.tax_rate;
CREATE VIEW erp_api.warehouses AS SELECT code, name, city, is_active FROM erp.warehouse;
CREATE VIEW erp_api.currencies AS
SELECT c.code, c.name, c.is_home, r.rate_to_home, r.rate_date
FROM erp.currency c
LEFT JOIN LATERAL (SELECT rate_to_home, rate_date FROM erp.exchange_rate x
                   WHERE x.currency = c.code ORDER BY rate_date DESC LIMIT 1) r ON true;

CREATE VIEW erp_api.deleted_documents AS SELECT doc_type, doc_no, deleted_at FROM erp.deleted_document;

-- The ERP's posting date (a real ERP: the current date; the sandbox: its simulated business date).
-- (Tables inside a view are read with the owner's rights; a function would need the reader's EXECUTE.)
CREATE VIEW erp_api.business_date AS SELECT value::date AS today FROM erp.setting WHERE key = 'business_date';
