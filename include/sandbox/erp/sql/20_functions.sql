-- ERP-internal routines that keep the derived figures (Bin, credit summary) current.
-- Each is set-based and touches updated_at only on rows whose figures really changed, so the
-- integration's incremental reads see exactly the real changes.

-- Recompute reserved / ordered / planned and the 14-day projection of the bins of p_skus (all if NULL).
-- Projection the Odoo way, per bin and day d0..d13: available now + receipts due by that day (open
-- purchase lines, production output; overdue ones count on d0) - unreserved open sales demand due by
-- that day. projected_14d is the minimum over the 14 days, shortage_date the first day below zero.
CREATE FUNCTION erp.refresh_bins(p_skus text[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d0 date := erp.today();
    n  integer;
BEGIN
    -- A one-shot plan (EXECUTE) sees the array as a constant: good row estimates and a hashed
    -- "= ANY" even when a busy day touches 100,000+ keys (a cached generic plan does neither).
    EXECUTE $q$
    WITH res AS (
        SELECT l.sku, l.warehouse, sum(l.reserved_qty) AS reserved
        FROM erp.sales_order_line l
        WHERE l.reserved_qty > 0 AND ($1 IS NULL OR l.sku = ANY ($1))
        GROUP BY 1, 2
    ), po AS (
        SELECT pl.sku, pl.warehouse, sum(pl.qty - pl.received_qty) AS ordered
        FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no)
        WHERE p.status = 'To Receive' AND pl.received_qty < pl.qty AND ($1 IS NULL OR pl.sku = ANY ($1))
        GROUP BY 1, 2
    ), mo AS (
        SELECT m.sku, m.warehouse, sum(m.qty - m.produced_qty) AS planned
        FROM erp.production_order m
        WHERE m.status IN ('Not Started', 'In Process') AND ($1 IS NULL OR m.sku = ANY ($1))
        GROUP BY 1, 2
    ), events AS (
        SELECT pl.sku, pl.warehouse, greatest(pl.expected_date, $2) AS d, pl.qty - pl.received_qty AS delta
        FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no)
        WHERE p.status = 'To Receive' AND pl.received_qty < pl.qty AND pl.expected_date <= $2 + 13
          AND ($1 IS NULL OR pl.sku = ANY ($1))
        UNION ALL
        SELECT m.sku, m.warehouse, greatest(m.planned_finish, $2), m.qty - m.produced_qty
        FROM erp.production_order m
        WHERE m.status IN ('Not Started', 'In Process') AND m.planned_finish <= $2 + 13
          AND ($1 IS NULL OR m.sku = ANY ($1))
        UNION ALL
        SELECT l.sku, l.warehouse, greatest(l.delivery_date, $2), -(l.qty - l.delivered_qty - l.reserved_qty)
        FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no)
        WHERE o.status IN ('To Deliver and Bill', 'To Deliver') AND l.qty - l.delivered_qty - l.reserved_qty > 0
          AND l.delivery_date <= $2 + 13 AND ($1 IS NULL OR l.sku = ANY ($1))
    ), running AS (
        SELECT sku, warehouse, d,
               sum(sum(delta)) OVER (PARTITION BY sku, warehouse ORDER BY d) AS cum
        FROM events GROUP BY sku, warehouse, d
    ), calc AS (
        SELECT b.sku, b.warehouse,
               coalesce(res.reserved, 0) AS reserved,
               coalesce(po.ordered, 0) AS ordered,
               coalesce(mo.planned, 0) AS planned,
               b.actual_qty - coalesce(res.reserved, 0) AS available
        FROM erp.bin b
        LEFT JOIN res USING (sku, warehouse)
        LEFT JOIN po USING (sku, warehouse)
        LEFT JOIN mo USING (sku, warehouse)
        WHERE $1 IS NULL OR b.sku = ANY ($1)
    ), proj AS (
        SELECT c.sku, c.warehouse, c.reserved, c.ordered, c.planned,
               least(c.available, min(c.available + r.cum)) AS projected,
               CASE WHEN c.available < 0 THEN $2
                    ELSE min(r.d) FILTER (WHERE c.available + r.cum < 0) END AS shortage
        FROM calc c LEFT JOIN running r USING (sku, warehouse)
        GROUP BY c.sku, c.warehouse, c.reserved, c.ordered, c.planned, c.available
    )
    UPDATE erp.bin b
    SET reserved_qty = p.reserved, ordered_qty = p.ordered, planned_qty = p.planned,
        projected_14d = p.projected, shortage_date = p.shortage, updated_at = now()
    FROM proj p
    WHERE b.sku = p.sku AND b.warehouse = p.warehouse
      AND (b.reserved_qty, b.ordered_qty, b.planned_qty, b.projected_14d, b.shortage_date)
          IS DISTINCT FROM (p.reserved, p.ordered, p.planned, p.projected, p.shortage)
    $q$ USING p_skus, d0;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Recompute the credit / AR summary of p_codes (all customers if NULL), all amounts in the home
-- currency. Credit the ERPNext way: limit from customer, else customer group; exposure = open AR +
-- unbilled value of open confirmed orders (tax included); AR aged by due date, items not yet due
-- counting as 0-30. Each invoice is converted and rounded first so the buckets add up to open_ar.
CREATE FUNCTION erp.refresh_customer_credit(p_codes text[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d0         date := erp.today();
    block_days integer := erp.setting_num('overdue_block_days', 60);
    n          integer;
BEGIN
    -- A one-shot plan (EXECUTE) sees the array as a constant: good row estimates and a hashed
    -- "= ANY" even when a busy day touches 100,000+ keys (a cached generic plan does neither).
    EXECUTE $q$
    WITH cust AS (
        SELECT c.customer_code, coalesce(c.credit_limit, g.credit_limit) AS credit_limit,
               c.bypass_credit_check, c.manual_hold
        FROM erp.customer c JOIN erp.customer_group g ON g.code = c.customer_group
        WHERE $1 IS NULL OR c.customer_code = ANY ($1)
    ), open_items AS (
        SELECT i.customer_code, round(i.outstanding_amount * i.exchange_rate, 2) AS home,
               greatest($2 - i.due_date, 0) AS days_overdue
        FROM erp.sales_invoice i
        WHERE i.outstanding_amount > 0 AND i.status NOT IN ('Draft', 'Cancelled')
          AND ($1 IS NULL OR i.customer_code = ANY ($1))
    ), ar AS (
        SELECT customer_code,
               sum(home) FILTER (WHERE days_overdue > 0) AS overdue_amount,
               max(days_overdue) AS max_overdue_days,
               sum(home) FILTER (WHERE days_overdue <= 30) AS ar_0_30,
               sum(home) FILTER (WHERE days_overdue BETWEEN 31 AND 60) AS ar_31_60,
               sum(home) FILTER (WHERE days_overdue BETWEEN 61 AND 90) AS ar_61_90,
               sum(home) FILTER (WHERE days_overdue > 90) AS ar_90_plus
        FROM open_items GROUP BY 1
    ), sales AS (
        SELECT customer_code,
               sum(round(net_amount * exchange_rate, 2)) AS ytd_sales,
               sum(round(net_amount * exchange_rate, 2))
                   FILTER (WHERE invoice_date >= date_trunc('month', $2)::date) AS mtd_sales
        FROM erp.sales_invoice
        WHERE status NOT IN ('Draft', 'Cancelled', 'Return', 'Credit Note Issued')
          AND invoice_date BETWEEN date_trunc('year', $2)::date AND $2
          AND ($1 IS NULL OR customer_code = ANY ($1))
        GROUP BY 1
    ), orders AS (
        SELECT o.customer_code,
               sum(round(l.net_amount * (l.qty - l.billed_qty) / l.qty
                         * (1 + l.tax_rate / 100) * o.exchange_rate, 2)) AS open_orders
        FROM erp.sales_order o JOIN erp.sales_order_line l USING (so_no)
        WHERE o.status IN ('To Deliver and Bill', 'To Deliver', 'To Bill') AND l.qty > l.billed_qty
          AND ($1 IS NULL OR o.customer_code = ANY ($1))
        GROUP BY 1
    ), pay AS (
        SELECT customer_code, max(payment_date) AS last_payment_date
        FROM erp.payment_entry
        WHERE $1 IS NULL OR customer_code = ANY ($1)
        GROUP BY 1
    ), calc AS (
        SELECT c.customer_code, c.credit_limit,
               coalesce(ar.ar_0_30, 0) + coalesce(ar.ar_31_60, 0) + coalesce(ar.ar_61_90, 0)
                   + coalesce(ar.ar_90_plus, 0) AS open_ar,
               coalesce(o.open_orders, 0) AS open_orders,
               coalesce(ar.overdue_amount, 0) AS overdue_amount,
               coalesce(ar.max_overdue_days, 0) AS max_overdue_days,
               coalesce(ar.ar_0_30, 0) AS ar_0_30, coalesce(ar.ar_31_60, 0) AS ar_31_60,
               coalesce(ar.ar_61_90, 0) AS ar_61_90, coalesce(ar.ar_90_plus, 0) AS ar_90_plus,
               coalesce(s.ytd_sales, 0) AS ytd_sales, coalesce(s.mtd_sales, 0) AS mtd_sales,
               p.last_payment_date, c.bypass_credit_check, c.manual_hold
        FROM cust c
        LEFT JOIN ar USING (customer_code)
        LEFT JOIN sales s USING (customer_code)
        LEFT JOIN orders o USING (customer_code)
        LEFT JOIN pay p USING (customer_code)
    )
    INSERT INTO erp.customer_credit_summary AS s
        (customer_code, credit_limit, open_ar, open_orders, overdue_amount, max_overdue_days,
         ar_0_30, ar_31_60, ar_61_90, ar_90_plus, ytd_sales, mtd_sales, last_payment_date, hold_reason)
    SELECT customer_code, credit_limit, open_ar, open_orders, overdue_amount, max_overdue_days,
           ar_0_30, ar_31_60, ar_61_90, ar_90_plus, ytd_sales, mtd_sales, last_payment_date,
           CASE WHEN manual_hold THEN 'MANUAL'
                WHEN max_overdue_days > $3 THEN 'OVERDUE'
                WHEN NOT bypass_credit_check AND open_ar + open_orders > credit_limit THEN 'LIMIT_EXCEEDED'
           END
    FROM calc
    ON CONFLICT (customer_code) DO UPDATE
    SET credit_limit = excluded.credit_limit, open_ar = excluded.open_ar, open_orders = excluded.open_orders,
        overdue_amount = excluded.overdue_amount, max_overdue_days = excluded.max_overdue_days,
        ar_0_30 = excluded.ar_0_30, ar_31_60 = excluded.ar_31_60, ar_61_90 = excluded.ar_61_90,
        ar_90_plus = excluded.ar_90_plus, ytd_sales = excluded.ytd_sales, mtd_sales = excluded.mtd_sales,
        last_payment_date = excluded.last_payment_date, hold_reason = excluded.hold_reason,
        updated_at = now()
    WHERE (s.credit_limit, s.open_ar, s.open_orders, s.overdue_amount, s.max_overdue_days, s.ar_0_30,
           s.ar_31_60, s.ar_61_90, s.ar_90_plus, s.ytd_sales, s.mtd_sales, s.last_payment_date, s.hold_reason)
          IS DISTINCT FROM
          (excluded.credit_limit, excluded.open_ar, excluded.open_orders, excluded.overdue_amount,
           excluded.max_overdue_days, excluded.ar_0_30, excluded.ar_31_60, excluded.ar_61_90,
           excluded.ar_90_plus, excluded.ytd_sales, excluded.mtd_sales, excluded.last_payment_date,
           excluded.hold_reason)
    $q$ USING p_codes, d0, block_days;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Document numbers like SO2026-000123: prefix, business year, a sequence zero-padded to 6 digits and
-- never truncated (lpad alone would cut 1000000 to 100000 and collide).
CREATE FUNCTION erp.doc_no(p_prefix text, p_seq regclass, p_width integer DEFAULT 6) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT p_prefix || to_char(erp.today(), 'YYYY') || '-' || lpad(n::text, greatest(p_width, length(n::text)), '0')
    FROM nextval(p_seq) AS n
$$;

-- Deterministic pseudo-random number in [0, 1) for the simulator: the same seed and key give the same
-- value whatever order rows are scanned in.
CREATE FUNCTION erp.rnd(p_key text) RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT ('x' || substr(md5(coalesce((SELECT value FROM erp.setting WHERE key = 'seed'), '0') || ':' || p_key),
                          1, 8))::bit(32)::bigint / 4294967296::numeric
$$;

CREATE FUNCTION erp.log_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO erp.deleted_document (doc_type, doc_no)
    VALUES (TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[1]);  -- (doc type, its number column)
    RETURN OLD;
END $$;
CREATE TRIGGER sales_order_deleted AFTER DELETE ON erp.sales_order
    FOR EACH ROW EXECUTE FUNCTION erp.log_deletion('SALES_ORDER', 'so_no');
CREATE TRIGGER sales_invoice_deleted AFTER DELETE ON erp.sales_invoice
    FOR EACH ROW EXECUTE FUNCTION erp.log_deletion('SALES_INVOICE', 'invoice_no');
