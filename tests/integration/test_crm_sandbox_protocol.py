"""The CRM sandbox speaks Zoho CRM v8 (specs/zoho-crm-v8.md): raw HTTP against the running server."""

import base64
import concurrent.futures
import json

import pytest
import requests

from tests.conftest import CRM_CREDENTIALS


def token(crm, refresh=None, **override) -> dict:
    body = {"grant_type": "refresh_token", "client_id": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
            "client_secret": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
            "refresh_token": refresh or CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]} | override
    resp = requests.post(f"{crm.url}/oauth/v2/token", data=body, timeout=10)
    assert resp.status_code == 200  # Zoho answers token errors with HTTP 200 too
    return resp.json()


class Api:
    def __init__(self, crm, access_token=None):
        self.crm = crm
        self.headers = {"Authorization": f"Zoho-oauthtoken {access_token or token(crm)['access_token']}"}

    def __call__(self, method, path, **kw):
        headers = self.headers | kw.pop("headers", {})
        return requests.request(method, f"{self.crm.url}/crm/v8{path}", headers=headers, timeout=30, **kw)


@pytest.fixture
def api(crm):
    return Api(crm)


# ------------------------------------------------------------------------------------------------ OAuth
def test_token_grant_and_errors(crm):
    good = token(crm)
    assert good["access_token"].startswith("1000.") and good["token_type"] == "Bearer"
    assert good["expires_in"] == 3600 and good["api_domain"] == crm.url and "refresh_token" not in good
    assert token(crm, client_secret="wrong") == {"error": "invalid_client"}
    assert token(crm, refresh="1000.revoked") == {"error": "invalid_code"}
    # the query string form is accepted too
    resp = requests.post(f"{crm.url}/oauth/v2/token", params={
        "grant_type": "refresh_token", "client_id": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
        "client_secret": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"], "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]})
    assert "access_token" in resp.json()


def test_invalid_expired_and_missing_tokens(crm):
    bad = Api(crm, "1000.nope")("GET", "/Products", params={"fields": "Product_Code"})
    assert bad.status_code == 401
    assert bad.json() == {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}
    api = Api(crm)
    assert api("GET", "/Products", params={"fields": "Product_Code"}).status_code == 200
    crm.admin("POST", "tokens/expire")
    assert api("GET", "/Products", params={"fields": "Product_Code"}).json()["code"] == "INVALID_TOKEN"
    missing = requests.get(f"{crm.url}/crm/v8/Products", params={"fields": "Product_Code"})
    assert missing.status_code == 401


def test_token_expires_after_its_lifetime(crm):
    crm.configure(token_ttl_seconds=1)
    api = Api(crm)
    assert api("GET", "/org").status_code == 200
    import time
    time.sleep(1.2)
    assert api("GET", "/org").json()["code"] == "INVALID_TOKEN"


def test_scope_mismatch(crm):
    readonly = Api(crm, token(crm, refresh="1000.sandbox.readonly")["access_token"])
    resp = readonly("POST", "/coql", json={"select_query": "select id from Products limit 1"})
    assert resp.status_code == 401 and resp.json()["code"] == "OAUTH_SCOPE_MISMATCH"


def test_mint_limit_per_refresh_token(crm):
    crm.configure(token_mints_per_10min=3)
    assert all("access_token" in token(crm) for _ in range(3))
    refused = requests.post(f"{crm.url}/oauth/v2/token", data={
        "grant_type": "refresh_token", "client_id": CRM_CREDENTIALS["ZOHO_CLIENT_ID"],
        "client_secret": CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"], "refresh_token": CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"]})
    assert "access_token" not in refused.json() and refused.json()["error"] == "Access Denied"


# ---------------------------------------------------------------------------------------------- reading
def test_list_requires_fields_and_limits_them(api):
    resp = api("GET", "/Products")
    assert resp.status_code == 400
    assert resp.json()["code"] == "REQUIRED_PARAM_MISSING" and resp.json()["details"]["param_name"] == "fields"
    many = ",".join(f"F{i}" for i in range(51))
    assert api("GET", "/Products", params={"fields": many}).json()["code"] == "LIMIT_EXCEEDED"
    assert api("GET", "/Products", params={"fields": "Product_Code", "per_page": 201}).status_code == 400


def test_list_shape_paging_and_sorting(api):
    resp = api("GET", "/Products", params={"fields": "Product_Code,Unit_Price", "per_page": 50, "sort_by": "id",
                                           "sort_order": "asc"})
    body = resp.json()
    assert resp.status_code == 200 and len(body["data"]) == 50
    assert set(body["data"][0]) == {"id", "Product_Code", "Unit_Price"}
    info = body["info"]
    assert info["more_records"] is True and info["per_page"] == 50 and info["count"] == 50 and info["page"] == 1
    assert info["next_page_token"] and info["page_token_expiry"] and info["sort_order"] == "asc"
    ids = [int(r["id"]) for r in body["data"]]
    assert ids == sorted(ids)
    page2 = api("GET", "/Products", params={"fields": "Product_Code", "per_page": 50, "sort_by": "id",
                                            "sort_order": "asc", "page": 2}).json()["data"]
    assert int(page2[0]["id"]) > ids[-1]
    both = api("GET", "/Products", params={"fields": "Product_Code", "page": 2, "page_token": info["next_page_token"]})
    assert both.status_code == 400


def test_page_stops_at_2000_and_page_token_stops_at_100000(api):
    over = api("GET", "/Products", params={"fields": "Product_Code", "per_page": 200, "page": 11})
    assert over.status_code == 400 and over.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
    first = api("GET", "/Products", params={"fields": "Product_Code", "per_page": 10}).json()["info"]
    t = json.loads(base64.urlsafe_b64decode(first["next_page_token"]))
    t["n"] = 100_000
    forged = base64.urlsafe_b64encode(json.dumps(t).encode()).decode()
    resp = api("GET", "/Products", params={"fields": "Product_Code", "per_page": 10, "page_token": forged})
    assert resp.status_code == 400 and resp.json()["code"] == "PAGINATION_LIMIT_EXCEEDED"


def test_empty_module_is_204_and_if_modified_since(api):
    assert api("GET", "/Invoices", params={"fields": "Subject"}).status_code == 204
    newest = api("GET", "/Products", params={"fields": "Product_Code", "sort_by": "Modified_Time",
                                             "per_page": 1}).json()["data"][0]
    rec = api("GET", f"/Products/{newest['id']}").json()["data"][0]
    unchanged = api("GET", "/Products", params={"fields": "Product_Code"},
                    headers={"If-Modified-Since": rec["Modified_Time"]})
    assert unchanged.status_code == 304
    import time
    time.sleep(1.1)  # Modified_Time has second resolution
    api("POST", "/Products/upsert", json={"data": [{"Product_Code": "MTR-000001", "Qty_in_Stock": 7.0}],
                                          "duplicate_check_fields": ["Product_Code"]})
    changed = api("GET", "/Products", params={"fields": "Product_Code,Qty_in_Stock"},
                  headers={"If-Modified-Since": rec["Modified_Time"]})
    assert changed.status_code == 200 and changed.json()["data"] == [
        {"Product_Code": "MTR-000001", "Qty_in_Stock": 7.0, "id": changed.json()["data"][0]["id"]}]


def test_get_by_id_and_external_id(api):
    rec = api("GET", "/Products", params={"fields": "Product_Code", "per_page": 1}).json()["data"][0]
    full = api("GET", f"/Products/{rec['id']}").json()["data"][0]
    assert full["Product_Code"] == rec["Product_Code"] and full["Created_By"]["id"] and full["Modified_Time"]
    ext = api("GET", f"/Products/{rec['Product_Code']}", headers={"X-EXTERNAL": "Products.Product_Code"})
    assert ext.json()["data"][0]["id"] == rec["id"]
    assert api("GET", "/Products/5843104999999999999").status_code == 204
    assert api("GET", "/NoSuchModule", params={"fields": "x"}).json()["code"] == "INVALID_MODULE"
    assert api("GET", "/Products/a/b/c").json()["code"] == "INVALID_URL_PATTERN"


# ---------------------------------------------------------------------------------------------- writing
@pytest.mark.parametrize("module, items", [("Sales_Orders", "Ordered_Items"), ("Invoices", "Invoiced_Items")])
def test_orders_and_invoices_are_created_only_with_their_line_items(api, module, items):
    """Zoho's inventory modules need their line-item subform to create a record (crm-oas v8.0 records: the
    subform is mandatory in the module's layout); the history mirrors send the ERP's lines."""
    product = api("POST", "/Products", json={"data": [{"Product_Name": f"L-{module}", "Product_Code": f"L-{module}"}]})
    product_id = product.json()["data"][0]["details"]["id"]
    bare = api("POST", f"/{module}", json={"data": [{"Subject": "no lines"}]})
    assert bare.json()["data"][0]["code"] == "MANDATORY_NOT_FOUND"
    assert bare.json()["data"][0]["details"]["api_name"] == items
    lined = api("POST", f"/{module}", json={"data": [{"Subject": "with lines", items: [
        {"Product_Name": {"id": product_id}, "Quantity": 2, "List_Price": 10.0}]}]})
    assert lined.json()["data"][0]["code"] == "SUCCESS", lined.json()


def test_insert_statuses_201_207_400_and_limit(api):
    ok = api("POST", "/Products", json={"data": [{"Product_Name": "A1", "Product_Code": "T-A1"}], "trigger": []})
    assert ok.status_code == 201 and ok.json()["data"][0]["message"] == "record added"
    assert ok.json()["data"][0]["details"]["id"].isdigit()
    mixed = api("POST", "/Products", json={"data": [{"Product_Name": "A2"}, {"Product_Name": "A3",
                                                                           "Unit_Price": "12"}]})
    assert mixed.status_code == 207
    err = mixed.json()["data"][1]
    assert err == {"code": "INVALID_DATA", "details": {"api_name": "Unit_Price", "json_path": "$.data[1].Unit_Price",
                                                         "expected_data_type": "currency"},
                   "message": "invalid data", "status": "error"}
    failed = api("POST", "/Products", json={"data": [{"Unit_Price": 1.0}]})
    assert failed.status_code == 400
    assert failed.json()["data"][0] == {"code": "MANDATORY_NOT_FOUND", "details": {
        "api_name": "Product_Name", "json_path": "$.data[0].Product_Name"}, "message": "required field not found",
        "status": "error"}
    too_many = api("POST", "/Products", json={"data": [{"Product_Name": f"x{i}"} for i in range(101)]})
    assert too_many.status_code == 400 and too_many.json()["code"] == "LIMIT_EXCEEDED"


def test_field_types_are_enforced(api):
    cases = [("Qty_in_Stock", "5", "double"), ("Product_Active", "yes", "boolean"), ("Product_Name", 5, "text"),
             ("Usage_Unit", 3, "picklist"), ("Stock_Synced_At", "2026-13-01", "datetime"),
             ("First_Shortage_Date", "01/02/2026", "date"), ("Tax", "VAT 13%", "jsonarray")]
    for field, value, expected in cases:
        item = {"Product_Name": "typed", field: value}
        resp = api("POST", "/Products", json={"data": [item]}).json()["data"][0]
        assert resp["code"] == "INVALID_DATA" and resp["details"]["api_name"] == field, field
        assert resp["details"]["expected_data_type"] == expected
    unknown_account = {"id": "5843104999999999999"}
    lookup = api("POST", "/Contacts", json={"data": [{"Last_Name": "王", "Account_Name": unknown_account}]})
    assert lookup.json()["data"][0]["details"]["api_name"] == "Account_Name"


def test_upsert_actions_duplicate_field_and_unique(api):
    resp = api("POST", "/Products/upsert", json={
        "data": [{"Product_Code": "MTR-000001", "Qty_in_Stock": 1.0},
                 {"Product_Code": "NEW-0001", "Product_Name": "新产品", "Qty_in_Stock": 2.0}],
        "duplicate_check_fields": ["Product_Code"], "trigger": []})
    assert resp.status_code == 200
    upd, ins = resp.json()["data"]
    assert (upd["action"], upd["duplicate_field"], upd["message"]) == ("update", "Product_Code", "record updated")
    assert (ins["action"], ins["duplicate_field"], ins["message"]) == ("insert", None, "record added")
    # duplicate_check_fields sent as a header is ignored (Zoho's behaviour): the default Product_Name
    # decides, so a renamed product with an existing code clashes with the unique Product_Code
    clash = api("POST", "/Products/upsert", headers={"duplicate_check_fields": "Product_Code"},
                json={"data": [{"Product_Code": "NEW-0001", "Product_Name": "改名"}]})
    item = clash.json()["data"][0]
    assert clash.status_code == 400 and item["code"] == "DUPLICATE_DATA"
    assert item["details"]["duplicate_record"]["id"] == ins["details"]["id"]


def test_update_by_id_and_if_unmodified_since(api):
    rec = api("GET", "/Products", params={"fields": "Product_Code,Modified_Time", "per_page": 1}).json()["data"][0]
    ok = api("PUT", "/Products", json={"data": [{"id": rec["id"], "Reorder_Level": 9.0}]})
    assert ok.status_code == 200 and ok.json()["data"][0]["message"] == "record updated"
    stale = api("PUT", f"/Products/{rec['id']}", json={"data": [{"Reorder_Level": 1.0}]},
                headers={"If-Unmodified-Since": rec["Modified_Time"]})
    assert stale.status_code == 412 and stale.json()["data"][0]["code"] == "ALREADY_MODIFIED"
    missing_id = api("PUT", "/Products", json={"data": [{"Reorder_Level": 1.0}]})
    assert missing_id.json()["data"][0]["code"] == "MANDATORY_NOT_FOUND"


def test_line_items_update_by_id_and_append(api):
    order = api("GET", "/Sales_Orders", params={"fields": "Subject", "per_page": 1}).json()["data"][0]
    full = api("GET", f"/Sales_Orders/{order['id']}").json()["data"][0]
    rows = full["Ordered_Items"]
    product = rows[0]["Product_Name"]["id"]
    resp = api("PUT", f"/Sales_Orders/{order['id']}", json={"data": [{"Ordered_Items": [
        {"id": rows[0]["id"], "Quantity": 3.0, "List_Price": 100.0},
        {"Product_Name": {"id": product}, "Quantity": 2.0, "List_Price": 10.0}]}]})
    assert resp.status_code == 200
    after = api("GET", f"/Sales_Orders/{order['id']}").json()["data"][0]["Ordered_Items"]
    assert len(after) == len(rows) + 1
    assert after[0]["id"] == rows[0]["id"] and after[0]["Quantity"] == 3.0 and after[0]["Total"] == 300.0
    assert after[-1]["Total"] == 20.0 and after[-1]["id"].isdigit()


def test_delete_and_deleted_list(api):
    ids = [r["details"]["id"] for r in api("POST", "/Products", json={"data": [
        {"Product_Name": "to delete 1"}, {"Product_Name": "to delete 2"}]}).json()["data"]]
    resp = api("DELETE", "/Products", params={"ids": ",".join(ids + ["5843104999999999999"])})
    assert resp.status_code == 207
    assert [r["status"] for r in resp.json()["data"]] == ["success", "success", "error"]
    deleted = api("GET", "/Products/deleted", params={"type": "all"}).json()["data"]
    assert {d["id"] for d in deleted} >= set(ids) and deleted[0]["display_name"].startswith("to delete")
    assert api("GET", f"/Products/{ids[0]}").status_code == 204


def test_search_criteria(api):
    found = api("GET", "/Accounts/search", params={"criteria": "((Account_Number:equals:C00001)or"
                                                               "(Account_Number:equals:C00002))"}).json()["data"]
    assert {r["Account_Number"] for r in found} <= {"C00001", "C00002"} and found
    assert api("GET", "/Accounts/search", params={"criteria": "(Account_Number:equals:NOPE)"}).status_code == 204
    starts = api("GET", "/Products/search", params={"criteria": "(Product_Code:starts_with:MTR)"}).json()["data"]
    assert all(r["Product_Code"].startswith("MTR") for r in starts)
    eleven = "(" + "or".join(f"(Product_Code:equals:X{i})" for i in range(11)) + ")"
    assert api("GET", "/Products/search", params={"criteria": eleven}).json()["code"] == "LIMIT_EXCEEDED"


def test_coql_subset_and_errors(api):
    q = ("select Product_Code, Unit_Price from Products where (Product_Code like 'MTR%' or Product_Code in "
         "('BRG-000002', 'SNS-000004')) and Unit_Price > 10 order by Unit_Price desc limit 0, 5")
    resp = api("POST", "/coql", json={"select_query": q})
    assert resp.status_code == 200
    body = resp.json()
    prices = [r["Unit_Price"] for r in body["data"]]
    assert prices == sorted(prices, reverse=True) and len(prices) <= 5
    assert set(body["info"]) == {"count", "more_records"}
    none = api("POST", "/coql", json={"select_query": "select id from Products where Product_Code = 'NOPE'"})
    assert none.status_code == 204
    syntax = api("POST", "/coql", json={"select_query": "select Product_Code form Products"})
    assert syntax.status_code == 400 and syntax.json()["code"] == "SYNTAX_ERROR"
    assert syntax.json()["details"]["near"] == "form" and syntax.json()["details"]["column"] == 21
    big = api("POST", "/coql", json={"select_query": "select id from Products limit 2001"})
    assert big.json()["code"] == "LIMIT_EXCEEDED"
    far = api("POST", "/coql", json={"select_query": "select id from Products limit 100001, 10"})
    assert far.json()["code"] == "LIMIT_EXCEEDED"
    unknown = api("POST", "/coql", json={"select_query": "select Nope from Products"})
    assert unknown.json()["code"] == "INVALID_QUERY"
    lookup = api("POST", "/coql", json={"select_query": "select Account_Name from Contacts limit 1"}).json()["data"]
    assert set(lookup[0]["Account_Name"]) == {"id", "name"}


def test_metadata_describes_what_is_enforced(api):
    modules = {m["api_name"] for m in api("GET", "/settings/modules").json()["modules"]}
    assert {"Accounts", "Contacts", "Products", "Deals", "Quotes", "Sales_Orders", "Invoices"} <= modules
    fields = {f["api_name"]: f for f in api("GET", "/settings/fields", params={"module": "Products"}).json()["fields"]}
    assert fields["Qty_in_Stock"]["data_type"] == "double" and fields["Available_Qty"]["custom_field"]
    assert fields["Product_Name"]["system_mandatory"] is True
    assert api("GET", "/users", params={"type": "CurrentUser"}).json()["users"][0]["email"]
    assert api("GET", "/org").json()["org"][0]["iso_code"] == "CNY"


# -------------------------------------------------------------------------------------- limits + faults
def test_concurrency_limit_gives_429(crm, api):
    crm.configure(concurrency_limit=3, latency_ms=400)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: api("GET", "/org"), range(8)))
    limited = [r for r in codes if r.status_code == 429]
    assert limited and any(r.status_code == 200 for r in codes)
    assert limited[0].json() == {"code": "TOO_MANY_REQUESTS", "details": {}, "status": "error",
                                 "message": limited[0].json()["message"]}


def test_daily_credits_give_429(crm, api):
    crm.configure(credits_per_day=3)
    codes = [api("GET", "/Products", params={"fields": "Product_Code"}).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_injected_faults(crm, api):
    crm.configure(burst_429=2)
    assert [api("GET", "/org").status_code for _ in range(3)] == [429, 429, 200]
    crm.configure(error_rate=1.0)
    resp = api("GET", "/org")
    assert resp.status_code == 500 and resp.json()["code"] == "INTERNAL_ERROR"
    crm.configure(error_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.exceptions.RequestException):
        api("POST", "/Products", json={"data": [{"Product_Name": "dropped but written"}]}).json()
    crm.configure(drop_rate=0.0)
    found = api("GET", "/Products/search", params={"criteria": "(Product_Name:equals:dropped but written)"})
    assert found.status_code == 200  # the write happened although the reply was lost


def test_state_survives_restart(tmp_path):
    from tests.conftest import CrmSandbox

    server = CrmSandbox(tmp_path / "crm")
    try:
        server.reset(customers=5, skus=10)
        Api(server)("POST", "/Products", json={"data": [{"Product_Name": "persisted", "Product_Code": "P-1"}]})
    finally:
        server.stop()
    again = CrmSandbox(tmp_path / "crm")
    try:
        found = Api(again)("GET", "/Products/P-1", headers={"X-EXTERNAL": "Products.Product_Code"})
        assert found.json()["data"][0]["Product_Name"] == "persisted"
        assert again.admin("GET", "stats")["records"]["Products"] == 12
    finally:
        again.stop()


def test_coql_time_filters_read_the_same_records_through_the_time_index(api):
    """A selective Created_Time / Modified_Time bound is read through the sandbox's time index (as Zoho answers it
    from its own); the records, their order and the paging are those of the id-ordered read."""
    from include.sandbox.crm import query

    stamp = api("POST", "/coql", json={"select_query": "select Created_Time from Products order by id desc limit 1"}
                ).json()["data"][0]["Created_Time"]
    q = f"select Product_Code from Products where id > 0 and Created_Time >= '{stamp}' order by id asc limit 3"
    compiled = query.compile_coql(q)
    assert "+id" in compiled["time_sql"] and "+id" not in compiled["sql"] and compiled["probe"]
    assert query.compile_coql("select id from Products where Product_Code = 'X'").get("probe") is None
    assert query.compile_coql(f"select id from Products where Created_Time < '{stamp}'").get("probe") is None
    by_time = api("POST", "/coql", json={"select_query": q}).json()
    every = api("POST", "/coql", json={"select_query": "select Created_Time from Products order by id asc limit 2000"}
                ).json()["data"]
    expected = [r["id"] for r in every if r["Created_Time"] >= stamp][:3]
    assert [r["id"] for r in by_time["data"]] == expected
    assert by_time["info"]["more_records"] == (len([r for r in every if r["Created_Time"] >= stamp]) > 3)
