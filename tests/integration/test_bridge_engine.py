"""Sync-engine bookkeeping and the Great Expectations gate, on a real bridge DB."""

import datetime as dt

import psycopg2.extras
import pytest

from include.bridge import engine
from include.bridge.gate import load_suite, run_gate

FLOW = "erp_stock_to_crm"
COLUMNS = ["sku", "warehouse", "uom", "on_hand", "reserved", "available", "incoming_po", "incoming_mo",
           "projected_14d", "safety_stock", "updated_at", "known_sku"]
PARAMS = {"min_rows": 1, "max_rows": 10_000_000, "warehouses": ["SH01", "SZ01", "SZ02"]}


@pytest.fixture(scope="module")
def staging(bridge):
    name, conn = bridge
    with conn.cursor() as cur:
        cur.execute("""CREATE TABLE IF NOT EXISTS bridge.stg_gate_test (
                           batch_id text NOT NULL, row_no bigint NOT NULL, sku text, warehouse text, uom text,
                           on_hand numeric, reserved numeric, available numeric, incoming_po numeric,
                           incoming_mo numeric, projected_14d numeric, safety_stock numeric, updated_at timestamptz,
                           known_sku boolean, PRIMARY KEY (batch_id, row_no))""")
    conn.commit()
    info = conn.info
    return conn, f"postgresql+psycopg2://{info.user}@{info.host}:{info.port}/{name}"


def stage(conn, batch_id, n, dirty=()):
    """n clean rows, then dirty overrides {row_no: {column: value}}."""
    dirty = dict(dirty)
    rows = []
    for i in range(n):
        row = {"sku": f"MTR-{i:06d}", "warehouse": ("SH01", "SZ01", "SZ02")[i % 3], "uom": "PCS", "on_hand": 10,
               "reserved": 2, "available": 8, "incoming_po": 0, "incoming_mo": 0, "projected_14d": 8,
               "safety_stock": 1, "updated_at": dt.datetime(2026, 11, 24, tzinfo=dt.UTC), "known_sku": True}
        row.update(dirty.get(i, {}))
        rows.append((batch_id, i, *[row[c] for c in COLUMNS]))
    with conn.cursor() as cur:
        cur.execute("DELETE FROM bridge.stg_gate_test WHERE batch_id = %s", (batch_id,))
        sql = f"INSERT INTO bridge.stg_gate_test (batch_id, row_no, {', '.join(COLUMNS)}) VALUES %s"
        psycopg2.extras.execute_values(cur, sql, rows, page_size=10_000)
    conn.commit()


def gate(staging, batch_id, **kw):
    conn, url = staging
    return run_gate(conn, url, flow=FLOW, table="bridge.stg_gate_test", batch_id=batch_id, columns=COLUMNS,
                    parameters=kw.pop("parameters", PARAMS), **kw)


def test_suite_is_loaded_from_the_expectations_folder():
    suite = load_suite(FLOW)
    assert suite["name"] == FLOW and suite["meta"]["max_failing_share"] == 0.05
    assert {e["meta"]["level"] for e in suite["expectations"]} == {"batch", "row"}
    with pytest.raises(FileNotFoundError, match="no expectation suite for flow nope"):
        load_suite("nope")


def test_dirty_rows_are_named_with_their_failed_expectations(staging):
    stage(staging[0], "b-dirty", 1000, {7: {"on_hand": -5}, 20: {"known_sku": False, "sku": "NOPE-1"},
                                        33: {"sku": None}, 40: {"warehouse": "XX9"}})
    result = gate(staging, "b-dirty")
    assert result.may_load and result.rows == 1000 and not result.batch_failures
    assert set(result.bad_rows) == {7, 20, 33, 40}
    assert result.bad_rows[7] == ["expect_column_values_to_be_between(on_hand, min_value=0, max_value=1e+15)"]
    assert result.bad_rows[20] == ["expect_column_values_to_be_in_set(known_sku, value_set=[True])"]
    assert result.bad_rows[33] == ["expect_column_values_to_not_be_null(sku)"]
    assert result.bad_rows[40] == ["expect_column_values_to_be_in_set(warehouse, value_set=['SH01', 'SZ01', 'SZ02'])"]
    assert any("4 of 1,000 rows failed" in line for line in result.summary())


def test_data_docs_are_built_for_the_batch(staging, tmp_path):
    stage(staging[0], "b-docs", 100, {3: {"on_hand": -1}})
    result = gate(staging, "b-docs", docs_dir=str(tmp_path / "docs"), chunk_rows=40)
    assert result.docs_url == f"file://{tmp_path / 'docs' / 'index.html'}"
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "erp_stock_to_crm" in index
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 2 + 3  # batch level (its shape, its rows), and one per chunk of 40 rows
    assert any("on_hand" in p.read_text() for p in pages)


def test_the_gate_never_hands_the_database_password_to_great_expectations(staging, tmp_path):
    """GX gets `${BRIDGE_GATE_DB_URL}`, resolved from the environment only while it validates: the password is in
    none of the Data Docs it renders, nor left in the environment (trust auth here: the password is not checked)."""
    import os

    from include.bridge.gate import GX_URL_VARIABLE

    conn, url = staging
    secret = "gx-Secret-7781"
    from sqlalchemy.engine import make_url

    with_password = make_url(url).set(password=secret).render_as_string(hide_password=False)
    stage(conn, "b-secret", 20, {3: {"on_hand": -1}})
    result = run_gate(conn, with_password, flow=FLOW, table="bridge.stg_gate_test", batch_id="b-secret",
                      columns=COLUMNS, parameters=PARAMS, docs_dir=str(tmp_path / "docs"))
    assert set(result.bad_rows) == {3}
    assert GX_URL_VARIABLE not in os.environ
    for page in (tmp_path / "docs").rglob("*"):
        if page.is_file():
            assert secret not in page.read_text(errors="replace"), page


def test_over_threshold_batch_may_not_load(staging):
    stage(staging[0], "b-bad", 200, {i: {"on_hand": -1} for i in range(0, 200, 10)})  # 10 % > 5 %
    result = gate(staging, "b-bad")
    assert not result.may_load and len(result.bad_rows) == 20
    assert result.failures == {"expect_column_values_to_be_between(on_hand, min_value=0, max_value=1e+15)": 20}


def test_batch_level_failures_stop_the_batch(staging):
    stage(staging[0], "b-small", 50)
    result = gate(staging, "b-small", parameters=PARAMS | {"min_rows": 900, "max_rows": 1100})
    assert not result.may_load and not result.bad_rows
    assert result.batch_failures == ["expect_table_row_count_to_be_between(min_value=900, max_value=1100): observed 50"]


def test_large_batch_is_validated_in_bounded_chunks(staging):
    n = 120_000
    stage(staging[0], "b-large", n, {5: {"on_hand": -1}, 60_000: {"sku": None}, n - 1: {"reserved": -2}})
    result = gate(staging, "b-large", chunk_rows=25_000)
    assert result.rows == n and set(result.bad_rows) == {5, 60_000, n - 1} and result.may_load


def test_run_ledger_is_reused_by_retries(bridge):
    conn = bridge[1]
    first = engine.start_run(conn, FLOW, "scheduled__2026-11-24T08:00:00+00:00")
    engine.record_step(conn, first, "extract", 1.25, rows_extracted=10)
    again = engine.start_run(conn, FLOW, "scheduled__2026-11-24T08:00:00+00:00")
    assert again == first
    engine.record_step(conn, again, "extract", 0.5, rows_extracted=12)
    engine.record_step(conn, again, "load", 2.0, rows_loaded=11, rows_quarantined=1)
    row = engine.finish_run(conn, again, "partial", "1 row quarantined")
    assert (row["rows_extracted"], row["rows_loaded"], row["rows_quarantined"], row["status"]) == (12, 11, 1, "partial")
    assert row["step_seconds"] == {"extract": 0.5, "load": 2.0}
    other = engine.start_run(conn, FLOW, "scheduled__2026-11-24T08:15:00+00:00")
    assert other != first and engine.previous_count(conn, FLOW, other) == 12


def test_watermark_only_moves_forward(bridge):
    conn = bridge[1]
    t1, t0 = dt.datetime(2026, 11, 24, 8, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert engine.get_watermark(conn, "wm_test") is None
    engine.advance_watermark(conn, "wm_test", t1, "run-1")
    engine.advance_watermark(conn, "wm_test", t0, "backfill-old")  # an old interval replayed
    conn.commit()
    assert engine.get_watermark(conn, "wm_test") == t1


def test_quarantine_refreshes_open_entries_and_resolves(bridge):
    conn = bridge[1]
    engine.quarantine(conn, "q_test", "b1", [("MTR-1", {"on_hand": -1}, ["on_hand < 0"]),
                                             ("MTR-2", {"sku": None}, ["sku is null"])])
    engine.quarantine(conn, "q_test", "b2", [("MTR-1", {"on_hand": -3}, ["on_hand < 0"])])
    conn.commit()
    rows = engine.open_quarantine(conn, "q_test")
    assert [(r["business_key"], r["batch_id"], r["payload"]) for r in rows] == [
        ("MTR-1", "b2", {"on_hand": -3}), ("MTR-2", "b1", {"sku": None})]
    assert engine.resolve_quarantine(conn, "q_test", ["MTR-1"], "replayed", "run-9") == 1
    conn.commit()
    assert [r["business_key"] for r in engine.open_quarantine(conn, "q_test")] == ["MTR-2"]
    many = [(f"K{i}", {"i": i}, ["bad"]) for i in range(12_000)]  # more than one execute_values page
    engine.quarantine(conn, "q_many", "b1", many)
    conn.commit()
    assert len(engine.open_quarantine(conn, "q_many")) == 12_000


def test_audit_rows_keep_before_and_after(bridge):
    conn = bridge[1]
    n = engine.audit(conn, FLOW, "crm", "product", [("MTR-000001", {"Qty_in_Stock": 5}, {"Qty_in_Stock": 7}),
                                                    ("MTR-000002", None, {"Qty_in_Stock": 1})], "run-1", "b-1")
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SELECT business_key, before, after FROM bridge.audit_log WHERE batch_id = 'b-1' ORDER BY 1")
        assert cur.fetchall() == [("MTR-000001", {"Qty_in_Stock": 5}, {"Qty_in_Stock": 7}),
                                  ("MTR-000002", None, {"Qty_in_Stock": 1})]
    assert n == 2


def test_a_row_expectation_that_cannot_be_evaluated_blocks_the_batch(staging):
    """Fail closed: an expectation on a column the batch does not have errors inside GX; that is no pass."""
    stage(staging[0], "b-misspelled", 50)
    suite = load_suite(FLOW)
    suite = suite | {"expectations": suite["expectations"] + [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "on_hnad"}, "meta": {"level": "row"}}]}
    result = gate(staging, "b-misspelled", suite=suite)
    assert not result.may_load
    assert any("on_hnad" in f and "could not be evaluated" in f for f in result.batch_failures), result.batch_failures


def test_non_finite_numbers_are_quarantined_not_loaded(staging):
    """NaN and ±Infinity pass GX's between checks: the gate names them itself, row by row."""
    stage(staging[0], "b-nan", 100, {3: {"on_hand": float("nan")}, 5: {"available": float("inf")},
                                     8: {"projected_14d": float("-inf")}})
    result = gate(staging, "b-nan")
    assert result.may_load and set(result.bad_rows) == {3, 5, 8}
    assert "expect_column_values_to_be_finite(on_hand)" in result.bad_rows[3]  # (pandas also calls NaN null)
    assert result.bad_rows[5] == ["expect_column_values_to_be_finite(available)"]


def test_text_with_nul_and_lone_surrogates_is_cleaned_by_one_rule_not_a_crash(bridge):
    """A CRM field can carry a NUL character or an unpaired surrogate: PostgreSQL refuses both, which used to fail
    the whole run. Staging, quarantine and audit clean them the same way; the record goes on."""
    conn = bridge[1]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bridge.stg_text_test (batch_id text, row_no bigint, name text)")
    conn.commit()
    dirty = "上海\x00华东\ud800 Co."
    assert engine.stage_rows(conn, "bridge.stg_text_test", "b-text", ["name"], [(dirty,), ("plain",)]) == 2
    engine.quarantine(conn, FLOW, "b-text", [("K-1\x00", {"name": dirty}, [f"bad name {dirty}"])])
    engine.audit(conn, FLOW, "crm", "product", [("K-1", {"name": dirty}, {"name": "ok\x00"}, "Products:1")],
                 "run-text", "b-text")
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM bridge.stg_text_test WHERE batch_id = 'b-text' ORDER BY row_no")
        assert [r[0] for r in cur.fetchall()] == ["上海华东\ufffd Co.", "plain"]
        cur.execute("SELECT business_key, payload ->> 'name', reasons FROM bridge.quarantine WHERE batch_id = 'b-text'")
        assert cur.fetchall() == [("K-1", "上海华东\ufffd Co.", ["bad name 上海华东\ufffd Co."])]
        cur.execute("SELECT before ->> 'name', after ->> 'name' FROM bridge.audit_log WHERE batch_id = 'b-text'")
        assert cur.fetchall() == [("上海华东\ufffd Co.", "ok")]
    conn.commit()


def test_the_failing_share_counts_what_is_quarantined_not_lines(staging):
    """One order with twenty bad lines is one bad order: it must not hold back the hundred good ones."""
    bad_lines = {i: {"sku": "MTR-BAD", "on_hand": -1} for i in range(100, 120)}
    stage(staging[0], "b-units", 120, bad_lines)
    by_line = gate(staging, "b-units")
    assert not by_line.may_load and by_line.failing_share > 0.05  # 20 of 120 lines: over the 5 % limit
    by_unit = gate(staging, "b-units", unit_column="sku")
    assert by_unit.may_load and set(by_unit.bad_rows) == set(bad_lines)
    assert (by_unit.units, by_unit.bad_units) == (101, 1) and by_unit.failing_share < 0.01
    assert any("1 of 101 sku values failed" in line for line in by_unit.summary())


def test_a_row_staging_cannot_hold_fails_the_step_naming_its_record(bridge):
    """The last line of defence behind the flows' value reading: the error (and so the failure alert) names the
    record, not just "invalid input syntax" somewhere in 3,000 rows."""
    from include.bridge.engine import RecordError, stage_rows

    conn = bridge[1]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bridge.stg_record_test (batch_id text, row_no bigint, key text, "
                    "qty numeric(6, 2))")
    conn.commit()
    rows = [[f"K{i}", i % 100] for i in range(3000)]
    rows[1717] = ["K1717", "12.5x"]
    with pytest.raises(RecordError, match="K1717") as caught:
        stage_rows(conn, "bridge.stg_record_test", "b-rec", ["key", "qty"], rows)
    assert caught.value.record_keys == ["K1717"]
    assert stage_rows(conn, "bridge.stg_record_test", "b-rec", ["key", "qty"], rows[:1717]) == 1717


def test_staging_streams_rows_and_names_the_refused_ones_of_every_chunk(bridge, monkeypatch):
    """A flow hands staging a generator: rows go in by chunks (memory holds one), the batch is still one commit, and
    a refused row in each of two chunks is named, both of them, with nothing of the batch staged."""
    from include.bridge import engine

    conn = bridge[1]
    monkeypatch.setattr(engine, "STAGE_CHUNK_ROWS", 1000)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bridge.stg_stream_test (batch_id text, row_no bigint, key text, "
                    "qty numeric(6, 2))")
    conn.commit()

    def rows(bad: tuple[int, ...] = ()):
        for i in range(3500):
            yield [f"K{i}", "x" if i in bad else i % 100]

    with pytest.raises(engine.RecordError) as caught:
        engine.stage_rows(conn, "bridge.stg_stream_test", "b-stream", ["key", "qty"], rows((10, 2999)))
    assert caught.value.record_keys == ["K10", "K2999"]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bridge.stg_stream_test WHERE batch_id = 'b-stream'")
        assert cur.fetchone()[0] == 0
    assert engine.stage_rows(conn, "bridge.stg_stream_test", "b-stream", ["key", "qty"], rows()) == 3500
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), max(row_no) FROM bridge.stg_stream_test WHERE batch_id = 'b-stream'")
        assert cur.fetchone() == (3500, 3500)
    conn.rollback()


def test_the_reconciliation_report_shows_crm_text_as_text_not_markup(bridge, tmp_path, monkeypatch):
    """Output escaping, HTML: names and values typed in the CRM reach the operators' report as text."""
    import json

    from include.flows.reconcile_crm_erp import write_report

    monkeypatch.setenv("BRIDGE_REPORTS_DIR", str(tmp_path))
    conn = bridge[1]
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    with conn.cursor() as cur:
        cur.execute("""INSERT INTO bridge.reconciliation_difference (batch_id, row_no, run_date, kind, entity,
                           business_key, crm_id, crm_value, erp_value, system_of_record, corrected_by, detail)
                       VALUES ('b-html', 1, current_date, 'duplicate_customer_crm', 'customer', %s, '1', %s, NULL,
                               'crm', 'master_data_match review list', %s)""",
                    (hostile, json.dumps({"Account_Name": hostile}), hostile))
    conn.commit()
    page = write_report(conn, "b-html", dt.date.today(), {"duplicate_customer_crm": 1}, {"accounts": 1}, 25)
    text = page.read_text()
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;" in text


def test_twenty_runs_starting_together_install_the_schema_once_without_deadlock():
    """Every run used to install the schema in its extract, and two doing the ALTERs at once deadlocked; now the
    version is read first and the install takes an advisory lock: 20 at once on an empty DB, one installs."""
    import threading

    from include.bridge import db
    from tests.conftest import drop_database, new_database

    name = new_database("bridge_race")
    results, errors = [], []

    def start():
        conn = psycopg2.connect(dbname=name)
        try:
            db.ensure_schema(conn)
            results.append(db.installed_version(conn))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=start) for _ in range(20)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert results == [db.schema_version()] * 20
    finally:
        drop_database(name)
