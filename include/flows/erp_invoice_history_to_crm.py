"""Flow erp_invoice_history_to_crm: ERP sales invoices -> CRM Invoices as read-only copies (stage 1).

Each ERP invoice of a linked customer becomes (or updates) the CRM invoice with the same ERP_Invoice_No, linked
to the account and to the mirrored sales order, with amount, outstanding, paid and status (unpaid, partially
paid, paid, overdue, cancelled). Deleted invoices leave the CRM. Second half of DAG erp_history_to_crm.
Mapping: include/mappings/erp_invoice_history_to_crm.yaml.
"""

from __future__ import annotations

from include.bridge import mirror

FLOW = "erp_invoice_history_to_crm"
class HistoryMirror(mirror.MirrorFlow):
    def parameters(self, systems) -> dict:
        return {"currencies": mirror.erp_values(systems, "SELECT code FROM erp_api.currencies")}


MIRROR = HistoryMirror(FLOW)
