"""Flow reconcile_crm_erp: compare the CRM and the ERP and report every difference (operations, daily).

extract   a snapshot of both sides into the bridge DB: CRM Products, Accounts and Sales_Orders (every field the
          flows write), ERP sales orders and customers (erp_read)
stage     the comparison (include/mappings/reconcile_crm_erp.yaml): for each mirror check, every field its mapping
          writes, as the mapping computes it from the ERP now, against what the linked CRM record holds (the mirror's
          own extract and SQL, so reconciliation and load can never disagree on a value); set-based SQL over the
          snapshots and bridge.id_map for order status (CRM shipped vs ERP deliveries), orders in one system missing
          from the other, duplicate customers on either side — each difference with its system of record and the
          flow that should correct it; nothing is fixed silently
validate  the GX gate on the differences (expectations/reconcile_crm_erp.json): known kinds, a key, a system of record
load      bridge.reconciliation_difference and bridge.reconciliation_run (counts per kind)
record    an HTML report with charts (differences by kind, the trend over recent days) and the table of differences,
          under $BRIDGE_REPORTS_DIR/reconciliation/; one alert when the differences exceed the threshold
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import defaultdict
from pathlib import Path

import psycopg2.extras

from include.bridge import config, mirror, report
from include.bridge.alerts import Alert
from include.bridge.flow import Flow, Run
from include.bridge.mirror import Mirror, reports_dir

FLOW = "reconcile_crm_erp"
COLUMNS = ["run_date", "kind", "entity", "business_key", "crm_id", "system_of_record", "corrected_by", "detail"]
KIND_LABEL = {"stock_mismatch": "stock figures", "credit_mismatch": "credit figures", "price_mismatch": "prices",
              "order_copy_mismatch": "ERP order copies", "invoice_mismatch": "invoices",
              "fulfilment_mismatch": "fulfilment status", "production_mismatch": "ship dates from production",
              "capacity_mismatch": "capacity warnings",
              "order_status_mismatch": "order status", "order_missing_in_erp": "order missing in the ERP",
              "order_missing_in_crm": "order missing in the CRM", "duplicate_customer_crm": "duplicate customers (CRM)",
              "duplicate_customer_erp": "duplicate customers (ERP)"}
SHORT_LABEL = {"stock_mismatch": "stock", "credit_mismatch": "credit", "price_mismatch": "price",
               "order_copy_mismatch": "copies", "invoice_mismatch": "invoices", "fulfilment_mismatch": "fulfilment",
               "production_mismatch": "ship dates", "capacity_mismatch": "capacity",
               "order_status_mismatch": "status",
               "order_missing_in_erp": "not in ERP", "order_missing_in_crm": "not in CRM",
               "duplicate_customer_crm": "dup. CRM", "duplicate_customer_erp": "dup. ERP"}


def spec() -> dict:
    return config.mapping("reconcile_crm_erp")  # strict: an unknown key or a wrong type names the file


# ------------------------------------------------------------------------------------------- extract
def _normalizer():
    from include.bridge.matching import Normalizer
    from include.flows.master_data_match import settings

    cfg = settings()["customers"]
    return Normalizer(cfg["suffixes"], cfg["cities"])


def name_key(norm, name: str | None, city: str | None) -> str | None:
    key = norm.key(name)
    if not key.core:
        return None
    return f"{key.core}|{key.city or norm.city(city) or ''}"


def mirror_checks() -> dict[str, Mirror]:
    """kind -> the mirror whose every written field the check compares."""
    return {kind: mirror.load(check["mirror"]) for kind, check in spec()["checks"].items() if check.get("mirror")}


def snapshot_crm(bridge, crm, batch_id: str) -> dict:
    """CRM records with the fields the flows write, one jsonb row each (bounded pages, execute_values)."""
    norm = _normalizer()
    modules: dict[str, list[str]] = {  # (what the checks below read besides the mirrors' fields)
        "Products": ["Product_Code"],
        "Accounts": ["Account_Name", "Account_Number", "Unified_Social_Credit_Code", "Billing_City"],
        "Sales_Orders": ["Subject", "Status", "ERP_Order_No", "Fulfilment_Status", "Modified_Time"],
    }
    for m in mirror_checks().values():
        fields = modules.setdefault(m.target["module"], [])
        fields += [f for f in m.read_back_fields if f not in fields]
    counts = {}
    with bridge.cursor() as cur:
        cur.execute("DELETE FROM bridge.recon_crm WHERE batch_id = %s", (batch_id,))
        for module, fields in modules.items():
            page, n = [], 0
            for rec in crm.iter_records(module, fields):
                if module == "Accounts":
                    rec["name_key"] = name_key(norm, rec.get("Account_Name"), rec.get("Billing_City"))
                page.append((batch_id, module, rec["id"], json.dumps(rec, ensure_ascii=False, default=str)))
                if len(page) >= 5000:
                    psycopg2.extras.execute_values(cur, "INSERT INTO bridge.recon_crm VALUES %s", page)
                    n, page = n + len(page), []
            psycopg2.extras.execute_values(cur, "INSERT INTO bridge.recon_crm VALUES %s", page)
            counts[module] = n + len(page)
    bridge.commit()
    return counts


ERP_SNAPSHOTS = {
    "order": """SELECT erp_order_no, jsonb_build_object('source_system', source_system, 'external_ref', external_ref,
                                                       'customer_code', customer_code, 'status', status,
                                                       'per_delivered', per_delivered, 'updated_at', updated_at)
                FROM erp_api.sales_order_status""",
    "customer": """SELECT customer_code, jsonb_build_object('customer_name', customer_name, 'uscc', uscc, 'city', city)
                   FROM erp_api.customers WHERE is_active""",
}


def snapshot_erp(bridge, erp, batch_id: str) -> dict:
    """ERP figures through erp_read, streamed in pages into bridge.recon_erp."""
    norm = _normalizer()
    counts = {}
    with bridge.cursor() as bcur:
        bcur.execute("DELETE FROM bridge.recon_erp WHERE batch_id = %s", (batch_id,))
        for entity, sql in ERP_SNAPSHOTS.items():
            n = 0
            with erp.cursor(name=f"recon_{entity}") as ecur:  # server-side: bounded memory at any size
                ecur.itersize = 10_000
                ecur.execute(sql)
                while rows := ecur.fetchmany(10_000):
                    if entity == "customer":
                        rows = [(k, v | {"name_key": name_key(norm, v["customer_name"], v["city"])}) for k, v in rows]
                    psycopg2.extras.execute_values(bcur, "INSERT INTO bridge.recon_erp VALUES %s",
                                                   [(batch_id, entity, k, json.dumps(v, default=str)) for k, v in rows])
                    n += len(rows)
            erp.rollback()
            counts[entity] = n
    bridge.commit()
    return counts


# --------------------------------------------------------------------------------------------- stage
EPOCH, FUTURE = dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC)


def mirror_differences(bridge, erp, batch_id: str, kind: str, m: Mirror, tolerance: float) -> tuple[int, list]:
    """Every field the mirror writes, as its mapping computes it from the ERP now (its own extract, staged under a
    batch of this run and removed after), against what the linked CRM record holds: (keys compared, differences).
    Streamed: bounded memory at any size."""
    staged_batch = f"{batch_id}:{m.flow}"
    mirror.extract(m, erp, bridge, staged_batch, EPOCH, FUTURE)
    compared, found = 0, []
    with bridge.cursor(name=f"recon_{kind}") as cur:
        cur.itersize = 5000
        cur.execute(f"""WITH {mirror.planned_sql(m, passed_only=False)}
                        SELECT p.key, p.crm_id, p.values, c.values FROM planned p
                        JOIN bridge.recon_crm c ON c.batch_id = %(recon)s AND c.module = %(module)s
                                               AND c.crm_id = p.crm_id
                        ORDER BY p.key""", {"batch": staged_batch, "recon": batch_id, "module": m.target["module"]})
        for key, crm_id, want, held in cur:
            compared += 1
            differ = [f for f, v in want.items() if not mirror.same(held.get(f), v, tolerance)]
            if differ:
                found.append((kind, key, crm_id, {f: held.get(f) for f in differ}, {f: want[f] for f in differ},
                              "; ".join(f"{f}: CRM {_shown(held.get(f))}, ERP {_shown(want[f])}" for f in differ)))
    bridge.rollback()
    with bridge.cursor() as cur:
        cur.execute(f"DELETE FROM {m.staging} WHERE batch_id = %s", (staged_batch,))
    bridge.commit()
    return compared, found


def _shown(value) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, dict) and "id" in value:
        return str(value.get("name") or value["id"])
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


COMPARISONS = {
    "order_status_mismatch": """
        SELECT 'order_status_mismatch', m.erp_key, m.crm_id,
               jsonb_build_object('Fulfilment_Status', c.values -> 'Fulfilment_Status', 'Status', c.values -> 'Status'),
               jsonb_build_object('status', e.values -> 'status', 'per_delivered', e.values -> 'per_delivered',
                                  'expected_Fulfilment_Status', x.expected),
               'the CRM says ' || coalesce(c.values ->> 'Fulfilment_Status', 'nothing') || ', the ERP '
                   || x.expected || ' (' || (e.values ->> 'per_delivered') || ' %% delivered)'
        FROM bridge.id_map m
        JOIN bridge.recon_crm c ON c.batch_id = %(batch)s AND c.module = 'Sales_Orders' AND c.crm_id = m.crm_id
        JOIN bridge.recon_erp e ON e.batch_id = %(batch)s AND e.entity = 'order' AND e.key = m.erp_key
        CROSS JOIN LATERAL (SELECT CASE WHEN e.values ->> 'status' = 'CANCELLED' THEN 'Cancelled'
                                        WHEN (e.values ->> 'per_delivered')::numeric >= 100 THEN 'Shipped'
                                        WHEN (e.values ->> 'per_delivered')::numeric > 0 THEN 'Partially Shipped'
                                        ELSE 'Not Shipped' END AS expected) x
        WHERE m.entity = 'sales_order' AND (c.values ->> 'Fulfilment_Status') IS DISTINCT FROM x.expected""",
    "order_missing_in_erp": """
        SELECT 'order_missing_in_erp', c.crm_id, c.crm_id,
               jsonb_build_object('Subject', c.values -> 'Subject', 'Status', c.values -> 'Status',
                                  'Modified_Time', c.values -> 'Modified_Time'), NULL::jsonb,
               'confirmed in the CRM, not in the ERP, not quarantined and not on credit hold'
        FROM bridge.recon_crm c
        WHERE c.batch_id = %(batch)s AND c.module = 'Sales_Orders' AND c.values ->> 'Status' = 'Confirmed'
          AND (c.values ->> 'Modified_Time')::timestamptz < now() - make_interval(mins => %(grace)s)
          AND NOT EXISTS (SELECT 1 FROM bridge.id_map m WHERE m.entity = 'sales_order' AND m.crm_id = c.crm_id)
          AND NOT EXISTS (SELECT 1 FROM bridge.recon_erp e WHERE e.batch_id = %(batch)s AND e.entity = 'order'
                          AND e.values ->> 'external_ref' = c.crm_id)
          AND NOT EXISTS (SELECT 1 FROM bridge.quarantine q WHERE q.flow = 'crm_orders_to_erp' AND q.status = 'open'
                          AND q.business_key = c.crm_id)""",
    "order_missing_in_crm": """
        SELECT 'order_missing_in_crm', e.key, m.crm_id, NULL::jsonb,
               jsonb_build_object('status', e.values -> 'status', 'customer_code', e.values -> 'customer_code',
                                  'source_system', e.values -> 'source_system'),
               CASE WHEN m.crm_id IS NOT NULL THEN 'its CRM record ' || m.crm_id || ' no longer exists'
                    ELSE 'an open order of a linked customer without a CRM record' END
        FROM bridge.recon_erp e
        LEFT JOIN bridge.id_map m ON m.entity = 'sales_order' AND m.erp_key = e.key
        WHERE e.batch_id = %(batch)s AND e.entity = 'order'
          AND ((m.crm_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM bridge.recon_crm c WHERE c.batch_id = %(batch)s
                                                      AND c.module = 'Sales_Orders' AND c.crm_id = m.crm_id))
               OR (m.crm_id IS NULL AND e.values ->> 'status' = ANY (%(open)s)
                   AND (e.values ->> 'updated_at')::timestamptz < now() - make_interval(mins => %(grace)s)
                   AND EXISTS (SELECT 1 FROM bridge.id_map k WHERE k.entity = 'customer'
                               AND k.erp_key = e.values ->> 'customer_code')))""",
}


def duplicate_groups(rows: list[tuple[str, dict]], keys: list[str], identity: list[str]) -> list[list[str]]:
    """Records connected by any shared key value (union-find): one group per set of duplicates.

    `identity` fields tell two companies apart: records whose identity values are both set and differ (two
    credit codes, two ERP codes) are not joined by a shared name — a group and its subsidiary in the same city."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def distinct(a: dict, b: dict) -> bool:
        return any((a.get(f) or "").strip().upper() != (b.get(f) or "").strip().upper()
                   for f in identity if a.get(f) and b.get(f))

    seen: dict[tuple[str, str], str] = {}
    values_of = dict(rows)
    for rid, values in rows:
        find(rid)
        for k in keys:
            v = (values.get(k) or "").strip().upper()
            if not v:
                continue
            if (k, v) not in seen:
                seen[(k, v)] = rid
            elif k in identity or not distinct(values, values_of[seen[(k, v)]]):
                parent[find(rid)] = find(seen[(k, v)])
    groups: dict[str, list[str]] = defaultdict(list)
    for rid, _ in rows:
        groups[find(rid)].append(rid)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def duplicates(bridge, batch_id: str) -> list[tuple]:
    """Duplicate customers on either side: shared ERP code, credit code, or normalized name and city."""
    out = []
    with bridge.cursor() as cur:
        cur.execute("SELECT crm_id, values FROM bridge.recon_crm WHERE batch_id = %s AND module = 'Accounts'",
                    (batch_id,))
        accounts = cur.fetchall()
        cur.execute("SELECT key, values FROM bridge.recon_erp WHERE batch_id = %s AND entity = 'customer'",
                    (batch_id,))
        customers = cur.fetchall()
    bridge.rollback()
    with bridge.cursor() as cur:  # accounts linked to two different ERP customers are two companies
        cur.execute("SELECT crm_id, erp_key FROM bridge.id_map WHERE entity = 'customer'")
        linked = dict(cur.fetchall())
    bridge.rollback()
    accounts = [(rid, v | {"erp_customer": linked.get(rid)}) for rid, v in accounts]
    names = {rid: v for rid, v in accounts}
    for group in duplicate_groups(accounts, ["Account_Number", "Unified_Social_Credit_Code", "name_key"],
                                  ["Account_Number", "Unified_Social_Credit_Code", "erp_customer"]):
        listed = [{"id": rid, "Account_Name": names[rid].get("Account_Name"),
                   "Account_Number": names[rid].get("Account_Number"),
                   "Unified_Social_Credit_Code": names[rid].get("Unified_Social_Credit_Code")} for rid in group]
        out.append(("duplicate_customer_crm", group[0], group[0], json.dumps(listed, ensure_ascii=False), None,
                    f"{len(group)} CRM accounts are one company: " + ", ".join(group)))
    erp_names = {k: v for k, v in customers}
    for group in duplicate_groups(customers, ["uscc", "name_key"], ["uscc"]):
        listed = [{"customer_code": k, "customer_name": erp_names[k].get("customer_name"),
                   "uscc": erp_names[k].get("uscc")} for k in group]
        out.append(("duplicate_customer_erp", group[0], None, None, json.dumps(listed, ensure_ascii=False),
                    f"{len(group)} ERP customers are one company: " + ", ".join(group)))
    return out


def compare(bridge, erp, batch_id: str, run_date: dt.date, grace_minutes: int | None = None) -> tuple[int, dict]:
    """All differences of the batch into bridge.reconciliation_difference (replacing a retry's); (differences,
    records compared per mirror check)."""
    settings, checks = spec()["settings"], spec()["checks"]
    params = {"batch": batch_id, "tol": settings["tolerance"], "open": settings["open_order_statuses"],
              "grace": int(settings["order_grace_minutes"] if grace_minutes is None else grace_minutes)}
    found, compared = [], {}
    for kind, m in mirror_checks().items():
        compared[kind], differences = mirror_differences(bridge, erp, batch_id, kind, m, float(settings["tolerance"]))
        found.extend(differences)
    with bridge.cursor() as cur:
        for sql in COMPARISONS.values():
            cur.execute(sql, params)
            found.extend(cur.fetchall())
    bridge.rollback()
    found.extend(duplicates(bridge, batch_id))
    rows = [(batch_id, n, run_date, kind, checks[kind]["entity"], key, crm_id,
             json.dumps(crm_value, ensure_ascii=False) if isinstance(crm_value, dict | list) else crm_value,
             json.dumps(erp_value, ensure_ascii=False) if isinstance(erp_value, dict | list) else erp_value,
             checks[kind]["system_of_record"], checks[kind]["corrected_by"], detail)
            for n, (kind, key, crm_id, crm_value, erp_value, detail) in enumerate(found, 1)]
    with bridge.cursor() as cur:
        cur.execute("DELETE FROM bridge.reconciliation_difference WHERE batch_id = %s", (batch_id,))
        psycopg2.extras.execute_values(cur, "INSERT INTO bridge.reconciliation_difference VALUES %s", rows,
                                       page_size=2000)
    bridge.commit()
    return len(rows), compared


# ------------------------------------------------------------------------------------------- report
def trend_chart(days: list[tuple[dt.date, dict]], width: int = 560, height: int = 200) -> str:
    """Stacked columns per run date: the differences of each kind over recent days."""
    return report.stacked_columns(days, SHORT_LABEL, f"Differences per day (last {len(days)})", width, height)


def kinds_chart(counts: dict, run_date: dt.date) -> str:
    """One bar per kind of difference of a run (the report's and the operator console's)."""
    return report.bar_chart([(KIND_LABEL[k], counts.get(k, 0)) for k in KIND_LABEL],
                            f"Differences by kind ({run_date})")


def history(bridge, run_date: dt.date) -> list[tuple[dt.date, dict]]:
    """(day, differences per kind) of each day's latest run in the `trend_days` up to `run_date` (the report's and
    the operator console's trend)."""
    with bridge.cursor() as cur:
        cur.execute("""SELECT DISTINCT ON (run_date) run_date, counts FROM bridge.reconciliation_run
                       WHERE run_date > %s::date - %s AND run_date <= %s ORDER BY run_date, created_at DESC""",
                    (run_date, int(spec()["settings"]["trend_days"]), run_date))
        days = [(day, counts) for day, counts in cur.fetchall()]
    bridge.rollback()
    return days


def write_report(bridge, batch_id: str, run_date: dt.date, counts: dict, compared: dict, threshold: int) -> Path:
    settings = spec()["settings"]
    with bridge.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("""SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY kind ORDER BY row_no) AS n
                                     FROM bridge.reconciliation_difference WHERE batch_id = %s) d
                       WHERE n <= %s ORDER BY kind, row_no""", (batch_id, settings["rows_per_kind_in_report"]))
        rows = cur.fetchall()
    bridge.rollback()
    days = history(bridge, run_date)
    total = sum(counts.values())
    table = "".join(
        f"<tr><td>{html.escape(KIND_LABEL.get(r['kind'], r['kind']))}</td>"
        f"<td>{html.escape(r['business_key'] or '')}</td>"
        f"<td>{html.escape(r['crm_id'] or '')}</td>"
        f"<td>{report.fields_html(r['crm_value'])}</td><td>{report.fields_html(r['erp_value'])}</td>"
        f"<td>{html.escape(r['system_of_record'].upper())}</td><td>{html.escape(r['corrected_by'])}</td>"
        f"<td>{html.escape(r['detail'] or '')}</td></tr>" for r in rows)
    by_kind = kinds_chart(counts, run_date)
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>CRM / ERP reconciliation {run_date}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#111}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}} th{{background:#f3f4f6}}
code{{font-size:12px}} .charts{{display:flex;gap:3em;flex-wrap:wrap}}</style></head><body>
<h1>CRM / ERP reconciliation — {run_date}</h1>
<p><b>{total}</b> differences (alert threshold {threshold}); compared:
{html.escape(', '.join(f'{k} {v}' for k, v in compared.items()))}. Batch <code>{html.escape(batch_id)}</code>.
Nothing was changed: each row names the system of record and the flow that should correct it.</p>
<div class="charts">{by_kind}{trend_chart(days)}</div>
<h2>Differences</h2>
<table><tr><th>kind</th><th>key</th><th>CRM id</th><th>CRM value</th><th>ERP value</th><th>system of record</th>
<th>corrected by</th><th>detail</th></tr>{table}</table></body></html>"""
    folder = Path(reports_dir("reconciliation"))
    path = folder / f"reconciliation_{run_date}.html"
    path.write_text(body, encoding="utf-8")
    (folder / "latest.html").write_text(body, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- flow
class Reconciliation(Flow):
    """snapshot (both systems) -> compare (set-based, gated, reported), one Airflow task each."""
    name, source, target = FLOW, "crm+erp", "bridge"
    pilot_dimensions = ()
    pilot_hint = "a reconciliation compares both systems in full"
    suites = {FLOW: COLUMNS}

    def snapshot(self, systems, run_id: str, run_date: dt.date) -> Run:
        run = self.open(systems, run_id)
        bridge = systems.bridge()
        with self.step(systems, run, "extract") as counts:
            crm = snapshot_crm(bridge, systems.crm(), run.batch_id)
            erp = snapshot_erp(bridge, systems.erp(), run.batch_id)
            with bridge.cursor() as cur:  # fresh statistics: the comparison joins what was just loaded
                cur.execute("ANALYZE bridge.recon_crm, bridge.recon_erp, bridge.id_map")
            bridge.commit()
            counts["rows_extracted"] = sum(crm.values()) + sum(erp.values())
        run.facts |= {"run_date": run_date.isoformat(),
                      "compared": {f"CRM {k}": v for k, v in crm.items()} | {f"ERP {k}": v for k, v in erp.items()}}
        return run

    def compare(self, systems, run: Run, send_alert=None, grace_minutes: int | None = None,
                alert_threshold: int | None = None) -> dict:
        """Stage the differences, gate them, record the run and the report; one alert above the threshold."""
        bridge, run_date = systems.bridge(), dt.date.fromisoformat(run.facts["run_date"])
        with self.step(systems, run, "compare") as ledger:
            found, fields_compared = compare(bridge, systems.erp(), run.batch_id, run_date, grace_minutes)
            run.facts["compared"] |= {f"{KIND_LABEL[k]} (every mapped field)": n for k, n in fields_compared.items()}
            self.gate(systems, run, table="bridge.reconciliation_difference", columns=COLUMNS, send_alert=send_alert,
                      parameters={"kinds": list(KIND_LABEL)}, title="{rows} differences failed their gate")
            counts = self.counts_by_kind(bridge, run.batch_id)
            threshold = int(spec()["settings"]["alert_threshold"] if alert_threshold is None else alert_threshold)
            path, alerted = self.report(bridge, run, run_date, counts, found, threshold, send_alert)
            ledger["rows_loaded"] = found
        self.close(systems, run, "success", f"{found} differences: " + (", ".join(
            f"{KIND_LABEL[k]} {v}" for k, v in counts.items()) or "none") + f"; report {path}")
        return {"differences": found, "counts": counts, "report": str(path), "alerted": alerted}

    @staticmethod
    def counts_by_kind(bridge, batch_id: str) -> dict[str, int]:
        with bridge.cursor() as cur:
            cur.execute("SELECT kind, count(*) FROM bridge.reconciliation_difference WHERE batch_id = %s "
                        "GROUP BY kind", (batch_id,))
            counts = dict(cur.fetchall())
        bridge.rollback()
        return counts

    @staticmethod
    def report(bridge, run: Run, run_date: dt.date, counts: dict, found: int, threshold: int,
               send_alert=None) -> tuple[Path, bool]:
        """The run's row (first, so the report's trend includes today), the HTML report, and one alert above the
        threshold."""
        compared = run.facts["compared"]
        with bridge.cursor() as cur:
            cur.execute("""INSERT INTO bridge.reconciliation_run (batch_id, run_id, run_date, counts, total, compared,
                                                                  threshold)
                           VALUES (%s, %s, %s, %s, %s, %s, %s)
                           ON CONFLICT (batch_id) DO UPDATE SET counts = excluded.counts, total = excluded.total,
                               compared = excluded.compared, created_at = now()""",
                        (run.batch_id, run.run_id, run_date, json.dumps(counts), found, json.dumps(compared),
                         threshold))
        bridge.commit()
        path = write_report(bridge, run.batch_id, run_date, counts, compared, threshold)
        alerted = False
        if found > threshold and send_alert:
            alerted = bool(send_alert(Alert(
                kind="business", flow=FLOW, run_id=run.run_id, event_key="differences",
                title=f"{found} differences between the CRM and the ERP (threshold {threshold})",
                lines=[f"{KIND_LABEL[k]}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])],
                link=path.as_uri(), link_label="Reconciliation report")))
        with bridge.cursor() as cur:
            cur.execute("UPDATE bridge.reconciliation_run SET report_path = %s, alerted = %s WHERE batch_id = %s",
                        (str(path), alerted, run.batch_id))
        bridge.commit()
        return path, alerted


RECONCILIATION = Reconciliation()
