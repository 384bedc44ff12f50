"""Forecast planning of the sandbox ERP: what its MRP run does when a demand-forecast version becomes active.

Runs inside the import job's transaction that activates the version, so a version and its plan appear
together or not at all. Set-based SQL, the way ERPNext's Production Plan / SAP's MRP work, simplified:

1. the plan of the superseded version is withdrawn: its production orders not started yet are cancelled,
   its purchase requests not yet ordered too (the new version replaces the plan as a whole);
2. net requirement per SKU and month: the PIPELINE demand (weighted deals) cumulated over the months, less
   the free supply (stock not reserved + open purchase and production receipts − open order demand not yet
   reserved). ORDERS rows (confirmed, unshipped orders) are already sales orders in the ERP: they count for
   capacity, not again for planning;
3. manufactured SKUs get production orders of one week's capacity each (`weekly_capacity`), scheduled
   backwards from the month's start (never before tomorrow); whatever cannot fit lands on the same weeks,
   so the overload is visible to capacity checks;
4. BOM components the new production orders need beyond the free component supply, taken in order of
   planned start, become purchase requests (reason FORECAST, required by the first start that lacks them);
   those orders carry material status PARTIAL / SHORT and the date the material is due;
5. purchased SKUs with a net requirement get a purchase request of their own.
"""

from __future__ import annotations

PLAN_SQL = """
-- 1. the plan of earlier versions of this source is withdrawn where nothing has happened yet
UPDATE erp.production_order m SET status = 'Cancelled', updated_at = now()
FROM erp.forecast_version v
WHERE v.version_no = m.forecast_version AND v.status = 'Superseded' AND v.source_system = %(source)s
  AND m.status = 'Not Started';
UPDATE erp.material_request r SET status = 'Cancelled'
FROM erp.forecast_version v
WHERE v.version_no = r.forecast_version AND v.status = 'Superseded' AND v.source_system = %(source)s
  AND r.status = 'Pending';

-- 2. net requirement per SKU x month
CREATE TEMP TABLE plan_need ON COMMIT DROP AS
WITH demand AS (
    SELECT sku, period_start, sum(qty) AS qty FROM erp.demand_forecast
    WHERE version_no = %(version)s AND demand_type = 'PIPELINE' AND qty > 0 GROUP BY 1, 2
), skus AS (SELECT DISTINCT sku FROM demand
), stock AS (
    SELECT b.sku, sum(b.actual_qty - b.reserved_qty) AS free FROM erp.bin b JOIN skus USING (sku) GROUP BY 1
), receipts AS (
    SELECT sku, sum(qty) AS qty FROM (
        SELECT pl.sku, pl.qty - pl.received_qty AS qty
        FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no) JOIN skus USING (sku)
        WHERE p.status = 'To Receive' AND pl.received_qty < pl.qty
        UNION ALL
        SELECT m.sku, m.qty - m.produced_qty FROM erp.production_order m JOIN skus USING (sku)
        WHERE m.status IN ('Not Started', 'In Process')) r
    GROUP BY sku
), backlog AS (
    SELECT l.sku, sum(l.qty - l.delivered_qty - l.reserved_qty) AS qty
    FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no) JOIN skus USING (sku)
    WHERE o.status IN ('To Deliver and Bill', 'To Deliver') AND l.qty - l.delivered_qty - l.reserved_qty > 0
    GROUP BY 1
), supply AS (
    SELECT s.sku, greatest(coalesce(st.free, 0) + coalesce(r.qty, 0) - coalesce(bk.qty, 0), 0) AS free
    FROM skus s LEFT JOIN stock st USING (sku) LEFT JOIN receipts r USING (sku) LEFT JOIN backlog bk USING (sku)
), cum AS (
    SELECT d.sku, d.period_start,
           greatest(sum(d.qty) OVER (PARTITION BY d.sku ORDER BY d.period_start) - s.free, 0) AS cum_need
    FROM demand d JOIN supply s USING (sku)
)
SELECT c.sku, c.period_start,
       c.cum_need - coalesce(lag(c.cum_need) OVER (PARTITION BY c.sku ORDER BY c.period_start), 0) AS need,
       i.is_manufactured, i.weekly_capacity, i.lead_time_days,
       greatest(c.period_start, erp.today() + i.lead_time_days) AS needed_by
FROM cum c JOIN erp.item i USING (sku)
WHERE i.is_stock_item;

-- 3. production orders, one week of capacity each, backwards from the month's start
CREATE TEMP TABLE plan_mo ON COMMIT DROP AS
SELECT erp.doc_no('MO', 'erp.mo_seq') AS mo_no, s.sku, s.qty, s.planned_start,
       greatest(s.finish, s.planned_start + 6) AS planned_finish
FROM (
    SELECT n.sku, n.period_start, k,
           CASE WHEN k < slots THEN n.weekly_capacity ELSE n.need - (slots - 1) * n.weekly_capacity END AS qty,
           n.needed_by - 7 * (k - 1) AS finish,
           greatest(n.needed_by - 7 * (k - 1) - 6, erp.today() + 1) AS planned_start
    FROM plan_need n
    CROSS JOIN LATERAL (SELECT least(ceil(n.need / n.weekly_capacity)::int, 26) AS slots) x
    CROSS JOIN LATERAL generate_series(1, x.slots) k
    WHERE n.is_manufactured AND n.need > 0 AND n.weekly_capacity > 0
    ORDER BY n.sku, n.period_start, k
) s;

-- 4. components of the new orders, taken in order of planned start, against the free component supply
CREATE TEMP TABLE plan_comp ON COMMIT DROP AS
SELECT m.mo_no, m.planned_start, bi.component_sku AS sku, ci.lead_time_days,
       m.qty * bi.qty / bm.qty AS req,
       sum(m.qty * bi.qty / bm.qty) OVER (PARTITION BY bi.component_sku ORDER BY m.planned_start, m.mo_no) AS cum_req
FROM plan_mo m JOIN erp.bom bm ON bm.sku = m.sku JOIN erp.bom_item bi USING (bom_no)
JOIN erp.item ci ON ci.sku = bi.component_sku;
CREATE TEMP TABLE plan_comp_free ON COMMIT DROP AS
WITH c AS (SELECT DISTINCT sku FROM plan_comp)
SELECT c.sku, greatest(sum(s.qty), 0) AS free
FROM c LEFT JOIN (
    SELECT b.sku, b.actual_qty - b.reserved_qty AS qty FROM erp.bin b JOIN c USING (sku)
    UNION ALL
    SELECT pl.sku, pl.qty - pl.received_qty FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no)
    JOIN c USING (sku) WHERE p.status = 'To Receive' AND pl.received_qty < pl.qty
    UNION ALL
    SELECT r.sku, r.qty FROM erp.material_request r JOIN c USING (sku) WHERE r.status = 'Pending'
) s USING (sku)
GROUP BY c.sku;
-- material status per new production order: its components taken in order of planned start
CREATE TEMP TABLE plan_mo_material ON COMMIT DROP AS
SELECT c.mo_no,
       CASE WHEN bool_and(c.cum_req <= coalesce(f.free, 0)) THEN 'AVAILABLE'
            WHEN bool_and(c.cum_req - c.req >= coalesce(f.free, 0)) THEN 'SHORT' ELSE 'PARTIAL' END AS status,
       max(CASE WHEN c.cum_req > coalesce(f.free, 0) THEN erp.today() + c.lead_time_days END) AS due
FROM plan_comp c LEFT JOIN plan_comp_free f USING (sku)
GROUP BY c.mo_no;

INSERT INTO erp.production_order (mo_no, sku, warehouse, qty, planned_start, planned_finish, original_planned_finish,
                                  status, material_status, material_due_date, forecast_version)
SELECT m.mo_no, m.sku, %(warehouse)s, m.qty, m.planned_start, m.planned_finish, m.planned_finish, 'Not Started',
       coalesce(ms.status, 'AVAILABLE'), ms.due, %(version)s
FROM plan_mo m
LEFT JOIN plan_mo_material ms USING (mo_no)
ORDER BY m.mo_no;

-- 4b. purchase requests for the short components; 5. for purchased SKUs with a net requirement
INSERT INTO erp.material_request (mr_no, sku, warehouse, qty, request_type, reason, required_by, forecast_version)
SELECT erp.doc_no('MR', 'erp.mr_seq'), sku, %(warehouse)s, qty, 'Purchase', 'FORECAST', required_by, %(version)s
FROM (
    SELECT c.sku, ceil(max(c.cum_req) - f.free) AS qty, min(c.planned_start) FILTER (WHERE c.cum_req > f.free)
           AS required_by
    FROM plan_comp c JOIN plan_comp_free f USING (sku) GROUP BY c.sku, f.free HAVING max(c.cum_req) > f.free
    UNION ALL
    SELECT sku, ceil(need), needed_by FROM plan_need WHERE NOT is_manufactured AND need > 0
    ORDER BY 1, 3
) r;

UPDATE erp.forecast_version SET
    production_orders_planned = (SELECT count(*) FROM plan_mo),
    purchase_requests_raised = (SELECT count(*) FROM erp.material_request WHERE forecast_version = %(version)s),
    updated_at = now()
WHERE version_no = %(version)s;

SELECT erp.refresh_bins(ARRAY(SELECT sku FROM plan_need UNION SELECT sku FROM plan_comp
                              UNION SELECT m.sku FROM erp.production_order m JOIN erp.forecast_version v
                                    ON v.version_no = m.forecast_version WHERE v.source_system = %(source)s
                                    AND m.status = 'Cancelled' AND m.updated_at >= now()));
"""


def plan_forecast(cur, version_no: str, source_system: str) -> dict[str, int]:
    """Plan the active forecast version `version_no` (inside the caller's transaction)."""
    cur.execute("SELECT value FROM erp.setting WHERE key = 'production_warehouse'")
    row = cur.fetchone()
    warehouse = (row["value"] if isinstance(row, dict) else row[0]) if row else "SZ01"
    cur.execute(PLAN_SQL, {"version": version_no, "source": source_system, "warehouse": warehouse})
    cur.execute("SELECT production_orders_planned, purchase_requests_raised FROM erp.forecast_version "
                "WHERE version_no = %s", (version_no,))
    row = cur.fetchone()
    values = list(row.values()) if isinstance(row, dict) else list(row)
    return {"production_orders_planned": values[0], "purchase_requests_raised": values[1]}
