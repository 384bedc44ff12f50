"""The integration state DB (conn `bridge_db`): schema install and connections."""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "bridge"


def install_schema(conn) -> None:
    """Create or complete schema `bridge` (every statement is idempotent)."""
    with conn.cursor() as cur:
        for path in sorted(SQL_DIR.glob("*.sql")):
            cur.execute(path.read_text(encoding="utf-8"))
    conn.commit()


def connect(conn_id: str = "bridge_db", **options):
    """A psycopg2 connection from an Airflow connection's fields.

    The postgres provider's hook may hand out psycopg 3 connections; the flows use psycopg2's COPY
    streaming and execute_values, so the connection is opened here from the same fields."""
    import psycopg2
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    return psycopg2.connect(host=conn.host, port=conn.port or 5432, user=conn.login, password=conn.password,
                            dbname=conn.schema, sslmode=extra.get("sslmode"), connect_timeout=int(extra.get(
                                "connect_timeout", 30)), application_name=f"crm-erp-bridge:{conn_id}", **options)
