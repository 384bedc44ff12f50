"""A short, human-readable summary of what the sandbox ERP holds (used by `make demo`)."""

from __future__ import annotations

# rows both summaries show, from the contract's views
_ORDERS_AND_CREDIT = """
UNION ALL SELECT 'sales orders by status',
       (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
        FROM (SELECT status, count(*) n FROM erp_api.sales_order_status GROUP BY 1) s)
UNION ALL SELECT 'invoices by status',
       (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
        FROM (SELECT status, count(*) n FROM erp_api.invoices GROUP BY 1) s)
UNION ALL SELECT 'open AR (CNY): 0-30 / 31-60 / 61-90 / 90+',
       (SELECT sum(open_ar)::bigint || ': ' || sum(ar_0_30)::bigint || ' / ' || sum(ar_31_60)::bigint || ' / '
               || sum(ar_61_90)::bigint || ' / ' || sum(ar_90_plus)::bigint FROM erp_api.customer_credit)
UNION ALL SELECT 'customers on credit hold',
       (SELECT string_agg(hold_reason || ' ' || n, ', ')
        FROM (SELECT hold_reason, count(*) n FROM erp_api.customer_credit WHERE credit_hold GROUP BY 1) s)
"""
_INBOUND = """
UNION ALL SELECT 'inbound rows NEW / PROCESSED / ERROR',
       (SELECT count(*) FILTER (WHERE status = 'NEW') || ' / ' || count(*) FILTER (WHERE status = 'PROCESSED')
               || ' / ' || count(*) FILTER (WHERE status = 'ERROR')
        FROM (SELECT status FROM erp_inbound.customer_in UNION ALL SELECT status FROM erp_inbound.sales_order_in
              UNION ALL SELECT status FROM erp_inbound.demand_forecast_in) s)
"""
SUMMARY_SQL = """
SELECT 'business date', erp.today()::text
UNION ALL SELECT 'customers (of which foreign currency)',
       (SELECT count(*) || ' (' || count(*) FILTER (WHERE currency <> 'CNY') || ')' FROM erp.customer)
UNION ALL SELECT 'items / stock bins', (SELECT count(*) FROM erp.item) || ' / ' || (SELECT count(*) FROM erp.bin)
UNION ALL SELECT 'stock on hand / reserved / available',
       (SELECT sum(on_hand)::bigint || ' / ' || sum(reserved)::bigint || ' / ' || sum(available)::bigint
        FROM erp_api.stock_availability)
UNION ALL SELECT 'bins below safety stock / with a 14-day shortage',
       (SELECT count(*) FILTER (WHERE below_safety_stock) || ' / ' || count(first_shortage_date)
        FROM erp_api.stock_availability)
""" + _ORDERS_AND_CREDIT + """UNION ALL SELECT 'payments received', (SELECT count(*)::text FROM erp.payment_entry)
UNION ALL SELECT 'purchase orders open / production orders open (slipped)',
       (SELECT count(*) FROM erp.purchase_order WHERE status = 'To Receive') || ' / '
       || (SELECT count(*) || ' (' || count(*) FILTER (WHERE slip_days > 0) || ')'
           FROM erp_api.production_schedule WHERE status IN ('PLANNED', 'IN_PROGRESS'))
""" + _INBOUND + """"""

# The same figures from the contract's views alone: what any ERP behind the contract can show (make demo ERP=tryton).
CONTRACT_SUMMARY_SQL = """
SELECT 'business date', (SELECT today::text FROM erp_api.business_date)
UNION ALL SELECT 'customers (of which foreign currency / from the CRM)',
       (SELECT count(*) || ' (' || count(*) FILTER (WHERE currency <> 'CNY') || ' / '
               || count(*) FILTER (WHERE source_system = 'zoho_crm') || ')' FROM erp_api.customers)
UNION ALL SELECT 'items / warehouses',
       (SELECT count(*) FROM erp_api.items) || ' / ' || (SELECT count(*) FROM erp_api.warehouses)
UNION ALL SELECT 'stock on hand / reserved / available',
       (SELECT sum(on_hand)::bigint || ' / ' || sum(reserved)::bigint || ' / ' || sum(available)::bigint
        FROM erp_api.stock_availability)
""" + _ORDERS_AND_CREDIT + """UNION ALL SELECT 'production orders open',
       (SELECT count(*)::text FROM erp_api.production_schedule WHERE status IN ('PLANNED', 'IN_PROGRESS'))
UNION ALL SELECT 'forecast versions by status',
       (SELECT string_agg(status || ' ' || n, ', ' ORDER BY status)
        FROM (SELECT status, count(*) n FROM erp_api.forecast_versions GROUP BY 1) s)
""" + _INBOUND + """"""


def summary(conn, query: str = SUMMARY_SQL) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(query)
        return [(k, v or "-") for k, v in cur.fetchall()]


def print_summary(conn, query: str = SUMMARY_SQL, title: str = "ERP sandbox holds:") -> None:
    rows = summary(conn, query)
    width = max(len(k) for k, _ in rows)
    print(title)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
