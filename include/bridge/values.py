"""Reading values people typed into the CRM. A value that is not what its field should hold (text in a number
field, NaN, 1e999, a date that does not exist, a lookup that is not a lookup) is never a crash that stops the
run: it is read as None and named in `unreadable`, which the flow stages so that its gate quarantines that record
with the reason while the rest of the batch goes on."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

# Larger than anything an ERP or CRM column holds (numeric(18, x)), small enough for every staging column: a
# number beyond it is unreadable rather than an overflow that fails a whole batch's insert.
LIMIT = Decimal(10) ** 30


def shown(value) -> str:
    """What a reason shows of a bad value: short, and never the whole of what a stranger typed."""
    text = str(value)
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def number(value, field: str, unreadable: list[str]) -> Decimal | None:
    """A finite number of sensible size, or None (missing, or unreadable and named in `unreadable`)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        unreadable.append(f"{field} is not a number")
        return None
    try:
        d = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation:
        unreadable.append(f"{field} {shown(value)} is not a number")
        return None
    if not d.is_finite():
        unreadable.append(f"{field} {shown(value)} is not a finite number")
        return None
    if abs(d) >= LIMIT:
        unreadable.append(f"{field} {shown(value)} is out of range")
        return None
    return d


def whole(value) -> int | None:
    """A positive whole number that fits an integer column (sequence numbers), else None (no error: order only)."""
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return None
    return n if 0 < n < 2**31 else None


def day(value, field: str, unreadable: list[str]) -> dt.date | None:
    """A date (Zoho sends yyyy-mm-dd; a date-time is cut to its date), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        unreadable.append(f"{field} {shown(value)} is not a date")
        return None


def ref(value) -> str | None:
    """The record id of a lookup field ({"id": "...", "name": ...}), or None for anything else."""
    rid = value.get("id") if isinstance(value, dict) else None
    if isinstance(rid, str | int) and not isinstance(rid, bool) and 0 < len(str(rid)) <= 40:
        return str(rid)
    return None


def text(value) -> str | None:
    """A text field's value; a number is its text; anything else (a list, an object) is None."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def flag(value) -> bool:
    """A checkbox: only a JSON true is true (the text "false" is not)."""
    return value is True


def items(value) -> list[dict]:
    """A subform's rows: the dicts of a list, nothing else."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def reason(unreadable: list[str]) -> str | None:
    return "; ".join(unreadable) if unreadable else None
