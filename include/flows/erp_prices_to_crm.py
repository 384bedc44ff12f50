"""Flow erp_prices_to_crm: the ERP standard selling price list -> CRM Products Unit_Price and Tax (stage 1).

The ERP is master for price: a price edited in the CRM is overwritten on the next run and the edit is kept as
the audit row's before-image. Mapping: include/mappings/erp_prices_to_crm.yaml; gate:
expectations/erp_prices_to_crm.json (unknown SKU, negative price, tax rate the ERP does not know).
"""

from __future__ import annotations

from include.bridge import mirror

FLOW = "erp_prices_to_crm"


class PricesMirror(mirror.ProductMirror):
    def parameters(self, systems) -> dict:
        return {"tax_rates": [float(r) for r in mirror.erp_values(systems, "SELECT rate FROM erp_api.tax_rates")]}


MIRROR = PricesMirror(FLOW)
