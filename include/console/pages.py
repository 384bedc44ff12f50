"""The console's pages: server-rendered HTML (Jinja2, autoescaped) with inline SVG charts — no script from a CDN,
nothing to build. The plugin hands in what the person may see; this module only shapes it."""

from __future__ import annotations

import datetime as dt
import html
from functools import cache
from pathlib import Path
from urllib.parse import quote

from include.bridge import report
from include.console.catalog import dag_of
from include.flows import reconcile_crm_erp
from include.flows.reconcile_crm_erp import KIND_LABEL, SHORT_LABEL

TEMPLATES = Path(__file__).resolve().parent / "templates"



@cache
def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters |= {"readable": lambda v: "—" if v is None else report.readable(v), "fields_html": report.fields_html,
                    "changes": report.changes, "when": when, "status_class": status_class}
    return env


def when(value) -> str:
    if not value:
        return "—"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


STATUS_CLASS = {"success": "ok", "replayed": "ok", "passed": "ok", "partial": "warn", "running": "warn",
                "open": "warn", "dry_run": "muted", "skipped": "muted", "dismissed": "muted"}


def status_class(status: str | None) -> str:
    """A status's colour: green done, amber in progress or waiting, grey not live, red anything else (failed)."""
    return STATUS_CLASS.get(status or "", "bad" if status else "muted")


def age(seconds: float) -> str:
    """A duration as a person says it: 40 s, 12 min, 3 h 5 min, 2 d 4 h."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h {minutes % 60} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


def freshness(last_success: dt.datetime | None, every_seconds: int | None, now: dt.datetime) -> tuple[str, str]:
    """(text, css class): the time since the last successful load, late once it exceeds twice the schedule's
    interval (one run missed is a retry's delay; two are an operator's business)."""
    if last_success is None:
        return "never loaded", "bad"
    since = (now - last_success).total_seconds()
    if not every_seconds:
        return f"{age(since)} ago (no schedule)", "muted"
    late = since > 2 * every_seconds
    return (f"{age(since)} ago ({'late: ' if late else ''}runs every {age(every_seconds)})", "bad" if late else "ok")


class Links:
    """Links to a record in the CRM and a document in the ERP, where the connection gives the URL pattern
    (`record_url`: `{module}`, `{id}`; `document_url`: `{entity}`, `{key}`); plain text where it does not."""

    def __init__(self, crm_pattern: str | None = None, erp_pattern: str | None = None):
        self.crm_pattern, self.erp_pattern = crm_pattern, erp_pattern

    def crm(self, module: str, record_id: str, label: str | None = None) -> str:
        text = html.escape(label or f"{module} {record_id}")
        if not self.crm_pattern:
            return text
        url = self.crm_pattern.format(module=quote(module, safe=""), id=quote(str(record_id), safe=""))
        return f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{text}</a>'

    def erp(self, entity: str, key: str) -> str:
        if not self.erp_pattern or not key:
            return html.escape(key or "")
        url = self.erp_pattern.format(entity=quote(entity or "", safe=""), key=quote(key, safe=""))
        return f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(key)}</a>'

    def record(self, record_id: str | None, system: str, entity: str, key: str, erp_only: bool = False) -> str:
        """An audit / preview row's record: `Module:id` in the CRM, the document key in the ERP."""
        if system == "crm" and record_id and ":" in record_id and not erp_only:
            module, rid = record_id.split(":", 1)
            return self.crm(module, rid)
        return self.erp(entity, record_id or key) if system == "erp" else html.escape(record_id or "—")


CRM_MODULE_OF = {"stock": "Products", "price": "Products", "credit": "Accounts", "customer": "Accounts",
                 "order": "Sales_Orders", "sales_order": "Sales_Orders"}


def render(name: str, *, base: str, user: str, links: Links | None = None, **context) -> str:
    links = links or Links()
    env = environment().overlay()
    env.filters |= {"record_link": links.record,
                    "crm_record": lambda crm_id, entity: links.crm(CRM_MODULE_OF.get(entity or "", "Accounts"),
                                                                    crm_id) if crm_id else ""}
    return env.get_template(name).render(base=base, user=user, page=name.removesuffix(".html"), **context)


def overview_page(rows: list[dict], every: dict[str, int | None], series: dict, recon_history: list, **common) -> str:
    """`every`: each DAG's schedule interval in seconds (None: not scheduled by time)."""
    now = dt.datetime.now(dt.UTC)
    for r in rows:
        r["dag_id"] = dag_of(r["flow"])
        r["freshness"], r["freshness_class"] = freshness(r["last_success"], every.get(r["dag_id"]), now)
    flows = {r["flow"]: r["flow"] for r in rows}
    minutes = [(r["flow"], int((now - r["last_success"]).total_seconds() // 60) if r["last_success"] else 0)
               for r in rows]
    return render("overview.html", title="Integration overview", flows=rows, now=now,
                  loads_chart=report.stacked_columns(series["loaded"], flows, "Rows loaded per day", 620, 220, 3),
                  quarantine_chart=report.stacked_columns(series["quarantined"], flows,
                                                          "Rows quarantined per day", 620, 220, 3),
                  freshness_chart=report.bar_chart(minutes, "Minutes since the last successful load", 620),
                  recon_chart=report.stacked_columns(recon_history, SHORT_LABEL,
                                                     "Reconciliation differences per day", 620, 220, 4),
                  **common)


def by_kind(differences: list[dict]) -> list[dict]:
    """Differences grouped by kind, each kind with the fields its values hold: one column per field and side, so
    a person reads 'Unit_Price CRM 80.00 | ERP 86.40' rather than two JSON objects. Values that are not objects
    (a list of duplicate records) keep one cell per side."""
    groups: dict[str, dict] = {}
    for d in differences:
        g = groups.setdefault(d["kind"], {"kind": d["kind"], "label": KIND_LABEL.get(d["kind"], d["kind"]),
                                          "fields": {}, "rows": []})
        sides = {side: d[f"{side}_value"] for side in ("crm", "erp")}
        if all(isinstance(v, dict | type(None)) for v in sides.values()):
            for v in sides.values():
                g["fields"].update(dict.fromkeys(v or {}))
        g["rows"].append(d | {"sides": sides})
    for g in groups.values():
        g["fields"] = list(g["fields"])
    return list(groups.values())


def reconciliation_page(data: dict, **common) -> str:
    run = data["run"]
    return render("reconciliation.html", title="CRM / ERP reconciliation", data=data, kinds=KIND_LABEL,
                  groups=by_kind(data["differences"]),
                  kinds_chart=reconcile_crm_erp.kinds_chart(run["counts"], run["run_date"]) if run else "",
                  trend_chart=reconcile_crm_erp.trend_chart(data["history"], 620, 220) if run else "", **common)
