"""Airflow hook for Zoho CRM: a connection id in, a ready ZohoCrmClient out (retries inside the client).

Connection `zoho_crm` (conn type http or zoho_crm); its fields: include.zoho.client.client_from_connection.
extra: {"accounts_url": "https://accounts.zoho.com.cn", "file_upload_url": "https://content.zohoapis.com.cn",
        "refresh_token": "1000.xxx" "timeout": 30, "max_retries": 6}
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from include.zoho.client import ZohoCrmClient, client_from_connection


class ZohoCrmHook(BaseHook):
    conn_name_attr = "zoho_crm_conn_id"
    default_conn_name = "zoho_crm"
    conn_type = "zoho_crm"
    hook_name = "Zoho CRM"

    def __init__(self, zoho_crm_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.zoho_crm_conn_id = zoho_crm_conn_id
        self._client: ZohoCrmClient | None = None

    def get_conn(self) -> ZohoCrmClient:
        if self._client is None:
            self._client = client_from_connection(self.get_connection(self.zoho_crm_conn_id))
        return self._client

    def test_connection(self) -> tuple[bool, str]:
        try:
            return self.get_conn().check_connection()
        except Exception as exc:  # the UI shows the message (an incomplete connection)
            return False, str(exc)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "API base URL", "login": "Client ID", "password": "Client secret"},
            "placeholders": {"host": "https://www.zohoapis.com.cn",
                             "extra": '{"accounts_url": "https://accounts.zoho.com.cn", "file_upload_url": '
                                      '"https://content.zohoapis.com.cn", "refresh_token": "1000.…"}'},
        }
