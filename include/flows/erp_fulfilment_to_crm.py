"""Flow erp_fulfilment_to_crm: shipped / invoiced / paid status of CRM-originated ERP orders -> CRM (stage 2).

The mirror path (include/bridge/mirror.py) over erp_api.sales_order_status restricted to orders the CRM sent
(source_system zoho_crm), written by record id to the CRM order crm_orders_to_erp linked: Fulfilment_Status
(Not Shipped / Partially Shipped / Shipped / Cancelled), Shipped_Qty, Last_Ship_Date, Invoice_Status,
Payment_Status, ERP_Status and Status. Mapping: include/mappings/erp_fulfilment_to_crm.yaml.
"""

from __future__ import annotations

from include.bridge import mirror

FLOW = "erp_fulfilment_to_crm"
MIRROR = mirror.MirrorFlow(FLOW)
