"""Rollout controls per flow: switched on or off, dry run, pilot subset.

Settings come from the Airflow Variable `bridge_rollout` (JSON: one entry per flow, "*" for every flow) and from
a DAG run's params (`dry_run`, `pilot_regions`, `pilot_customers`, `pilot_skus`), which win:

    {"*": {"enabled": true},
     "crm_orders_to_erp": {"dry_run": true},
     "erp_credit_to_crm": {"pilot": {"regions": ["East"]}},
     "erp_prices_to_crm": {"enabled": false}}

- enabled: false — the run is skipped (ledger status `skipped`, the Airflow tasks show skipped).
- dry run — extract, gate and compute what would be written; nothing is written to the CRM or the ERP, nor to the
  bridge's own sync state (quarantine, synced state, outbox, watermark): what would have been written goes to
  `bridge.dry_run_preview` and the run ledger says how much (status `dry_run`).
- pilot — only the records of the pilot customers (ERP customer codes, or every customer of the listed sales
  regions) or SKUs are extracted, so nothing outside the subset is touched; a pilot run never moves the watermark,
  so when the pilot widens the other records are still picked up. A pilot dimension a flow cannot apply (regions on
  a product flow) is an error, never a silent full run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


class FlowDisabled(Exception):
    """The flow is switched off in the rollout settings: the run is skipped."""


class PilotNotApplicable(ValueError):
    pass


@dataclass
class Rollout:
    flow: str
    enabled: bool = True
    dry_run: bool = False
    regions: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)

    @property
    def pilot(self) -> bool:
        return bool(self.regions or self.customers or self.skus)

    @property
    def mode(self) -> str:
        return "dry_run" if self.dry_run else "pilot" if self.pilot else "live"

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, info: dict | None, flow: str = "") -> Rollout:
        """The rollout a task received in XCom (absent: a plain live run)."""
        data = (info or {}).get("rollout")
        return cls(**data) if data else cls(flow)

    def describe(self) -> str:
        parts = ["dry run"] if self.dry_run else []
        for name in ("regions", "customers", "skus"):
            if getattr(self, name):
                parts.append(f"pilot {name} {', '.join(getattr(self, name))}")
        return "; ".join(parts) or "live"


SWITCHES = ("enabled", "dry_run")
DIMENSIONS = ("regions", "customers", "skus")


def resolve(flow: str, params: dict | None = None, variable: str | dict | None = None) -> Rollout:
    """The flow's rollout from the Variable's JSON (or dict) and the run's params (params win).

    Fail closed: an unknown key or a value of the wrong type (a string "false", a string where a list belongs) is a
    ValueError naming the flow and the key, so the run fails and alerts instead of running with a guess."""
    try:
        settings = json.loads(variable) if isinstance(variable, str) else (variable or {})
    except json.JSONDecodeError as exc:
        raise ValueError(f"Airflow Variable bridge_rollout is not valid JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise ValueError("Airflow Variable bridge_rollout must be a JSON object: {flow: settings}")
    merged: dict = {}
    for scope in ("*", flow):
        entry = settings.get(scope) or {}
        where = f"Airflow Variable bridge_rollout, entry {scope!r} (flow {flow})"
        if not isinstance(entry, dict) or not isinstance(entry.get("pilot") or {}, dict):
            raise ValueError(f"{where}: settings and their 'pilot' must be JSON objects")
        merged |= {k: (where, v) for k, v in entry.items() if k != "pilot"}
        merged |= {k: (where, v) for k, v in (entry.get("pilot") or {}).items()}
    unknown = set(merged) - {*SWITCHES, *DIMENSIONS}
    if unknown:
        raise ValueError(f"bridge_rollout entry for {flow}: unknown settings {sorted(unknown)}")
    params = params or {}
    if params.get("dry_run") is not None:
        merged["dry_run"] = (f"param dry_run of the run of {flow}", params["dry_run"])
    for name in DIMENSIONS:
        if params.get(f"pilot_{name}"):
            merged[name] = (f"param pilot_{name} of the run of {flow}", params[f"pilot_{name}"])
    for key, (where, value) in merged.items():
        if key in SWITCHES and not isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be true or false, not {value!r}")
        if key in DIMENSIONS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"{where}: {key} must be a list of texts, not {value!r}")
    value = {k: v for k, (_, v) in merged.items()}
    return Rollout(flow, enabled=value.get("enabled", True), dry_run=value.get("dry_run", False),
                   regions=list(value.get("regions") or []), customers=list(value.get("customers") or []),
                   skus=list(value.get("skus") or []))


def pilot_customers(erp, rollout: Rollout) -> list[str] | None:
    """ERP customer codes of the pilot (listed ones and every customer of the listed regions); None: no pilot by
    customer."""
    if not (rollout.regions or rollout.customers):
        return None
    with erp.cursor() as cur:
        cur.execute("SELECT customer_code FROM erp_api.customers WHERE customer_code = ANY (%s) OR region = ANY (%s)",
                    (rollout.customers, rollout.regions))
        codes = sorted(r[0] for r in cur.fetchall())
    erp.rollback()
    return codes


def pilot_keys(erp, rollout: Rollout, kind: str | None) -> list[str] | None:
    """The keys a pilot run may touch, for a flow keyed by `kind` (customer, sku, order); None: not a pilot."""
    if not rollout.pilot:
        return None
    by_customer = bool(rollout.regions or rollout.customers)
    if kind == "sku":
        if by_customer:
            raise PilotNotApplicable(f"{rollout.flow} works on products: pilot it with pilot_skus, not regions or "
                                     "customers")
        return sorted(rollout.skus)
    if kind in ("customer", "order"):
        if rollout.skus:
            raise PilotNotApplicable(f"{rollout.flow} works on customers' records: pilot it with pilot_regions or "
                                     "pilot_customers, not SKUs")
        codes = pilot_customers(erp, rollout) or []
        if kind == "customer":
            return codes
        with erp.cursor() as cur:
            cur.execute("SELECT erp_order_no FROM erp_api.sales_order_status WHERE customer_code = ANY (%s)", (codes,))
            orders = sorted(r[0] for r in cur.fetchall())
        erp.rollback()
        return orders
    raise PilotNotApplicable(f"{rollout.flow} has no pilot dimension: run it in full or dry-run it")


def preview(bridge, flow: str, batch_id: str, run_id: str,
            rows: list[tuple[str, str, str, str | None, str, dict | None, dict | None]]) -> int:
    """What a dry run would have written: (target_system, entity, business_key, record_id, action, before, after)."""
    import psycopg2.extras

    from include.bridge import engine

    if not rows:
        return 0
    with bridge.cursor() as cur:
        psycopg2.extras.execute_values(cur, """
            INSERT INTO bridge.dry_run_preview (flow, batch_id, run_id, target_system, entity, business_key,
                                                record_id, action, before, after) VALUES %s""",
            [(flow, batch_id, run_id, t, e, engine.clean_text(k), engine.clean_text(r), a, engine.jsonb(b),
              engine.jsonb(x)) for t, e, k, r, a, b, x in rows], page_size=5000)
    bridge.commit()
    return len(rows)


def clear_preview(bridge, batch_id: str) -> None:
    """A retried dry run previews afresh."""
    with bridge.cursor() as cur:
        cur.execute("DELETE FROM bridge.dry_run_preview WHERE batch_id = %s", (batch_id,))
    bridge.commit()


def preview_counts(bridge, batch_id: str) -> dict[str, int]:
    with bridge.cursor() as cur:
        cur.execute("""SELECT target_system || ' ' || action, count(*) FROM bridge.dry_run_preview
                       WHERE batch_id = %s GROUP BY 1 ORDER BY 1""", (batch_id,))
        counts = dict(cur.fetchall())
    bridge.rollback()
    return counts


def dry_run_message(bridge, batch_id: str) -> str:
    counts = preview_counts(bridge, batch_id)
    what = ", ".join(f"{v} {k}" for k, v in counts.items()) or "nothing"
    return f"dry run, nothing written: would have written {what} (bridge.dry_run_preview, batch {batch_id})"


def finish_dry_run(bridge, batch_id: str) -> dict:
    """Close a dry run's ledger row (status dry_run) with what it would have written."""
    from include.bridge import engine

    return engine.finish_run(bridge, batch_id, "dry_run", dry_run_message(bridge, batch_id))


def quarantine(bridge, flow: str, batch_id: str, run_id: str, entity: str,
               rows: list[tuple[str, dict, list[str]]], dry_run: bool) -> int:
    """(business key, payload, reasons) of bad records: quarantined, or in a dry run previewed (a dry run changes
    no quarantine: the next live run finds the same records and decides the same)."""
    from include.bridge import engine

    if dry_run:
        return preview(bridge, flow, batch_id, run_id, [("quarantine", entity, key, None, "quarantine", None,
                                                         {"reasons": reasons}) for key, _, reasons in rows])
    return engine.quarantine(bridge, flow, batch_id, rows)


def update_crm(bridge, crm, flow: str, entity: str, module: str, records: list[dict], run_id: str, batch_id: str,
               dry_run: bool) -> list:
    """CRM updates by record id, audited with their before-images (engine.audited_update); a dry run previews
    them instead and returns no outcomes."""
    from include.bridge import engine

    if dry_run:
        preview(bridge, flow, batch_id, run_id, [("crm", entity, r["id"], f"{module}:{r['id']}", "update", None, r)
                                                 for r in records])
        return []
    return engine.audited_update(bridge, crm, flow, entity, module, records, run_id, batch_id)
