"""The console's pages without a server: values a person reads, freshness against the schedule, links where the
connection gives a URL pattern, and every template rendering (strict: a missing name is an error, not a blank)."""

import datetime as dt

import pytest

from include.bridge import report
from include.console import actions, catalog, pages

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
COMMON = {"base": "/bridge-console", "user": "admin"}


def test_values_read_as_a_person_writes_them():
    assert report.readable({"id": "4876", "name": "华东经销商"}) == "华东经销商"
    assert report.readable(1234567) == "1,234,567" and report.readable(12.5) == "12.5"
    assert report.readable(None) == "—" and report.readable(True) == "yes" and report.readable(["A", "B"]) == "A, B"
    assert report.fields('{"Available_Qty": 5, "Owner": {"id": "1", "name": "王芳"}}') == [
        ("Available_Qty", "5"), ("Owner", "王芳")]
    assert report.changes({"Qty": 5, "Name": "x"}, {"Qty": 7, "Name": "x"}) == [("Qty", "5", "7")]
    assert report.changes(None, {"Qty": 7}) == [("Qty", "—", "7")]  # a create: every field set
    assert "<script>" not in report.fields_html({"Subject": "<script>alert(1)</script>"})


def test_freshness_is_late_after_two_missed_runs():
    assert pages.freshness(None, 900, NOW) == ("never loaded", "bad")
    assert pages.freshness(NOW - dt.timedelta(minutes=20), 900, NOW) == ("20 min ago (runs every 15 min)", "ok")
    text, css = pages.freshness(NOW - dt.timedelta(minutes=31), 900, NOW)
    assert css == "bad" and "late" in text
    assert pages.freshness(NOW - dt.timedelta(hours=50), None, NOW)[1] == "muted"  # not scheduled by time
    assert pages.age(90) == "90 s" and pages.age(3 * 3600 + 300) == "3 h 5 min" and pages.age(50 * 3600) == "2 d 2 h"


def test_links_only_where_the_connection_gives_a_pattern():
    plain = pages.Links()
    assert plain.record("Products:4876", "crm", "product", "SNS-1") == "Products 4876"
    linked = pages.Links("https://crm.zoho.com.cn/crm/org1/tab/{module}/{id}", "https://erp/doc/{entity}/{key}")
    assert 'href="https://crm.zoho.com.cn/crm/org1/tab/Products/4876"' in linked.record("Products:4876", "crm",
                                                                                         "product", "SNS-1")
    assert 'href="https://erp/doc/sales_order/SO%2F1"' in linked.record("SO/1", "erp", "sales_order", "x")


def test_a_flow_is_run_by_its_dag():
    assert catalog.dag_of("erp_invoice_history_to_crm") == "erp_history_to_crm"
    assert catalog.dag_of("crm_forecast_to_erp.totals") == "crm_forecast_to_erp"
    assert catalog.dag_of("erp_stock_to_crm") == "erp_stock_to_crm"


def test_a_dismissal_needs_a_reason():
    with pytest.raises(actions.ActionRefused, match="needs a comment"):
        actions.clean_comment("  ", required=True)
    assert actions.clean_comment(" ok ", required=True) == "ok"
    with pytest.raises(actions.ActionRefused, match="longer"):
        actions.clean_comment("x" * (actions.MAX_COMMENT + 1), required=False)


def ledger_row(**values) -> dict:
    return {"flow": "erp_stock_to_crm", "batch_id": "b1", "airflow_run_id": "scheduled__1", "status": "success",
            "mode": "live", "rows_extracted": 10, "rows_passed": 10, "rows_loaded": 9, "rows_quarantined": 1,
            "rows_failed": 0, "crm_credits": 3, "step_seconds": {"gate": 1.5}, "started_at": NOW, "finished_at": NOW,
            "message": None, "gate_docs": {"erp_stock_to_crm": ["erp_stock_to_crm/validations/x.html"]}} | values


def test_every_page_renders():
    overview = pages.overview_page(
        [ledger_row(last_success=NOW, credits_today=3, runs_today=1, open_quarantine=1)],
        {"erp_stock_to_crm": 900}, {"loaded": [(NOW.date(), {"erp_stock_to_crm": 9})],
                                    "quarantined": [(NOW.date(), {})]}, [], **COMMON)
    assert "erp_stock_to_crm" in overview and "runs every 15 min" in overview and "<svg" in overview
    entry = {"id": 1, "flow": "crm_orders_to_erp", "batch_id": "b1", "business_key": "4876", "status": "open",
             "payload": {"subject": "样品订单"}, "reasons": ["line 1: the currency is missing"], "created_at": NOW,
             "resolved_at": None, "resolved_by": None, "resolution_comment": None}
    quarantine = pages.render("quarantine.html", title="Quarantine", flows=["crm_orders_to_erp"], flow=None,
                              reason=None, older_than_days=None, status="open", entries=[entry], total=1, **COMMON)
    assert "样品订单" in quarantine and "the currency is missing" in quarantine and 'value="1"' in quarantine
    write = {"flow": "erp_stock_to_crm", "target_system": "crm", "entity": "product", "business_key": "SNS-1",
             "record_id": "Products:4876", "before": {"Available_Qty": 5}, "after": {"Available_Qty": 7}, "at": NOW,
             "action": "update"}
    run = pages.render("run.html", title="run", dag_id="erp_stock_to_crm", run_id="scheduled__1",
                       detail={"ledger": [ledger_row()], "written": [write], "written_total": 1, "quarantined": [entry],
                               "previews": [write]}, **COMMON)
    assert "Available_Qty" in run and "/bridge-console/docs/erp_stock_to_crm/validations/x.html" in run
    previews = pages.render("previews.html", title="Dry runs", data={"runs": [
        {"batch_id": "b1", "flow": "erp_prices_to_crm", "started_at": NOW, "rows": 1}], "batch_id": "b1",
        "rows": [write]}, **COMMON)
    assert "would be" in previews
    difference = {"kind": "stock_mismatch", "entity": "stock", "business_key": "SNS-1", "crm_id": "4876",
                  "crm_value": {"Available_Qty": 5}, "erp_value": {"Available_Qty": 7}, "system_of_record": "erp",
                  "corrected_by": "erp_stock_to_crm", "detail": "Available_Qty: CRM 5, ERP 7"}
    run = {"batch_id": "r1", "run_date": NOW.date(), "counts": {"stock_mismatch": 1}, "total": 1,
           "compared": {"stock": 9}, "threshold": 50, "alerted": False}
    recon = pages.reconciliation_page({"runs": [run], "run": run, "differences": [difference],
                                       "history": [(NOW.date(), {"stock_mismatch": 1})]}, **COMMON)
    assert "<th>Available_Qty CRM</th><th>Available_Qty ERP</th>" in recon and '{"' not in recon.split("<table>")[1]
    assert '<td class="n">5</td><td class="n">7</td>' in recon
    assert "No actions yet" in pages.render("actions.html", title="Actions", rows=[], **COMMON)
