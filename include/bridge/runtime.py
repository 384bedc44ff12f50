"""The three systems a flow task talks to, opened from Airflow connections (ids configurable per flow).

Tests build the same object from plain connections (`Systems.from_connections`), so flow functions
never care where their connections came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Systems:
    bridge_conn_id: str = "bridge_db"
    erp_conn_id: str = "erp_read"
    erp_write_conn_id: str = "erp_write"
    crm_conn_id: str = "zoho_crm"
    _open: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_connections(cls, bridge, bridge_url: str, erp=None, crm=None, erp_write=None) -> Systems:
        return cls(_open={"bridge": bridge, "bridge_url": bridge_url, "erp": erp, "crm": crm, "erp_write": erp_write})

    def bridge(self):
        if "bridge" not in self._open:
            from include.bridge import db

            self._open["bridge"] = db.connect(self.bridge_conn_id)
        return self._open["bridge"]

    def bridge_url(self) -> str:
        """SQLAlchemy URL of the bridge DB (for GX's SQL data source); never logged."""
        if "bridge_url" not in self._open:
            from airflow.sdk import BaseHook
            from sqlalchemy.engine import URL

            c = BaseHook.get_connection(self.bridge_conn_id)
            url = URL.create("postgresql+psycopg2", username=c.login, password=c.password, host=c.host,
                             port=c.port or 5432, database=c.schema)
            self._open["bridge_url"] = url.render_as_string(hide_password=False)
        return self._open["bridge_url"]

    def erp(self):
        if self._open.get("erp") is None:
            from include.bridge import db

            self._open["erp"] = db.connect(self.erp_conn_id)
        return self._open["erp"]

    def erp_write(self):
        """The ERP's inbound interface tables (stage 2): INSERT and SELECT there, nothing else."""
        if self._open.get("erp_write") is None:
            from include.bridge import db

            self._open["erp_write"] = db.connect(self.erp_write_conn_id)
        return self._open["erp_write"]

    def crm(self):
        if self._open.get("crm") is None:
            from zoho_crm.hook import ZohoCrmHook

            self._open["crm"] = ZohoCrmHook(self.crm_conn_id).get_conn()
        return self._open["crm"]

    def __enter__(self) -> Systems:
        return self

    def __exit__(self, *_) -> None:
        for name in ("bridge", "erp", "erp_write"):
            conn = self._open.pop(name, None)
            if conn is not None:
                conn.close()
