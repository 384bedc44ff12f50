"""The integration state DB (conn `bridge_db`): schema install (connections: include.bridge.runtime)."""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "bridge"


def install_schema(conn) -> None:
    """Create or complete schema `bridge` (every statement is idempotent)."""
    with conn.cursor() as cur:
        for path in sorted(SQL_DIR.glob("*.sql")):
            cur.execute(path.read_text(encoding="utf-8"))
    conn.commit()

