"""The contract's checks of one demand_forecast_in row, shared by every ERP's import job (no dependencies: the
Tryton adapter's job runs it in Tryton's venv)."""

from __future__ import annotations


def forecast_row_problems(row: dict, first: dict, known_skus, warehouses) -> list[str]:
    """What is wrong with `row` of the batch whose first row is `first` (an empty list: nothing)."""
    problems = []
    if row["sku"] not in known_skus:
        problems.append(f"unknown SKU '{row['sku']}'")
    if row["qty"] is None or row["qty"] < 0:
        problems.append(f"quantity must be 0 or more (got {row['qty']})")
    if not row["region"]:
        problems.append("region is missing")
    if row["period_start"] is None or not first["horizon_start"] <= row["period_start"] <= first["horizon_end"]:
        problems.append(f"period {row['period_start']} is outside the horizon "
                        f"{first['horizon_start']}..{first['horizon_end']}")
    if row["warehouse"] and row["warehouse"] not in warehouses:
        problems.append(f"unknown warehouse '{row['warehouse']}'")
    if row["demand_type"] not in ("PIPELINE", "ORDERS"):
        problems.append(f"demand type must be PIPELINE or ORDERS (got {row['demand_type']!r})")
    return problems
