"""Flow erp_credit_to_crm: ERP customer credit and receivables -> CRM Accounts (stage 1).

Per linked customer (bridge.id_map, filled by master_data_match): credit limit, credit used (open AR + open
confirmed orders), available credit, overdue amount and days, AR aging 0-30 / 31-60 / 61-90 / 90+, YTD and MTD
sales, last payment date and a credit status (OK / Near Limit / Over Limit / Overdue Block), in the ERP's home
currency (labeled). Mapping: include/mappings/erp_credit_to_crm.yaml; gate: expectations/erp_credit_to_crm.json.
ERP customers without a CRM account are skipped (counted in the run ledger) and load once they are linked.
"""

from __future__ import annotations

from include.bridge import mirror

FLOW = "erp_credit_to_crm"
MIRROR = mirror.MirrorFlow(FLOW)
