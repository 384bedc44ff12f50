-- Staging of the history mirrors (DAG erp_history_to_crm): ERP sales orders and invoices per batch.
CREATE TABLE IF NOT EXISTS bridge.stg_erp_order_history_to_crm (
    batch_id             text NOT NULL,
    row_no               bigint NOT NULL,
    erp_order_no         text,
    source_system        text,
    external_ref         text,
    customer_po_no       text,
    customer_code        text,
    order_date           date,
    delivery_date        date,
    currency             text,
    exchange_rate        numeric,
    status               text,
    status_raw           text,
    hold_reason          text,
    ordered_qty          numeric,
    shipped_qty          numeric,
    per_delivered        numeric,
    per_billed           numeric,
    ordered_amount       numeric,
    invoiced_amount      numeric,
    paid_amount          numeric,
    last_ship_date       date,
    updated_at           timestamptz,
    known_customer       boolean,
    gate_ok              boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- the order's lines as one JSON array (the CRM order is created with them as Ordered_Items)
ALTER TABLE bridge.stg_erp_order_history_to_crm ADD COLUMN IF NOT EXISTS lines jsonb;

CREATE TABLE IF NOT EXISTS bridge.stg_erp_invoice_history_to_crm (
    batch_id             text NOT NULL,
    row_no               bigint NOT NULL,
    invoice_no           text,
    customer_code        text,
    sales_order_no       text,
    invoice_date         date,
    due_date             date,
    currency             text,
    exchange_rate        numeric,
    amount               numeric,
    outstanding          numeric,
    paid_amount          numeric,
    status               text,
    status_raw           text,
    updated_at           timestamptz,
    known_customer       boolean,
    gate_ok              boolean,
    PRIMARY KEY (batch_id, row_no)
);

-- the invoice's lines as one JSON array (the CRM invoice is created with them as Invoiced_Items)
ALTER TABLE bridge.stg_erp_invoice_history_to_crm ADD COLUMN IF NOT EXISTS lines jsonb;
