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
