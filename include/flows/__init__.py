"""Every flow, one module each, listed once here: the DAG factory (plugins/bridge_flows), rollback and the tests
look a flow up in this registry by its name instead of importing it by a string.

Importing the registry imports every flow module (a quarter of a second, no Airflow, no Great Expectations): do it
inside a task, never at the top of a DAG file.
"""

from __future__ import annotations

from types import ModuleType

from include.flows import (
    crm_customers_to_erp,
    crm_forecast_to_erp,
    crm_orders_to_erp,
    erp_capacity_warnings_to_crm,
    erp_credit_to_crm,
    erp_fulfilment_to_crm,
    erp_invoice_history_to_crm,
    erp_order_history_to_crm,
    erp_prices_to_crm,
    erp_production_to_crm,
    erp_stock_to_crm,
    master_data_match,
    reconcile_crm_erp,
)

FLOWS: dict[str, ModuleType] = {m.FLOW: m for m in (
    erp_stock_to_crm, erp_credit_to_crm, erp_prices_to_crm, erp_order_history_to_crm, erp_invoice_history_to_crm,
    erp_fulfilment_to_crm, erp_production_to_crm, erp_capacity_warnings_to_crm, master_data_match,
    crm_customers_to_erp, crm_orders_to_erp, crm_forecast_to_erp, reconcile_crm_erp)}


def flow(name: str) -> ModuleType:
    """The flow called `name`; a clear error for a name no flow has."""
    try:
        return FLOWS[name]
    except KeyError:
        raise KeyError(f"no flow {name!r}: the flows are {', '.join(sorted(FLOWS))}") from None


def erp_reversals() -> dict:
    """Flow name -> how the flow reverses the ERP documents of one of its runs (what bridge_rollback asks)."""
    return {name: m.reverse_erp for name, m in FLOWS.items() if hasattr(m, "reverse_erp")}
