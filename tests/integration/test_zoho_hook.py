"""ZohoCrmHook / ZohoCrmClient against the running CRM sandbox process (no mocks)."""

import json
import logging

import pytest

from include.zoho.client import ZohoAmbiguousWriteError, ZohoAuthError, ZohoError
from tests.conftest import CRM_CREDENTIALS


def products(n, prefix="BULK", **extra):
    return [{"Product_Code": f"{prefix}-{i:06d}", "Product_Name": f"{prefix} product {i}", "Qty_in_Stock": float(i)}
            | extra for i in range(n)]


def codes_in_crm(client, prefix):
    rows = list(client.iter_coql("Products", ["Product_Code"], where=f"Product_Code like '{prefix}-%'"))
    return [r["Product_Code"] for r in rows]


def test_hook_builds_client_from_connection(crm, monkeypatch):
    from zoho_crm.hook import ZohoCrmHook

    conn = {"conn_type": "zoho_crm", "host": crm.url, "login": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
            "password": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
            "extra": {"accounts_url": crm.url, "file_upload_url": crm.url,
                      "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]}}
    monkeypatch.setenv("AIRFLOW_CONN_ZOHO_CRM_TEST", json.dumps(conn))
    hook = ZohoCrmHook("zoho_crm_test")
    client = hook.get_conn()
    assert client.api_url == crm.url and hook.get_conn() is client
    ok, message = hook.test_connection()
    assert ok and "60012345678" in message, message
    assert CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"] not in repr(client)


def test_incomplete_connection_is_a_clear_error(monkeypatch):
    from zoho_crm.hook import ZohoCrmHook

    monkeypatch.setenv("AIRFLOW_CONN_ZOHO_BROKEN", json.dumps({"conn_type": "zoho_crm", "host": "https://x"}))
    with pytest.raises(ValueError, match="lacks accounts_url, client_id, client_secret, refresh_token"):
        ZohoCrmHook("zoho_broken").get_conn()


def test_iterates_past_the_2000_record_page_limit(crm):
    client = crm.client()
    outcomes = client.upsert("Products", products(2300), duplicate_check_fields=["Product_Code"], max_workers=4)
    assert all(o.ok and o.action == "insert" for o in outcomes)
    assert [o.index for o in outcomes] == list(range(2300))
    rows = list(client.iter_records("Products", ["Product_Code"], sort_by="id", sort_order="asc"))
    assert len(rows) == 2300 + 121 and len({r["id"] for r in rows}) == len(rows)
    assert len(codes_in_crm(client, "BULK")) == 2300  # COQL paging by id also passes 2,000


def test_incremental_read_with_modified_since(crm):
    import time

    client = crm.client()
    newest = next(client.iter_records("Products", ["Modified_Time"], sort_by="Modified_Time", sort_order="desc"))
    time.sleep(1.1)
    client.upsert("Products", [{"Product_Code": "MTR-000001", "Qty_in_Stock": 3.0}], ["Product_Code"])
    changed = list(client.iter_records("Products", ["Product_Code"], modified_since=newest["Modified_Time"]))
    assert [r["Product_Code"] for r in changed] == ["MTR-000001"]
    later = changed and client.get_record("Products", changed[0]["id"])["Modified_Time"]
    assert list(client.iter_records("Products", ["Product_Code"], modified_since=later)) == []


def test_partial_success_reports_each_record_in_order(crm):
    client = crm.client()
    batch = [{"Product_Code": "OK-1", "Product_Name": "ok"}, {"Product_Code": "BAD-1", "Qty_in_Stock": "many"},
             {"Product_Code": "BAD-2"}, {"Product_Code": "OK-2", "Product_Name": "ok 2", "Qty_in_Stock": 1}]
    out = client.upsert("Products", batch, ["Product_Code"])
    assert [o.ok for o in out] == [True, False, False, True]
    assert (out[1].code, out[1].api_name) == ("INVALID_DATA", "Qty_in_Stock")
    assert (out[2].code, out[2].api_name) == ("MANDATORY_NOT_FOUND", "Product_Name")
    assert out[0].id and out[0].action == "insert"
    all_bad = client.upsert("Products", [{"Product_Code": "BAD-3"}], ["Product_Code"])  # HTTP 400, per-record
    assert all_bad[0].code == "MANDATORY_NOT_FOUND"


def test_data_errors_are_not_retried(crm):
    client = crm.client()
    with pytest.raises(ZohoError) as exc:
        client.coql("select Product_Code form Products")
    assert exc.value.code == "SYNTAX_ERROR" and client.stats["retries"] == 0


def test_token_expiry_mid_run_refreshes_once(crm):
    client = crm.client()
    client.upsert("Products", products(450, "EXP"), ["Product_Code"])
    seen = []
    for n, row in enumerate(client.iter_records("Products", ["Product_Code"], per_page=100)):
        seen.append(row["id"])
        if n == 150:
            crm.admin("POST", "tokens/expire")
    assert len(seen) == 450 + 121 and len(set(seen)) == len(seen)
    assert client.stats["token_refreshes"] == 2  # the first token, and one refresh after expiry


def test_token_is_cached_not_minted_per_request(crm):
    crm.configure(token_mints_per_10min=2)
    client = crm.client()
    for _ in range(20):
        client.request("GET", "/crm/v8/org")
    assert client.stats["token_refreshes"] == 1


def test_bad_credentials_fail_fast_without_leaking_secrets(crm, caplog):
    from include.zoho.client import ZohoCrmClient

    secret = "super-secret-client-secret-123"
    client = ZohoCrmClient(crm.url, crm.url, CRM_CREDENTIALS["ZOHO_CLIENT_ID"], secret, "1000.refresh.secret.456")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ZohoAuthError) as exc:
        client.request("GET", "/crm/v8/org")
    text = str(exc.value) + repr(client) + caplog.text
    assert "invalid_client" in str(exc.value).lower()
    assert secret not in text and "1000.refresh.secret.456" not in text


def test_rides_out_429_and_500_storms_without_duplicates(crm):
    client = crm.client(max_retries=10)
    crm.configure(error_rate=0.3, burst_429=5, fault_seed=7)
    outcomes = client.upsert("Products", products(600, "STORM"), ["Product_Code"], max_workers=3)
    crm.configure(error_rate=0.0, burst_429=0)
    assert all(o.ok for o in outcomes)
    codes = codes_in_crm(client, "STORM")
    assert len(codes) == 600 and len(set(codes)) == 600
    stats = crm.admin("GET", "stats")["stats"]
    assert stats["injected_500"] > 0 and stats["injected_429"] == 5 and client.stats["retries"] > 0


def test_dropped_replies_are_safe_for_upserts_and_flagged_for_inserts(crm):
    client = crm.client(max_retries=10)
    crm.configure(drop_rate=0.3, fault_seed=3, fault_methods=["POST"])
    outcomes = client.upsert("Products", products(500, "DROP"), ["Product_Code"])
    assert all(o.ok for o in outcomes)
    # some batches were written, their replies lost, and sent again: they came back as updates
    assert {o.action for o in outcomes} == {"insert", "update"}
    with pytest.raises(ZohoAmbiguousWriteError):
        for _ in range(20):  # an insert whose reply is lost is not silently re-sent
            client.insert("Products", [{"Product_Name": "insert once"}])
    crm.configure(drop_rate=0.0)
    codes = codes_in_crm(client, "DROP")
    assert len(codes) == 500 and len(set(codes)) == 500


def test_bulk_write_and_bulk_read(crm):
    client = crm.client()
    rows = [{"Product_Code": f"BW-{i:06d}", "Product_Name": f"bulk {i}", "Qty_in_Stock": i, "Product_Active": True}
            for i in range(12_000)]
    rows[5]["Qty_in_Stock"] = "not a number"
    result = client.bulk_write("Products", rows, find_by="Product_Code")
    assert result.state == "COMPLETED" and result.total == 12_000
    assert (result.added, result.updated, result.skipped) == (11_999, 0, 1)
    assert result.rows[5]["STATUS"] == "SKIPPED" and "INVALID_DATA" in result.rows[5]["ERRORS"]
    again = client.bulk_write("Products", rows[:10], find_by="Product_Code")
    assert again.updated == 9 and again.added == 0
    exported = list(client.bulk_read("Products", ["Product_Code", "Qty_in_Stock"],
                                     criteria={"api_name": "Product_Code", "comparator": "in",
                                               "value": ["BW-000001", "BW-000002"]}))
    assert sorted(r["Product_Code"] for r in exported) == ["BW-000001", "BW-000002"]
    assert client.get_record("Products", "BW-011999", external_field="Product_Code")["Qty_in_Stock"] == 11999


def test_field_check_against_crm_metadata(crm):
    client = crm.client()
    assert client.check_fields("Products", {"Qty_in_Stock": "double", "Stock_Synced_At": "datetime"}) == []
    problems = client.check_fields("Products", {"Avaliable_Qty": "double", "Product_Active": "text"})
    assert problems == ["Products.Avaliable_Qty does not exist in the CRM",
                        "Products.Product_Active is boolean, expected text"]


def test_timeouts_are_retried_a_bounded_number_of_times(crm):
    import threading

    client = crm.client(timeout=0.25, max_retries=6)
    client.access_token()  # the token endpoint is not slowed down; the API is
    crm.configure(latency_ms=1000)
    threading.Timer(0.6, lambda: crm.configure(latency_ms=0)).start()  # the slowness passes
    assert client.request("GET", "/crm/v8/org").json()["org"][0]["id"] == "60012345678"
    assert client.stats["retries"] >= 1
    crm.configure(latency_ms=1000)
    slow = crm.client(timeout=0.25, max_retries=2)
    with pytest.raises(ZohoError) as exc:
        slow.request("GET", "/crm/v8/org")
    assert exc.value.code == "CONNECTION_FAILED" and slow.stats["retries"] == 2


def test_watch_api_notifies_within_seconds(crm):
    import http.server
    import threading
    import time

    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = crm.client()
        resp = client.request("POST", "/crm/v8/actions/watch", json={"watch": [{
            "channel_id": "1000000068001", "events": ["Sales_Orders.edit"], "token": "shared-secret",
            "notify_url": f"http://127.0.0.1:{server.server_port}/zoho/notify"}]})
        assert resp.json()["watch"][0]["code"] == "SUCCESS"
        order = next(client.iter_records("Sales_Orders", ["Status"]))
        client.update("Sales_Orders", [{"id": order["id"], "Status": "Confirmed"}])
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received and received[0]["ids"] == [order["id"]]
        assert received[0]["module"] == "Sales_Orders" and received[0]["operation"] == "edit"
        assert received[0]["token"] == "shared-secret" and received[0]["channel_id"] == "1000000068001"
    finally:
        server.shutdown()


def test_token_is_shared_between_processes(crm, tmp_path):
    """Airflow runs each task in its own process: they share one token through the cache file."""
    from include.zoho import client as zc

    crm.configure(token_mints_per_10min=2)
    first = crm.client(token_cache_dir=str(tmp_path / "tokens"))
    first.request("GET", "/crm/v8/org")
    for _ in range(5):  # five more "processes": nothing cached in memory, the file has the token
        zc._TOKEN_CACHE.clear()
        again = crm.client(token_cache_dir=str(tmp_path / "tokens"))
        zc._TOKEN_CACHE.clear()
        again.request("GET", "/crm/v8/org")
        assert again.stats["token_refreshes"] == 0
    cache_files = list((tmp_path / "tokens").glob("*.json"))
    assert len(cache_files) == 1 and oct(cache_files[0].stat().st_mode & 0o777) == "0o600"
    assert CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"] not in cache_files[0].read_text()
    crm.admin("POST", "tokens/expire")  # rejected everywhere: one process refreshes, the file follows
    zc._TOKEN_CACHE.clear()
    again.request("GET", "/crm/v8/org")
    assert again.stats["token_refreshes"] == 1


def test_a_token_cache_folder_others_can_touch_is_refused(crm, tmp_path):
    """Fail closed: a cache folder that is a symlink or open to others could feed the client a planted token."""
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o777)
    open_folder.chmod(0o777)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    for folder, reason in ((open_folder, "open to others"), (tmp_path / "link", "symbolic link")):
        with pytest.raises(ZohoAuthError, match=reason):
            crm.client(token_cache_dir=str(folder)).request("GET", "/crm/v8/org")


def test_a_planted_token_file_is_not_trusted(crm, tmp_path):
    from include.zoho import client as zc

    folder = tmp_path / "tokens"
    client = crm.client(token_cache_dir=str(folder))
    client.request("GET", "/crm/v8/org")  # creates the folder and the cache file
    [cache] = folder.glob("*.json")
    cache.write_text(json.dumps({"token": "1000.planted.token", "expires_at": 9_999_999_999}))
    cache.chmod(0o644)  # what another user's file would look like to us
    zc._TOKEN_CACHE.clear()
    again = crm.client(token_cache_dir=str(folder))
    zc._TOKEN_CACHE.clear()
    assert again.access_token() != "1000.planted.token"  # minted anew, and the cache is private again
    assert oct(cache.stat().st_mode & 0o777) == "0o600" and "planted" not in cache.read_text()
