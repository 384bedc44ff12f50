"""Seeding: deterministic by seed, scalable by parameter."""

import hashlib

import pytest

from tests.conftest import ErpSandbox

FINGERPRINT = """
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
    SELECT customer_code || customer_name || coalesce(uscc, '') || coalesce(credit_limit::text, '') AS x
    FROM erp.customer
    UNION ALL SELECT sku || item_name || stock_uom FROM erp.item
    UNION ALL SELECT sku || warehouse || actual_qty || safety_stock FROM erp.bin
    UNION ALL SELECT sku || unit_price FROM erp.item_price
    UNION ALL SELECT so_no || customer_code || grand_total || status FROM erp.sales_order
    UNION ALL SELECT invoice_no || grand_total || outstanding_amount FROM erp.sales_invoice
) s"""


@pytest.mark.slow
def test_same_seed_gives_the_same_erp():
    prints = []
    for seed in (11, 11, 12):
        sandbox = ErpSandbox(customers=30, skus=150, history_days=15, seed=seed)
        try:
            prints.append(sandbox.scalar(FINGERPRINT))
        finally:
            sandbox.drop()
    assert prints[0] == prints[1] != prints[2]
    assert hashlib.md5(b"").hexdigest() not in prints


@pytest.mark.slow
def test_scales_by_parameter():
    sandbox = ErpSandbox(customers=2000, skus=20000, history_days=2, seed=5)
    try:
        assert sandbox.scalar("SELECT count(*) FROM erp.customer") == 2000
        assert sandbox.scalar("SELECT count(*) FROM erp.item") == 20000
        assert sandbox.scalar("SELECT count(*) FROM erp.bin") == 3 * sandbox.scalar(
            "SELECT count(*) FROM erp.item WHERE is_stock_item")
        assert sandbox.scalar("SELECT count(*) FROM erp.sales_order") > 0
    finally:
        sandbox.drop()
