"""The integration state DB (conn `bridge_db`): its schema, versioned, and its roles.

The schema is include/sql/bridge/*.sql (every statement idempotent); its version is a hash of those files, kept
in bridge.schema_version. `ensure_schema` is what a run calls: one cheap read when the schema is current; otherwise
it installs under an advisory lock, so runs that start together never run the DDL at the same time (two runs
altering the same tables deadlocked) and the second finds the work done. A deployment installs it once, as the
owner, before the scheduler starts:

    python -m include.bridge.db migrate            # schema (as the owner of schema bridge)
    python -m include.bridge.db migrate --roles    # ... and the roles below (needs CREATEROLE)

Roles (least privilege): the owner (migrations) creates and alters; `bridge_app` (the flows: connection
`bridge_db`) reads and writes rows but changes no table; `bridge_receiver` (the CRM notification receiver) may
only INSERT notifications into bridge.crm_event; `bridge_console` (the operator console in the Airflow UI: connection
`bridge_console_db`) reads every table and may only resolve quarantine entries and record its own actions. Passwords
come from BRIDGE_APP_PASSWORD / BRIDGE_RECEIVER_PASSWORD / BRIDGE_CONSOLE_PASSWORD.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "bridge"
APP_ROLE = os.environ.get("BRIDGE_APP_ROLE", "bridge_app")
RECEIVER_ROLE = os.environ.get("BRIDGE_RECEIVER_ROLE", "bridge_receiver")
CONSOLE_ROLE = os.environ.get("BRIDGE_CONSOLE_ROLE", "bridge_console")
LOCK = "bridge.schema"


class SchemaNotCurrent(RuntimeError):
    """The bridge schema is older than the code and this connection may not migrate it."""


def schema_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def schema_version() -> str:
    """The version of the schema this code expects: a hash of its DDL files."""
    digest = hashlib.sha256()
    for path in schema_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def installed_version(conn) -> str | None:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('bridge.schema_version') IS NOT NULL")
        if not cur.fetchone()[0]:
            conn.rollback()
            return None
        cur.execute("SELECT version FROM bridge.schema_version WHERE id = 1")
        row = cur.fetchone()
    conn.rollback()
    return row[0] if row else None


def install_schema(conn) -> bool:
    """Install or complete schema `bridge` unless it is current; True when it ran the DDL. Under an advisory lock:
    concurrent installs take turns and the later ones find the version current."""
    wanted = schema_version()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK,))
        cur.execute("SELECT to_regclass('bridge.schema_version') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("SELECT version FROM bridge.schema_version WHERE id = 1")
            row = cur.fetchone()
            if row and row[0] == wanted:
                conn.commit()
                return False
        for path in schema_files():
            cur.execute(path.read_text(encoding="utf-8"))
        cur.execute("""CREATE TABLE IF NOT EXISTS bridge.schema_version (
                           id integer PRIMARY KEY CHECK (id = 1), version text NOT NULL,
                           installed_at timestamptz NOT NULL DEFAULT now())""")
        cur.execute("""INSERT INTO bridge.schema_version (id, version) VALUES (1, %s)
                       ON CONFLICT (id) DO UPDATE SET version = excluded.version, installed_at = now()""", (wanted,))
        grant_roles(cur)
    conn.commit()
    return True


def ensure_schema(conn) -> None:
    """What a run calls: nothing when the schema is current (one read); else install it, or — for a connection that
    may not (the app role) — refuse with what to run."""
    import psycopg2

    if installed_version(conn) == schema_version():
        return
    try:
        install_schema(conn)
    except psycopg2.errors.InsufficientPrivilege:
        conn.rollback()
        raise SchemaNotCurrent(f"the bridge schema is at version {installed_version(conn)}, this code needs "
                               f"{schema_version()}: run `python -m include.bridge.db migrate` as its owner") from None


def grant_roles(cur, app_role: str = APP_ROLE, receiver_role: str = RECEIVER_ROLE,
                console_role: str = CONSOLE_ROLE) -> None:
    """Grants for the roles that exist (the owner keeps everything else)."""
    from psycopg2 import sql

    cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY (%s)", ([app_role, receiver_role, console_role],))
    present = {r[0] for r in cur.fetchall()}
    if app_role in present:
        app = sql.Identifier(app_role)
        for statement in ("GRANT USAGE ON SCHEMA bridge TO {}",
                          "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA bridge TO {}",
                          "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA bridge TO {}"):
            cur.execute(sql.SQL(statement).format(app))
    if receiver_role in present:  # a stranger who breaks the receiver can add notifications, nothing else
        receiver = sql.Identifier(receiver_role)
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA bridge TO {}").format(receiver))
        cur.execute(sql.SQL("GRANT INSERT (channel_id, module, operation, record_ids) ON bridge.crm_event TO {}")
                    .format(receiver))
        cur.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA bridge TO {}").format(receiver))
    if console_role in present:  # reads everything; writes only a resolution and its own audit row
        console = sql.Identifier(console_role)
        for statement in ("GRANT USAGE ON SCHEMA bridge TO {}", "GRANT SELECT ON ALL TABLES IN SCHEMA bridge TO {}",
                          "GRANT UPDATE (status, resolved_at, resolved_by, resolution_comment) ON bridge.quarantine "
                          "TO {}", "GRANT INSERT ON bridge.console_action TO {}",
                          "GRANT USAGE ON SEQUENCE bridge.console_action_id_seq TO {}"):
            cur.execute(sql.SQL(statement).format(console))


def create_roles(conn, app_role: str = APP_ROLE, receiver_role: str = RECEIVER_ROLE,
                 passwords: dict[str, str] | None = None, console_role: str = CONSOLE_ROLE) -> list[str]:
    """The app, receiver and console roles (LOGIN; passwords from `passwords` or BRIDGE_APP_PASSWORD /
    BRIDGE_RECEIVER_PASSWORD / BRIDGE_CONSOLE_PASSWORD), CONNECT on the bridge DB, then their grants."""
    passwords = passwords or {app_role: os.environ.get("BRIDGE_APP_PASSWORD", ""),
                              receiver_role: os.environ.get("BRIDGE_RECEIVER_PASSWORD", ""),
                              console_role: os.environ.get("BRIDGE_CONSOLE_PASSWORD", "")}
    roles = [app_role, receiver_role, console_role]
    login_roles(conn, {role: passwords.get(role, "") for role in roles})
    with conn.cursor() as cur:
        grant_roles(cur, app_role, receiver_role, console_role)
    conn.commit()
    return roles


def login_roles(conn, passwords: dict[str, str]) -> None:
    """LOGIN roles (role -> password; an empty one keeps a role's password) with CONNECT on the bridge DB. Needs
    CREATEROLE. Roles are server-wide: created in database postgres under a lock there (an advisory lock only
    excludes sessions of one database)."""
    import psycopg2
    from psycopg2 import sql

    info = conn.info
    server = psycopg2.connect(host=info.host, port=info.port, user=info.user, password=info.password or None,
                              dbname="postgres")
    try:
        with server.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('bridge.roles'))")
            for role, password in passwords.items():
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                if not cur.fetchone():
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                if password:
                    cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                            sql.Literal(password)))
        server.commit()
    finally:
        server.close()
    with conn.cursor() as cur:
        for role in passwords:
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(info.dbname),
                                                                            sql.Identifier(role)))
    conn.commit()


def create_console_role(conn, role: str = CONSOLE_ROLE, password: str | None = None) -> str:
    """Only the console's role (the local setup: `make ui`, the demo), password from BRIDGE_CONSOLE_PASSWORD."""
    login_roles(conn, {role: password if password is not None else os.environ.get("BRIDGE_CONSOLE_PASSWORD", "")})
    with conn.cursor() as cur:
        grant_roles(cur, console_role=role)
    conn.commit()
    return role


def main(argv: list[str] | None = None) -> None:
    import argparse

    import psycopg2

    parser = argparse.ArgumentParser(prog="python -m include.bridge.db", description="The bridge DB's schema")
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="install or complete schema bridge (libpq settings: PG* / BRIDGE_DB)")
    migrate.add_argument("--roles", action="store_true", help="also create the app, receiver and console roles")
    migrate.add_argument("--console-role", action="store_true",
                         help="also create the console's role only (the local setup)")
    args = parser.parse_args(argv)
    dsn = os.environ.get("BRIDGE_DB_DSN", f"dbname={os.environ.get('BRIDGE_DB', 'bridge')}")
    conn = psycopg2.connect(dsn)
    try:
        ran = install_schema(conn)
        print(f"bridge schema {schema_version()}: {'installed' if ran else 'already current'}")
        if args.roles:
            print("roles:", ", ".join(create_roles(conn)))
        elif args.console_role:
            print("role:", create_console_role(conn))
    finally:
        conn.close()


if __name__ == "__main__":
    main()
