"""Every flow, listed once: the registry the DAG factory (plugins/bridge_flows), rollback and the tests look a flow up
in by its name, instead of importing it by a string.

A plain ERP -> CRM mirror needs no module and no line here: its mapping (include/mappings/<name>.yaml, with a
`source` and a `target.module`), its suite (expectations/<name>.json) and a DAG file; every mirror mapping that no
module claims is registered as a MirrorFlow. A flow with steps or hooks of its own has a module here.
Importing the registry imports every flow module (a quarter of a second, no Airflow, no Great Expectations): do it
inside a task, never at the top of a DAG file.
"""

from __future__ import annotations

from include.bridge.flow import Flow
from include.bridge.mirror import MirrorFlow, mirror_mappings
from include.flows import (
    crm_customers_to_erp,
    crm_forecast_to_erp,
    crm_orders_to_erp,
    erp_capacity_warnings_to_crm,
    erp_invoice_history_to_crm,
    erp_order_history_to_crm,
    erp_prices_to_crm,
    erp_production_to_crm,
    erp_stock_to_crm,
    master_data_match,
    reconcile_crm_erp,
)

# flows with a module of their own
_MODULE_FLOWS: tuple[Flow, ...] = (
    # stage 1: ERP views in the CRM
    master_data_match.MATCH, erp_stock_to_crm.MIRROR, erp_prices_to_crm.MIRROR,
    erp_order_history_to_crm.MIRROR, erp_invoice_history_to_crm.MIRROR,
    # stage 2: write-back
    crm_customers_to_erp.CUSTOMERS, crm_orders_to_erp.ORDERS,
    # stage 3: forecast to production
    crm_forecast_to_erp.FORECAST, erp_production_to_crm.MIRROR, erp_capacity_warnings_to_crm.MIRROR,
    # operations
    reconcile_crm_erp.RECONCILIATION)
# plain mirrors (erp_credit_to_crm, erp_fulfilment_to_crm, ...): a mapping no module claims
_PLAIN_MIRRORS = tuple(MirrorFlow(name) for name in mirror_mappings() if name not in {f.name for f in _MODULE_FLOWS})
FLOWS: dict[str, Flow] = {f.name: f for f in (*_MODULE_FLOWS, *_PLAIN_MIRRORS)}


def flow(name: str) -> Flow:
    """The flow called `name`; a clear error for a name no flow has."""
    try:
        return FLOWS[name]
    except KeyError:
        raise KeyError(f"no flow {name!r}: the flows are {', '.join(sorted(FLOWS))}") from None


def erp_reversals() -> dict:
    """Flow name -> how the flow reverses the ERP documents of one of its runs (what bridge_rollback asks)."""
    return {name: f.reverse_erp for name, f in FLOWS.items()}
