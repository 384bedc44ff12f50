"""Zoho fidelity (issue 16): where the client and the sandbox agreed with each other but not with Zoho.

Each test pins one point against Zoho's own word (the OpenAPI files of zoho/crm-oas v8.0, the official SDK
zohocrmsdk8-0, the spec's notes) and failed before the fix, on the sandbox, the client or both:

| point                                             | Zoho's word                                   |
|---------------------------------------------------|-----------------------------------------------|
| bulk-write job details are one top-level object   | crm-oas v8.0/bulk_write.json Bulk_Write_Response |
| X-CRM-ORG of the bulk upload is the org's zgid     | SDK sample bulk_write/upload_file.py           |
| date-times in COQL / If-Modified-Since: seconds    | spec zoho-crm-v8.md (COQL), crm-oas date-time  |
|   and offset, no fractions                        |                                               |
| ignore_empty false: an empty cell clears the field | crm-oas bulk_write.json Request_Wrapper        |
| find_by / duplicate_check_fields: unique fields    | Zoho bulk write and upsert docs                |
| a watch channel lives at most a week (later: 1 h), | Zoho Notification API docs                     |
|   its token at most 50 characters                  |                                               |
| page tokens stop at 100,000 records                | spec zoho-crm-v8.md (Records)                  |
| the token answer's api_domain names the org's DC   | spec zoho-crm-v8.md (OAuth)                    |
| subform rows come with GET by id, not lists        | Zoho v8 Subform API ("Get Subform Data")       |
| the edition (license_details.paid_type) sizes the  | crm-oas v8.0/org.json; API-limits page        |
|   pool; writes cost 1 credit per 10 records        |                                               |
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile

import pytest

from include.zoho.client import ZohoError, data_center_problem, zoho_datetime


def _zip(csv_text: str) -> bytes:
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as zf:
        zf.writestr("Products.csv", csv_text)
    return blob.getvalue()


def _upload(client, csv_text: str, org: str) -> str:
    resp = client.request("POST", "/crm/v8/upload", headers={"feature": "bulk-write", "X-CRM-ORG": org},
                          files={"file": ("Products.zip", _zip(csv_text), "application/zip")}, idempotent=False)
    return resp.json()["details"]["file_id"]


def test_bulk_write_job_details_are_top_level_and_the_upload_takes_the_zgid(crm):
    client = crm.client()
    org = client.request("GET", "/crm/v8/org").json()["org"][0]
    assert org["zgid"] != org["id"]  # as in Zoho: two different numbers
    with pytest.raises(ZohoError, match="zgid"):
        _upload(client, "Product_Code,Product_Name\nZG-1,zgid test\n", org["id"])
    file_id = _upload(client, "Product_Code,Product_Name\nZG-1,zgid test\n", org["zgid"])
    job = client.request("POST", "/crm/bulk/v8/write", idempotent=False, json={
        "operation": "upsert", "resource": [{"type": "data", "module": {"api_name": "Products"}, "file_id": file_id,
                                             "find_by": "Product_Code"}]}).json()
    assert job["status"] == "success" and job["details"]["id"]
    details = client._wait_for_job("write", job["details"]["id"], "status", ("COMPLETED", "FAILED"), 0.05, 30)
    raw = client.request("GET", f"/crm/bulk/v8/write/{job['details']['id']}").json()
    assert "data" not in raw and raw["status"] == "COMPLETED" and raw["id"] == job["details"]["id"]
    assert raw["resource"][0]["file"]["added_count"] == 1 and raw["resource"][0]["module"]["id"]
    assert raw["result"]["download_url"].startswith("http")  # absolute, on the download host
    assert details == raw
    # the client's own bulk write reads the same shape, with the zgid it reads from the org API
    result = client.bulk_write("Products", [{"Product_Code": "ZG-2", "Product_Name": "zgid two"}],
                               find_by="Product_Code", poll_interval=0.05)
    assert (result.state, result.added) == ("COMPLETED", 1) and client.zgid() == org["zgid"]


def test_bulk_write_clears_a_field_whose_cell_is_empty(crm):
    client = crm.client()
    rows = [{"Product_Code": "MTR-000001", "Product_Name": "motor", "Projected_14d": 42.5}]
    client.bulk_write("Products", rows, find_by="Product_Code", poll_interval=0.05)
    assert client.get_record("Products", "MTR-000001", external_field="Product_Code")["Projected_14d"] == 42.5
    rows[0]["Projected_14d"] = None  # the ERP cleared it
    result = client.bulk_write("Products", rows, find_by="Product_Code", poll_interval=0.05)
    assert result.updated == 1
    assert client.get_record("Products", "MTR-000001", external_field="Product_Code").get("Projected_14d") is None


def test_find_by_and_duplicate_check_fields_must_be_unique_fields(crm):
    client = crm.client()
    file_id = _upload(client, "Product_Name,Qty_in_Stock\nmotor,1\n", client.zgid())
    with pytest.raises(ZohoError, match="unique"):
        client.request("POST", "/crm/bulk/v8/write", idempotent=False, json={
            "operation": "upsert", "resource": [{"type": "data", "module": {"api_name": "Products"},
                                                 "file_id": file_id, "find_by": "Product_Name"}]})
    with pytest.raises(ZohoError, match="unique"):
        client.upsert("Products", [{"Product_Name": "motor", "Qty_in_Stock": 1}],
                      duplicate_check_fields=["Qty_in_Stock"])
    by_name = client.upsert("Products", [{"Product_Name": "motor", "Qty_in_Stock": 1}],
                            duplicate_check_fields=["Product_Name"])  # the module's system duplicate check
    assert by_name[0].ok
    ok = client.upsert("Products", [{"Product_Code": "MTR-000001", "Qty_in_Stock": 3}],
                       duplicate_check_fields=["Product_Code"])
    assert ok[0].ok and ok[0].action == "update"


def test_date_times_go_to_zoho_in_seconds_with_the_offset(crm):
    client = crm.client()
    fine = dt.datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert zoho_datetime(fine) == "2026-12-01T08:30:15+08:00"
    assert zoho_datetime("2026-12-01T00:30:15.5Z") == "2026-12-01T00:30:15+00:00"
    with pytest.raises(ValueError, match="time zone"):
        zoho_datetime(dt.datetime(2026, 12, 1))
    with pytest.raises(ZohoError, match="datetime"):
        client.coql(f"select id from Products where Modified_Time >= '{fine.isoformat()}' limit 5")
    with pytest.raises(ZohoError, match="If-Modified-Since"):
        client.request("GET", "/crm/v8/Products", params={"fields": "id"},
                       headers={"If-Modified-Since": fine.isoformat()})
    rows, _ = client.coql(f"select id from Products where Modified_Time >= '{zoho_datetime(fine)}' limit 5")
    assert isinstance(rows, list)
    everything = len(list(client.iter_coql("Products", ["Product_Code"])))
    old = dt.datetime(2020, 1, 1, 0, 0, 0, 999, tzinfo=dt.UTC)  # the client formats what it is given
    assert len(list(client.iter_records("Products", ["Product_Code"], modified_since=old))) == everything


def test_watch_channel_expiry_and_token_as_zoho_limits_them(crm):
    from include.bridge.crm_events import subscribe

    client = crm.client()
    url = "http://127.0.0.1:9/never"
    answer = subscribe(client, url, "t" * 50)
    expires = dt.datetime.fromisoformat(answer["expires"])
    assert dt.timedelta(days=5) < expires - dt.datetime.now(dt.UTC) < dt.timedelta(days=7)
    with pytest.raises(ValueError, match="50"):
        subscribe(client, url, "t" * 51)
    too_long = (dt.datetime.now(dt.UTC) + dt.timedelta(days=8)).replace(microsecond=0).isoformat()
    raw = client.request("POST", "/crm/v8/actions/watch", json={"watch": [{
        "channel_id": "9", "events": ["Sales_Orders.edit"], "notify_url": url, "token": "x",
        "channel_expiry": too_long}]}).json()["watch"][0]
    granted = dt.datetime.fromisoformat(raw["details"]["events"][0]["channel_expiry"])
    assert granted - dt.datetime.now(dt.UTC) < dt.timedelta(hours=1, minutes=1)  # Zoho's fallback: one hour
    with pytest.raises(ValueError, match="168"):
        subscribe(client, url, "token", hours=8 * 24)


def test_records_past_the_page_token_limit_continue_by_coql(crm):
    crm.configure(page_token_limit=50)
    try:
        client = crm.client()
        client.page_token_limit = 50
        everything = len(list(client.iter_coql("Products", ["Product_Code"])))
        codes = [r["Product_Code"] for r in client.iter_records("Products", ["Product_Code"], per_page=20)]
        assert everything > 100 and len(codes) == everything and len(set(codes)) == everything
        with pytest.raises(ZohoError, match="by id or by bulk read"):
            list(client.iter_records("Products", ["Product_Code"], sort_by="Modified_Time", per_page=20))
    finally:
        crm.configure(page_token_limit=100_000)


def test_a_connection_to_another_data_center_than_the_org_is_refused():
    assert data_center_problem("https://www.zohoapis.com", "https://www.zohoapis.com") is None
    assert data_center_problem("https://sandbox.zohoapis.eu", "https://www.zohoapis.eu") is None
    assert data_center_problem("http://127.0.0.1:8765", "http://127.0.0.1:8765") is None
    problem = data_center_problem("https://www.zohoapis.com", "https://www.zohoapis.com.cn")
    assert problem and ".com.cn data center" in problem


def test_unknown_connection_extras_are_refused():
    from types import SimpleNamespace

    from include.zoho.client import client_from_connection

    conn = SimpleNamespace(conn_id="zoho_crm", host="https://www.zohoapis.com", schema=None, port=None,
                           login="id", password="secret",
                           extra_dejson={"accounts_url": "https://accounts.zoho.com", "refresh_token": "r",
                                         "org_id": "60012345678"})
    with pytest.raises(ValueError, match="org_id is gone"):
        client_from_connection(conn)


def test_number_fields_keep_their_decimal_places_and_custom_text_areas_2000_characters(crm):
    client = crm.client()
    fields = client.fields("Products")
    assert fields["Unit_Price"]["decimal_place"] == 2 and fields["Unit_Price"]["currency"]["precision"] == 2
    area = fields["Stock_By_Warehouse"]
    assert area["length"] == 2000 and area["textarea"]["type"] == "small"
    out = client.update("Products", [{"id": client.get_record("Products", "MTR-000001", "Product_Code")["id"],
                                      "Unit_Price": 12.3456}])
    assert out[0].ok
    assert client.get_record("Products", "MTR-000001", "Product_Code")["Unit_Price"] == 12.35  # as Zoho rounds
    too_long = client.update("Products", [{"id": out[0].id, "Stock_By_Warehouse": "x" * 2001}])
    assert not too_long[0].ok and too_long[0].api_name == "Stock_By_Warehouse"


def test_a_mirror_writes_what_zoho_keeps_so_the_next_run_writes_nothing(erp, bridge, crm_server):
    """A tax-included ERP price gives a net price with four decimals; Zoho keeps two. The mirror rounds before it
    writes and compares, so the next run (which reads the CRM back to catch price edits) finds nothing to do —
    without rounding it saw a "CRM edit" every run and wrote the same products forever."""
    import os

    import psycopg2

    from include.bridge.runtime import Systems
    from include.flows import flow
    from include.sandbox.erp import db as erp_db

    crm_server.reset(customers=60, skus=300, seed_value=7)  # the ERP fixture's demo company
    client = crm_server.client()
    erp_conn = psycopg2.connect(dbname=erp.dbname, user=erp_db.READ_ROLE, password=os.environ["ERP_READ_PASSWORD"])
    url = f"postgresql+psycopg2://{bridge[1].info.user}@{bridge[1].info.host}:{bridge[1].info.port}/{bridge[0]}"
    systems = Systems.from_connections(bridge[1], url, erp=erp_conn, crm=client)
    prices = flow("erp_prices_to_crm")

    def run(run_id: str) -> dict:
        r = prices.extract(systems, run_id)
        prices.validate(systems, r)
        for chunk in r.facts["chunks"]:
            prices.load(systems, r, chunk)
        return prices.finish(systems, r)

    try:
        run("manual__prices_1")
        sku = erp.scalar("SELECT sku FROM erp_api.price_list WHERE price_list = 'Standard Selling' "
                         "AND currency = 'CNY' ORDER BY sku LIMIT 1")
        erp.query("UPDATE erp.item_price SET unit_price = 99.99, tax_included = true, updated_at = now() "
                  "WHERE sku = %s AND price_list = 'Standard Selling' AND currency = 'CNY'", (sku,))
        net = float(erp.scalar("SELECT unit_price_excl_tax FROM erp_api.price_list WHERE sku = %s "
                               "AND price_list = 'Standard Selling' AND currency = 'CNY'", (sku,)))
        assert round(net, 2) != net  # four decimals in the ERP
        assert run("manual__prices_2")["loaded"] >= 1
        assert client.get_record("Products", sku, "Product_Code")["Unit_Price"] == round(net, 2)
        assert run("manual__prices_3")["loaded"] == 0
    finally:
        erp_conn.close()


def _doctor(crm_url: str, *args: str, airflow_home=None) -> tuple[int, str]:
    import json
    import os
    import shutil
    import subprocess
    import sys

    from tests.conftest import CRM_CREDENTIALS, ROOT, _migrated_sqlite

    conn = {"conn_type": "zoho_crm", "host": crm_url, "login": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
            "password": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
            "extra": {"accounts_url": crm_url, "file_upload_url": crm_url,
                      "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]}}
    env = os.environ | {"AIRFLOW_CONN_ZOHO_CRM": json.dumps(conn), "PYTHONPATH": ROOT}
    if airflow_home:  # an Airflow metadata DB of its own, for --set-pool
        os.makedirs(airflow_home, exist_ok=True)
        shutil.copyfile(_migrated_sqlite(), os.path.join(airflow_home, "airflow.db"))
        env |= {"AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-m", "include.bridge.doctor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_doctor_is_green_on_the_sandbox_and_names_each_change_on_a_misconfigured_org(crm, tmp_path):
    from pathlib import Path

    import yaml

    from include.sandbox.crm import meta
    from tests.conftest import CrmSandbox

    code, out = _doctor(crm.url)
    assert code == 0 and "every field the flows need" in out, out
    assert "edition standard: 10 calls in flight" in out and "pool zoho_crm: 10 slots" in out, out

    # an org whose admin left Product_Code not unique, Unit_Price at 0 decimals and no 'Prepaid Only' credit check
    setup = yaml.safe_load(Path(meta.__file__).with_name("modules.yaml").read_text(encoding="utf-8"))
    products = setup["modules"]["Products"]["fields"]
    products["Product_Code"]["unique"] = False
    products["Unit_Price"]["decimals"] = 0
    checks = setup["modules"]["Sales_Orders"]["fields"]["Credit_Check"]
    checks["picklist"] = [v for v in checks["picklist"] if v != "Prepaid Only"]
    (tmp_path / "modules.yaml").write_text(yaml.safe_dump(setup, allow_unicode=True), encoding="utf-8")
    with CrmSandbox(tmp_path / "org", env={"CRM_SANDBOX_MODULES": str(tmp_path / "modules.yaml")}) as other:
        other.reset(customers=5, skus=10)
        other.configure(edition="free")  # and a Free org: 5 calls in flight, so the pool gets 5 slots
        code, out = _doctor(other.url, "--set-pool", airflow_home=tmp_path / "airflow")
    assert code == 1, out
    assert "edition free: 5 calls in flight" in out and "pool zoho_crm set to 5 slots" in out, out
    import sqlite3

    with sqlite3.connect(tmp_path / "airflow" / "airflow.db") as meta_db:
        assert meta_db.execute("SELECT slots FROM slot_pool WHERE pool = 'zoho_crm'").fetchone() == (5,)
    assert "Products.Product_Code" in out and "not unique" in out and "Do not allow duplicate values" in out
    assert "Products.Unit_Price" in out and "keeps 0 decimal places" in out
    assert "Sales_Orders.Credit_Check" in out and "Prepaid Only" in out


def test_credits_per_call_type_and_a_429_for_credits_stops_at_once(crm):
    from include.zoho.client import ZohoCreditsExhausted

    client = crm.client()
    used = lambda: crm.admin("GET", "stats")["credits_used_24h"]  # noqa: E731
    before = used()
    client.coql("select id from Products limit 2000")
    client.coql("select id from Products limit 200")
    assert used() - before == 3 + 1  # Zoho's COQL credits: 3 for LIMIT 2,000, 1 for LIMIT 200

    crm.configure(burst_429=2)  # a burst: retried, and the call goes through
    assert client.coql("select id from Products limit 5")[0]
    crm.configure(credits_per_day=used())  # the day's credits are spent
    try:
        requests_before = client.stats["requests"]
        with pytest.raises(ZohoCreditsExhausted, match="credit"):
            client.coql("select id from Products limit 5")
        assert client.stats["requests"] - requests_before == 1  # no retry spends more
    finally:
        crm.configure(credits_per_day=200_000)


def test_complex_calls_have_a_sub_concurrency_of_ten(crm):
    import threading

    crm.configure(latency_ms=400, concurrency_limit=25)
    try:
        client = crm.client(max_retries=0)
        client.access_token()
        outcomes = []

        def query():
            try:
                client.coql("select id from Products limit 5")
                outcomes.append("ok")
            except ZohoError as exc:
                outcomes.append(exc.code)

        threads = [threading.Thread(target=query) for _ in range(14)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("TOO_MANY_REQUESTS") >= 1 and outcomes.count("ok") >= 10
        assert crm.admin("GET", "stats")["stats"].get("sub_concurrency_429", 0) >= 1
    finally:
        crm.configure(latency_ms=0, concurrency_limit=10)


def test_subform_rows_come_from_the_record_when_a_list_call_leaves_them_out(crm):
    """Zoho documents subform rows through GET /{module}/{id} (v8 Subform API) and not for list calls: the sandbox
    leaves them out of lists, and the client completes each row by its record (and costs nothing when a list
    call does carry them)."""
    client = crm.client()
    listed = client.request("GET", "/crm/v8/Sales_Orders",
                            params={"fields": "Subject,Ordered_Items", "per_page": 5}).json()["data"]
    assert listed and all("Ordered_Items" not in r for r in listed)
    orders = list(client.iter_records("Sales_Orders", ["Subject", "Ordered_Items"], per_page=5))
    first = orders[0]
    assert first["Ordered_Items"] == client.get_record("Sales_Orders", first["id"])["Ordered_Items"]
    assert first["Ordered_Items"] and client.stats["subform_reads"] == len(orders)

    crm.configure(subforms_in_lists=True)  # the other reading of Zoho's silence
    try:
        again = crm.client()
        assert list(again.iter_records("Sales_Orders", ["Subject", "Ordered_Items"], per_page=5)) == orders
        assert "subform_reads" not in again.stats
    finally:
        crm.configure(subforms_in_lists=False)
