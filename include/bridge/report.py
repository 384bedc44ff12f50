"""What people read: values as a person writes them, and inline SVG charts (no script, no network, open anywhere).
Used by the reconciliation report and the operator console (plugins/bridge_console)."""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
from decimal import Decimal

PALETTE = ["#3b82f6", "#ef4444", "#14b8a6", "#f59e0b", "#10b981", "#8b5cf6", "#ec4899", "#6b7280", "#0ea5e9",
           "#84cc16", "#a855f7", "#f97316", "#64748b"]


def readable(value) -> str:
    """One value as text: a lookup by its name, a list joined, a number without float noise, empty as '—'."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        if "id" in value and len(value) <= 3:  # a CRM lookup {"id", "name"}
            return str(value.get("name") or value["id"])
        return "; ".join(f"{k}: {readable(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(readable(v) for v in value) or "—"
    if isinstance(value, float | Decimal):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def fields(value) -> list[tuple[str, str]]:
    """A JSON object as (field, readable value) pairs, in its own order; a scalar as one unnamed pair."""
    if isinstance(value, str) and value[:1] in "{[":
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, dict) and not ("id" in value and len(value) <= 3):
        return [(str(k), readable(v)) for k, v in value.items()]
    return [] if value is None else [("", readable(value))]


def changes(before: dict | None, after: dict | None) -> list[tuple[str, str, str]]:
    """(field, before, after) of every field whose value a write changed (or set, on a create)."""
    before, after = before or {}, after or {}
    names = list(dict.fromkeys([*after, *before]))
    return [(f, readable(before.get(f)), readable(after.get(f))) for f in names if before.get(f) != after.get(f)]


def fields_html(value) -> str:
    """A JSON object as a small definition list (what a table cell shows instead of raw JSON)."""
    pairs = fields(value)
    if not pairs:
        return ""
    return "<br>".join(f"<b>{html.escape(k)}</b> {html.escape(v)}" if k else html.escape(v) for k, v in pairs)


def bar_chart(items: list[tuple[str, int]], title: str, width: int = 560) -> str:
    """Horizontal bars, one per (label, value)."""
    top = max([v for _, v in items] + [1])
    bars = []
    for i, (label, value) in enumerate(items):
        w = int((width - 290) * value / top)  # room for the label on the left and the figure on the right
        y = 28 + i * 26
        bars.append(f'<text x="0" y="{y + 14}" font-size="12">{html.escape(label)}</text>'
                    f'<rect x="220" y="{y}" width="{w}" height="18" fill="#3b82f6"/>'
                    f'<text x="{226 + w}" y="{y + 14}" font-size="12">{value:,}</text>')
    height = 40 + 26 * len(items)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            f'<text x="0" y="14" font-size="14" font-weight="bold">{html.escape(title)}</text>{"".join(bars)}</svg>')


def stacked_columns(days: list[tuple[dt.date, dict]], kinds: dict[str, str], title: str, width: int = 560,
                    height: int = 200, per_row: int = 7) -> str:
    """Stacked columns per day: `days` is (day, {kind: count}); `kinds` names each kind in the legend."""
    if not days:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40" role="img"><text x="0" y="14" '
                f'font-size="14" font-weight="bold">{html.escape(title)}</text><text x="0" y="34" font-size="12">'
                'nothing yet</text></svg>')
    colors = {kind: PALETTE[k % len(PALETTE)] for k, kind in enumerate(kinds)}
    top = max([sum(c.values()) for _, c in days] + [1])
    col = min(40, max(8, (width - 60) // max(len(days), 1) - 6))
    parts = [f'<text x="0" y="14" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    for i, (day, counts) in enumerate(days):
        x, base = 40 + i * (col + 6), height - 30
        for kind in kinds:
            h = int((height - 60) * counts.get(kind, 0) / top)
            if h:
                base -= h
                parts.append(f'<rect x="{x}" y="{base}" width="{col}" height="{h}" fill="{colors[kind]}">'
                             f'<title>{day} {html.escape(kinds[kind])}: {counts[kind]:,}</title></rect>')
        parts.append(f'<text x="{x}" y="{height - 14}" font-size="10">{day:%m-%d}</text>')
        parts.append(f'<text x="{x}" y="{base - 3}" font-size="10">{sum(counts.values()):,}</text>')
    step = max(74, (width - 40) // per_row)
    legend = "".join(f'<rect x="{40 + k % per_row * step}" y="{height - 8 + k // per_row * 12}" width="8" height="8" '
                     f'fill="{colors[kind]}"/><text x="{50 + k % per_row * step}" y="{height + k // per_row * 12}" '
                     f'font-size="9">{html.escape(label)}</text>' for k, (kind, label) in enumerate(kinds.items()))
    rows = (len(kinds) - 1) // per_row if kinds else 0
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 4 + rows * 12}" role="img">'
            f'{"".join(parts)}{legend}</svg>')
