"""Preflight of the CRM org: does every field the flows read or write exist there as the flows need it?

    python -m include.bridge.doctor [--flow erp_stock_to_crm ...]

For every flow, what it needs of each CRM field (`Flow.crm_fields()`: a mirror's from its mapping, the others
declare theirs) is checked against the org's field metadata (GET /crm/v8/settings/fields, one call per module):
the field exists, has the type the flow writes, is unique where a flow finds records by it (upsert
duplicate_check_fields and bulk find_by need a unique field), is long enough for what the flow writes, keeps as
many decimal places as the flow rounds to, offers every picklist value the flow writes, and is a subform where
the flow writes line items. It prints one table of what an admin must change (exit 1) or says all is well.
Each flow's first task runs the same check once a day (`preflight`; a failing check runs again on the next run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass, field

from include.zoho import limits

TEXT_LENGTH = {"text": 255, "textarea": 2000}
NUMBER_TYPES = {"currency", "double", "decimal", "percent"}
# types Zoho reports that hold what the flow writes as another name (a formula is never writable)
COMPATIBLE = {"double": {"double", "decimal"}, "decimal": {"double", "decimal"}, "text": {"text", "textarea"},
              "textarea": {"textarea"}}


@dataclass(frozen=True)
class FieldNeed:
    """What one flow needs of one CRM field."""
    module: str
    api_name: str
    data_type: str | None = None          # Zoho data_type the flow writes (None: any; it only reads it)
    unique: bool = False                  # the flow finds records by it (upsert / bulk find_by)
    max_length: int | None = None         # text: the longest value it writes
    decimals: int | None = None           # numbers: the places it rounds to
    values: frozenset[str] = field(default_factory=frozenset)  # picklist values it writes
    written: bool = False                 # the flow writes it (Zoho ignores a write to a read-only field)
    creates: bool = False                 # (api_name "") the flow creates records: it writes every required field


@dataclass(frozen=True)
class Problem:
    flow: str
    module: str
    api_name: str
    problem: str
    change: str


def mirror_needs(spec) -> list[FieldNeed]:
    """A mirror's needs, from its mapping: each field's type, the number / text bounds its field SQL applies, the
    values a picklist map writes, the find_by key (unique), the stamp field."""
    module = spec.target["module"]
    needs = []
    for name, f in spec.spec["fields"].items():
        f = f if isinstance(f, dict) else {"column": f}
        kind = "lookup" if f.get("lookup") else f.get("type") or ("picklist" if "map" in f else None)
        needs.append(FieldNeed(
            module, name, kind,
            max_length=int(f.get("max_length", TEXT_LENGTH[kind])) if kind in TEXT_LENGTH else None,
            decimals=int(f.get("decimals", 2)) if kind in NUMBER_TYPES else None,
            values=frozenset(str(v) for v in (f.get("map") or {}).values() if v is not None), written=True))
    if spec.target["find_by"] != "id":  # upserts create records
        needs.append(FieldNeed(module, spec.target["find_by"], "text", unique=True, written=True))
        needs.append(FieldNeed(module, "", creates=True))
    if spec.spec.get("stamp_field"):
        needs.append(FieldNeed(module, spec.spec["stamp_field"], "datetime", written=True))
    return needs


def needs_from(declared: dict[str, dict[str, dict]]) -> list[FieldNeed]:
    """Needs written as data in a flow module: {module: {field: {type, unique, max_length, decimals, values,
    written}}}."""
    return [FieldNeed(module, name, d.get("type"), bool(d.get("unique")), d.get("max_length"), d.get("decimals"),
                      frozenset(d.get("values") or ()), bool(d.get("written")))
            for module, fields in declared.items() for name, d in fields.items()]


def check(crm, needs_by_flow: dict[str, list[FieldNeed]]) -> list[Problem]:
    """Every problem of every flow's needs against the org's fields (one metadata call per module)."""
    metadata: dict[str, dict] = {}
    problems = []
    for flow, needs in needs_by_flow.items():
        for need in needs:
            if need.module not in metadata:
                metadata[need.module] = crm.fields(need.module)
            if need.creates:
                problems += required_problems(flow, need.module, needs, metadata[need.module])
                continue
            problems += [Problem(flow, need.module, need.api_name, p, c)
                         for p, c in field_problems(need, metadata[need.module].get(need.api_name))]
    return problems


def required_problems(flow: str, module: str, needs: list[FieldNeed], fields: dict[str, dict]) -> list[Problem]:
    """A flow that creates records must write every field the org requires to create one (Zoho: a sales order
    needs its line items, Ordered_Items; an invoice its Invoiced_Items)."""
    written = {n.api_name for n in needs if n.module == module and n.written}
    return [Problem(flow, module, name, "is required to create a record, the flow does not write it",
                    "make it optional in the module's layout, or map it in the flow")
            for name, f in sorted(fields.items()) if f.get("system_mandatory") and name not in written]


def field_problems(need: FieldNeed, actual: dict | None) -> list[tuple[str, str]]:
    """(what is wrong, what an admin changes) for one field; [] when it is as the flow needs it."""
    if actual is None:
        return [("does not exist", f"create it ({need.data_type or 'any type'}; API name {need.api_name})")]
    kind = actual.get("data_type")
    out = []
    if need.data_type and kind not in COMPATIBLE.get(need.data_type, {need.data_type}):
        out.append((f"is {kind}, the flow writes {need.data_type}", f"make it a {need.data_type} field"))
    if need.written and (actual.get("read_only") or actual.get("field_read_only")):
        out.append(("is read-only: Zoho ignores what the flow writes to it",
                    "map the value to a writable (custom) field in the flow's mapping"))
    if need.unique and not actual.get("unique"):
        out.append(("is not unique, but records are found by it",
                    "tick 'Do not allow duplicate values' on the field"))
    length = actual.get("length")
    if need.max_length and isinstance(length, int) and length < need.max_length:
        out.append((f"holds {length} characters, the flow writes up to {need.max_length}",
                    f"raise its length to {need.max_length}" + (" (multi-line: Large)" if kind == "textarea" else "")))
    places = actual.get("decimal_place")
    if places is None and isinstance(actual.get("currency"), dict):
        places = actual["currency"].get("precision")
    if need.decimals is not None and places is not None and int(places) < need.decimals:
        out.append((f"keeps {places} decimal places, the flow writes {need.decimals}",
                    f"set its decimal places to {need.decimals}"))
    offered = {str(v.get("actual_value")) for v in actual.get("pick_list_values") or []}
    missing = sorted(need.values - offered) if kind in ("picklist", "multiselectpicklist") else []
    if missing:
        out.append((f"lacks picklist values {', '.join(missing)}", f"add {', '.join(missing)} to its values"))
    return out


def all_needs(registry: dict, flows: list[str] | None = None) -> dict[str, list[FieldNeed]]:
    """What each named flow of the registry (include.flows.FLOWS, handed in by the caller) needs; default all."""
    names = flows or sorted(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise KeyError(f"no flow {', '.join(unknown)}: the flows are {', '.join(sorted(registry))}")
    return {name: registry[name].crm_fields() for name in names}


def table(problems: list[Problem]) -> str:
    if not problems:
        return "The CRM org has every field the flows need, as they need it."
    rows = [("flow", "field", "problem", "change in the CRM (Setup > Modules and Fields)")] + [
        (p.flow, f"{p.module}.{p.api_name}", p.problem, p.change) for p in problems]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def preflight(systems, flow: str, needs: list[FieldNeed]) -> None:
    """A flow's check against the org, once a day per flow: a pass is remembered in bridge.crm_preflight for the
    day; problems fail the run with the table (fail closed: a run never writes into fields it cannot write)."""
    from include.bridge import db

    bridge = systems.bridge()
    db.ensure_schema(bridge)
    today = dt.date.today()
    with bridge.cursor() as cur:
        cur.execute("SELECT 1 FROM bridge.crm_preflight WHERE flow = %s AND checked_on = %s AND ok", (flow, today))
        done = cur.fetchone() is not None
    bridge.rollback()
    if done:
        return
    problems = check(systems.crm(), {flow: needs}) if needs else []
    with bridge.cursor() as cur:
        cur.execute("""INSERT INTO bridge.crm_preflight (flow, checked_on, ok, problems) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (flow, checked_on) DO UPDATE SET ok = excluded.ok, problems = excluded.problems,
                                                                   checked_at = now()""",
                    (flow, today, not problems, json.dumps([p.__dict__ for p in problems], ensure_ascii=False)))
    bridge.commit()
    if problems:
        raise PreflightFailed(f"{flow}: the CRM org is not set up as the flow needs "
                              f"({len(problems)} problem(s); python -m include.bridge.doctor):\n{table(problems)}")


class PreflightFailed(RuntimeError):
    """The CRM org lacks what a flow needs; the message is the table of changes."""


def main(registry: dict, argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.bridge.doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--flow", action="append", help="check only this flow (repeatable); default: all")
    parser.add_argument("--conn-id", default="zoho_crm", help="the Airflow connection of the CRM (default zoho_crm)")
    parser.add_argument("--set-pool", action="store_true",
                        help="size the Airflow pool zoho_crm to what the org's edition allows")
    args = parser.parse_args(argv)
    from include.bridge import runtime

    crm = runtime.crm_client(args.conn_id)
    needs = all_needs(registry, args.flow)
    problems = check(crm, needs)
    checked = sum(len(n) for n in needs.values())
    print(f"checked {checked} field needs of {len(needs)} flows against the CRM org")
    print(table(problems))
    edition = crm.edition()
    slots = limits.pool_slots(edition)
    known = limits.concurrency(edition)
    print(f"edition {edition or 'not stated'}: {known or 'unknown, assumed ' + str(slots)} calls in flight, "
          f"{limits.SUB_CONCURRENCY} of them complex (COQL, bulk, writes of more than 10 records) -> "
          f"pool {runtime.CRM_POOL}: {slots} slots" + ("" if args.set_pool else " (--set-pool sets it)"))
    if args.set_pool:
        runtime.set_crm_pool(slots, edition)
        print(f"pool {runtime.CRM_POOL} set to {slots} slots")
    return 1 if problems else 0


if __name__ == "__main__":
    # the command line is the caller that looks the flows up in their registry
    from include.flows import FLOWS

    sys.exit(main(FLOWS))
