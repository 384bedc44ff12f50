"""Module and field metadata of the CRM sandbox (loaded from modules.yaml), and Zoho-style field checks."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

ORG_TZ = dt.timezone(dt.timedelta(hours=8))  # the demo org's time zone (Asia/Shanghai)
NUMBER_TYPES = {"double", "currency", "decimal", "percent"}
INTEGER_TYPES = {"integer", "bigint"}
TEXT_TYPES = {"text": 255, "textarea": 32000, "phone": 30, "website": 255, "email": 100}
SMALL_TEXTAREA = 2000
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
JSON_TYPES = {"text": "string", "textarea": "string", "phone": "string", "website": "string", "email": "string",
              "picklist": "string", "integer": "integer", "bigint": "string", "double": "double",
              "currency": "double", "decimal": "double", "percent": "double", "boolean": "boolean",
              "date": "string", "datetime": "string", "lookup": "jsonobject", "ownerlookup": "jsonobject",
              "multiselectpicklist": "jsonarray", "subform": "jsonarray", "multiselectlookup": "jsonarray"}
SYSTEM_FIELDS = {"id", "Created_Time", "Modified_Time", "Created_By", "Modified_By", "Owner"}


@dataclass(frozen=True)
class Field:
    api_name: str
    type: str
    mandatory: bool = False
    unique: bool = False
    lookup: str | None = None
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    length: int | None = None
    read_only: bool = False
    custom: bool = False
    subform: dict[str, Field] = field(default_factory=dict)
    decimals: int | None = None   # number fields: Zoho rounds a value to the field's decimal places (default 2)


@dataclass(frozen=True)
class Module:
    api_name: str
    singular: str
    display_field: str
    duplicate_check: tuple[str, ...]
    fields: dict[str, Field]

    def subform_fields(self) -> set[str]:
        return {n for n, f in self.fields.items() if f.type == "subform"}

    @property
    def indexed_fields(self) -> list[str]:
        """Fields looked up by value (duplicate check, unique, external keys): the store indexes them."""
        names = set(self.duplicate_check) | {f.api_name for f in self.fields.values() if f.unique}
        names |= {n for n in ("Account_Number", "Product_Code", "SO_Number", "ERP_Order_No", "Email",
                              "Unified_Social_Credit_Code") if n in self.fields}
        return sorted(names)


def _field(name: str, spec: dict) -> Field:
    sub = {k: _field(k, v) for k, v in (spec.get("subform") or {}).items()}
    length = spec.get("length")
    if spec["type"] == "textarea" and length is None:
        # Zoho's multi-line fields: "small" (2,000 characters, what a new custom field gets) or "large" (32,000)
        length = SMALL_TEXTAREA if spec.get("custom") else TEXT_TYPES["textarea"]
    decimals = spec.get("decimals", 2) if spec["type"] in NUMBER_TYPES else None
    return Field(name, spec["type"], bool(spec.get("mandatory")), bool(spec.get("unique")), spec.get("lookup"),
                 tuple(spec.get("picklist") or ()), bool(spec.get("restricted")), length,
                 bool(spec.get("read_only")), bool(spec.get("custom")), sub, decimals)


@cache
def modules() -> dict[str, Module]:
    # CRM_SANDBOX_MODULES: another org's setup (tests start a sandbox with one field misconfigured)
    path = Path(os.environ.get("CRM_SANDBOX_MODULES") or Path(__file__).with_name("modules.yaml"))
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))["modules"]
    return {name: Module(name, m["singular"], m["display_field"], tuple(m["duplicate_check"]),
                         {k: _field(k, v) for k, v in m["fields"].items()})
            for name, m in raw.items()}


def now_iso(ts: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(ts, ORG_TZ) if ts is not None else dt.datetime.now(ORG_TZ)
    return moment.replace(microsecond=0).isoformat()


# Zoho's date-time format: second precision with the offset, e.g. 2019-07-25T15:26:49+05:30 (Zoho's COQL and
# Get Records docs; crm-oas v8.0 format date-time). Fractions of a second or a missing offset are refused.
ZOHO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")


def parse_datetime(value: str) -> dt.datetime | None:
    if not isinstance(value, str) or not ZOHO_DATETIME.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def invalid(api_name: str, path: str, expected: str | None = None, **extra) -> dict:
    details = {"api_name": api_name, "json_path": path}
    if expected:
        details["expected_data_type"] = expected
    details.update(extra)
    return {"code": "INVALID_DATA", "details": details, "message": "invalid data", "status": "error"}


def mandatory_missing(api_name: str, path: str) -> dict:
    return {"code": "MANDATORY_NOT_FOUND", "details": {"api_name": api_name, "json_path": path},
            "message": "required field not found", "status": "error"}


def check_value(f: Field, value, path: str, lookup_exists) -> tuple[object, dict | None]:
    """Return (normalized value, None) or (None, Zoho error item) for one field value."""
    if value is None:
        return None, None
    t = f.type
    if t in TEXT_TYPES:
        if not isinstance(value, str):
            return None, invalid(f.api_name, path, t)
        if len(value) > (f.length or TEXT_TYPES[t]):
            return None, invalid(f.api_name, path, t, maximum_length=f.length or TEXT_TYPES[t])
        if t == "email" and value and not EMAIL.match(value):
            return None, invalid(f.api_name, path, t)
        return value, None
    if t in INTEGER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, invalid(f.api_name, path, t)
        return value, None
    if t in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, invalid(f.api_name, path, t)
        # Zoho keeps what the field's decimal places allow (12.3456 in a 2-place currency field reads back 12.35)
        return (round(value, f.decimals) if f.decimals is not None and isinstance(value, float) else value), None
    if t == "boolean":
        return (value, None) if isinstance(value, bool) else (None, invalid(f.api_name, path, t))
    if t == "date":
        try:
            if not isinstance(value, str) or not DATE.match(value):
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            return None, invalid(f.api_name, path, t)
        return value, None
    if t == "datetime":
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is None:
            return None, invalid(f.api_name, path, t)
        return parsed.astimezone(ORG_TZ).replace(microsecond=0).isoformat(), None
    if t == "picklist":
        if not isinstance(value, str) or (f.restricted and value not in f.picklist):
            return None, invalid(f.api_name, path, t)
        return value, None
    if t == "multiselectpicklist":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None, invalid(f.api_name, path, "jsonarray")
        return value, None
    if t in ("lookup", "ownerlookup"):
        rid = value.get("id") if isinstance(value, dict) else None
        if not isinstance(rid, str | int) or not str(rid).isdigit():
            return None, invalid(f.api_name, path, "jsonobject")
        if f.lookup:
            name = lookup_exists(f.lookup, int(rid))
            if name is None:
                return None, invalid(f.api_name, path, "jsonobject", id=str(rid))
            return {"id": str(rid), "name": name}, None
        return {"id": str(rid)}, None
    if t == "multiselectlookup":
        return (value, None) if isinstance(value, list) else (None, invalid(f.api_name, path, "jsonarray"))
    return value, None
