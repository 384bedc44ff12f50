"""Zoho CRM record writes: insert / update / upsert with per-record results in input order."""

from __future__ import annotations

import time

from include.sandbox.crm import meta
from include.sandbox.crm.store import USER, Store

INVENTORY_ITEMS = {"Sales_Orders": "Ordered_Items", "Quotes": "Quoted_Items", "Invoices": "Invoiced_Items"}


class RecordWriter:
    def __init__(self, store: Store):
        self.store = store
        self._last_ts = 0.0

    def _stamp(self) -> float:
        """Strictly increasing modification time, so (modified_ts, id) orders every write."""
        self._last_ts = max(time.time(), self._last_ts + 1e-6)
        return self._last_ts

    def _lookup_name(self, module: str, rid: int) -> str | None:
        return self.store.display_name(module, rid)

    def write(self, module: str, items: list, mode: str, duplicate_check: list[str] | None = None,
              unmodified_since: float | None = None, user: dict | None = None) -> list[dict]:
        """Per-record outcomes in input order; `user` (default: the integration user) is who writes: Created_By /
        Modified_By and the record's timeline say so."""
        mod = meta.modules()[module]
        dup_fields = duplicate_check or list(mod.duplicate_check)
        results = []
        with self.store.transaction():
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    results.append(meta.invalid("data", f"$.data[{i}]", "jsonobject"))
                    continue
                results.append(self._write_one(mod, item, i, mode, dup_fields, unmodified_since, user or USER))
        return results

    def _write_one(self, mod: meta.Module, item: dict, i: int, mode: str, dup_fields: list[str],
                   unmodified_since: float | None, user: dict) -> dict:
        existing, duplicate_field = None, None
        rid = item.get("id")
        if rid is not None and mode in ("update", "upsert"):
            existing = self.store.get(mod.api_name, int(rid)) if str(rid).isdigit() else None
            if existing is None:
                return {"code": "INVALID_DATA", "details": {"api_name": "id", "json_path": f"$.data[{i}].id"},
                        "message": "the related id given seems to be invalid", "status": "error"}
        elif mode == "update":
            return meta.mandatory_missing("id", f"$.data[{i}].id")
        elif mode == "upsert":
            for name in dup_fields:
                value = item.get(name)
                if value in (None, ""):
                    continue
                ids = self.store.find_ids(mod.api_name, name, value)
                if ids:
                    existing, duplicate_field = self.store.get(mod.api_name, ids[0]), name
                    break
        if existing and unmodified_since is not None and self.store.modified_ts(int(existing["id"])) > unmodified_since:
            return {"code": "ALREADY_MODIFIED", "details": {"id": existing["id"]},
                    "message": "the record has been modified after the given time", "status": "error"}

        values, error = self._validate(mod, item, i, creating=existing is None)
        if error:
            return error
        for f in mod.fields.values():  # unique fields: no second record with the same value
            if f.unique and values.get(f.api_name) not in (None, ""):
                clash = [x for x in self.store.find_ids(mod.api_name, f.api_name, values[f.api_name])
                         if not existing or x != int(existing["id"])]
                if clash:
                    return {"code": "DUPLICATE_DATA",
                            "details": {"api_name": f.api_name, "json_path": f"$.data[{i}].{f.api_name}",
                                        "duplicate_record": {"id": str(clash[0]), "module": {"api_name": mod.api_name},
                                                             "Owner": USER}},
                            "message": "duplicate data", "status": "error"}

        ts = self._stamp()
        stamp = meta.now_iso(ts)
        who = {"name": user["name"], "id": user["id"], "email": user["email"]}
        if existing:
            record = existing
            # compact (name, new, old); the timeline route expands it to Zoho's field_history shape
            history = [(name, value, record.get(name)) for name, value in values.items()
                       if record.get(name) != value and mod.fields[name].type != "subform"]
            for name, value in values.items():
                f = mod.fields[name]
                record[name] = self._merge_subform(record.get(name), value) if f.type == "subform" else value
            created_ts = self.store.created_ts(int(record["id"]))
            if history:
                self.store.audit(mod.api_name, int(record["id"]), ts, "updated", who["id"], history)
        else:
            record = {"id": str(self.store.new_id()), "Created_Time": stamp, "Created_By": who, "Owner": who}
            record.update(values)
            for name, value in values.items():
                if mod.fields[name].type == "subform":
                    record[name] = self._merge_subform(None, value)
            created_ts = ts  # (the timeline keeps updates only: seeding a million records stays fast)
        record["Modified_Time"], record["Modified_By"] = stamp, who
        self._compute_totals(mod.api_name, record)
        self.store.put(mod.api_name, record, created_ts, ts)
        result = {"code": "SUCCESS",
                  "details": {"Modified_Time": stamp, "Modified_By": who, "Created_Time": record["Created_Time"],
                              "id": record["id"], "Created_By": record.get("Created_By", who)},
                  "message": "record updated" if existing else "record added", "status": "success"}
        if mode == "upsert":
            result["action"] = "update" if existing else "insert"
            result["duplicate_field"] = duplicate_field
        return result

    def _validate(self, mod: meta.Module, item: dict, i: int, creating: bool) -> tuple[dict, dict | None]:
        values = {}
        for name, value in item.items():
            f = mod.fields.get(name)
            if f is None or f.read_only or name in meta.SYSTEM_FIELDS:
                continue  # like Zoho: unknown and read-only fields are ignored
            path = f"$.data[{i}].{name}"
            if f.type == "subform":
                rows, error = self._validate_rows(f, value, path)
                if error:
                    return {}, error
                values[name] = rows
                continue
            clean, error = meta.check_value(f, value, path, self._lookup_name)
            if error:
                return {}, error
            if f.mandatory and clean in (None, ""):
                return {}, meta.mandatory_missing(name, path)
            values[name] = clean
        if creating:
            for f in mod.fields.values():
                if f.mandatory and values.get(f.api_name) in (None, "", []):  # a subform: at least one row
                    return {}, meta.mandatory_missing(f.api_name, f"$.data[{i}].{f.api_name}")
        return values, None

    def _validate_rows(self, f: meta.Field, rows, path: str) -> tuple[list | None, dict | None]:
        if rows is None:
            return [], None
        if not isinstance(rows, list):
            return None, meta.invalid(f.api_name, path, "jsonarray")
        clean_rows = []
        for n, row in enumerate(rows):
            if not isinstance(row, dict):
                return None, meta.invalid(f.api_name, f"{path}[{n}]", "jsonobject")
            clean = {"id": str(row["id"])} if row.get("id") else {}
            for name, value in row.items():
                sf = f.subform.get(name)
                if sf is None or sf.read_only:
                    continue
                v, error = meta.check_value(sf, value, f"{path}[{n}].{name}", self._lookup_name)
                if error:
                    return None, error
                clean[name] = v
            if not clean.get("id"):
                for sf in f.subform.values():
                    if sf.mandatory and clean.get(sf.api_name) in (None, ""):
                        return None, meta.mandatory_missing(sf.api_name, f"{path}[{n}].{sf.api_name}")
            clean_rows.append(clean)
        return clean_rows, None

    def _merge_subform(self, current: list | None, rows: list) -> list:
        """Rows with an id update that row; rows without one are appended with a new id."""
        merged = [dict(r) for r in (current or [])]
        by_id = {r["id"]: r for r in merged}
        for row in rows:
            if row.get("id") in by_id:
                by_id[row["id"]].update(row)
            else:
                merged.append({**row, "id": str(self.store.new_id())})
        return merged

    @staticmethod
    def _compute_totals(module: str, record: dict) -> None:
        items_field = INVENTORY_ITEMS.get(module)
        if not items_field or items_field not in record:
            return
        sub_total = tax = 0.0
        for row in record[items_field]:
            total = round(_num(row.get("Quantity")) * _num(row.get("List_Price")), 2)
            net = round(total - _num(row.get("Discount")), 2)
            line_tax = 0.0
            for t in row.get("Line_Tax") or []:
                if isinstance(t, dict) and isinstance(t.get("percentage"), int | float):
                    t["value"] = round(net * t["percentage"] / 100, 2)
                    line_tax += t["value"]
            row["Total"], row["Net_Total"] = total, round(net + line_tax, 2)
            sub_total += net
            tax += line_tax
        record["Sub_Total"], record["Tax"] = round(sub_total, 2), round(tax, 2)
        adjust = _num(record.get("Adjustment")) - _num(record.get("Discount"))
        record["Grand_Total"] = round(sub_total + tax + adjust, 2)


def _num(value) -> float:
    """A number for the totals; a planted non-number (/__sandbox/plant) counts as 0 instead of failing the write."""
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def overall_status(mode: str, results: list[dict]) -> int:
    ok = sum(r["status"] == "success" for r in results)
    if ok == len(results):
        return 201 if mode == "insert" else 200
    if ok == 0:
        return 412 if all(r["code"] == "ALREADY_MODIFIED" for r in results) else 400
    return 207
