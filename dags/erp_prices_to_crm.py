"""
### ERP standard prices → CRM Products (stage 1)

Hourly: reads the price valid today from the ERP's standard selling price list (`erp_api.price_list`, home
currency) for SKUs whose price changed or became valid, gates it with `expectations/erp_prices_to_crm.json`,
and writes Unit_Price (tax-exclusive, as Zoho adds tax on top), Tax (VAT rate) and Price_Synced_At to the CRM
product linked by Product_Code. The ERP is master for price: a price edited in the CRM is overwritten on the
next run and the edited value is kept in the audit log (`bridge.audit_log`, before-image).
"""

from __future__ import annotations

from airflow.sdk import Asset
from bridge_flows.mirror_dag import mirror_dag

dag = mirror_dag("erp_prices_to_crm", schedule="5 * * * *", doc_md=__doc__, tags=["stage-1", "erp-to-crm"],
                 outlets=[Asset("bridge://erp_prices_to_crm")])
