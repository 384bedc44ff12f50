"""crm_orders_to_erp's staging of one CRM order: the facts the gate judges (wrong totals cannot be made through
the CRM sandbox, which computes totals as Zoho does, so they are checked here on the function)."""

from include.flows.crm_orders_to_erp import COLUMNS, order_rows

CUSTOMERS, SKUS = {"acc1": "C00001"}, {"p1": "SNS-0001"}


def order(**line) -> dict:
    item = {"Product_Name": {"id": "p1"}, "Quantity": 2, "List_Price": 100.0, "Discount": 10.0, "Sequence_Number": 1,
            "Line_Tax": [{"name": "VAT", "percentage": 13}], "Total": 200.0, "Net_Total": 214.7} | line
    return {"id": "o1", "Subject": "s", "Status": "Confirmed", "Account_Name": {"id": "acc1"}, "Currency": "CNY",
            "Ordered_Items": [item]}


def staged(rec: dict, customers=CUSTOMERS) -> dict:
    [row] = order_rows("Sales_Orders", rec, customers, SKUS)
    return dict(zip(COLUMNS, row, strict=True))


def test_consistent_totals_pass_and_the_line_is_net_of_discount():
    row = staged(order())
    assert row["total_ok"] and row["known_sku"] and row["known_customer"] and row["rate_ok"]
    assert float(row["line_net"]) == 190.0 and float(row["tax_rate"]) == 13


def test_a_line_total_that_is_not_qty_times_price_minus_discount_fails():
    assert not staged(order(Total=250.0))["total_ok"]
    assert not staged(order(Net_Total=300.0))["total_ok"]
    assert staged(order(Net_Total=214.71))["total_ok"]  # within rounding


def test_unknown_customer_sku_and_missing_rate_are_staged_as_facts_for_the_gate():
    row = staged(order(Product_Name={"id": "crm-only"}) | {"Currency": "USD"}, customers={})
    assert not row["known_customer"] and not row["known_sku"] and not row["rate_ok"]


def test_the_payload_hash_changes_with_the_content_only():
    a, b = staged(order()), staged(order() | {"Subject": "renamed"})
    assert a["payload_hash"] == b["payload_hash"]
    assert staged(order(Quantity=3, Total=300.0, Net_Total=327.7))["payload_hash"] != a["payload_hash"]
