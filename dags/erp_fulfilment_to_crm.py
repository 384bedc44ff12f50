"""
### ERP fulfilment status → CRM Sales_Orders (stage 2)

Every 15 minutes: for the ERP orders that came from the CRM (`crm_orders_to_erp`), reads shipped / invoiced /
paid figures from `erp_api.sales_order_status` and writes to the originating CRM order: Fulfilment_Status (Not
Shipped, Partially Shipped, Shipped, Cancelled), Shipped_Qty, Last_Ship_Date, Invoice_Status (Not / Partially
Invoiced / Invoiced), Payment_Status (Unpaid, Partially Paid, Paid), ERP_Status and Status — only what changed.
The ERP is the system of record for these fields; what sales typed on the order is never touched.
"""

from __future__ import annotations

from airflow.sdk import Asset
from bridge_flows.mirror_dag import mirror_dag

dag = mirror_dag("erp_fulfilment_to_crm", schedule="*/15 * * * *", doc_md=__doc__, tags=["stage-2", "erp-to-crm"],
                 outlets=[Asset("bridge://erp_fulfilment_to_crm")])
