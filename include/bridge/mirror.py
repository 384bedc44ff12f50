"""ERP view -> CRM module mirrors: the one data path every stage-1 flow follows.

A mirror is data: include/mappings/<flow>.yaml names the ERP view, the business key, the staged columns,
the CRM module and how a record is found there, and the CRM fields as SQL over the staged rows.

extract   the rows of every key that changed in the ERP since the watermark (minus a lookback, so late
          commits are never missed), plus replayed and drifted keys, streamed ERP -> staging with COPY
validate  the GX gate (expectations/<flow>.json); a failing row quarantines its whole key, the rest may load
plan      per key, the CRM values; only keys whose values differ from what the CRM holds go to the load queue
load      one chunk: update by CRM record id (target.find_by: id, linked through bridge.id_map) or upsert by
          an ERP-number field (target.find_by: <field>, creating missing records); batches of 100 or bulk write
finish    synced state + audit (before / after), CRM rejections -> quarantine, replayed quarantine entries
          closed, ERP deletions removed from the CRM, watermark
Every step is idempotent: a retry or clear of the same run restages the same batch id and re-writes the
same values; XCom carries ids and counts only.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import psycopg2.extras

from include.bridge import config, engine, idmap, rollout
from include.bridge.flow import Flow, PreviewRow, Run
from include.bridge.gate import GateResult, run_gate
from include.zoho import limits
from include.zoho.client import zoho_datetime

MAPPINGS_DIR = Path(__file__).resolve().parents[1] / "mappings"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mirror:
    flow: str
    spec: dict

    @property
    def source(self) -> dict:
        return self.spec["source"]

    @property
    def target(self) -> dict:
        return self.spec["target"]

    @property
    def settings(self) -> dict:
        return self.spec["settings"]

    @property
    def key(self) -> str:
        return self.source["key"]

    @property
    def staging(self) -> str:
        return f"bridge.stg_{self.flow}"

    @property
    def columns(self) -> list[str]:
        return list(self.source["columns"])

    @property
    def link(self) -> dict | None:
        """The staged column that says whether a row's linked record exists (known_sku, known_customer)."""
        return self.source.get("link")

    @property
    def create_only(self) -> list[str]:
        """Fields written only when the flow creates the CRM record (`only_on: create`): a record's line items
        (Ordered_Items), which Zoho needs to create a sales order; an update leaves them as they are."""
        return [n for n, f in self.spec["fields"].items() if isinstance(f, dict) and f.get("only_on") == "create"]

    @property
    def subforms(self) -> list[str]:
        """Subform fields (line items): written through the records API only, never read back by COQL or bulk."""
        return [n for n, f in self.spec["fields"].items() if isinstance(f, dict) and f.get("type") == "subform"]

    @property
    def read_back_fields(self) -> list[str]:
        """The fields read back from the CRM (edits, before-images, reconciliation): not the create-only ones,
        not subforms (COQL and bulk read cannot select them)."""
        skipped = {*self.create_only, *self.subforms}
        return [n for n in self.spec["fields"] if n not in skipped]

    @property
    def values_hash_sql(self) -> str:
        """What change detection compares: the values without the create-only fields."""
        return f"md5({self.without_create_only('p.values')}::text)"

    def without_create_only(self, values_sql: str) -> str:
        """A values expression without the create-only fields: what change detection hashes and the synced state
        keeps, so a rollback's before-image never sends line items again on an update."""
        if not self.create_only:
            return values_sql
        return f"({values_sql} - ARRAY[{', '.join(quote(n) for n in self.create_only)}]::text[])"

    @property
    def quarantine_unlinked(self) -> bool:
        """Unlinked rows are errors (stock: every ERP product must exist in the CRM) or out of scope
        (credit, history: the CRM holds only the customers sales work with); those are skipped and load
        as soon as master_data_match links them."""
        return bool(self.link) and self.link.get("unlinked", "quarantine") == "quarantine"

    @property
    def gated_columns(self) -> list[str]:
        hidden = set(self.source.get("not_gated", []))
        link = [self.link["column"]] if self.quarantine_unlinked else []
        return [c for c in self.columns if c not in hidden] + link

    @property
    def by_id(self) -> bool:
        return self.target["find_by"] == "id"


# Every key a mirror mapping may have: a misspelled key (`filtre:`) would otherwise be ignored and silently change
# what is synced, so anything else is an error naming the file and the key (include/bridge/config.py).
def _optional(*keys: str) -> dict:
    return {k: config.Opt(config.ANY) for k in keys}


MIRROR_SCHEMA = {
    "flow": config.Opt(str), "stamp_field": config.Opt(config.ANY),
    "source": _optional("view", "query", "key", "filter", "changed_column", "order", "aggregate", "row_label",
                        "not_gated", "snapshot") | {
        "columns": config.Each(str),
        "link": config.Opt(_optional("entity", "column", "from", "unlinked")),
        "pilot": config.Opt(_optional("kind", "column")),
        "deletions": config.Opt(_optional("view", "doc_type"))},
    "target": _optional("module", "entity", "find_by"),
    "fields": config.Map(config.Either((str, _optional("column", "sql", "type", "default", "lookup", "map",
                                                        "decimals", "max_length", "only_on")))),
    "settings": _optional("load_mode", "load_chunks", "lookback_minutes", "noun", "overwrite_crm_edits",
                          "product_map_full_refresh_hours", "alert_below_safety_stock", "alert_slips",
                          "max_alerts_per_run", "near_limit_share", "overdue_block_days", "ship_days_after_finish",
                          "weeks_shown"),
}


def check_mapping(name: str, spec) -> None:
    """Strict: known keys only, the sections that must be there, the right kinds of values."""
    config.check(f"mapping {name}.yaml", spec, MIRROR_SCHEMA)
    if not spec["fields"]:
        raise ValueError(f"mapping {name}.yaml: fields must map CRM field names to their source")
    mode = (spec.get("settings") or {}).get("load_mode", "auto")
    if mode not in LOAD_MODES:
        raise ValueError(f"mapping {name}.yaml: settings.load_mode is {mode!r}; it must be one of "
                         f"{', '.join(LOAD_MODES)}")
    subforms = Mirror(name, spec).subforms
    if subforms and mode == "bulk":  # a bulk-write CSV has no subform rows
        raise ValueError(f"mapping {name}.yaml: settings.load_mode bulk cannot write the subform {subforms[0]}")
    for field_name, f in spec["fields"].items():
        if isinstance(f, dict) and f.get("only_on", "create") != "create":
            raise ValueError(f"mapping {name}.yaml: fields.{field_name}.only_on is {f['only_on']!r}; "
                             "the only value is create")


def mirror_mappings() -> list[str]:
    """The names of the mappings that describe an ERP -> CRM mirror (a `source` and a `target.module`)."""
    import yaml

    names = []
    for path in sorted(MAPPINGS_DIR.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text("utf-8"))
        if isinstance(spec, dict) and "source" in spec and isinstance(spec.get("target"), dict) \
                and "module" in spec["target"]:
            names.append(path.stem)
    return names


@cache
def load(flow: str) -> Mirror:
    import yaml

    spec = yaml.safe_load((MAPPINGS_DIR / f"{flow}.yaml").read_text("utf-8"))
    check_mapping(flow, spec)
    if spec.get("flow", flow) != flow:
        raise ValueError(f"mapping {flow}.yaml: flow is {spec['flow']!r}, not the file's name {flow!r}")
    return Mirror(flow, spec)


def output_dir(variable: str, default: str) -> str:
    """$variable, else <LOCAL_DIR, or the temp dir>/<default>: where the bridge writes files for people."""
    import tempfile

    return os.environ.get(variable) or os.path.join(os.environ.get("LOCAL_DIR") or tempfile.gettempdir(), default)


def data_docs_dir(flow: str) -> str:
    """Where the gate's GX Data Docs go: $BRIDGE_DATA_DOCS_DIR/<flow> (default under .local or the temp dir)."""
    return os.path.join(output_dir("BRIDGE_DATA_DOCS_DIR", "data_docs"), flow)


def reports_dir(*parts: str) -> str:
    """$BRIDGE_REPORTS_DIR[/parts] (default .local/reports), created: review lists, reconciliation reports."""
    path = os.path.join(output_dir("BRIDGE_REPORTS_DIR", "reports"), *parts)
    os.makedirs(path, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------- extract
def window(m: Mirror, bridge, erp, *, backfill: tuple[dt.datetime, dt.datetime] | None = None):
    """(since, until): the watermark (minus lookback) to the ERP's clock, or a backfill interval."""
    lookback = dt.timedelta(minutes=m.settings.get("lookback_minutes", 10))
    if backfill:
        return backfill[0] - lookback, backfill[1]
    with erp.cursor() as cur:
        cur.execute("SELECT now()")
        until = cur.fetchone()[0]
    erp.rollback()
    watermark = engine.get_watermark(bridge, m.flow)
    return (watermark - lookback if watermark else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)), until


def newly_linked(m: Mirror, bridge) -> list[str]:
    """Link keys (SKUs, customer codes) linked since this flow's last completed run: their rows load now
    even if the ERP did not change them."""
    if not m.link:
        return []
    with bridge.cursor() as cur:
        cur.execute("""SELECT i.erp_key FROM bridge.id_map i
                       JOIN bridge.watermark w ON w.flow = %s AND w.source = 'default'
                       WHERE i.entity = %s AND i.updated_at > w.updated_at - interval '1 minute' * %s""",
                    (m.flow, m.link["entity"], m.settings.get("lookback_minutes", 10)))
        return [r[0] for r in cur.fetchall()]


def extract(m: Mirror, erp, bridge, batch_id: str, since: dt.datetime, until: dt.datetime,
            extra_keys: list[str] | None = None, linked_keys: list[str] | None = None,
            pilot: list[str] | None = None) -> Staged:
    """Stream every row of each changed (or replayed / drifted / newly linked) key from the ERP view; a pilot run
    only the rows of its subset (`pilot`: values of the mapping's pilot column)."""
    cols = ", ".join(m.columns)
    source_cols = ", ".join("s." + c for c in m.columns)
    where = f" AND ({m.source['filter']})" if m.source.get("filter") else ""
    if pilot is not None:
        where += f" AND s.{m.source['pilot']['column']} = ANY (%(pilot)s::text[])"
    key, changed = m.key, m.source.get("changed_column", "updated_at")
    # a view of the ERP contract, or a query over such views (figures the bridge derives, e.g. weekly capacity)
    view = m.source["view"] if m.source.get("view") else f"({m.source['query']})"
    # snapshot: figures without a trustworthy change time are re-read whole; change detection (plan) still
    # writes only what differs from what the CRM holds
    changed_keys = f"SELECT {key} FROM {view} v" + (
        "" if m.source.get("snapshot") else f" WHERE {changed} > %(since)s AND {changed} <= %(until)s")
    with erp.cursor() as ecur:
        select = ecur.mogrify(
            f"""SELECT %(batch)s, row_number() OVER (ORDER BY s.{key}, {m.source.get('order', 's.' + key)}),
                       {source_cols}
                FROM {view} s
                WHERE s.{key} IN ({changed_keys}
                                  UNION SELECT unnest(%(extra)s::text[])
                                  UNION SELECT {key} FROM {view} v
                                        WHERE {m.link['from'] if m.link else key} = ANY (%(linked)s::text[])){where}""",
            {"batch": batch_id, "since": since, "until": until, "extra": extra_keys or [],
             "linked": linked_keys or [], "pilot": pilot or []}).decode()
    with bridge.cursor() as bcur:
        bcur.execute(f"DELETE FROM {m.staging} WHERE batch_id = %s", (batch_id,))  # a retry restages from scratch
    bridge.commit()
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    read_at: list[dt.datetime] = []
    erp.rollback()  # the export below starts its own transaction

    def export() -> None:  # ERP -> pipe, while the bridge reads the other end: bounded memory at any size
        try:
            with os.fdopen(write_fd, "wb") as sink, erp.cursor() as cur:
                # one snapshot for the whole read, and its time: the version of every value staged (loads never
                # write a value older than one already written, see claim_versions)
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("SELECT now()")
                read_at.append(cur.fetchone()[0])
                cur.copy_expert(f"COPY ({select}) TO STDOUT", sink)
        except BaseException as exc:  # reported after the import side finished
            failure.append(exc)
        finally:
            erp.rollback()

    worker = threading.Thread(target=export, name="erp-export")
    worker.start()
    with os.fdopen(read_fd, "rb") as source, bridge.cursor() as bcur:
        bcur.copy_expert(f"COPY {m.staging} (batch_id, row_no, {cols}) FROM STDIN", source)
    worker.join()
    if failure:
        bridge.rollback()
        raise failure[0]
    with bridge.cursor() as bcur:
        if m.link:
            bcur.execute(f"""UPDATE {m.staging} s SET {m.link['column']} = EXISTS (
                                 SELECT 1 FROM bridge.id_map i WHERE i.entity = %s AND i.erp_key = s.{m.link['from']})
                             WHERE s.batch_id = %s""", (m.link["entity"], batch_id))
        bcur.execute(f"SELECT count(*) FROM {m.staging} WHERE batch_id = %s", (batch_id,))
        n = bcur.fetchone()[0]
        engine.analyze_if_large(bcur, n, m.staging)  # the gate and the plan read this batch next
    bridge.commit()
    return Staged(n, read_at[0])


class Staged(NamedTuple):
    rows: int
    read_at: dt.datetime   # the ERP snapshot the rows were read from: the source version of their values


def crm_drift(m: Mirror, bridge, crm, apply: bool = True) -> list[tuple[str, str, dict]]:
    """(key, CRM id, values the CRM holds) of records edited in the CRM since the last check (the ERP is master
    for these fields).

    Applied, what the CRM now holds replaces the synced state, so the plan sees a difference and the next load
    overwrites the edit, with the edited value as the audit's before-image. A dry run only reads (apply=False)."""
    if not m.settings.get("overwrite_crm_edits"):
        return []
    since = engine.get_watermark(bridge, m.flow, "crm_drift")
    fields = [f for f in m.read_back_fields if not (m.spec["fields"][f] or {}).get("lookup")]
    where = f"Modified_Time >= '{zoho_datetime(since - dt.timedelta(seconds=1))}'" if since else None
    started = dt.datetime.now(dt.UTC)
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT business_key, crm_id, values FROM bridge.synced_state WHERE flow = %s", (m.flow,))
        synced = {r["crm_id"]: r for r in cur.fetchall()}
    drifted: list[tuple[str, str, dict]] = []
    if synced and since is not None:
        for rec in crm.iter_coql(m.target["module"], fields, where=where):
            state = synced.get(rec["id"])
            if state and any(not same(rec.get(f), state["values"].get(f)) for f in fields):
                drifted.append((state["business_key"], rec["id"], state["values"] | {f: rec.get(f) for f in fields}))
    bridge.rollback()
    if not apply:
        return drifted
    with bridge.cursor() as cur:
        for key, _, values in drifted:
            set_synced_values(cur, m.flow, key, values)
    engine.advance_watermark(bridge, m.flow, started, "crm-drift", source="crm_drift")
    bridge.commit()
    return drifted


def set_synced_values(cur, flow: str, business_key: str, values: dict) -> None:
    """What the CRM holds now for a key becomes its synced state (the next plan compares against it)."""
    text = json.dumps(values, ensure_ascii=False)
    cur.execute("""UPDATE bridge.synced_state SET values = %s::jsonb, values_hash = md5(%s::jsonb::text)
                   WHERE flow = %s AND business_key = %s""", (text, text, flow, business_key))


def same(a, b, tolerance: float = 1e-6) -> bool:
    """CRM value vs the value last pushed: numbers by value, lookups by record id, everything else by text."""
    if isinstance(a, int | float) or isinstance(b, int | float):
        try:
            return abs(float(a) - float(b)) <= tolerance
        except (TypeError, ValueError):
            return False
    if isinstance(a, dict) and isinstance(b, dict) and "id" in a and "id" in b:
        return str(a["id"]) == str(b["id"])
    return (a or None) == (b or None)


# ------------------------------------------------------------------------------------------ validate
def validate(m: Mirror, bridge, sqlalchemy_url: str, batch_id: str, parameters: dict, dry_run: bool = False,
             run_id: str = "") -> GateResult:
    """Run the gate; quarantine the bad rows' keys (all rows of a key move together) if it may load (a dry run
    previews the quarantine instead)."""
    previous = engine.previous_count(bridge, m.flow, batch_id)
    # incremental batches vary a lot: only a sudden jump far above the last batch blocks the load;
    # the first run (nothing to compare with) is the initial full load
    max_rows = max(50_000, previous * 50) if previous is not None else 10**12
    result = run_gate(bridge, sqlalchemy_url, flow=m.flow, table=m.staging, batch_id=batch_id,
                      columns=m.gated_columns, parameters={"min_rows": 0, "max_rows": max_rows} | parameters,
                      docs_dir=data_docs_dir(m.flow))
    if not result.may_load:
        return result
    bad: dict[str, list[str]] = {}
    detail = m.source.get("row_label")  # e.g. warehouse: "SZ01: <reason>"
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        if result.bad_rows:
            cur.execute(f"SELECT * FROM {m.staging} WHERE batch_id = %s AND row_no = ANY (%s)",
                        (batch_id, list(result.bad_rows)))
            payloads: dict[str, list[dict]] = {}
            for row in cur.fetchall():
                key = row[m.key] or f"(row {row['row_no']}: no {m.key})"
                prefix = f"{row[detail]}: " if detail else ""
                bad.setdefault(key, []).extend(prefix + r for r in result.bad_rows[row["row_no"]])
                payloads.setdefault(key, []).append({k: v for k, v in row.items() if k not in ("batch_id", "gate_ok")})
            rollout.quarantine(bridge, m.flow, batch_id, run_id, m.target["entity"],
                               [(k, {"rows": payloads[k]}, reasons) for k, reasons in bad.items()], dry_run)
        cur.execute(f"UPDATE {m.staging} SET gate_ok = NOT (coalesce({m.key}, '') = ANY (%s) OR row_no = ANY (%s)) "
                    "WHERE batch_id = %s", (list(bad), list(result.bad_rows), batch_id))
        # the plan selects by gate_ok next: statistics from before the gate say no row passed (a nested loop per row)
        engine.analyze_if_large(cur, cur.rowcount, m.staging)
    bridge.commit()
    return result


# ---------------------------------------------------------------------------------------------- plan
def synced_source(dry_run: bool) -> str:
    """What the CRM holds per key: the synced state, or in a dry run the synced state overlaid with the CRM edits
    the extract found (kept in the preview as action crm_edit, since a dry run changes no sync state)."""
    if not dry_run:
        return "bridge.synced_state"
    return """(SELECT s.flow, s.business_key, s.crm_id, coalesce(e.before, s.values) AS values,
                      CASE WHEN e.before IS NULL THEN s.values_hash ELSE md5(e.before::text) END AS values_hash
               FROM bridge.synced_state s
               LEFT JOIN bridge.dry_run_preview e ON e.batch_id = %(batch)s AND e.action = 'crm_edit'
                                                AND e.business_key = s.business_key
               WHERE s.flow = %(flow)s)"""


def plan_load(m: Mirror, bridge, batch_id: str, dry_run: bool = False, version: dt.datetime | None = None) -> dict:
    """Compute CRM values per key and queue only those that differ from what the CRM holds, and that no newer
    version of has been written (`version`: when the batch's values were read from the ERP; a backfill or an old
    batch never queues what a later run already wrote)."""
    chunks = int(m.settings["load_chunks"])
    with bridge.cursor() as cur:
        # a re-planned batch (a clear) keeps the before-images its first attempt found: a write that landed before
        # the clear must not become its own before-image
        cur.execute("""CREATE TEMP TABLE kept_before ON COMMIT DROP AS SELECT business_key, before
                       FROM bridge.load_queue WHERE batch_id = %(batch)s AND before IS NOT NULL""", {"batch": batch_id})
        cur.execute("DELETE FROM bridge.load_queue WHERE batch_id = %(batch)s", {"batch": batch_id})
        cur.execute(f"""
            WITH {planned_sql(m)}
            INSERT INTO bridge.load_queue (flow, batch_id, business_key, chunk_no, crm_id, values, values_hash,
                                           source_version)
            SELECT %(flow)s, %(batch)s, p.key, abs(hashtext(p.key)) %% %(chunks)s, p.crm_id, p.values,
                   {m.values_hash_sql}, %(version)s
            FROM planned p
            LEFT JOIN {synced_source(dry_run)} s ON s.flow = %(flow)s AND s.business_key = p.key
            LEFT JOIN bridge.key_version v ON v.flow = %(flow)s AND v.business_key = p.key
            WHERE (s.values_hash IS DISTINCT FROM {m.values_hash_sql} OR s.crm_id IS DISTINCT FROM p.crm_id)
              AND (v.version IS NULL OR %(version)s::timestamptz IS NULL OR v.version <= %(version)s)""",
                    {"batch": batch_id, "flow": m.flow, "chunks": chunks, "version": version})
        queued = cur.rowcount
        engine.analyze_if_large(cur, queued, "bridge.load_queue")  # the load pages through it by key
        cur.execute("""UPDATE bridge.load_queue q SET before = k.before FROM kept_before k
                       WHERE q.batch_id = %(batch)s AND q.business_key = k.business_key""", {"batch": batch_id})
        first_writes = 0  # by-id loads read before-images of records never synced (priced into the mode)
        if m.by_id:
            cur.execute(f"SELECT count(*) FROM bridge.load_queue q WHERE {FIRST_WRITE}", (batch_id,))
            first_writes = cur.fetchone()[0]
    bridge.commit()
    bulk = load_by_bulk(m, queued, first_writes)
    return {"queued": queued, "chunks": [0] if bulk else list(range(chunks)), "bulk": bulk,
            "credits_planned": (limits.bulk_write if bulk else limits.batch_write)(queued, first_writes)}


LOAD_MODES = ("auto", "batch", "bulk")


def load_by_bulk(m: Mirror, queued: int, first_writes: int) -> bool:
    """Batches or one bulk-write job: by API credits (include/zoho/limits.py) unless settings.load_mode forces
    one (`batch` for an org whose edition has no bulk API, `bulk` to test the bulk path on a few records)."""
    mode = m.settings.get("load_mode", "auto")  # checked when the mapping loads (check_mapping)
    if mode != "auto":
        return mode == "bulk"
    if m.subforms:
        return False  # subform rows go only through the records API
    return limits.bulk_is_cheaper(queued, first_writes)


def planned_sql(m: Mirror, passed_only: bool = True) -> str:
    """The CTEs `per_key` and `planned` (key, crm_id, values) over the batch %(batch)s of the mirror's staging
    table: the CRM values its mapping computes per key, for the CRM record linked to it (by_id) or found by its
    ERP number. `passed_only`: the rows the gate passed (what a load writes); all rows for reconciliation."""
    plain = {n: f for n, f in m.spec["fields"].items() if not f.get("lookup")}
    lookups = {n: f["lookup"] for n, f in m.spec["fields"].items() if f.get("lookup")}
    values_sql = ", ".join(f"'{name}', {field_sql(spec, m.settings)}" for name, spec in plain.items()) \
        .replace("%", "%%")  # the statement takes parameters: a literal % in a mapping must be doubled
    ok = ("gate_ok" if passed_only else "true") + \
        ("" if m.quarantine_unlinked or not m.link else f" AND {m.link['column']}")
    if m.source.get("aggregate"):  # many staged rows per key (stock: one per warehouse)
        per_key = f"SELECT {m.key} AS key, jsonb_build_object({values_sql}) AS values FROM {m.staging} " \
                  f"WHERE batch_id = %(batch)s AND {ok} GROUP BY {m.key}"
    else:
        per_key = f"SELECT DISTINCT ON ({m.key}) {m.key} AS key, jsonb_build_object({values_sql}) AS values, * " \
                  f"FROM {m.staging} WHERE batch_id = %(batch)s AND {ok} ORDER BY {m.key}, row_no"
    joins, extra = [], []
    for n, (name, lk) in enumerate(lookups.items()):  # CRM lookup fields: {"id": <linked CRM record>}
        joins.append(f"LEFT JOIN bridge.id_map l{n} ON l{n}.entity = '{lk['entity']}' AND l{n}.erp_key = p.{lk['key']}")
        extra.append(f"CASE WHEN l{n}.crm_id IS NULL THEN '{{}}'::jsonb "  # not linked (yet): field left out
                     f"ELSE jsonb_build_object('{name}', jsonb_build_object('id', l{n}.crm_id)) END")
    values = " || ".join(["p.values", *extra])
    if m.create_only:  # written when the record is created, never on an update
        values = f"CASE WHEN m.crm_id IS NULL THEN {values} ELSE {m.without_create_only(f'({values})')} END"
    own = m.target["entity"]
    target_join = ("JOIN" if m.by_id else "LEFT JOIN") + \
        f" bridge.id_map m ON m.entity = '{m.link['entity'] if m.by_id else own}' AND m.erp_key = p.key"
    return f"""per_key AS ({per_key}),
            planned AS (SELECT p.key, m.crm_id, {values} AS values FROM per_key p {target_join} {' '.join(joins)})"""


NUMBER_TYPES = {"currency", "double", "decimal", "percent"}
# Zoho's lengths: single-line text 255, multi-line "small" 2,000 (a new custom field's default; "large" 32,000)
MAX_LENGTH = {"text": 255, "textarea": 2000}


def field_sql(spec: dict, settings: dict) -> str:
    """A CRM field's SQL: `sql` (with {setting} placeholders) or a value `map` over a staged column.

    The value is what Zoho will keep: numbers rounded to the field's decimal places (`decimals`, default 2), text
    cut to its length (`max_length`; the cut ends in '…'). Pushing 12.3456 into a 2-place field reads back 12.35,
    so a mirror that did not round would see a difference on every run and write the same records forever."""
    if "map" in spec:
        whens = " ".join(f"WHEN {quote(k)} THEN {quote(v)}" for k, v in spec["map"].items())
        default = quote(spec["default"]) if spec.get("default") is not None else "NULL"
        return f"CASE {spec['column']} {whens} ELSE {default} END"
    sql, kind = spec["sql"].format_map(settings), spec.get("type")
    if kind in NUMBER_TYPES:
        return f"round(({sql})::numeric, {int(spec.get('decimals', 2))})"
    if kind in MAX_LENGTH:
        n = int(spec.get("max_length", MAX_LENGTH[kind]))
        text = f"({sql})::text"  # repeated: PostgreSQL computes an aggregate written twice once
        return f"CASE WHEN length({text}) > {n} THEN left({text}, {n - 1}) || '…' ELSE {text} END"
    return sql


def quote(value) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------- load
def load_chunk(m: Mirror, bridge, crm, batch_id: str, chunk_no: int, bulk: bool = False, spare=None) -> dict:
    """Write one chunk's pending records to the CRM and record each outcome (and new CRM ids).

    Pages of `load_page_rows` (default 25,000: one bulk-write job) are read, written and recorded in turn, so a bulk
    load of a million records never holds more than two pages in memory, and a killed task resumes after its last
    recorded page. A bulk load given a `spare` connection to the bridge DB keeps the CRM busy: page N+1's job is
    started before page N's result is read and recorded, each page claiming and recording on its own connection (its
    claims stay locks until its own outcomes commit, see claim_versions)."""
    page_rows = int(m.settings.get("load_page_rows", limits.BULK_WRITE_ROWS_PER_JOB))
    totals = {"loaded": 0, "failed": 0}
    if m.by_id and bulk:
        keep_bulk_before_images(m, bridge, crm, batch_id)

    def recorded(conn, outcomes: list[tuple]) -> None:
        record_outcomes(m, conn, batch_id, outcomes)  # commits this page's claims with its outcomes
        ok = sum(o[1] for o in outcomes)
        totals["loaded"], totals["failed"] = totals["loaded"] + ok, totals["failed"] + len(outcomes) - ok

    conns = [bridge, spare] if bulk and spare is not None else [bridge]
    in_flight = None  # (connection, pending, job ids) of the page the CRM is writing now
    last, turn = "", 0
    try:
        while True:
            conn = conns[turn % len(conns)]
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                cur.execute("""SELECT business_key, crm_id, values FROM bridge.load_queue
                               WHERE batch_id = %s AND status = 'pending' AND (%s OR chunk_no = %s)
                                 AND business_key > %s ORDER BY business_key LIMIT %s""",
                            (batch_id, bulk, chunk_no, last, page_rows))
                pending = cur.fetchall()
            if not pending:
                break
            if m.by_id and not bulk:
                conn.rollback()
                keep_before_images(m, conn, crm, batch_id, pending)
            last = pending[-1]["business_key"]
            pending = claim_versions(m, conn, batch_id, pending)  # row locks held until recorded() commits
            if len(conns) == 1:
                recorded(conn, write_page(m, crm, pending, bulk) if pending else [])
                continue
            started = start_bulk_page(m, crm, pending) if pending else []
            if in_flight:
                recorded(in_flight[0], finish_bulk_page(m, crm, *in_flight[1:]))
            in_flight, turn = (conn, pending, started), turn + 1
        if in_flight:
            recorded(in_flight[0], finish_bulk_page(m, crm, *in_flight[1:]))
    finally:
        for conn in conns:
            conn.rollback()  # nothing uncommitted survives a failed page: its claims go, a retry writes it again
    return totals


def claim_versions(m: Mirror, bridge, batch_id: str, pending: list[dict]) -> list[dict]:
    """The pending records whose version is not older than the version last written of their key, claimed (the
    claim is the write's row lock: a concurrent load of the same keys waits until this page's outcomes commit, then
    finds the newer version); the others are marked superseded and not written. Keys are claimed in order, so two
    loads of overlapping pages never deadlock. Uncommitted on return: the caller's commit after the write releases
    the locks, and a failed write rolls the claims back."""
    with bridge.cursor() as cur:
        cur.execute("""
            WITH claimed AS (
                INSERT INTO bridge.key_version AS v (flow, business_key, version, batch_id)
                SELECT q.flow, q.business_key, coalesce(q.source_version, '-infinity'), q.batch_id
                FROM bridge.load_queue q WHERE q.batch_id = %s AND q.business_key = ANY (%s)
                ORDER BY q.business_key
                ON CONFLICT (flow, business_key) DO UPDATE SET version = excluded.version, batch_id = excluded.batch_id
                WHERE v.version <= excluded.version
                RETURNING v.business_key)
            SELECT business_key FROM claimed""", (batch_id, [r["business_key"] for r in pending]))
        claimed = {r[0] for r in cur.fetchall()}
        superseded = [r["business_key"] for r in pending if r["business_key"] not in claimed]
        if superseded:
            cur.execute("UPDATE bridge.load_queue SET status = 'superseded', error = 'a newer version was written "
                        "by another run' WHERE batch_id = %s AND business_key = ANY (%s)", (batch_id, superseded))
            log.info("%s: %d record(s) of batch %s not written: a newer version was written by another run",
                     m.flow, len(superseded), batch_id)
    return [r for r in pending if r["business_key"] in claimed]


# a queued record of the batch this flow writes for the first time, whose before-image is not kept yet
FIRST_WRITE = """q.batch_id = %s AND q.status = 'pending' AND q.before IS NULL
                 AND NOT EXISTS (SELECT 1 FROM bridge.synced_state s WHERE s.flow = q.flow
                                 AND s.business_key = q.business_key)"""


def keep_before_images(m: Mirror, bridge, crm, batch_id: str, pending: list[dict]) -> None:
    """Records this flow writes for the first time: what the CRM holds now becomes the audit's before-image (later
    writes take it from synced_state), so a rollback restores the exact values. Bulk loads use
    keep_bulk_before_images: reading a million records back one COQL page at a time would cost more than the load."""
    with bridge.cursor() as cur:
        cur.execute(f"SELECT q.business_key, q.crm_id FROM bridge.load_queue q WHERE {FIRST_WRITE} "
                    "AND q.business_key = ANY (%s)", (batch_id, [r["business_key"] for r in pending]))
        first = cur.fetchall()
    bridge.rollback()
    if not first:
        return
    held = engine.kept_before_images(bridge, batch_id, m.target["module"], engine.crm_values(
        crm, m.target["module"], [crm_id for _, crm_id in first], m.read_back_fields))
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            UPDATE bridge.load_queue q SET before = v.before::jsonb
            FROM (VALUES %s) AS v(batch_id, business_key, before)
            WHERE q.batch_id = v.batch_id AND q.business_key = v.business_key""",
            [(batch_id, key, json.dumps(held[crm_id], default=str, ensure_ascii=False)) for key, crm_id in first
             if crm_id in held], page_size=5000)
    bridge.commit()


def keep_bulk_before_images(m: Mirror, bridge, crm, batch_id: str) -> None:
    """keep_before_images for a bulk load: one bulk read export of the module's mapped fields, copied into a temp
    table and joined to the queue in one UPDATE. It runs before the first page is written; a retried load reads
    again only if a first write's record was missing from the export."""
    with bridge.cursor() as cur:
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM bridge.load_queue q WHERE {FIRST_WRITE})", (batch_id,))
        needed = cur.fetchone()[0]
    bridge.rollback()
    if not needed:
        return
    fields = m.read_back_fields
    types = {f: (spec or {}).get("type") for f, spec in m.spec["fields"].items()}
    started, held = time.monotonic(), 0
    with bridge.cursor() as cur:
        cur.execute("CREATE TEMP TABLE crm_held (crm_id text PRIMARY KEY, before jsonb) ON COMMIT DROP")
        page = io.StringIO()
        for row in crm.bulk_read(m.target["module"], ["id", *fields]):
            before = {f: csv_typed(row.get(f), types[f]) for f in fields}
            page.write(row["id"] + "\t" + json.dumps(before, default=str, ensure_ascii=False)
                       .replace("\\", "\\\\") + "\n")
            held += 1
            if held % 100_000 == 0:  # bounded memory: COPY in pages
                page.seek(0)
                cur.copy_expert("COPY crm_held FROM STDIN", page)
                page = io.StringIO()
        page.seek(0)
        cur.copy_expert("COPY crm_held FROM STDIN", page)
        cur.execute(f"UPDATE bridge.load_queue q SET before = h.before FROM crm_held h "
                    f"WHERE q.crm_id = h.crm_id AND {FIRST_WRITE}", (batch_id,))
        kept = cur.rowcount
    bridge.commit()
    seconds = time.monotonic() - started
    engine.record_step(bridge, batch_id, "before_images", seconds)  # a first sync's one-time read, inside the load
    log.info("%s: before-images of %d first writes from one bulk read of %d %s records (%.1f s)", m.flow, kept,
             held, m.target["module"], seconds)


def csv_typed(value: str | None, field_type: str | None):
    """A bulk read CSV cell as the API's JSON value of the field's type (what a rollback writes back)."""
    if value is None or value == "":
        return None
    if field_type in ("double", "currency", "decimal", "percent"):
        return float(value)
    if field_type in ("integer", "bigint"):
        return int(value)
    if field_type == "boolean":
        return value.lower() == "true"
    if field_type == "multiselectpicklist":
        return value.split(";")
    return value


def page_records(m: Mirror, pending: list[dict]) -> list[dict]:
    """The CRM records of a page: the mapped values, the record's id (or the ERP number to upsert by), the stamp."""
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    stamp_field = {m.spec["stamp_field"]: stamp} if m.spec.get("stamp_field") else {}
    if m.by_id:
        return [{"id": r["crm_id"], **r["values"], **stamp_field} for r in pending]
    # upsert by the ERP number: a retry finds the record the first try created
    return [{**r["values"], m.target["find_by"]: r["business_key"], **stamp_field} for r in pending]


def write_page(m: Mirror, crm, pending: list[dict], bulk: bool) -> list[tuple]:
    """(business key, ok, error, CRM id) per pending record, in order."""
    if bulk:
        return finish_bulk_page(m, crm, pending, start_bulk_page(m, crm, pending))
    module, find_by, records = m.target["module"], m.target["find_by"], page_records(m, pending)
    written = crm.update(module, records) if m.by_id else crm.upsert(module, records, [find_by])
    return [(r["business_key"], o.ok, None if o.ok else f"{o.code} {o.api_name or ''}".strip(), o.id or r["crm_id"])
            for r, o in zip(pending, written, strict=True)]


def start_bulk_page(m: Mirror, crm, pending: list[dict]) -> list[str]:
    """Upload a page and start its bulk-write job(s); the job ids for finish_bulk_page."""
    return crm.bulk_write_start(m.target["module"], [{k: lookup_id(v) for k, v in r.items()}
                                                     for r in page_records(m, pending)],
                                find_by=m.target["find_by"], operation="update" if m.by_id else "upsert")


def finish_bulk_page(m: Mirror, crm, pending: list[dict], job_ids: list[str]) -> list[tuple]:
    """Wait for a page's bulk-write job(s): (business key, ok, error, CRM id) per pending record, in order."""
    if not pending:
        return []
    result = crm.bulk_write_wait(job_ids)
    return [(r["business_key"], row.get("STATUS") in ("UPDATED", "ADDED"), row.get("ERRORS") or None,
             row.get("RECORD_ID") or r["crm_id"]) for r, row in zip(pending, result.rows, strict=True)]


def record_outcomes(m: Mirror, bridge, batch_id: str, outcomes: list[tuple]) -> None:
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            UPDATE bridge.load_queue q SET status = v.status, error = v.error, crm_id = v.crm_id
            FROM (VALUES %s) AS v(batch_id, business_key, status, error, crm_id)
            WHERE q.batch_id = v.batch_id AND q.business_key = v.business_key""",
            [(batch_id, key, "loaded" if ok else "failed", err, cid) for key, ok, err, cid in outcomes],
            page_size=5000)
        if not m.by_id:  # remember the CRM record of each ERP document
            psycopg2.extras.execute_values(cur, """
                INSERT INTO bridge.id_map (entity, erp_key, crm_id, match_rule) VALUES %s
                ON CONFLICT (entity, erp_key) DO UPDATE SET crm_id = excluded.crm_id, updated_at = now()
                WHERE bridge.id_map.crm_id IS DISTINCT FROM excluded.crm_id""",
                [(m.target["entity"], key, cid, f"created by {m.flow}") for key, ok, _, cid in outcomes if ok and cid],
                page_size=5000)
    bridge.commit()


def lookup_id(value):
    """Bulk write CSV takes a lookup as the bare record id."""
    return value["id"] if isinstance(value, dict) and set(value) == {"id"} else value


# -------------------------------------------------------------------------------------------- finish
def finish(m: Mirror, bridge, batch_id: str, run_id: str, until: dt.datetime | None) -> dict:
    """Synced state, audit, CRM rejections to quarantine, replayed quarantine entries, watermark."""
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""INSERT INTO bridge.audit_log (flow, target_system, entity, business_key, before, after,
                                                     run_id, batch_id, record_id)
                       SELECT q.flow, 'crm', %s, q.business_key, coalesce(s.values, q.before), q.values, %s,
                              q.batch_id, %s || ':' || q.crm_id
                       FROM bridge.load_queue q
                       LEFT JOIN bridge.synced_state s ON s.flow = q.flow AND s.business_key = q.business_key
                       WHERE q.batch_id = %s AND q.status = 'loaded'""",
                    (m.target["entity"], run_id, m.target["module"], batch_id))
        # the synced state never goes back either: a batch that finishes late leaves a newer version in place
        cur.execute(f"""INSERT INTO bridge.synced_state AS s (flow, business_key, crm_id, values, values_hash, batch_id,
                                                            source_version)
                       SELECT flow, business_key, crm_id, {m.without_create_only("values")}, values_hash, batch_id,
                              source_version
                       FROM bridge.load_queue WHERE batch_id = %s AND status = 'loaded'
                       ON CONFLICT (flow, business_key) DO UPDATE SET crm_id = excluded.crm_id,
                           values = excluded.values, values_hash = excluded.values_hash,
                           batch_id = excluded.batch_id, synced_at = now(), source_version = excluded.source_version
                       WHERE s.source_version IS NULL OR excluded.source_version IS NULL
                          OR s.source_version <= excluded.source_version""", (batch_id,))
        engine.analyze_if_large(cur, cur.rowcount, "bridge.synced_state", "bridge.key_version")
        cur.execute("""SELECT business_key, values, error FROM bridge.load_queue
                       WHERE batch_id = %s AND status = 'failed'""", (batch_id,))
        rejected = cur.fetchall()
        engine.quarantine(bridge, m.flow, batch_id, [(r["business_key"], r["values"], [f"CRM rejected: {r['error']}"])
                                                     for r in rejected])
        # open entries whose key passed the gate and did not fail in the CRM are replayed
        replayed = engine.resolve_quarantine_in(bridge, m.flow, f"""
            SELECT s.{m.key} FROM {m.staging} s WHERE s.batch_id = %(batch)s AND s.gate_ok
              AND NOT EXISTS (SELECT 1 FROM bridge.load_queue q WHERE q.batch_id = s.batch_id
                              AND q.business_key = s.{m.key} AND q.status = 'failed')""", {"batch": batch_id},
            "replayed", run_id)
        cur.execute("""SELECT count(*) FILTER (WHERE status = 'loaded') AS loaded,
                              count(*) FILTER (WHERE status = 'failed') AS failed,
                              count(*) FILTER (WHERE status = 'superseded') AS superseded,
                              count(*) FILTER (WHERE status = 'pending') AS pending
                       FROM bridge.load_queue WHERE batch_id = %s""", (batch_id,))
        counts = dict(cur.fetchone())
        if counts["pending"]:
            raise RuntimeError(f"{counts['pending']} records of batch {batch_id} were not loaded; retry the load")
        if until is not None:
            engine.advance_watermark(bridge, m.flow, until, run_id)
    bridge.commit()
    return counts | {"rejected": len(rejected), "replayed": replayed}


def remove_deleted(m: Mirror, bridge, erp, crm, batch_id: str, run_id: str, since: dt.datetime,
                   until: dt.datetime, dry_run: bool = False) -> int:
    """ERP documents deleted in the window (the ERP's deletion log) leave the CRM too, with an audit row (a dry
    run previews the deletions)."""
    spec = m.source.get("deletions")
    if not spec:
        return 0
    with erp.cursor() as cur:
        cur.execute(f"SELECT doc_no FROM {spec['view']} WHERE doc_type = %s AND deleted_at > %s AND deleted_at <= %s",
                    (spec["doc_type"], since, until))
        deleted = [r[0] for r in cur.fetchall()]
    erp.rollback()
    if not deleted:
        return 0
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT i.erp_key, i.crm_id, s.values FROM bridge.id_map i
                       LEFT JOIN bridge.synced_state s ON s.flow = %s AND s.business_key = i.erp_key
                       WHERE i.entity = %s AND i.erp_key = ANY (%s)""", (m.flow, m.target["entity"], deleted))
        linked = cur.fetchall()
    bridge.rollback()
    if not linked:
        return 0
    if dry_run:
        return rollout.preview(bridge, m.flow, batch_id, run_id, [
            ("crm", m.target["entity"], r["erp_key"], f"{m.target['module']}:{r['crm_id']}", "delete", r["values"],
             None) for r in linked])
    outcomes = crm.delete(m.target["module"], [r["crm_id"] for r in linked])
    gone = [r for r, o in zip(linked, outcomes, strict=True) if o.ok or o.code == "INVALID_DATA"]  # already gone
    engine.audit(bridge, m.flow, "crm", m.target["entity"], [
        engine.AuditRow(r["erp_key"], r["values"], None, f"{m.target['module']}:{r['crm_id']}") for r in gone],
        run_id, batch_id)
    with bridge.cursor() as cur:
        keys = [r["erp_key"] for r in gone]
        cur.execute("DELETE FROM bridge.synced_state WHERE flow = %s AND business_key = ANY (%s)", (m.flow, keys))
        cur.execute("DELETE FROM bridge.id_map WHERE entity = %s AND erp_key = ANY (%s)", (m.target["entity"], keys))
    bridge.commit()
    return len(gone)


# ---------------------------------------------------------------------------------------------- flow
PILOT_DIMENSIONS = {"sku": ("skus",), "customer": ("regions", "customers"), "order": ("regions", "customers")}


class MirrorFlow(Flow):
    """An ERP -> CRM mirror on the Flow / Run contract: the declarative case. Its mapping
    (include/mappings/<name>.yaml) and suite (expectations/<name>.json) say everything; a flow that needs more
    overrides a hook: before_extract (refresh what it links through), parameters (gate parameters from the ERP),
    before_finish (read what the load changed while the old synced state is still there), after_finish (alerts).
    Tasks (plugins/bridge_flows/mirror_dag.py): extract -> validate (gate + plan) -> load (per chunk) -> finish."""
    source, target = "erp", "crm"

    def __init__(self, name: str):
        self.name = name

    @property
    def spec(self) -> Mirror:
        return load(self.name)

    @property
    def suites(self) -> dict[str, list[str]]:
        return {self.name: self.spec.gated_columns}

    def crm_fields(self) -> list:
        from include.bridge.doctor import mirror_needs

        return mirror_needs(self.spec)

    @property
    def pilot_dimensions(self) -> tuple[str, ...]:  # type: ignore[override]
        return PILOT_DIMENSIONS.get((self.spec.source.get("pilot") or {}).get("kind"), ())

    @property
    def pilot_hint(self) -> str:  # type: ignore[override]
        dims = self.pilot_dimensions
        return f"pilot it with {' or '.join('pilot_' + d for d in dims)}" if dims else "run it in full or dry-run it"

    # hooks --------------------------------------------------------------------------------------------------
    def before_extract(self, systems, replay_quarantine: bool) -> dict:
        return {}

    def parameters(self, systems) -> dict:
        return {}

    def before_finish(self, bridge, batch_id: str) -> dict:
        return {}

    def after_finish(self, systems, run: Run, counts: dict, send_alert) -> dict:
        return {}

    # steps --------------------------------------------------------------------------------------------------
    def extract(self, systems, run_id: str, backfill: tuple[dt.datetime, dt.datetime] | None = None,
                replay_quarantine: bool = False, plan: rollout.Rollout | None = None) -> Run:
        """Open the run, refresh what the flow links through, detect CRM edits, stage (a pilot: its subset; a dry
        run previews the CRM edits instead of taking them into the sync state)."""
        m = self.spec
        run = self.open(systems, run_id, plan, backfill=bool(backfill))
        bridge, erp, writer = systems.bridge(), systems.erp(), run.writer(systems.bridge())
        pilot = rollout.pilot_keys(erp, run.rollout, (m.source.get("pilot") or {}).get("kind"))
        with self.step(systems, run, "extract") as counts:
            run.counts |= self.before_extract(systems, replay_quarantine)
            since, until = window(m, bridge, erp, backfill=backfill)
            replay = [q["business_key"] for q in engine.open_quarantine(bridge, m.flow)] if replay_quarantine else []
            drifted = crm_drift(m, bridge, systems.crm(), apply=writer.live)
            if not writer.live:  # the plan overlays these on the synced state (see synced_source)
                writer.preview([PreviewRow("crm", m.target["entity"], key, f"{m.target['module']}:{crm_id}",
                                           "crm_edit", values, None) for key, crm_id, values in drifted])
            linked = newly_linked(m, bridge) if not backfill else []
            staged = extract(m, erp, bridge, run.batch_id, since, until, replay + [k for k, _, _ in drifted], linked,
                             pilot)
            counts["rows_extracted"] = staged.rows
        run.facts["source_version"] = staged.read_at.isoformat()
        self.covers(systems, run, since, until)
        run.counts |= {"rows": counts["rows_extracted"], "replayed_keys": len(replay), "crm_edits": len(drifted),
                       "newly_linked": len(linked)}
        return run

    def validate(self, systems, run: Run, send_alert=None) -> Run:
        """Gate + plan; raises GateBlocked (after one alert) when nothing may load."""
        m, bridge = self.spec, systems.bridge()
        run.facts |= {"chunks": [], "bulk": False}
        if run.counts["rows"] == 0:
            run.counts["queued"] = 0
            return run
        with self.step(systems, run, "gate") as counts:
            result = validate(m, bridge, systems.bridge_url(), run.batch_id, self.parameters(systems),
                              run.rollout.dry_run, run.run_id)
            counts |= {"rows_passed": result.rows - len(result.bad_rows), "rows_quarantined": len(result.bad_rows)}
            if not result.may_load:
                self.refuse(systems, run, result, send_alert, f"batch {run.batch_id} not loaded ({result.rows:,} rows)")
        run.gate = "passed"
        run.counts |= {"quarantined": len(result.bad_rows), "not_linked": self.not_linked(bridge, run)}
        with self.step(systems, run, "plan"):
            version = run.facts.get("source_version")
            planned = plan_load(m, bridge, run.batch_id, run.rollout.dry_run,
                                dt.datetime.fromisoformat(version) if version else None)
            if run.rollout.dry_run:  # what the load would write, with the before-image the bridge knows
                run.writer(bridge).preview(self.load_preview(bridge, run))
                planned["chunks"] = []  # no load task runs
        run.counts["queued"] = planned["queued"]
        run.facts |= {"chunks": planned["chunks"], "bulk": planned["bulk"],
                      "credits_planned": planned["credits_planned"]}
        return run

    def not_linked(self, bridge, run: Run) -> int:
        """Rows skipped because no CRM record is linked yet (for flows whose unlinked rows are out of scope)."""
        m = self.spec
        if not m.link or m.quarantine_unlinked:
            return 0
        with bridge.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {m.staging} WHERE batch_id = %s AND NOT {m.link['column']}",
                        (run.batch_id,))
            unlinked = cur.fetchone()[0]
        bridge.rollback()
        return unlinked

    def load_preview(self, bridge, run: Run) -> list[PreviewRow]:
        m = self.spec
        with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(f"""SELECT q.business_key, q.crm_id, q.values, s.values AS before FROM bridge.load_queue q
                            LEFT JOIN {synced_source(True)} s ON s.flow = q.flow AND s.business_key = q.business_key
                            WHERE q.batch_id = %(batch)s ORDER BY q.business_key""",
                        {"batch": run.batch_id, "flow": m.flow})
            queued = cur.fetchall()
        bridge.rollback()
        return [PreviewRow("crm", m.target["entity"], r["business_key"], f"{m.target['module']}:{r['crm_id']}"
                           if r["crm_id"] else None, "update" if m.by_id else "upsert", r["before"], r["values"])
                for r in queued]

    def load(self, systems, run: Run, chunk_no: int) -> dict:
        started, credits = time.monotonic(), systems.crm_credits()
        bulk = run.facts.get("bulk", False)
        counts = load_chunk(self.spec, systems.bridge(), systems.crm(), run.batch_id, chunk_no, bulk,
                            systems.bridge_spare() if bulk else None)
        engine.record_step(systems.bridge(), run.batch_id, f"load_{chunk_no}", time.monotonic() - started,
                           systems.crm_credits() - credits)
        return counts

    def finish(self, systems, run: Run, send_alert=None) -> dict:
        """Record the outcome (the watermark moves unless a backfill or a pilot), remove what the ERP deleted, then
        the flow's after_finish (alerts)."""
        m, bridge = self.spec, systems.bridge()
        since, until = dt.datetime.fromisoformat(run.since), dt.datetime.fromisoformat(run.until)
        if run.rollout.dry_run:
            with self.step(systems, run, "finish") as ledger:
                if m.source.get("deletions"):
                    remove_deleted(m, bridge, systems.erp(), systems.crm(), run.batch_id, run.run_id, since, until,
                                   True)
                ledger["rows_quarantined"] = run.counts.get("quarantined", 0)
            ledger = self.close(systems, run, "dry_run", "")
            return {"status": ledger["status"], "loaded": 0, "failed": 0, "replayed": 0, "deleted": 0}
        with self.step(systems, run, "finish") as ledger:
            extra = self.before_finish(bridge, run.batch_id)
            # a backfill replays an old interval, a pilot a subset: neither moves the watermark
            counts = finish(m, bridge, run.batch_id, run.run_id, None if run.backfill or run.rollout.pilot else until)
            if m.source.get("deletions") and not run.rollout.pilot:
                counts["deleted"] = remove_deleted(m, bridge, systems.erp(), systems.crm(), run.batch_id, run.run_id,
                                                   since, until)
            ledger |= {"rows_loaded": counts["loaded"], "rows_failed": counts["failed"],
                       "rows_quarantined": run.counts.get("quarantined", 0) + counts["rejected"]}
        status = "partial" if counts["failed"] or run.counts.get("quarantined") else "success"
        noun = m.settings.get("noun", "records")
        deleted = f", {counts['deleted']} deleted" if counts.get("deleted") else ""
        deleted += f", {run.counts['not_linked']} rows skipped (no linked CRM record)" \
            if run.counts.get("not_linked") else ""
        deleted += f", {counts['superseded']} not written (a newer version was written by another run)" \
            if counts.get("superseded") else ""
        ledger = self.close(systems, run, status, f"{counts['loaded']} {noun} written{deleted}, {counts['failed']} "
                                                  "rejected by the CRM")
        result = {"status": ledger["status"], "loaded": counts["loaded"], "failed": counts["failed"],
                  "replayed": counts["replayed"], "deleted": counts.get("deleted", 0)}
        return result | self.after_finish(systems, run, counts | extra, send_alert)


def erp_values(systems, sql: str) -> list:
    """One column of a small ERP reference view (warehouses, tax rates, currencies) for gate parameters."""
    with systems.erp().cursor() as cur:
        cur.execute(sql)
        values = [r[0] for r in cur.fetchall()]
    systems.erp().rollback()
    return values


class ProductMirror(MirrorFlow):
    """A mirror that writes to CRM Products: it links products by code first (bridge.idmap, links never move by
    themselves) and alerts once per run about codes it found ambiguous."""

    def before_extract(self, systems, replay_quarantine: bool) -> dict:
        result = idmap.refresh_product_links(systems.bridge(), systems.crm(), full=replay_quarantine,
                                             full_refresh_hours=self.spec.settings["product_map_full_refresh_hours"])
        return {"products_linked": result["products_read"], "product_link_conflicts": len(result["conflicts"])}

    def after_finish(self, systems, run: Run, counts: dict, send_alert) -> dict:
        alert = idmap.conflict_alert(self.name, run.run_id, run.counts.get("product_link_conflicts", 0))
        if alert and send_alert:
            send_alert(alert)
        return {}
