"""Airflow hook for the CSV drop folder: a connection id in, a ready folder (local or SFTP) out; reconnects and
retries live inside the SFTP folder.

Connection `erp_files`: conn type `fs` with extra {"path": "/srv/erp-exchange", "encoding": "gb18030"}, or conn
type `sftp` with host, port, login, password (or extra private_key) and extra {"path": "/exchange",
"host_key": "ssh-ed25519 AAAA...", "encoding": "gbk"}. Every extra key: include/adapters/csv_folder/folders.py.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

from include.adapters.csv_folder.folders import FROM_ERP, Folder, folder_from_connection


class ErpFilesHook(BaseHook):
    conn_name_attr = "erp_files_conn_id"
    default_conn_name = "erp_files"
    conn_type = "sftp"
    hook_name = "ERP drop folder"

    def __init__(self, erp_files_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.erp_files_conn_id = erp_files_conn_id
        self._folder: Folder | None = None
        self.settings: dict = {}

    def get_conn(self) -> Folder:
        if self._folder is None:
            self._folder, self.settings = folder_from_connection(self.get_connection(self.erp_files_conn_id))
        return self._folder

    def test_connection(self) -> tuple[bool, str]:
        try:
            waiting = len(self.get_conn().list(FROM_ERP))
            return True, f"{self._folder!r}: reachable, {waiting} file(s) in {FROM_ERP}/"
        except Exception as exc:  # the UI shows the message (host key, path, credentials)
            return False, str(exc)


def skip_unless_configured(conn_id: str = ErpFilesHook.default_conn_name) -> None:
    """Skip the task, saying why, when the ERP has no drop folder (it exchanges tables)."""
    from airflow.sdk.exceptions import AirflowNotFoundException, AirflowSkipException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise AirflowSkipException(f"no {conn_id} connection: this ERP exchanges tables, not files") from None
