"""Conformance: Zoho's official Python SDK (zohocrmsdk8-0) works against the CRM sandbox unchanged.

The SDK validates responses against its own models and fetches field metadata before writes, so a
protocol mismatch in the sandbox (shapes, status codes, metadata) fails here.
"""

import pytest

from tests.conftest import CRM_CREDENTIALS

sdk = pytest.importorskip("zohocrmsdk.src.com.zoho.crm.api.initializer")


@pytest.fixture
def zoho_sdk(crm, tmp_path):
    from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
    from zohocrmsdk.src.com.zoho.api.authenticator.store import FileStore
    from zohocrmsdk.src.com.zoho.api.logger import Logger
    from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
    from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
    from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig

    # the SDK's accounts_url is the token endpoint itself
    environment = DataCenter.Environment(crm.url, f"{crm.url}/oauth/v2/token", crm.url)
    token = OAuthToken(client_id=CRM_CREDENTIALS["ZOHO_CLIENT_ID"], client_secret=CRM_CREDENTIALS["ZOHO_CLIENT_SECRET"],
                       refresh_token=CRM_CREDENTIALS["ZOHO_REFRESH_TOKEN"])
    (tmp_path / "tokens.txt").touch()
    Initializer.initialize(environment=environment, token=token, store=FileStore(str(tmp_path / "tokens.txt")),
                           sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=False),
                           resource_path=str(tmp_path), logger=Logger.get_instance(
                               level=Logger.Levels.INFO, file_path=str(tmp_path / "sdk.log")))
    return crm


def test_sdk_get_records(zoho_sdk):
    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
    from zohocrmsdk.src.com.zoho.crm.api.record import GetRecordsParam, RecordOperations, ResponseWrapper

    params = ParameterMap()
    params.add(GetRecordsParam.fields, "Product_Code,Product_Name,Unit_Price")
    params.add(GetRecordsParam.per_page, 10)
    response = RecordOperations("Products").get_records(params, HeaderMap())
    assert response.get_status_code() == 200
    wrapper = response.get_object()
    assert isinstance(wrapper, ResponseWrapper), vars(wrapper)
    records = wrapper.get_data()
    assert len(records) == 10 and records[0].get_id()
    assert wrapper.get_info().get_more_records() is True
    assert any(r.get_key_value("Product_Code") for r in records)


def test_sdk_insert_and_upsert(zoho_sdk):
    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap
    from zohocrmsdk.src.com.zoho.crm.api.record import (
        ActionWrapper,
        BodyWrapper,
        Record,
        RecordOperations,
        SuccessResponse,
    )

    ops = RecordOperations("Products")
    record = Record()
    record.add_key_value("Product_Name", "SDK 写入测试")
    record.add_key_value("Product_Code", "SDK-0001")
    record.add_key_value("Qty_in_Stock", 12.0)
    body = BodyWrapper()
    body.set_data([record])
    body.set_trigger([])
    created = ops.create_records(body, HeaderMap())
    assert created.get_status_code() == 201
    action = created.get_object()
    assert isinstance(action, ActionWrapper), vars(action)
    result = action.get_data()[0]
    assert isinstance(result, SuccessResponse) and result.get_code().get_value() == "SUCCESS"
    new_id = result.get_details()["id"]

    change = Record()
    change.add_key_value("Product_Code", "SDK-0001")
    change.add_key_value("Qty_in_Stock", 30.0)
    body = BodyWrapper()
    body.set_data([change])
    body.set_duplicate_check_fields(["Product_Code"])
    upserted = ops.upsert_records(body, HeaderMap())
    assert upserted.get_status_code() == 200
    item = upserted.get_object().get_data()[0]
    assert item.get_details()["id"] == new_id
    crm_record = zoho_sdk.client().get_record("Products", new_id)
    assert crm_record["Qty_in_Stock"] == 30.0 and crm_record["Product_Name"] == "SDK 写入测试"


def test_sdk_coql(zoho_sdk):
    from zohocrmsdk.src.com.zoho.crm.api.coql import BodyWrapper, CoqlOperations, ResponseWrapper

    body = BodyWrapper()
    body.set_select_query("select Product_Code, Unit_Price from Products where Product_Code = 'MTR-000001' limit 5")
    response = CoqlOperations().get_records(body)
    assert response.get_status_code() == 200
    wrapper = response.get_object()
    assert isinstance(wrapper, ResponseWrapper), vars(wrapper)
    rows = wrapper.get_data()
    assert [r.get_key_value("Product_Code") for r in rows] == ["MTR-000001"]
    assert wrapper.get_info().get_more_records() is False


def _zip_csv(path, name: str, text: str) -> str:
    import zipfile

    target = path / f"{name}.zip"
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr(f"{name}.csv", text)
    return str(target)


def _wait_sdk(get, ready, what: str):
    import time

    for _ in range(200):
        answer = get()
        if ready(answer):
            return answer
        time.sleep(0.05)
    raise AssertionError(f"{what} did not finish")


def test_sdk_bulk_write_upload_job_details_and_result(zoho_sdk, tmp_path):
    """The SDK's bulk-write samples (upload_file, create_bulk_write_job, get_bulk_write_job_details,
    download_bulk_write_result), call for call: the SDK parses each answer into its own models, so a wrapped job
    details answer (data[]) or a missing field fails here."""
    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap
    from zohocrmsdk.src.com.zoho.crm.api.bulk_write import (
        BulkWriteOperations,
        BulkWriteResponse,
        CallBack,
        FieldMapping,
        FileBodyWrapper,
        RequestWrapper,
        Resource,
        SuccessResponse,
        UploadFileHeader,
    )
    from zohocrmsdk.src.com.zoho.crm.api.modules import MinifiedModule
    from zohocrmsdk.src.com.zoho.crm.api.util import Choice, StreamWrapper

    zgid = zoho_sdk.client().zgid()
    ops = BulkWriteOperations()
    # upload_file
    body = FileBodyWrapper()
    body.set_file(StreamWrapper(file_path=_zip_csv(tmp_path, "Products", "Product_Code,Product_Name,Qty_in_Stock\n"
                                                   "SDKBW-1,SDK bulk one,5\nSDKBW-2,SDK bulk two,7\n")))
    headers = HeaderMap()
    headers.add(UploadFileHeader.feature, "bulk-write")
    headers.add(UploadFileHeader.x_crm_org, zgid)
    uploaded = ops.upload_file(body, headers)
    assert uploaded.get_status_code() == 200, vars(uploaded.get_object())
    answer = uploaded.get_object()
    assert isinstance(answer, SuccessResponse), vars(answer)
    file_id = answer.get_details()["file_id"]
    # create_bulk_write_job
    request = RequestWrapper()
    call_back = CallBack()
    call_back.set_url("https://www.example.com/callback")
    call_back.set_method(Choice("post"))
    request.set_callback(call_back)
    request.set_character_encoding("UTF-8")
    request.set_operation(Choice("upsert"))
    request.set_ignore_empty(True)
    resource = Resource()
    resource.set_type(Choice("data"))
    module = MinifiedModule()
    module.set_api_name("Products")
    resource.set_module(module)
    resource.set_file_id(str(file_id))
    resource.set_find_by("Product_Code")
    mappings = []
    for index, api_name in enumerate(["Product_Code", "Product_Name", "Qty_in_Stock"]):
        mapping = FieldMapping()
        mapping.set_api_name(api_name)
        mapping.set_index(index)
        mappings.append(mapping)
    resource.set_field_mappings(mappings)
    request.set_resource([resource])
    created = ops.create_bulk_write_job(request)
    assert created.get_status_code() == 201, vars(created.get_object())
    job = created.get_object()
    assert isinstance(job, SuccessResponse), vars(job)
    job_id = job.get_details()["id"]
    # get_bulk_write_job_details, until the job is done
    details = _wait_sdk(lambda: ops.get_bulk_write_job_details(job_id).get_object(),
                        lambda d: isinstance(d, BulkWriteResponse) and d.get_status() == "COMPLETED", "bulk write")
    assert str(details.get_id()) == str(job_id) and details.get_operation() == "upsert"
    resource = details.get_resource()[0]
    assert resource.get_status().get_value() == "COMPLETED" and resource.get_type().get_value() == "data"
    assert resource.get_module().get_api_name() == "Products" and resource.get_module().get_id()
    assert (resource.get_file().get_added_count(), resource.get_file().get_total_count()) == (2, 2)
    assert details.get_created_by().get_name() and details.get_callback().get_url()
    download_url = details.get_result().get_download_url()
    # download_bulk_write_result
    downloaded = ops.download_bulk_write_result(download_url)
    assert downloaded.get_status_code() == 200
    stream = downloaded.get_object().get_file()
    target = tmp_path / stream.get_name()
    with open(target, "wb") as f:
        for chunk in stream.get_stream():
            f.write(chunk)
    import zipfile

    with zipfile.ZipFile(target) as zf:
        text = zf.read(zf.namelist()[0]).decode()
    assert text.count("ADDED") == 2 and "SDKBW-2" in text
    assert zoho_sdk.client().get_record("Products", "SDKBW-2", external_field="Product_Code")["Qty_in_Stock"] == 7


def test_sdk_bulk_read_job_details_and_result(zoho_sdk, tmp_path):
    """The SDK's bulk-read samples (create_bulk_read_job with a Created_Time between criteria, as in the sample,
    get_bulk_read_job_details, download_result)."""
    import datetime as dt
    import zipfile

    from zohocrmsdk.src.com.zoho.crm.api.bulk_read import (
        ActionWrapper,
        BodyWrapper,
        BulkReadOperations,
        CallBack,
        Criteria,
        Query,
        ResponseWrapper,
        SuccessResponse,
    )
    from zohocrmsdk.src.com.zoho.crm.api.fields import MinifiedField
    from zohocrmsdk.src.com.zoho.crm.api.modules import MinifiedModule
    from zohocrmsdk.src.com.zoho.crm.api.util import Choice

    ops = BulkReadOperations()
    request = BodyWrapper()
    call_back = CallBack()
    call_back.set_url("https://www.example.com/callback")
    call_back.set_method(Choice("post"))
    request.set_callback(call_back)
    query = Query()
    module = MinifiedModule()
    module.set_api_name("Products")
    query.set_module(module)
    query.set_fields(["Product_Code", "Qty_in_Stock"])
    query.set_page(1)
    criteria = Criteria()
    field = MinifiedField()
    field.set_api_name("Created_Time")
    criteria.set_field(field)
    criteria.set_comparator(Choice("between"))
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).replace(microsecond=0)
    criteria.set_value([(now - dt.timedelta(days=3650)).isoformat(), (now + dt.timedelta(days=1)).isoformat()])
    query.set_criteria(criteria)
    request.set_query(query)
    created = ops.create_bulk_read_job(request)
    assert created.get_status_code() == 201
    wrapper = created.get_object()
    assert isinstance(wrapper, ActionWrapper), vars(wrapper)
    action = wrapper.get_data()[0]
    assert isinstance(action, SuccessResponse), vars(action)
    job_id = int(action.get_details()["id"])  # the sample passes the id as a number
    answer = _wait_sdk(lambda: ops.get_bulk_read_job_details(job_id).get_object(),
                       lambda w: isinstance(w, ResponseWrapper) and w.get_data()[0].get_state().get_value()
                       == "COMPLETED", "bulk read")
    job = answer.get_data()[0]
    assert job.get_query().get_module().get_api_name() == "Products" and job.get_created_by().get_id()
    count = job.get_result().get_count()
    assert count >= 100
    stream = ops.download_result(job_id).get_object().get_file()
    target = tmp_path / stream.get_name()
    with open(target, "wb") as f:
        for chunk in stream.get_stream():
            f.write(chunk)
    with zipfile.ZipFile(target) as zf:
        lines = zf.read(zf.namelist()[0]).decode().splitlines()
    assert lines[0] == "Product_Code,Qty_in_Stock" and len(lines) == count + 1


def test_sdk_record_with_a_subform_and_a_coql_date_time_query(zoho_sdk):
    """A Sales Order with its Ordered_Items rows written and read back through the SDK, and a COQL query whose
    date-time literal is in Zoho's format (seconds and offset)."""
    import datetime as dt

    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
    from zohocrmsdk.src.com.zoho.crm.api.coql import BodyWrapper as CoqlBody
    from zohocrmsdk.src.com.zoho.crm.api.coql import CoqlOperations
    from zohocrmsdk.src.com.zoho.crm.api.record import BodyWrapper, Record, RecordOperations, ResponseWrapper

    client = zoho_sdk.client()
    account = client.coql("select id from Accounts limit 1")[0][0]["id"]
    product = client.get_record("Products", "MTR-000001", external_field="Product_Code")["id"]
    order = Record()
    order.add_key_value("Subject", "SDK subform order")
    holder = Record()
    holder.set_id(int(account))
    order.add_key_value("Account_Name", holder)
    line = Record()
    item = Record()
    item.set_id(int(product))
    line.add_key_value("Product_Name", item)
    line.add_key_value("Quantity", 3.0)
    line.add_key_value("List_Price", 120.0)
    order.add_key_value("Ordered_Items", [line])
    body = BodyWrapper()
    body.set_data([order])
    body.set_trigger([])
    ops = RecordOperations("Sales_Orders")
    created = ops.create_records(body, HeaderMap())
    assert created.get_status_code() == 201, vars(created.get_object().get_data()[0])
    order_id = created.get_object().get_data()[0].get_details()["id"]
    got = ops.get_record(int(order_id), ParameterMap(), HeaderMap())
    assert got.get_status_code() == 200 and isinstance(got.get_object(), ResponseWrapper)
    rows = got.get_object().get_data()[0].get_key_value("Ordered_Items")
    assert len(rows) == 1 and rows[0].get_key_value("Quantity") == 3.0
    assert str(rows[0].get_key_value("Product_Name")["id"]) == product  # the SDK keeps a lookup in a subform as a dict

    since = (dt.datetime.now(dt.timezone(dt.timedelta(hours=8))) - dt.timedelta(hours=1)).replace(microsecond=0)
    query = CoqlBody()
    query.set_select_query(f"select Subject from Sales_Orders where Modified_Time >= '{since.isoformat()}' "
                           "and Subject = 'SDK subform order' limit 5")
    answer = CoqlOperations().get_records(query)
    assert answer.get_status_code() == 200, vars(answer.get_object())
    assert [r.get_key_value("Subject") for r in answer.get_object().get_data()] == ["SDK subform order"]
