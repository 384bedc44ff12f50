"""crm_forecast_to_erp's arithmetic on a hand-checked example: weighting, months, regions, buckets and the totals
gate. The staging and the buckets are real (bridge DB in PostgreSQL, GX gates); the CRM and ERP are not needed.

The example (horizon December 2026 .. May 2027):
  deal A  Negotiation, probability 40 (its own), closes 2026-12-20, region East:
          P1 x 10 -> 4.000, P2 x 3 -> 1.200
  deal B  Negotiation, no probability -> stage 70, closes 2026-12-05, no region, account in South:
          P1 x 5 -> 3.500
  deal C  Proposal, probability 33, closes 2027-02-28, region East, products on its quote: P1 x 7 -> 2.310
  deal D  probability 150 (typo)                                  -> quarantined, not in the buckets
  deal E  closes 2026-10-01 (before the horizon)                  -> quarantined
  deal F  a CRM-only product                                      -> quarantined (the whole deal, both lines)
  order   ERP order SO1, P1 x 8 unshipped, due 2026-11-20 (overdue) -> ORDERS, counted in December
Buckets: P1|East|2026-12|PIPELINE 4.000; P1|South|2026-12|PIPELINE 3.500; P2|East|2026-12|PIPELINE 1.200;
         P1|East|2027-02|PIPELINE 2.310; P1|North|2026-12|ORDERS 8.000 — total 19.010.
"""

import datetime as dt
from decimal import Decimal

import pytest

from include.bridge import engine
from include.bridge.flow import Run
from include.bridge.rollout import Rollout
from include.flows import crm_forecast_to_erp as flow

WINDOW = flow.horizon(dt.date(2026, 12, 1), 6)
SKUS = {"p1": "MTR-000001", "p2": "GBX-000002"}
REGIONS = {"acc-south": "South"}


def deal(did, prob=None, stage="Negotiation", closing="2026-12-20", region="East", items=(("p1", 10),), **kw):
    return {"id": did, "Deal_Name": f"deal {did}", "Stage": stage, "Probability": prob, "Closing_Date": closing,
            "Sales_Region": region, "Account_Name": {"id": kw.get("account", "acc-east")},
            "Deal_Items": [{"Product": {"id": p}, "Quantity": q} for p, q in items]}


def rows_of(d, quotes=None):
    return [dict(zip(flow.COLUMNS, r, strict=True))
            for r in flow.deal_rows(d, skus=SKUS, regions=REGIONS, quote_items=quotes or {}, window=WINDOW)]


def test_horizon_is_whole_months_from_the_first_of_the_run_month():
    assert flow.horizon(dt.date(2026, 12, 17), 6) == (dt.date(2026, 12, 1), dt.date(2027, 5, 31))
    assert flow.horizon(dt.date(2026, 1, 31), 1) == (dt.date(2026, 1, 1), dt.date(2026, 1, 31))


def test_lines_are_weighted_by_the_deals_probability_or_its_stage():
    a = rows_of(deal("A", prob=40, items=(("p1", 10), ("p2", 3))))
    assert [(r["sku"], r["weighted_qty"]) for r in a] == [("MTR-000001", Decimal("4.000")),
                                                          ("GBX-000002", Decimal("1.200"))]
    assert {r["period_start"] for r in a} == {dt.date(2026, 12, 1)} and all(r["in_horizon"] for r in a)
    [b] = rows_of(deal("B", closing="2026-12-05", region=None, items=(("p1", 5),), account="acc-south"))
    assert (b["probability"], b["weighted_qty"], b["region"]) == (70, Decimal("3.500"), "South")


def test_a_deal_without_items_takes_them_from_its_quote():
    d = deal("C", prob=33, stage="Proposal", closing="2027-02-28", items=())
    [c] = rows_of(d, quotes={"C": [("p1", 7)]})
    assert (c["item_source"], c["weighted_qty"], c["period_start"]) == ("quote", Decimal("2.310"), dt.date(2027, 2, 1))
    [empty] = rows_of(d)  # no quote either: one row, so the gate can say "no products"
    assert empty["line_no"] is None


@pytest.fixture
def staged(bridge):
    """The example staged under a batch, gated and bucketed."""
    name, conn = bridge
    batch = "crm_forecast_to_erp-unit-test"
    rows = []
    for d, quotes in ((deal("A", prob=40, items=(("p1", 10), ("p2", 3))), None),
                      (deal("B", closing="2026-12-05", region=None, items=(("p1", 5),), account="acc-south"), None),
                      (deal("C", prob=33, stage="Proposal", closing="2027-02-28", items=()), {"C": [("p1", 7)]}),
                      (deal("D", prob=150), None), (deal("E", prob=50, closing="2026-10-01"), None),
                      (deal("F", prob=50, items=(("p1", 1), ("crm-only", 2))), None)):
        rows += flow.deal_rows(d, skus=SKUS, regions=REGIONS, quote_items=quotes or {}, window=WINDOW)
    rows.append(["ORDERS", "SO1", "SO1", "OPEN", Decimal(100), dt.date(2026, 11, 20), WINDOW[0], "North",
                 "erp_order", 1, None, "MTR-000001", True, Decimal(8), Decimal("8.000"), *WINDOW, True, None])
    engine.stage_rows(conn, flow.STAGING, batch, flow.COLUMNS, rows)
    info = conn.info
    url = f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{name}"
    return conn, url, batch, Run(flow.FLOW, "unit-run", batch, Rollout(flow.FLOW)).writer(conn)


def test_buckets_sum_the_passed_deals_and_bad_deals_are_quarantined_with_reasons(staged):
    conn, url, batch, writer = staged
    checked = flow.validate(conn, url, batch, writer)
    assert checked["blocked"] is None
    assert checked["total_qty"] == Decimal("19.010") and checked["buckets"] == 5 and checked["deals_passed"] == 3
    with conn.cursor() as cur:
        cur.execute(f"SELECT sku, region, period_start, demand_type, qty, deals FROM {flow.BUCKETS} "
                    "WHERE batch_id = %s ORDER BY row_no", (batch,))
        buckets = {(s, r, p.isoformat()[:7], t): (q, n) for s, r, p, t, q, n in cur.fetchall()}
    assert buckets == {("GBX-000002", "East", "2026-12", "PIPELINE"): (Decimal("1.200"), 1),
                       ("MTR-000001", "East", "2026-12", "PIPELINE"): (Decimal("4.000"), 1),
                       ("MTR-000001", "East", "2027-02", "PIPELINE"): (Decimal("2.310"), 1),
                       ("MTR-000001", "North", "2026-12", "ORDERS"): (Decimal("8.000"), 1),
                       ("MTR-000001", "South", "2026-12", "PIPELINE"): (Decimal("3.500"), 1)}
    reasons = {q["business_key"]: q["reasons"] for q in engine.open_quarantine(conn, flow.FLOW)}
    assert set(reasons) == {"D", "E", "F"}
    assert reasons["D"] == ["the probability must be between 0 and 100"]
    assert "before the forecast horizon" in reasons["E"][0]
    assert reasons["F"] == ["line 2: a product on the deal is not an ERP item (check its Product_Code)"]


def test_buckets_that_do_not_add_up_to_the_deals_block_the_version(staged):
    conn, url, batch, writer = staged
    flow.validate(conn, url, batch, writer)
    with conn.cursor() as cur:  # a bucket off by 0.001: the totals gate must refuse the whole version
        cur.execute(f"UPDATE {flow.BUCKETS} SET qty = qty + 0.001 WHERE batch_id = %s AND row_no = 1", (batch,))
    conn.commit()
    checked = flow.run_gate(conn, url, flow=f"{flow.FLOW}.totals", table=flow.BUCKETS, batch_id=batch,
                            columns=flow.BUCKET_COLUMNS, suite=flow.load_suite(f"{flow.FLOW}.totals"),
                            parameters={"min_rows": 0, "max_rows": 10**9, "min_total": 19.0095, "max_total": 19.0105})
    assert not checked.may_load and any("expect_column_sum_to_be_between" in f for f in checked.batch_failures)
