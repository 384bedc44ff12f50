-- The write contract (schema erp_inbound): interface tables (中间表) the integration inserts into and
-- the ERP's own import job drains. Every row carries source_system + source_id, a unique
-- idempotency_key (inserting the same key twice is a no-op with ON CONFLICT DO NOTHING), its status
-- NEW -> PROCESSED | ERROR, the ERP document number or an error message, and timestamps.
-- The integration role may only INSERT and SELECT here; only the ERP updates status.
CREATE SCHEMA erp_inbound;

CREATE TABLE erp_inbound.customer_in (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_system      text NOT NULL,
    source_id          text NOT NULL,                  -- e.g. the CRM account id
    idempotency_key    text NOT NULL UNIQUE,
    customer_name      text,
    customer_name_en   text,
    uscc               text,                           -- 18-character unified social credit code
    customer_group     text,                           -- default: the ERP's default group
    region             text,
    city               text,
    address            text,
    phone              text,
    currency           text,
    payment_terms_days integer,
    status             text NOT NULL DEFAULT 'NEW' CHECK (status IN ('NEW', 'PROCESSED', 'ERROR')),
    error_message      text,
    erp_doc_no         text,                           -- the ERP customer code
    result_message     text,                           -- e.g. linked to an existing customer
    retry_count        integer NOT NULL DEFAULT 0,
    next_retry_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz
);
CREATE INDEX customer_in_new ON erp_inbound.customer_in (id) WHERE status = 'NEW';
CREATE INDEX customer_in_source ON erp_inbound.customer_in (source_system, source_id);

CREATE TABLE erp_inbound.sales_order_in (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_system      text NOT NULL,
    source_id          text NOT NULL,                  -- the CRM order id: the ERP's external reference
    idempotency_key    text NOT NULL UNIQUE,           -- e.g. source id + version
    action             text NOT NULL DEFAULT 'CREATE' CHECK (action IN ('CREATE', 'AMEND', 'CANCEL')),
    customer_code      text,
    customer_po_no     text,
    order_date         date,
    delivery_date      date,
    currency           text,
    exchange_rate      numeric(18, 6),                 -- to home currency; required for foreign currency
    prices_include_tax boolean NOT NULL DEFAULT false,
    is_prepaid         boolean NOT NULL DEFAULT false,
    credit_approved_by text,                           -- an approval recorded in the CRM releases a hold
    line_count         integer,                        -- lines expected; processed once all are present
    status             text NOT NULL DEFAULT 'NEW' CHECK (status IN ('NEW', 'PROCESSED', 'ERROR')),
    error_message      text,
    erp_doc_no         text,                           -- the ERP sales order number
    erp_status         text,                           -- normalized order status after processing
    hold_reason        text,
    shortage_qty       numeric(18, 3),                 -- not reservable now: became production/purchase demand
    result_message     text,
    retry_count        integer NOT NULL DEFAULT 0,
    next_retry_at      timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz
);
CREATE INDEX sales_order_in_new ON erp_inbound.sales_order_in (id) WHERE status = 'NEW';
CREATE INDEX sales_order_in_source ON erp_inbound.sales_order_in (source_system, source_id);

CREATE TABLE erp_inbound.sales_order_line_in (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key text NOT NULL REFERENCES erp_inbound.sales_order_in (idempotency_key),
    line_no         integer NOT NULL,
    sku             text,
    qty             numeric(18, 3),
    uom             text,                              -- default: the item's stock uom
    unit_price      numeric(18, 4),
    discount_pct    numeric(5, 2) NOT NULL DEFAULT 0,
    discount_amount numeric(18, 2),                    -- the discount as an amount; when given it wins over the %
    tax_rate        numeric(5, 2),
    line_total      numeric(18, 2),                    -- checked by the ERP: qty x price - discount_amount exactly,
                                                       -- or qty x price x (1 - discount_pct / 100) within 0.01
    warehouse       text,
    delivery_date   date,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (idempotency_key, line_no)
);

CREATE TABLE erp_inbound.demand_forecast_in (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_system   text NOT NULL,
    source_id       text NOT NULL,                     -- e.g. product x region x month key
    idempotency_key text NOT NULL UNIQUE,              -- batch id + row
    batch_id        text NOT NULL,                     -- one forecast version; replaces the previous one
    batch_row_count integer NOT NULL,                  -- the batch is applied only when complete
    horizon_start   date NOT NULL,
    horizon_end     date NOT NULL,
    sku             text,
    region          text,
    warehouse       text,
    period_start    date,
    demand_type     text NOT NULL DEFAULT 'PIPELINE',  -- PIPELINE (weighted deals) | ORDERS (firm, unshipped)
    qty             numeric(18, 3),
    status          text NOT NULL DEFAULT 'NEW' CHECK (status IN ('NEW', 'PROCESSED', 'ERROR')),
    error_message   text,
    erp_doc_no      text,                              -- the ERP forecast version
    retry_count     integer NOT NULL DEFAULT 0,
    next_retry_at   timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);
CREATE INDEX demand_forecast_in_new ON erp_inbound.demand_forecast_in (batch_id) WHERE status = 'NEW';
