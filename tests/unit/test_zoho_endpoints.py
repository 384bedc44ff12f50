"""Fail closed: the Zoho client sends its client secret, refresh token and access tokens to Zoho's own hosts over
TLS, or to a sandbox on this machine, and to nothing else (a typo in the connection's host, or a URL handed in
from elsewhere, would otherwise get the credentials)."""

import pytest

from include.zoho.client import ZohoAuthError, ZohoCrmClient, endpoint_problem


@pytest.mark.parametrize("url", ["https://www.zohoapis.com", "https://www.zohoapis.com.cn", "https://accounts.zoho.eu",
                                 "https://content.zohoapis.in", "https://sandbox.zohoapis.com.au",
                                 "http://127.0.0.1:8765", "http://localhost:9000", "https://crmsandbox.zoho.com"])
def test_zoho_hosts_over_tls_and_the_local_sandbox_may_get_the_credentials(url):
    assert endpoint_problem(url) is None


@pytest.mark.parametrize("url, why", [
    ("http://www.zohoapis.com", "TLS only"), ("https://zohoapis.com.attacker.example", "not a Zoho host"),
    ("https://www.zohoapis-login.com", "not a Zoho host"), ("https://evil.example/zohoapis.com", "not a Zoho host"),
    ("http://10.0.0.5:8765", "TLS only"), ("ftp://127.0.0.1", "not http"),
])
def test_anything_else_is_refused_with_the_reason(url, why):
    assert why in endpoint_problem(url)


def test_a_proxy_is_allowed_only_when_the_connection_names_it_and_only_over_tls():
    assert endpoint_problem("https://crm-proxy.corp.example", ("crm-proxy.corp.example",)) is None
    assert "TLS only" in endpoint_problem("http://crm-proxy.corp.example", ("crm-proxy.corp.example",))


def test_plain_http_only_to_a_host_named_as_the_crm_sandbox():
    """docker-compose's zoho_crm connection reaches the sandbox container over http: it must name it."""
    import json

    import yaml

    from tests.test_project_files import ROOT

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    extra = json.loads(compose["services"]["airflow-worker"]["environment"]["AIRFLOW_CONN_ZOHO_CRM"])["extra"]
    assert endpoint_problem("http://crm-sandbox:8765", sandbox_hosts=tuple(extra["sandbox_hosts"])) is None
    assert "TLS only" in endpoint_problem("http://crm-sandbox:8765")


def test_the_client_refuses_an_untrusted_endpoint_before_sending_anything():
    with pytest.raises(ZohoAuthError, match="not a Zoho host"):
        ZohoCrmClient(api_url="https://www.zohoapis.com", accounts_url="https://accounts.zoho.com.evil.example",
                      client_id="id", client_secret="secret", refresh_token="refresh")
    client = ZohoCrmClient(api_url="http://127.0.0.1:1", accounts_url="http://127.0.0.1:1", client_id="id",
                           client_secret="secret", refresh_token="refresh")
    with pytest.raises(ZohoAuthError, match="not a Zoho host"):  # a URL from elsewhere never gets the token
        client.request("GET", "/download", base="https://files.example")


def test_a_429_for_spent_credits_fails_the_task_without_retry_and_a_burst_does_not():
    from airflow.sdk.exceptions import AirflowFailException

    from include.bridge.runtime import Systems
    from include.zoho.client import ZohoCreditsExhausted, credits_exhausted

    assert credits_exhausted({"code": "TOO_MANY_REQUESTS", "message": "API limit of 24 hours exceeded"})
    assert credits_exhausted({"message": "You have exhausted your credits"})
    assert not credits_exhausted({"code": "TOO_MANY_REQUESTS", "message": "too many requests continuously"})
    with pytest.raises(AirflowFailException, match="credits are exhausted"), Systems.from_connections(None, ""):
        raise ZohoCreditsExhausted(429, "TOO_MANY_REQUESTS", "API credits exhausted", path="/crm/v8/coql")
    # anything else passes through unchanged (Airflow retries it)
    with pytest.raises(ZohoAuthError), Systems.from_connections(None, ""):
        raise ZohoAuthError(401, "INVALID_TOKEN", "invalid oauth token")


def test_batches_or_bulk_is_chosen_by_api_credits():
    """Zoho charges a write 1 credit per 10 records and a bulk-write job 500 (+ its polls): 1,000 changed records
    cost 100 credits by batches, and bulk pays off only past about 5,000 (not at a fixed 10,000-row threshold)."""
    from include.zoho import limits

    assert limits.batch_write(1_000) == 100
    assert limits.batch_write(105) == 11          # a batch of 100 (10) and one of 5 (1)
    assert limits.batch_write(1_000, first_writes=1_000) == 120   # + before-images by COQL, 50 ids a query
    assert limits.bulk_write(1_000) == 512
    assert not limits.bulk_is_cheaper(5_000) and limits.bulk_is_cheaper(6_000)
    assert limits.bulk_write(60_000) == 3 * 512   # 25,000 rows per job


def test_the_doctor_names_a_written_field_that_is_read_only_in_the_org():
    """Zoho ignores a write to a read-only field (Invoices.Grand_Total is computed from Invoiced_Items): a mirror
    that wrote there would read back another value and write the same records every run."""
    from include.bridge.doctor import FieldNeed, field_problems, mirror_needs
    from include.flows import FLOWS

    computed = {"data_type": "currency", "read_only": True, "decimal_place": 2}
    assert field_problems(FieldNeed("Invoices", "Grand_Total", "currency", written=True), computed)[0][0] \
        .startswith("is read-only")
    assert field_problems(FieldNeed("Sales_Orders", "Grand_Total", "currency"), computed) == []  # only read
    needs = {n.api_name: n for n in mirror_needs(FLOWS["erp_invoice_history_to_crm"].spec)}
    assert "Grand_Total" not in needs and needs["ERP_Invoice_Amount"].written


def test_the_doctor_names_a_required_field_a_creating_flow_does_not_write():
    """Zoho creates a sales order only with its line items: a mirror that creates orders without Ordered_Items is
    red in the preflight, before its first run is refused record by record."""
    from include.bridge.doctor import FieldNeed, check, mirror_needs
    from include.flows import FLOWS

    class Org:
        def fields(self, module):
            return {"Subject": {"data_type": "text", "system_mandatory": True, "length": 255},
                    "Ordered_Items": {"data_type": "subform", "system_mandatory": True}}

    needs = [n for n in mirror_needs(FLOWS["erp_order_history_to_crm"].spec) if n.module == "Sales_Orders"]
    assert FieldNeed("Sales_Orders", "", creates=True) in needs
    assert not [p for p in check(Org(), {"orders": needs}) if p.api_name in ("Subject", "Ordered_Items")]
    without_lines = [n for n in needs if n.api_name != "Ordered_Items"]
    problems = check(Org(), {"orders": without_lines})
    assert [(p.api_name, p.problem) for p in problems if p.api_name == "Ordered_Items"] == [
        ("Ordered_Items", "is required to create a record, the flow does not write it")]
