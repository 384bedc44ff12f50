"""Flow erp_order_history_to_crm: ERP sales orders -> CRM Sales_Orders as read-only copies (stage 1).

Each ERP order of a linked customer becomes (or updates) the CRM order with the same ERP_Order_No, linked to
the account, with its status, shipped quantity and fulfilment / invoice / payment status. Cancellations arrive
as status Cancelled; orders deleted in the ERP (its deletion log) are deleted in the CRM. First half of DAG
erp_history_to_crm. Mapping: include/mappings/erp_order_history_to_crm.yaml.
"""

from __future__ import annotations

from include.bridge import mirror

FLOW = "erp_order_history_to_crm"
class HistoryMirror(mirror.MirrorFlow):
    def parameters(self, systems) -> dict:
        return {"currencies": mirror.erp_values(systems, "SELECT code FROM erp_api.currencies")}


MIRROR = HistoryMirror(FLOW)
