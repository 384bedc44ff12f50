"""ERP sandbox database: create it, install the schema, and set up the two integration roles.

Connection parameters come from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSWORD) and the
database name from ERP_DB; the role passwords from ERP_READ_PASSWORD / ERP_WRITE_PASSWORD
(scripts/env.sh generates them per checkout). Nothing secret lives in code.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg2
from psycopg2 import sql

SQL_DIR = Path(__file__).with_name("sql")
# The integration roles. Roles are server-wide: each checkout names its own (scripts/env.sh adds a suffix kept in
# .local/secrets.env), so building one sandbox never changes the password of a role another checkout logs in with.
READ_ROLE = os.environ.get("ERP_READ_ROLE", "erp_reader")    # erp_read connection: SELECT on erp_api views only
WRITE_ROLE = os.environ.get("ERP_WRITE_ROLE", "erp_writer")  # erp_write: INSERT (own columns)/SELECT on erp_inbound
# columns of the inbound tables that only the ERP writes: its answer to a document, and bookkeeping
ERP_ANSWER_COLUMNS = ("id", "status", "error_message", "erp_doc_no", "erp_status", "hold_reason", "shortage_qty",
                      "result_message", "retry_count", "next_retry_at", "created_at", "processed_at")


def erp_db_name() -> str:
    return os.environ.get("ERP_DB", "erp_sandbox")


def connect(dbname: str | None = None, **kwargs):
    """Connect as the ERP owner (the sandbox's 'ERP application' account)."""
    return psycopg2.connect(dbname=dbname or erp_db_name(), application_name="erp-sandbox", **kwargs)


def create_database(dbname: str, drop: bool = False) -> None:
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if drop:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,))
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0")
                            .format(sql.Identifier(dbname)))
            # OLTP-style short statements: JIT compilation would cost more than it saves.
            cur.execute(sql.SQL("ALTER DATABASE {} SET jit = off").format(sql.Identifier(dbname)))
    finally:
        conn.close()


def install_schema(conn) -> None:
    """Create schemas erp, erp_api, erp_inbound from the numbered SQL files (on an empty database)."""
    with conn.cursor() as cur:
        for path in sorted(SQL_DIR.glob("*.sql")):
            cur.execute(path.read_text(encoding="utf-8"))
    conn.commit()


def setup_roles(conn, dbname: str, read_password: str | None, write_password: str | None,
                private_schema: str = "erp") -> None:
    """Least privilege: the reader sees erp_api only (and read-only), the writer erp_inbound only. `private_schema`
    holds the ERP's own tables (the sandbox's erp; a real ERP's, e.g. Tryton's public)."""
    create_roles(read_password, write_password)
    db = sql.Identifier(dbname)
    reader, writer = sql.Identifier(READ_ROLE), sql.Identifier(WRITE_ROLE)
    statements = [
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC",            # no CONNECT / TEMP for anyone else
        "GRANT CONNECT ON DATABASE {db} TO {reader}, {writer}",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        "REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {private} FROM PUBLIC",
        "GRANT USAGE ON SCHEMA erp_api TO {reader}",
        "GRANT SELECT ON ALL TABLES IN SCHEMA erp_api TO {reader}",
        "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA erp_api TO {reader}",
        "GRANT USAGE ON SCHEMA erp_inbound TO {writer}",
        "REVOKE INSERT ON ALL TABLES IN SCHEMA erp_inbound FROM {writer}",  # column-level below
        "GRANT SELECT ON ALL TABLES IN SCHEMA erp_inbound TO {writer}",
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA erp_inbound TO {writer}",
    ]
    with conn.cursor() as cur:
        for stmt in statements:
            cur.execute(sql.SQL(stmt).format(db=db, reader=reader, writer=writer,
                                             private=sql.Identifier(private_schema)))
        # the writer inserts what it sends, never the ERP's answer (status, document number, messages, retries)
        cur.execute("""SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position)
                       FROM information_schema.columns WHERE table_schema = 'erp_inbound'
                         AND NOT (column_name = ANY (%s)) GROUP BY table_name""", (list(ERP_ANSWER_COLUMNS),))
        for table, columns in cur.fetchall():
            cur.execute(sql.SQL("GRANT INSERT ({}) ON erp_inbound.{} TO {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table), writer))
    conn.commit()


def create_roles(read_password: str | None, write_password: str | None) -> None:
    """The two integration roles (cluster-wide), their passwords and the reader's read-only default. Two sandboxes
    set up at once (parallel tests) take turns: concurrent CREATE / ALTER ROLE collide ("tuple concurrently
    updated"), and an advisory lock only excludes sessions of one database, so this runs in database postgres."""
    conn = psycopg2.connect(dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('erp_sandbox.create_roles'))")
            for role, password in ((READ_ROLE, read_password), (WRITE_ROLE, write_password)):
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if not cur.fetchone():
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                if password:
                    cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                            sql.Literal(password)))
            cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on")
                        .format(sql.Identifier(READ_ROLE)))
        conn.commit()
    finally:
        conn.close()


def clone(template: str, dbname: str) -> None:
    """A new database `dbname` as a copy of the sandbox database `template` (which nobody may be connected to):
    a file copy, far faster than building and seeding. Database-level settings and grants are not part of a
    copy, so they are applied again."""
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(dbname),
                                                                         sql.Identifier(template)))
            cur.execute(sql.SQL("ALTER DATABASE {} SET jit = off").format(sql.Identifier(dbname)))
    finally:
        conn.close()
    conn = connect(dbname)
    try:
        setup_roles(conn, dbname, os.environ.get("ERP_READ_PASSWORD"), os.environ.get("ERP_WRITE_PASSWORD"))
    finally:
        conn.close()


def build(dbname: str | None = None, drop: bool = True) -> None:
    """(Re)create the sandbox database with schema and roles, empty of business data."""
    dbname = dbname or erp_db_name()
    create_database(dbname, drop=drop)
    conn = connect(dbname)
    try:
        install_schema(conn)
        setup_roles(conn, dbname, os.environ.get("ERP_READ_PASSWORD"), os.environ.get("ERP_WRITE_PASSWORD"))
    finally:
        conn.close()
