"""Airflow hook for Zoho CRM: a connection id in, a ready ZohoCrmClient out (retries inside).

Connection `zoho_crm` (conn type http or zoho_crm):
- host: the API base URL, e.g. https://www.zohoapis.com.cn (China DC), https://www.zohoapis.com (US),
  https://sandbox.zohoapis.com (a Zoho sandbox org) or http://127.0.0.1:8765 (the project's sandbox).
  A host without scheme gets https://.
- login / password: OAuth client id / client secret (or extra client_id / client_secret).
- extra: {"accounts_url": "https://accounts.zoho.com.cn", "file_upload_url": "https://content.zohoapis.com.cn",
          "refresh_token": "1000.xxx", "org_id": "...", "timeout": 30, "max_retries": 6}
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from zoho_crm.client import ZohoCrmClient


class ZohoCrmHook(BaseHook):
    conn_name_attr = "zoho_crm_conn_id"
    default_conn_name = "zoho_crm"
    conn_type = "zoho_crm"
    hook_name = "Zoho CRM"

    def __init__(self, zoho_crm_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.zoho_crm_conn_id = zoho_crm_conn_id
        self._client: ZohoCrmClient | None = None

    @staticmethod
    def client_from_connection(conn) -> ZohoCrmClient:
        extra = conn.extra_dejson or {}
        host = (conn.host or "").rstrip("/")
        if host and "://" not in host:
            host = f"{conn.schema or 'https'}://{host}" + (f":{conn.port}" if conn.port else "")
        missing = [name for name, value in (("host", host), ("accounts_url", extra.get("accounts_url")),
                                            ("client_id", conn.login or extra.get("client_id")),
                                            ("client_secret", conn.password or extra.get("client_secret")),
                                            ("refresh_token", extra.get("refresh_token"))) if not value]
        if missing:
            raise ValueError(f"connection '{conn.conn_id}' lacks {', '.join(missing)} (see README, Connections)")
        return ZohoCrmClient(
            api_url=host, accounts_url=extra["accounts_url"], file_upload_url=extra.get("file_upload_url"),
            client_id=conn.login or extra["client_id"], client_secret=conn.password or extra["client_secret"],
            refresh_token=extra["refresh_token"], org_id=str(extra["org_id"]) if extra.get("org_id") else None,
            timeout=float(extra.get("timeout", 30)), max_retries=int(extra.get("max_retries", 6)),
            backoff_base=float(extra.get("backoff_base", 0.5)), backoff_max=float(extra.get("backoff_max", 30)),
            token_cache_dir=extra.get("token_cache_dir"))

    def get_conn(self) -> ZohoCrmClient:
        if self._client is None:
            self._client = self.client_from_connection(self.get_connection(self.zoho_crm_conn_id))
        return self._client

    def test_connection(self) -> tuple[bool, str]:
        try:
            org = self.get_conn().request("GET", "/crm/v8/org").json()["org"][0]
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, f"connected to {org.get('company_name')} (org {org.get('id')})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "API base URL", "login": "Client ID", "password": "Client secret"},
            "placeholders": {"host": "https://www.zohoapis.com.cn",
                             "extra": '{"accounts_url": "https://accounts.zoho.com.cn", "file_upload_url": '
                                      '"https://content.zohoapis.com.cn", "refresh_token": "1000.…", "org_id": "…"}'},
        }
