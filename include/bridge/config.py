"""Strict configuration: every mapping file and every suite's gate settings are checked against a schema when they
are loaded (and by tests/test_flow_contract.py over every file). An unknown key (a misspelled `filtre`) or a value
of the wrong type would otherwise be ignored and silently change what is synced; here it is an error that names
the file and the key.

A schema is plain data: a type (or a tuple of types) a value must be; `{key: schema}` for a mapping with exactly
those keys (wrap one in Opt to make it optional); Each(schema) for a list; Map(schema) for a mapping of any keys;
Either(...) for one of several shapes; ANY for a value the schema does not look into.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

MAPPINGS_DIR = Path(__file__).resolve().parents[1] / "mappings"
NUMBER = (int, float)


@dataclass(frozen=True)
class Opt:
    schema: Any


@dataclass(frozen=True)
class Each:
    schema: Any


@dataclass(frozen=True)
class Map:
    schema: Any


@dataclass(frozen=True)
class Either:
    """One of several schemas, chosen by the value's shape (a mapping is checked against the mapping schema)."""
    schemas: tuple


ANY = object  # a value whose content the schema leaves to the code that uses it


def _kind(schema) -> str:
    if isinstance(schema, Either):
        return " or ".join(_kind(s) for s in schema.schemas)
    if isinstance(schema, Each):
        return f"a list ({_kind(schema.schema)} each)"
    if isinstance(schema, Map | dict):
        return "a mapping"
    types = schema if isinstance(schema, tuple) else (schema,)
    return " or ".join({int: "a whole number", float: "a number", str: "a text", bool: "true / false",
                        list: "a list", dict: "a mapping"}.get(t, t.__name__) for t in types)


def check(where: str, value, schema, path: str = "") -> None:
    """Raise ValueError naming `where` (the file) and the key's path when `value` does not fit `schema`."""
    label = path or "the top level"
    if schema is ANY:
        return
    if isinstance(schema, Either):
        shaped = [sub for sub in schema.schemas if isinstance(sub, dict | Map) == isinstance(value, dict)]
        for sub in shaped:
            try:
                return check(where, value, sub, path)
            except ValueError:
                if isinstance(value, dict):  # the mapping's own error names its key
                    raise
        raise ValueError(f"{where}: {label} must be {_kind(schema)}, not {value!r}")
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {label} must be a mapping, not {type(value).__name__}")
        unknown = sorted(set(value) - set(schema))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} in {label}; known: {sorted(schema)}")
        for key, sub in schema.items():
            if key not in value:
                if not isinstance(sub, Opt):
                    raise ValueError(f"{where}: {label} lacks the key {key!r}")
                continue
            check(where, value[key], sub.schema if isinstance(sub, Opt) else sub, f"{path}.{key}" if path else key)
        return
    if isinstance(schema, Each):
        if not isinstance(value, list):
            raise ValueError(f"{where}: {label} must be {_kind(schema)}, not {value!r}")
        for n, item in enumerate(value):
            check(where, item, schema.schema, f"{label}[{n}]")
        return
    if isinstance(schema, Map):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {label} must be a mapping, not {value!r}")
        for key, item in value.items():
            check(where, item, schema.schema, f"{path}.{key}" if path else str(key))
        return
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise ValueError(f"{where}: {label} must be {_kind(schema)}, not {value!r}")


TEXTS = Each(str)
SCHEMAS: dict[str, dict] = {
    "master_data": {
        "customers": {"auto_link_score": NUMBER, "auto_link_margin": NUMBER, "review_score": NUMBER,
                      "different_city_factor": NUMBER, "key_match_min_score": NUMBER, "suffixes": TEXTS,
                      "cities": Map(TEXTS)},
        "products": {"uom": Map(str), "tax": Map(NUMBER)},
    },
    "crm_orders_to_erp": {
        "flow": str,
        "sources": Map({"items": str, "send_when": {"field": str, "values": TEXTS},
                        "cancel_when": Opt({"field": str, "values": TEXTS})}),
        "settings": {"lookback_minutes": int, "home_currency": str, "overdue_block_days": int,
                     "default_warehouse": str, "alert_credit_holds": bool},
        "messages": Map(str),
    },
    "crm_forecast_to_erp": {
        "flow": str,
        "deals": {"fields": TEXTS, "closed_stages": TEXTS, "stage_probability": Map(NUMBER),
                  "quote_stages_excluded": TEXTS, "quote_stages_ordered": TEXTS, "order_statuses_ordered": TEXTS},
        "orders": {"statuses": TEXTS},
        "settings": {"horizon_months": int, "timezone": str, "default_region": str, "source_system": str,
                     "send_chunk_rows": int, "wait_for_erp_seconds": NUMBER},
        "messages": Map(str),
    },
    "reconcile_crm_erp": {
        "flow": str,
        "checks": Map({"entity": str, "system_of_record": str, "corrected_by": str, "mirror": Opt(str)}),
        "settings": {"tolerance": NUMBER, "order_grace_minutes": NUMBER, "alert_threshold": int, "trend_days": int,
                     "rows_per_kind_in_report": int, "open_order_statuses": TEXTS},
    },
}
# a suite (expectations/<name>.json): its gate settings in `meta`, each expectation's level
SUITE = {"name": str, "meta": {"description": str, "max_failing_share": NUMBER, "min_rows_for_share": Opt(int),
                               "row_count": Opt(dict)},
         "expectations": Each({"type": str, "kwargs": dict, "meta": {"level": str}})}


@cache
def mapping(name: str) -> dict:
    """include/mappings/<name>.yaml, checked against its schema (the mirrors have theirs in bridge.mirror)."""
    import yaml

    path = MAPPINGS_DIR / f"{name}.yaml"
    value = yaml.safe_load(path.read_text("utf-8"))
    check(f"mapping {path.name}", value, SCHEMAS[name])
    return value
