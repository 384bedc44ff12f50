"""
### ERP order and invoice history → CRM Sales_Orders and Invoices (stage 1)

Every 30 minutes, two mirrors in order (task groups):

1. `erp_order_history_to_crm` — `erp_api.sales_order_status` → CRM Sales_Orders found by ERP_Order_No: subject,
   account, status, ERP status, due date, currency and rate, ordered amount, shipped quantity, last ship date,
   fulfilment / invoice / payment status.
2. `erp_invoice_history_to_crm` — `erp_api.invoices` → CRM Invoices found by ERP_Invoice_No: account, sales
   order, dates, status (unpaid, partially paid, paid, overdue, cancelled), total, outstanding, paid.

Read-only copies (the ERP is the system of record), many per account. Cancellations arrive as status
Cancelled; documents deleted in the ERP (`erp_api.deleted_documents`) are deleted in the CRM, with an audit
row. Documents of ERP customers without a linked CRM account are skipped until `master_data_match` links them.
"""

from __future__ import annotations

from airflow.sdk import Asset
from bridge_flows.mirror_dag import mirror_dag

dag = mirror_dag("erp_history_to_crm", schedule="*/30 * * * *", doc_md=__doc__, tags=["stage-1", "erp-to-crm"],
                 parts=["erp_order_history_to_crm", "erp_invoice_history_to_crm"],
                 outlets=[Asset("bridge://erp_history_to_crm")])
