-- Staging of erp_prices_to_crm: the valid standard price of each SKU (erp_api.price_list) per batch.
CREATE TABLE IF NOT EXISTS bridge.stg_erp_prices_to_crm (
    batch_id             text NOT NULL,
    row_no               bigint NOT NULL,
    sku                  text,
    price_list           text,
    uom                  text,
    currency             text,
    unit_price           numeric,
    tax_rate             numeric,
    tax_included         boolean,
    unit_price_excl_tax  numeric,
    unit_price_incl_tax  numeric,
    min_qty              numeric,
    valid_from           date,
    valid_to             date,
    updated_at           timestamptz,
    known_sku            boolean,
    gate_ok              boolean,
    PRIMARY KEY (batch_id, row_no)
);
