"""The read contract agrees with the core tables, and the simulator moves stock, AR and order status."""

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from include.sandbox.erp import simulator


def check_views_agree_with_core_tables(erp):
    # available = on_hand - reserved; reserved = what open lines hold; incoming = open purchase / production
    assert erp.scalar("SELECT count(*) FROM erp_api.stock_availability WHERE available <> on_hand - reserved") == 0
    assert erp.scalar("""
        SELECT count(*) FROM erp_api.stock_availability s
        LEFT JOIN (SELECT sku, warehouse, sum(reserved_qty) r FROM erp.sales_order_line GROUP BY 1, 2) l
               USING (sku, warehouse)
        WHERE s.reserved <> coalesce(l.r, 0)""") == 0
    assert erp.scalar("""
        SELECT count(*) FROM erp_api.stock_availability s
        LEFT JOIN (SELECT pl.sku, pl.warehouse, sum(pl.qty - pl.received_qty) q
                   FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no)
                   WHERE p.status = 'To Receive' GROUP BY 1, 2) po USING (sku, warehouse)
        WHERE s.incoming_po <> coalesce(po.q, 0)""") == 0
    assert erp.scalar("SELECT count(*) FROM erp_api.stock_availability WHERE projected_14d > available") == 0
    assert erp.scalar("SELECT count(*) FROM erp_api.stock_availability WHERE on_hand < 0 OR reserved > on_hand") == 0

    # AR: buckets add up to open AR, open AR is the outstanding invoices, credit used = AR + open orders
    assert erp.scalar("""SELECT count(*) FROM erp_api.customer_credit
                         WHERE ar_0_30 + ar_31_60 + ar_61_90 + ar_90_plus <> open_ar
                            OR credit_used <> open_ar + open_orders
                            OR credit_available <> credit_limit - credit_used""") == 0
    assert erp.scalar("""
        SELECT count(*) FROM erp_api.customer_credit c
        LEFT JOIN (SELECT customer_code, sum(round(outstanding_amount * exchange_rate, 2)) ar,
                          sum(round(outstanding_amount * exchange_rate, 2)) FILTER (WHERE due_date < erp.today()) od
                   FROM erp.sales_invoice WHERE status NOT IN ('Cancelled', 'Draft') GROUP BY 1) i
               USING (customer_code)
        WHERE c.open_ar <> coalesce(i.ar, 0) OR c.overdue_amount <> coalesce(i.od, 0)""") == 0
    assert erp.scalar("SELECT count(*) FROM erp_api.invoices WHERE outstanding < 0 OR outstanding > amount") == 0
    assert erp.scalar("""
        SELECT count(*) FROM erp_api.invoices i
        JOIN (SELECT invoice_no, sum(amount) paid FROM erp.payment_entry GROUP BY 1) p USING (invoice_no)
        WHERE i.paid_amount <> p.paid""") == 0

    # orders: shipped quantities are the delivery notes'
    assert erp.scalar("""
        SELECT count(*) FROM erp_api.sales_order_status s
        LEFT JOIN (SELECT so_no, sum(qty) q FROM erp.delivery_note_line GROUP BY 1) d ON d.so_no = s.erp_order_no
        WHERE s.shipped_qty <> coalesce(d.q, 0)""") == 0


def test_views_agree_with_core_tables_after_seeding(erp):
    check_views_agree_with_core_tables(erp)


def test_projection_matches_a_day_by_day_recount(erp):
    """Recompute the 14-day projection in Python from the dated documents and compare every bin."""
    today = erp.scalar("SELECT erp.today()")
    events = defaultdict(lambda: defaultdict(Decimal))
    for r in erp.query("""
            SELECT pl.sku, pl.warehouse, pl.expected_date d, pl.qty - pl.received_qty q
            FROM erp.purchase_order_line pl JOIN erp.purchase_order p USING (po_no)
            WHERE p.status = 'To Receive' AND pl.received_qty < pl.qty
            UNION ALL SELECT sku, warehouse, planned_finish, qty - produced_qty FROM erp.production_order
            WHERE status IN ('Not Started', 'In Process')
            UNION ALL SELECT l.sku, l.warehouse, l.delivery_date, -(l.qty - l.delivered_qty - l.reserved_qty)
            FROM erp.sales_order_line l JOIN erp.sales_order o USING (so_no)
            WHERE o.status IN ('To Deliver and Bill', 'To Deliver')"""):
        events[(r["sku"], r["warehouse"])][max(r["d"], today)] += r["q"]
    checked = 0
    for b in erp.query("SELECT sku, warehouse, available, projected_14d, first_shortage_date "
                       "FROM erp_api.stock_availability"):
        level, lowest, shortage = b["available"], b["available"], today if b["available"] < 0 else None
        for offset in range(14):  # never beyond day 13
            day = today + dt.timedelta(days=offset)
            level += events[(b["sku"], b["warehouse"])].get(day, 0)
            lowest = min(lowest, level)
            if level < 0 and shortage is None:
                shortage = day
        assert (b["projected_14d"], b["first_shortage_date"]) == (lowest, shortage), b
        checked += 1
    assert checked > 500


def test_simulator_moves_stock_ar_and_orders(erp):
    before = erp.query("""SELECT erp.today() d,
        (SELECT max(updated_at) FROM erp.bin) bins_at,
        (SELECT sum(on_hand) FROM erp_api.stock_availability) on_hand,
        (SELECT sum(open_ar) FROM erp_api.customer_credit) ar,
        (SELECT count(*) FROM erp.payment_entry) payments,
        (SELECT count(*) FROM erp.delivery_note) shipments,
        (SELECT string_agg(erp_order_no || status, ',' ORDER BY erp_order_no) FROM erp_api.sales_order_status) st""")[0]
    days = simulator.simulate(erp.admin, days=3)
    after = erp.query("""SELECT erp.today() d,
        (SELECT sum(on_hand) FROM erp_api.stock_availability) on_hand,
        (SELECT sum(open_ar) FROM erp_api.customer_credit) ar,
        (SELECT count(*) FROM erp.payment_entry) payments,
        (SELECT count(*) FROM erp.delivery_note) shipments,
        (SELECT string_agg(erp_order_no || status, ',' ORDER BY erp_order_no) FROM erp_api.sales_order_status) st""")[0]
    assert after["d"] == before["d"] + dt.timedelta(days=3)
    assert [d["business_date"] for d in days] == [str(before["d"] + dt.timedelta(days=n)) for n in (1, 2, 3)]
    assert after["on_hand"] != before["on_hand"]
    assert after["ar"] != before["ar"]
    assert after["payments"] > before["payments"] and after["shipments"] > before["shipments"]
    assert after["st"] != before["st"]
    # only rows that changed carry a new updated_at: most bins are untouched by three days
    changed = erp.scalar("SELECT count(*) FROM erp.bin WHERE updated_at > %s", (before["bins_at"],))
    total = erp.scalar("SELECT count(*) FROM erp.bin")
    assert 0 < changed < total / 2
    check_views_agree_with_core_tables(erp)


def test_production_slips_are_visible(erp):
    erp.query("INSERT INTO erp.setting VALUES ('mo_slip_rate', '1') ON CONFLICT (key) DO UPDATE SET value = '1'")
    due = erp.query("""UPDATE erp.production_order
                       SET planned_finish = erp.today() + 1, original_planned_finish = erp.today() + 1
                       WHERE status IN ('Not Started', 'In Process') RETURNING mo_no""")
    assert due
    simulator.simulate_day(erp.admin)
    erp.query("DELETE FROM erp.setting WHERE key = 'mo_slip_rate'")
    slips = erp.query("SELECT mo_no, slip_days, status FROM erp_api.production_schedule WHERE mo_no = ANY (%s)",
                      ([r["mo_no"] for r in due],))
    assert all(r["slip_days"] >= 1 and r["status"] != "DONE" for r in slips)
