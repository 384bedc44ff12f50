"""The three systems a flow task talks to, opened from Airflow connections (ids configurable per flow).

This module is the one seam between include/ and Airflow: it reads connections (airflow.sdk.BaseHook) and turns
them into plain clients; nothing else in include/ imports Airflow. Tests build the same object from plain
connections (`Systems.from_connections`), so flow functions never care where their connections came from.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field


@dataclass
class Systems:
    bridge_conn_id: str = "bridge_db"
    erp_conn_id: str = "erp_read"
    erp_write_conn_id: str = "erp_write"
    crm_conn_id: str = "zoho_crm"
    _open: dict = field(default_factory=dict, repr=False)
    _given: bool = field(default=False, repr=False)  # built from open connections, not from Airflow's

    @classmethod
    def from_connections(cls, bridge, bridge_url: str, erp=None, crm=None, erp_write=None) -> Systems:
        return cls(_open={"bridge": bridge, "bridge_url": bridge_url, "erp": erp, "crm": crm, "erp_write": erp_write},
                   _given=True)

    def bridge(self):
        if "bridge" not in self._open:
            self._open["bridge"] = pg_connect(self.bridge_conn_id)
        return self._open["bridge"]

    def bridge_spare(self):
        """A second connection to the bridge DB, for work that overlaps the first's transaction (a bulk load's
        next page claims on it while the first page's claims are still open)."""
        if self._open.get("bridge_spare") is None:
            given = self._open.get("bridge") if self._given else None
            if given is not None:  # the same database as the connection it was given
                import psycopg2

                self._open["bridge_spare"] = psycopg2.connect(given.dsn, password=given.info.password)
            else:
                self._open["bridge_spare"] = pg_connect(self.bridge_conn_id)
        return self._open["bridge_spare"]

    def bridge_url(self) -> str:
        """SQLAlchemy URL of the bridge DB (for GX's SQL data source); never logged."""
        if "bridge_url" not in self._open:
            from sqlalchemy.engine import URL

            c = connection(self.bridge_conn_id)
            url = URL.create("postgresql+psycopg2", username=c.login, password=c.password, host=c.host,
                             port=c.port or 5432, database=c.schema)
            self._open["bridge_url"] = url.render_as_string(hide_password=False)
        return self._open["bridge_url"]

    def erp(self):
        if self._open.get("erp") is None:
            self._open["erp"] = pg_connect(self.erp_conn_id)
        return self._open["erp"]

    def erp_write(self):
        """The ERP's inbound interface tables (stage 2): INSERT and SELECT there, nothing else."""
        if self._open.get("erp_write") is None:
            self._open["erp_write"] = pg_connect(self.erp_write_conn_id)
        return self._open["erp_write"]

    def crm(self):
        if self._open.get("crm") is None:
            self._open["crm"] = crm_client(self.crm_conn_id)
        return self._open["crm"]

    def crm_credits(self) -> int:
        """Zoho API credits this process's CRM client has spent so far (0 before it opened)."""
        client = self._open.get("crm")
        return int(client.stats.get("credits", 0)) if client is not None else 0

    def __enter__(self) -> Systems:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for name in ("bridge", "bridge_spare", "erp", "erp_write"):
            conn = self._open.pop(name, None)
            if conn is not None:
                conn.close()
        from include.zoho.client import ZohoCreditsExhausted

        if isinstance(exc, ZohoCreditsExhausted):
            # a retry would spend what the org has left for nothing: fail the task now (the failure alert still
            # goes out), the next scheduled run goes on once the rolling 24 hours free credits again
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"the Zoho org's API credits are exhausted; not retrying ({exc})") from exc


def connection(conn_id: str):
    """An Airflow connection's fields (host, port, login, password, schema, extra_dejson)."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def crm_client(conn_id: str = "zoho_crm"):
    """A Zoho CRM client from an Airflow connection (what plugins/zoho_crm's hook hands out too)."""
    from include.zoho.client import client_from_connection

    return client_from_connection(connection(conn_id))


def pg_connect(conn_id: str, **options):
    """A psycopg2 connection from an Airflow connection's fields.

    The postgres provider's hook may hand out psycopg 3 connections; the flows use psycopg2's COPY
    streaming and execute_values, so the connection is opened here from the same fields."""
    import psycopg2

    conn = connection(conn_id)
    extra = conn.extra_dejson or {}
    return psycopg2.connect(host=conn.host, port=conn.port or 5432, user=conn.login, password=conn.password,
                            dbname=conn.schema, sslmode=extra.get("sslmode"), connect_timeout=int(extra.get(
                                "connect_timeout", 30)), application_name=f"crm-erp-bridge:{conn_id}", **options)


def variable(name: str, default: str | None = None) -> str | None:
    """An Airflow Variable's text (default when it is not set)."""
    from airflow.sdk import Variable

    return Variable.get(name, default=default)


CRM_POOL = "zoho_crm"


def set_crm_pool(slots: int, edition: str | None) -> None:
    """Size the Airflow pool the CRM load tasks share (from a command line or a deployment's setup; a task cannot
    change pools in Airflow 3, whose tasks have no metadata DB access)."""
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(CRM_POOL, slots, f"Zoho CRM calls in flight (edition {edition or 'unknown'})",
                               include_deferred=False)


@functools.cache
def _dag_bag():
    """The DAG folder parsed once per process (the demo runs many DAGs)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag


def dag_test_run(dag_id: str, conf: dict) -> str:
    """One DAG run through Airflow in this process (`dag.test()`: every task really runs); its final state."""
    return str(_dag_bag().get_dag(dag_id).test(run_conf=conf).state)
