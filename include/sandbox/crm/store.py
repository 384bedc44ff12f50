"""Persistent state of the CRM sandbox: one SQLite file (WAL) under the data folder.

Records are JSON documents keyed by a Zoho-style 19-digit id, with created/modified timestamps as
columns for keyset pagination and If-Modified-Since, and an expression index per looked-up field
(duplicate-check, unique and external-key fields) so an upsert of 100 records costs 100 index probes.
All access happens on the server's event-loop thread, so one connection is enough.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from include.sandbox.crm import meta

ID_BASE = 5843104000000000000
USER = {"name": "Integration User", "id": "5843104000000424001", "email": "integration@demo-company.cn"}
# The org's other users (each signs in with an OAuth token of their own: state.USER_REFRESH_TOKENS): a salesperson
# and a credit controller, so that who changed a field (Modified_By, the record's timeline) means something.
USERS = [USER,
         {"name": "王小明", "id": "5843104000000424011", "email": "wang.xiaoming@demo-company.cn",
          "role": "Sales Rep", "profile": "Standard"},
         {"name": "李会计", "id": "5843104000000424021", "email": "li.kuaiji@demo-company.cn",
          "role": "Credit Controller", "profile": "Standard"}]


class Store:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "files").mkdir(exist_ok=True)
        (self.data_dir / "bulk").mkdir(exist_ok=True)
        self.db = sqlite3.connect(self.data_dir / "crm.sqlite3", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self._create()
        self._next_id = self._load_next_id()

    # ------------------------------------------------------------------------------------------ schema
    def _create(self) -> None:
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS records (
                id INTEGER PRIMARY KEY, module TEXT NOT NULL, data TEXT NOT NULL,
                created_ts REAL NOT NULL, modified_ts REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS records_modified ON records (module, modified_ts, id);
            CREATE INDEX IF NOT EXISTS records_created ON records (module, created_ts, id);
            CREATE INDEX IF NOT EXISTS records_module_id ON records (module, id);
            CREATE TABLE IF NOT EXISTS deleted (
                id INTEGER PRIMARY KEY, module TEXT NOT NULL, display_name TEXT, deleted_ts REAL NOT NULL,
                type TEXT NOT NULL DEFAULT 'recycle');
            CREATE INDEX IF NOT EXISTS deleted_module ON deleted (module, deleted_ts);
            CREATE TABLE IF NOT EXISTS tokens (
                token TEXT PRIMARY KEY, refresh_token TEXT NOT NULL, scope TEXT NOT NULL, expires_ts REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS token_mints (refresh_token TEXT NOT NULL, ts REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, request TEXT NOT NULL,
                result TEXT, created_ts REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS files (file_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_ts REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS watch_channels (
                channel_id TEXT PRIMARY KEY, events TEXT NOT NULL, notify_url TEXT NOT NULL, token TEXT,
                expiry_ts REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS timeline (
                id INTEGER PRIMARY KEY, record_id INTEGER NOT NULL, module TEXT NOT NULL, audited_ts REAL NOT NULL,
                action TEXT NOT NULL, done_by TEXT NOT NULL, field_history TEXT);
            CREATE INDEX IF NOT EXISTS timeline_record ON timeline (record_id, audited_ts);
        """)
        for module in meta.modules().values():
            for name in module.indexed_fields:
                self.db.execute(f"CREATE INDEX IF NOT EXISTS records_{module.api_name}_{name} "
                                f"ON records (module, json_extract(data, '$.{name}'))")

    def _load_next_id(self) -> int:
        top = self.db.execute("SELECT max(m) FROM (SELECT max(id) AS m FROM records "
                              "UNION ALL SELECT max(id) FROM deleted)").fetchone()[0]
        return (top or ID_BASE) + 1

    def reset(self) -> None:
        self.db.executescript("""
            DELETE FROM records; DELETE FROM deleted; DELETE FROM tokens; DELETE FROM token_mints;
            DELETE FROM jobs; DELETE FROM files; DELETE FROM watch_channels; DELETE FROM kv;
            DELETE FROM timeline;""")
        for path in list((self.data_dir / "files").iterdir()) + list((self.data_dir / "bulk").iterdir()):
            path.unlink()
        self._next_id = ID_BASE + 1

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def transaction(self):
        return _Transaction(self.db)

    # ----------------------------------------------------------------------------------------- records
    def get(self, module: str, rid: int) -> dict | None:
        row = self.db.execute("SELECT data FROM records WHERE id = ? AND module = ?", (rid, module)).fetchone()
        return json.loads(row[0]) if row else None

    def display_name(self, module: str, rid: int) -> str | None:
        display = meta.modules()[module].display_field
        row = self.db.execute(f"SELECT json_extract(data, '$.{display}') FROM records WHERE id = ? AND module = ?",
                              (rid, module)).fetchone()
        return None if row is None else (row[0] or "")

    def find_ids(self, module: str, field: str, value) -> list[int]:
        return [r[0] for r in self.db.execute(
            f"SELECT id FROM records WHERE module = ? AND json_extract(data, '$.{field}') = ? ORDER BY id",
            (module, value))]

    def count(self, module: str | None = None) -> int:
        if module:
            return self.db.execute("SELECT count(*) FROM records WHERE module = ?", (module,)).fetchone()[0]
        return self.db.execute("SELECT count(*) FROM records").fetchone()[0]

    def put(self, module: str, record: dict, created_ts: float, modified_ts: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO records (id, module, data, created_ts, modified_ts) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (int(record["id"]), module, json.dumps(record, ensure_ascii=False), created_ts, modified_ts))

    def created_ts(self, rid: int) -> float:
        return self.db.execute("SELECT created_ts FROM records WHERE id = ?", (rid,)).fetchone()[0]

    def modified_ts(self, rid: int) -> float:
        return self.db.execute("SELECT modified_ts FROM records WHERE id = ?", (rid,)).fetchone()[0]

    def delete(self, module: str, rid: int) -> bool:
        name = self.display_name(module, rid)
        if name is None:
            return False
        self.db.execute("DELETE FROM records WHERE id = ?", (rid,))
        self.db.execute("INSERT OR REPLACE INTO deleted (id, module, display_name, deleted_ts) VALUES (?, ?, ?, ?)",
                        (rid, module, name, time.time()))
        return True

    def deleted(self, module: str, kind: str, offset: int, limit: int) -> list[dict]:
        where = "" if kind == "all" else " AND type = ?"
        params = (module,) + (() if kind == "all" else (kind,)) + (limit, offset)
        rows = self.db.execute(f"SELECT id, display_name, deleted_ts, type FROM deleted WHERE module = ?{where} "
                               "ORDER BY deleted_ts DESC, id DESC LIMIT ? OFFSET ?", params)
        return [{"id": str(r[0]), "display_name": r[1], "deleted_time": meta.now_iso(r[2]), "type": r[3],
                 "deleted_by": USER, "created_by": USER} for r in rows]

    def page(self, module: str, sort_col: str, descending: bool, limit: int, offset: int = 0,
             after: tuple | None = None, since_ts: float | None = None) -> list[tuple]:
        """Rows (id, sort value, data) in (sort_col, id) order: keyset pagination when `after` is given."""
        where, params = ["module = ?"], [module]
        if since_ts is not None:
            where.append("modified_ts >= ?")
            params.append(since_ts)
        if after is not None:
            where.append(f"({sort_col}, id) {'<' if descending else '>'} (?, ?)")
            params += list(after)
        direction = "DESC" if descending else "ASC"
        sql = (f"SELECT id, {sort_col}, data FROM records WHERE {' AND '.join(where)} "
               f"ORDER BY {sort_col} {direction}, id {direction} LIMIT ? OFFSET ?")
        return self.db.execute(sql, params + [limit, offset]).fetchall()

    def query(self, sql: str, params: list) -> list[tuple]:
        return self.db.execute(sql, params).fetchall()

    def audit(self, module: str, rid: int, ts: float, action: str, user_id: str, history: list | None) -> None:
        """One entry of the record's timeline (GET /crm/v8/{module}/{id}/__timeline): who (a user id), and the
        fields changed as compact (field, new, old) triples."""
        self.db.execute("INSERT INTO timeline (record_id, module, audited_ts, action, done_by, field_history) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (rid, module, ts, action, user_id,
                                                      json.dumps(history, ensure_ascii=False) if history else None))

    def timeline(self, module: str, rid: int, descending: bool, limit: int, offset: int) -> list[tuple]:
        return self.db.execute(
            "SELECT id, audited_ts, action, done_by, field_history FROM timeline WHERE record_id = ? AND module = ? "
            f"ORDER BY audited_ts {'DESC' if descending else 'ASC'}, id LIMIT ? OFFSET ?",
            (rid, module, limit, offset)).fetchall()

    # ------------------------------------------------------------------------------------------- misc
    def kv_get(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def kv_set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT / ROLLBACK: a write request is all or nothing on disk."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
