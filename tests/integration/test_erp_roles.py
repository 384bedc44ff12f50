"""Least privilege of the ERP contract: the reader sees erp_api only, the writer erp_inbound only."""

import psycopg2
import pytest

API_VIEWS = ["stock_availability", "customer_credit", "customers", "items", "item_uom", "invoices",
             "sales_order_status", "sales_order_lines", "production_schedule", "price_list", "tax_rates",
             "warehouses", "currencies"]


def denied(conn, sql: str) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
        return False
    except (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ReadOnlySqlTransaction):
        return True
    finally:
        conn.rollback()


@pytest.fixture(scope="module")
def reader(erp):
    conn = erp.connect_as("erp_reader")
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def writer(erp):
    conn = erp.connect_as("erp_writer")
    yield conn
    conn.close()


@pytest.mark.parametrize("view", API_VIEWS)
def test_reader_reads_every_contract_view(reader, view):
    with reader.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM erp_api.{view}")
        assert cur.fetchone()[0] >= 0
    reader.rollback()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM erp.customer LIMIT 1",
    "SELECT * FROM erp.bin LIMIT 1",
    "SELECT * FROM erp.sales_invoice LIMIT 1",
    "SELECT * FROM erp_inbound.sales_order_in LIMIT 1",
    "SELECT erp.refresh_bins(NULL)",
])
def test_reader_cannot_read_core_or_inbound(reader, sql):
    assert denied(reader, sql)


@pytest.mark.parametrize("sql", [
    # single-table views are auto-updatable: only the missing privilege stops these
    "INSERT INTO erp_api.tax_rates (code, rate, description) VALUES ('X', 1, 'x')",
    "UPDATE erp_api.warehouses SET is_active = false",
    "DELETE FROM erp_api.item_uom",
    "UPDATE erp_api.customers SET customer_name = 'x'",
    "INSERT INTO erp_inbound.customer_in (source_system, source_id, idempotency_key) VALUES ('T', '1', 'k')",
    "CREATE TABLE public.x (i int)",
    "CREATE TABLE erp_api.x (i int)",
    "CREATE TEMP TABLE x (i int)",
    "UPDATE erp.bin SET actual_qty = 0",
])
def test_reader_cannot_write_anything(reader, sql):
    assert denied(reader, sql)


def test_reader_session_is_read_only(reader):
    with reader.cursor() as cur:
        cur.execute("SHOW default_transaction_read_only")
        assert cur.fetchone()[0] == "on"
    reader.rollback()


def test_writer_inserts_and_reads_back_inbound(writer):
    with writer.cursor() as cur:
        cur.execute("""INSERT INTO erp_inbound.customer_in (source_system, source_id, idempotency_key, customer_name)
                       VALUES ('TEST', 'acc-1', 'role-test-1', '测试客户有限公司') RETURNING id""")
        cur.execute("SELECT status FROM erp_inbound.customer_in WHERE idempotency_key = 'role-test-1'")
        assert cur.fetchone()[0] == "NEW"
        # the same key again is a no-op, not a second row
        cur.execute("""INSERT INTO erp_inbound.customer_in (source_system, source_id, idempotency_key, customer_name)
                       VALUES ('TEST', 'acc-1', 'role-test-1', 'x') ON CONFLICT (idempotency_key) DO NOTHING""")
        assert cur.rowcount == 0
    writer.rollback()


@pytest.mark.parametrize("sql", [
    "UPDATE erp_inbound.sales_order_in SET status = 'PROCESSED'",
    "DELETE FROM erp_inbound.customer_in",
    "SELECT * FROM erp.customer LIMIT 1",
    "SELECT * FROM erp_api.stock_availability LIMIT 1",
    "INSERT INTO erp.customer (customer_code, customer_name, customer_group, region, currency) "
    "VALUES ('X', 'x', 'SME', 'East', 'CNY')",
    "CREATE TABLE erp_inbound.x (i int)",
    "CREATE TABLE public.x (i int)",
    "TRUNCATE erp_inbound.demand_forecast_in",
    # the ERP's answers are the ERP's: a forged "processed, here is your number" would be written back to the CRM
    "INSERT INTO erp_inbound.sales_order_in (source_system, source_id, idempotency_key, status, erp_doc_no) "
    "VALUES ('zoho_crm', 'x', 'forged-1', 'PROCESSED', 'SO-FORGED')",
    "INSERT INTO erp_inbound.customer_in (source_system, source_id, idempotency_key, erp_doc_no) "
    "VALUES ('zoho_crm', 'x', 'forged-2', 'C-FORGED')",
    "INSERT INTO erp_inbound.demand_forecast_in (source_system, source_id, idempotency_key, batch_id, batch_row_count, "
    "horizon_start, horizon_end, status) VALUES ('zoho_crm', 'x', 'forged-3', 'b', 1, current_date, current_date, "
    "'PROCESSED')",
])
def test_writer_cannot_touch_anything_else(writer, sql):
    assert denied(writer, sql)
